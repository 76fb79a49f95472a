"""The task heads of fine-tuned BERTs: the three tasks, their canonical head weights, how their
labels are named, and what a checkpoint's config says about them.

A head is one dense layer on the encoder: on `pooled_output` for sequence classification
(Hugging Face `BertForSequenceClassification`, google-research `run_classifier.py`, tf-models
`BertClassifier`), on every token of `sequence_output` for token classification
(`BertForTokenClassification`, tf-models `BertTokenClassifier`) and for question answering, whose
two columns are the start and end logits (`BertForQuestionAnswering`, `run_squad.py`, tf-models
`BertSpanLabeler`). Its canonical kernel is [hidden, outputs], as every other canonical kernel.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from export.config import BertConfig
from export.errors import InputError, read_input_text

SEQUENCE_CLASSIFICATION = "sequence_classification"
TOKEN_CLASSIFICATION = "token_classification"
QUESTION_ANSWERING = "question_answering"
TASKS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)

# Hugging Face's `problem_type` names; they decide what a sequence classifier's scores mean.
SINGLE_LABEL = "single_label_classification"  # softmax over the labels
MULTI_LABEL = "multi_label_classification"    # a sigmoid per label
REGRESSION = "regression"                     # raw scores, no probabilities
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)

HEAD_KERNEL, HEAD_BIAS = "head/kernel", "head/bias"
HEAD_NAMES = (HEAD_KERNEL, HEAD_BIAS)

# transformers' class names (config.json `architectures`) -> the task they fine-tune for.
HF_ARCHITECTURES = {
    "BertForSequenceClassification": SEQUENCE_CLASSIFICATION,
    "BertForTokenClassification": TOKEN_CLASSIFICATION,
    "BertForQuestionAnswering": QUESTION_ANSWERING,
}
QA_OUTPUTS = ("start", "end")  # the span head's two columns, in this order in every format
DEFAULT_MAX_ANSWER_LENGTH = 30  # tokens; google-research run_squad.py's --max_answer_length
# The raw-text signatures per task and their string inputs: the client contract (TF Serving REST
# users type these names).
TEXT_SIGNATURE_INPUTS = {
    SEQUENCE_CLASSIFICATION: {"serve_text": ("text",), "serve_text_pair": ("text", "text_pair")},
    TOKEN_CLASSIFICATION: {"serve_text": ("text",)},
    QUESTION_ANSWERING: {"serve_text": ("question", "context")},
}


def default_label_names(count: int) -> tuple[str, ...]:
    """Hugging Face's names for labels nobody named: LABEL_0, LABEL_1, ..."""
    return tuple(f"LABEL_{i}" for i in range(count))


@dataclasses.dataclass(frozen=True)
class TaskHints:
    """What a model's config JSON says about its head (Hugging Face configs; google-research ones say nothing)."""
    architectures: tuple[str, ...] = ()
    label_names: tuple[str, ...] | None = None  # id2label, in id order
    problem_type: str | None = None
    classifier_dropout: float | None = None

    @property
    def task(self) -> str | None:
        """The task the config's architecture names, if it names one."""
        return next((HF_ARCHITECTURES[a] for a in self.architectures if a in HF_ARCHITECTURES), None)


