"""Float64 numpy references of the task heads, written from the training scripts' formulas
(google-research run_classifier.py / run_squad.py, transformers' BertFor* heads) and sharing no
code with their TF builders (`export.build.heads`). One function per task, in `REFERENCES`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from export.tasks import MULTI_LABEL, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, SINGLE_LABEL, \
    TOKEN_CLASSIFICATION, TaskSpec


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sequence_classifier(spec: TaskSpec, pooled: np.ndarray, sequence: np.ndarray, kernel: np.ndarray,
                        bias: np.ndarray) -> dict[str, np.ndarray]:
    """run_classifier.py: logits = pooled_output . W^T + b (W stored [labels, hidden]; here [hidden, labels])."""
    logits = pooled @ kernel + bias
    if spec.problem_type == SINGLE_LABEL:
        return {"logits": logits, "probabilities": softmax(logits)}
    if spec.problem_type == MULTI_LABEL:
        return {"logits": logits, "probabilities": sigmoid(logits)}
    return {"logits": logits}


def token_classifier(spec: TaskSpec, pooled: np.ndarray | None, sequence: np.ndarray, kernel: np.ndarray,
                     bias: np.ndarray) -> dict[str, np.ndarray]:
    """BertForTokenClassification: per-token logits, softmax over the labels."""
    logits = sequence @ kernel + bias
    return {"logits": logits, "probabilities": softmax(logits)}


def span_head(spec: TaskSpec, pooled: np.ndarray | None, sequence: np.ndarray, kernel: np.ndarray,
              bias: np.ndarray) -> dict[str, np.ndarray]:
    """run_squad.py: [B, S, 2] logits, transposed and unstacked: column 0 starts, column 1 ends."""
    logits = sequence @ kernel + bias
    return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


REFERENCES: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    SEQUENCE_CLASSIFICATION: sequence_classifier,
    TOKEN_CLASSIFICATION: token_classifier,
    QUESTION_ANSWERING: span_head,
}


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, context: np.ndarray,
              max_answer_length: int) -> tuple[int, int, float] | None:
    """One row: the context tokens i <= j < i + max_answer_length maximising start[i] + end[j]
    (run_squad.py's choice, by exhaustive search); None when the row has no context token."""
    best = None
    positions = np.flatnonzero(context)
    for i in positions:
        for j in positions[(positions >= i) & (positions < i + max_answer_length)]:
            score = float(start_logits[i]) + float(end_logits[j])
            if best is None or score > best[2]:
                best = (int(i), int(j), score)
    return best
