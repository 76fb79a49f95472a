"""The exported object of a fine-tuned BERT: the encoder, its task head, and the signatures that
serve it, from token ids (int32, and an int64 twin) and from raw text.

The text signatures run the preprocessor's own tokenize object and packing (`preprocessing.py`:
the same normalisation, round-robin truncation and layout that `--export_type=preprocessing`
exports and verifies) inside the same graph, then the tensor entry point. They need the
TensorFlow Text ops wherever the SavedModel is loaded; `text_signatures=False` leaves them out.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from export.build.encoder import INPUT_NAMES, BertEncoderCore
from export.build.heads import HEADS, TaskHead
from export.build.precision import Precision
from export.build.saving import call_specs
from export.config import BertConfig
from export.tasks import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, TaskSpec
from export.vocab import TokenizerFile, TokenizerSpec

_AutoTrackable = tf.__internal__.tracking.AutoTrackable
_INT32_SPECS = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]
_INT64_SPECS = [tf.TensorSpec([None, None], tf.int64, name=name) for name in INPUT_NAMES]


def _text_spec(name: str) -> tf.TensorSpec:
    return tf.TensorSpec([None], tf.string, name=name)


def _signature(method, *specs: tf.TensorSpec) -> tf.types.experimental.ConcreteFunction:
    """A signature's concrete function from a plain method. Not an attribute of the object, it is
    saved once, as the signature, instead of also as an object function that
    `tf.saved_model.save` traces again."""
    return tf.function(method, input_signature=list(specs), autograph=False).get_concrete_function()


class TaskModel(_AutoTrackable):
    """`__call__(inputs, training=False)`: dict of the three int32 inputs -> the head's outputs
    (see `TaskSpec.tensor_outputs`). `serve` is the same for Keras 3's TFSMLayer; the signatures
    `serving_default` (int32) and `serve_int64` (int64) take the inputs as keywords."""

    def __init__(self, core: BertEncoderCore, head: TaskHead, spec: TaskSpec, tokenizer: TokenizerSpec,
                 seq_length: int, text_signatures: bool):
        self.core = core
        self.head = head
        self._spec = spec
        self._seq_length = seq_length
        if text_signatures:
            from export.build.preprocessing import build_tokenize, packing_ids

            # Character offsets for the signatures that return positions in the text.
            self.tokenize, asset, special_ids = build_tokenize(
                tokenizer, with_offsets=spec.task != SEQUENCE_CLASSIFICATION)
            self._pack_ids = packing_ids(special_ids)
        else:
            asset = tf.saved_model.Asset(tokenizer.path)
        setattr(self, TokenizerFile(tokenizer.kind, tokenizer.path).attribute, asset)
        self.do_lower_case = tf.Variable(tokenizer.do_lower_case, trainable=False, name="do_lower_case")
        if spec.label_names:
            self.label_names = tf.Variable(list(spec.label_names), trainable=False, name="label_names")
        self.variables = list(core.weights) + list(head.weights) + [self.do_lower_case]
        self.trainable_variables = [w for w in list(core.weights) + list(head.weights) if w.trainable]  # none in bf16
        self.regularization_losses = []

    @tf.function(autograph=False)  # plain Python control flow only; autograph would slow tracing
    def __call__(self, inputs, training=False):
        pooled, sequence, _ = self.core.encode(
            inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"], training)
        return self.head.outputs(pooled, sequence, training)

    def _infer(self, word_ids, mask, type_ids) -> dict[str, tf.Tensor]:
        return self.__call__(dict(zip(INPUT_NAMES, (word_ids, mask, type_ids))), training=False)

    @tf.function(input_signature=[{s.name: s for s in _INT32_SPECS}], autograph=False)
    def serve(self, inputs):
        return self._infer(*(inputs[name] for name in INPUT_NAMES))

    def _serving_default(self, input_word_ids, input_mask, input_type_ids):
        return self._infer(input_word_ids, input_mask, input_type_ids)

    def _serve_int64(self, input_word_ids, input_mask, input_type_ids):
        return self._infer(*(tf.cast(t, tf.int32) for t in (input_word_ids, input_mask, input_type_ids)))

    def trace(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Traces every entry point; returns the signatures to save. A text signature `serve_x` is
        the subclass's method `_serve_x`, on the string inputs export.tasks names for it."""
        spec = call_specs(INPUT_NAMES)
        self.__call__.get_concrete_function(spec, training=True)
        self.__call__.get_concrete_function(spec, training=False)
        self.serve.get_concrete_function()
        signatures = {"serving_default": _signature(self._serving_default, *_INT32_SPECS),
                      "serve_int64": _signature(self._serve_int64, *_INT64_SPECS)}
        if hasattr(self, "tokenize"):
            self.tokenize.trace()
            for name, inputs in self._spec.text_signature_inputs().items():
                signatures[name] = _signature(getattr(self, "_" + name), *(_text_spec(i) for i in inputs))
        return signatures

    # Helpers of the text signatures.
    def _packing(self, segments: list[tf.RaggedTensor]):
        """The preprocessor's packing (truncation at seq_length), cut to the batch's longest row:
        the encoder ignores padding, so padding past it would be compute spent on nothing."""
        from export.build.preprocessing import Packing

        return Packing(segments, self._seq_length, to_longest=True)

    def _label_of(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.gather(tf.convert_to_tensor(self.label_names), tf.argmax(logits, axis=-1, output_type=tf.int32))


class SequenceClassificationModel(TaskModel):
    """Text in: `serve_text` (one segment) and `serve_text_pair` (MNLI-style pairs); out: the
    tensor outputs, plus `label` (string [B]) for a single-label classifier."""

    def _classify(self, segments):
        inputs = self._packing(segments).inputs(*self._pack_ids)
        out = dict(self._infer(*(inputs[name] for name in INPUT_NAMES)))
        if self._spec.has_label_output:
            out["label"] = self._label_of(out["logits"])
        return out

    def _serve_text(self, text):
        return self._classify([self.tokenize(text)])

    def _serve_text_pair(self, text, text_pair):
        return self._classify([self.tokenize(text), self.tokenize(text_pair)])


class TokenClassificationModel(TaskModel):
    """Text in (`serve_text`); out: the tensor outputs per packed position (S: the batch's longest
    packed row), plus `labels` (string [B, S], "" at [CLS], [SEP] and padding) and `token_start` /
    `token_end` (int32 [B, S], code-point offsets into `text`, -1 where no text token is)."""

    def _serve_text(self, text):
        tokens = self.tokenize.with_char_offsets(text)
        packing = self._packing([tokens["ids"]])
        inputs = packing.inputs(*self._pack_ids)
        out = dict(self._infer(*(inputs[name] for name in INPUT_NAMES)))
        # Offsets where their tokens are packed; -1 at [CLS], [SEP] and padding.
        token_start, token_end = (packing.values([tokens[k]], -1, -1, -1) for k in ("start", "end"))
        out["labels"] = tf.where(token_start >= 0, self._label_of(out["logits"]), "")
        out["token_start"], out["token_end"] = token_start, token_end
        return out


def best_span(start_logits: tf.Tensor, end_logits: tf.Tensor, token_start: tf.Tensor, token_end: tf.Tensor,
              max_answer_length: int) -> dict[str, tf.Tensor]:
    """run_squad.py's answer choice: the span of context tokens i <= j < i + max_answer_length
    with the highest start_logits[i] + end_logits[j]. Returns code-point offsets [start, end)
    into the context (-1 and -1 when the packed context holds no token) and the span's score."""
    seq = tf.shape(start_logits)[1]
    scores = tf.expand_dims(start_logits, 2) + tf.expand_dims(end_logits, 1)  # [B, i, j]
    i = tf.reshape(tf.range(seq), [-1, 1])
    j = tf.reshape(tf.range(seq), [1, -1])
    context = token_start >= 0
    allowed = (j >= i) & (j - i < max_answer_length) & tf.expand_dims(context, 2) & tf.expand_dims(context, 1)
    lowest = tf.float32.min
    flat = tf.reshape(tf.where(allowed, scores, lowest), [tf.shape(scores)[0], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    found = tf.reduce_any(allowed, axis=[1, 2])
    first, last = best // seq, best % seq
    start = tf.where(found, tf.gather(token_start, first, batch_dims=1), -1)
    end = tf.where(found, tf.gather(token_end, last, batch_dims=1), -1)
    return {"answer_start": start, "answer_end": end,
            "answer_score": tf.where(found, tf.reduce_max(flat, axis=-1), lowest)}


class QuestionAnsweringModel(TaskModel):
    """Text in (`serve_text`: `question`, `context`, packed [CLS] question [SEP] context [SEP]);
    out: start_logits and end_logits, plus the best span: `answer` (the context's own text),
    `answer_start` / `answer_end` (code-point offsets, `context[answer_start:answer_end]`) and
    `answer_score` (its start + end logit)."""

    def _serve_text(self, question, context):
        asked = self.tokenize(question)
        passage = self.tokenize.with_char_offsets(context)
        packing = self._packing([asked, passage["ids"]])
        inputs = packing.inputs(*self._pack_ids)
        out = dict(self._infer(*(inputs[name] for name in INPUT_NAMES)))
        not_context = asked.with_flat_values(tf.fill(tf.shape(asked.flat_values), -1))
        token_start, token_end = (packing.values([not_context, passage[k]], -1, -1, -1) for k in ("start", "end"))
        span = best_span(out["start_logits"], out["end_logits"], token_start, token_end,
                         self._spec.max_answer_length)
        length = tf.maximum(span["answer_end"] - span["answer_start"], 0)
        out["answer"] = tf.strings.substr(context, tf.maximum(span["answer_start"], 0), length, unit="UTF8_CHAR")
        out.update(span)
        return out


_TEXT_MODELS: dict[str, type[TaskModel]] = {
    SEQUENCE_CLASSIFICATION: SequenceClassificationModel,
    TOKEN_CLASSIFICATION: TokenClassificationModel,
    QUESTION_ANSWERING: QuestionAnsweringModel,
}


def build_task_model(config: BertConfig, read_weight: Callable[[str], np.ndarray], spec: TaskSpec,
                     tokenizer: TokenizerSpec, seq_length: int, text_signatures: bool = True,
                     precision: Precision = Precision()) -> TaskModel:
    """The exportable object of a fine-tuned BERT, weights streamed from `read_weight`; with
    `text_signatures`, raw-text signatures at `seq_length` tokens."""
    core = BertEncoderCore(config, read_weight, pooler=spec.uses_pooler, precision=precision)
    head = HEADS[spec.task](config, spec, read_weight, precision)
    cls = _TEXT_MODELS[spec.task] if text_signatures else TaskModel
    return cls(core, head, spec, tokenizer, seq_length, text_signatures)