def parse_task_hints(data: Any, source: str) -> TaskHints:
    """Reads `architectures`, `id2label`, `problem_type` and `classifier_dropout` of a config JSON."""
    if not isinstance(data, dict):
        return TaskHints()
    architectures = data.get("architectures") or ()
    if not isinstance(architectures, (list, tuple)) or not all(isinstance(a, str) for a in architectures):
        raise InputError(f"{source}: architectures must be a list of class names, got {architectures!r}")
    label_names = None
    id2label = data.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict) or not id2label:
            raise InputError(f"{source}: id2label must be a non-empty object, got {id2label!r}")
        try:
            ids = sorted(int(key) for key in id2label)
        except (TypeError, ValueError):
            raise InputError(f"{source}: id2label keys must be label ids 0, 1, ..., got {sorted(id2label)!r}") from None
        if ids != list(range(len(ids))):
            raise InputError(f"{source}: id2label keys must be 0..{len(ids) - 1} without gaps, got {ids}")
        label_names = tuple(id2label[key] for key in sorted(id2label, key=int))
        check_label_names(label_names, f"{source}: id2label")
        num_labels = data.get("num_labels")
        if num_labels is not None and num_labels != len(label_names):
            raise InputError(f"{source}: num_labels={num_labels} but id2label names {len(label_names)} labels")
    problem_type = data.get("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise InputError(f"{source}: problem_type {problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
    dropout = data.get("classifier_dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                or not 0.0 <= dropout < 1.0):
        raise InputError(f"{source}: classifier_dropout must be in [0, 1) or null, got {dropout!r}")
    return TaskHints(tuple(architectures), label_names, problem_type,
                     None if dropout is None else float(dropout))


def check_label_names(names: tuple[str, ...], source: str) -> None:
    if not all(isinstance(n, str) and n.strip() == n and n for n in names):
        raise InputError(f"{source}: every label name must be a non-empty string without surrounding spaces, "
                         f"got {list(names)[:8]!r}")
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise InputError(f"{source}: label {name!r} appears twice (ids {seen[name]} and {index})")
        seen[name] = index


def read_label_names(flag_value: str | None, file_path: str | None) -> tuple[str, ...] | None:
    """--label_names (comma-separated) or --label_names_file (one name a line), in label-id order."""
    if flag_value and file_path:
        raise InputError("--label_names and --label_names_file are mutually exclusive; pass one")
    if flag_value:
        names = tuple(name.strip() for name in flag_value.split(","))
        check_label_names(names, "--label_names")
        return names
    if file_path:
        lines = read_input_text(file_path, "--label_names_file").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        names = tuple(line.strip() for line in lines)
        if not names:
            raise InputError(f"{os.path.basename(file_path)}: no label names")
        check_label_names(names, os.path.basename(file_path))
        return names
    return None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The head an export carries, as detected and checked (see `export.checkpoints.check`)."""
    task: str
    num_outputs: int  # the head's width: the label count, or 2 (start, end) for question answering
    label_names: tuple[str, ...] = ()  # in label-id order; () for question answering
    labels_from: str = ""  # "id2label in config.json", "--label_names", or "default names"
    problem_type: str | None = None  # sequence classification only
    head: str = ""  # the checkpoint's variables, e.g. "classifier.weight, classifier.bias"
    dropout: float = 0.1  # before the head, in training only
    max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH  # question answering's text signature

    @property
    def uses_pooler(self) -> bool:
        return self.task == SEQUENCE_CLASSIFICATION

    @property
    def has_probabilities(self) -> bool:
        return self.task == TOKEN_CLASSIFICATION or self.problem_type in (SINGLE_LABEL, MULTI_LABEL)

    @property
    def has_label_output(self) -> bool:
        """Whether the text signature can name one label per example (per token when tagging)."""
        return self.task == TOKEN_CLASSIFICATION or self.problem_type == SINGLE_LABEL

    def text_signature_inputs(self) -> dict[str, tuple[str, ...]]:
        """The text signatures of the task (when exported with them), by name, with their string inputs."""
        return TEXT_SIGNATURE_INPUTS[self.task]

    def tensor_outputs(self) -> tuple[str, ...]:
        """The outputs of `serving_default` and every tensor entry point, by name."""
        if self.task == QUESTION_ANSWERING:
            return ("start_logits", "end_logits")
        return ("logits", "probabilities") if self.has_probabilities else ("logits",)

    def text_extra_outputs(self) -> tuple[str, ...]:
        """What the text signatures return besides the tensor outputs."""
        if self.task == QUESTION_ANSWERING:
            return ("answer", "answer_start", "answer_end", "answer_score")
        if self.task == TOKEN_CLASSIFICATION:
            return ("labels", "token_start", "token_end")
        return ("label",) if self.has_label_output else ()

    def describe(self) -> str:
        if self.task == QUESTION_ANSWERING:
            return f"{self.task} (start and end logits) from {self.head}"
        shown = ", ".join(self.label_names[:6]) + (", ..." if len(self.label_names) > 6 else "")
        kind = f"; {self.problem_type}" if self.problem_type else ""
        return (f"{self.task} ({self.num_outputs} label{'s' if self.num_outputs != 1 else ''}: {shown}, "
                f"{self.labels_from}{kind}) from {self.head}")

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"label_names": list(self.label_names), "describe": self.describe()}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "TaskSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**({k: v for k, v in data.items() if k in fields} | {"label_names": tuple(data["label_names"])}))


def head_shapes(config: BertConfig, spec: TaskSpec) -> dict[str, tuple[int, ...]]:
    return {HEAD_KERNEL: (config.hidden_size, spec.num_outputs), HEAD_BIAS: (spec.num_outputs,)}
