"""The task heads in TF ops: one dense layer on the encoder's output (see `export.tasks`).

Each head reads the canonical `head/kernel` [hidden, outputs] and `head/bias`, and returns the
tensor outputs its task's signatures name. Its numpy twin is `export.verify.head_reference`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from export.build.encoder import dropout
from export.build.precision import Precision
from export.config import BertConfig
from export.tasks import MULTI_LABEL, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, SINGLE_LABEL, \
    TOKEN_CLASSIFICATION, TaskSpec, head_shapes

_AutoTrackable = tf.__internal__.tracking.AutoTrackable


class TaskHead(_AutoTrackable):
    """A dense layer on the encoder's output; subclasses say on which output and what it returns."""

    def __init__(self, config: BertConfig, spec: TaskSpec, read_weight: Callable[[str], np.ndarray],
                 precision: Precision = Precision()):
        self._spec = spec
        self._precision = precision
        self.weights = precision.variables(head_shapes(config, spec), read_weight)
        self._kernel, self._bias = self.weights

    def _dense(self, x: tf.Tensor) -> tf.Tensor:
        """[..., H] -> [..., outputs], as one 2-D matmul (the encoder's dense layers are too)."""
        flat = self._precision.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), self._kernel) + self._bias
        return tf.reshape(flat, tf.concat([tf.shape(x)[:-1], [self._spec.num_outputs]], axis=0))

    def outputs(self, pooled: tf.Tensor | None, sequence: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        raise NotImplementedError


class SequenceClassifierHead(TaskHead):
    """On pooled_output: logits [B, labels], with probabilities by the problem type (softmax for
    single-label, a sigmoid per label for multi-label, none for a regression's scores)."""

    def outputs(self, pooled, sequence, training):
        logits = self._dense(dropout(pooled, self._spec.dropout, training))
        if self._spec.problem_type == SINGLE_LABEL:
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}
        if self._spec.problem_type == MULTI_LABEL:
            return {"logits": logits, "probabilities": tf.sigmoid(logits)}
        return {"logits": logits}


class TokenClassifierHead(TaskHead):
    """On every token of sequence_output: logits [B, S, labels] and their softmax over the labels."""

    def outputs(self, pooled, sequence, training):
        logits = self._dense(dropout(sequence, self._spec.dropout, training))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}


class SpanHead(TaskHead):
    """On every token of sequence_output: two columns, the start and the end logits [B, S]."""

    def outputs(self, pooled, sequence, training):
        start, end = tf.unstack(self._dense(sequence), num=2, axis=-1)
        return {"start_logits": start, "end_logits": end}


HEADS: dict[str, type[TaskHead]] = {
    SEQUENCE_CLASSIFICATION: SequenceClassifierHead,
    TOKEN_CLASSIFICATION: TokenClassifierHead,
    QUESTION_ANSWERING: SpanHead,
}
