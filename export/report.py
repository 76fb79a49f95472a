"""The machine-readable export report, written to `<version>/assets.extra/export_report.json`.

`assets.extra/` is where TF Serving looks for optional extras (warmup requests); neither TF
Serving nor `hub.load` / `tf.saved_model.load` read other files there. The report names source
files by base name only: no path of the exporting machine goes into an export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys

REPORT_RELATIVE_PATH = os.path.join("assets.extra", "export_report.json")


@dataclasses.dataclass
class SourceFile:
    name: str
    role: str
    bytes: int
    sha256: str


@dataclasses.dataclass
class ExportReport:
    tool: str
    tensorflow_version: str
    python_version: str
    export_type: str  # model, model_with_mlm, preprocessing, or a task (export/tasks.py)
    version: int
    sources: list[SourceFile]
    tokenizer: dict  # kind (wordpiece / sentencepiece), file, vocab_size
    do_lower_case: bool
    do_lower_case_decided_by: str
    warnings: list[str]
    timings_seconds: dict[str, float]
    verification: dict | None = None
    config: dict | None = None  # None only for a preprocessing export given no config
    signatures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # what detection decided
    # Encoders only:
    export_format: str | None = None
    checkpoint_format: str | None = None
    checkpoint_description: str | None = None
    activation: str | None = None
    activation_convention: str | None = None
    untrained_weights: dict[str, str] = dataclasses.field(default_factory=dict)
    variable_count: int | None = None  # with model_with_mlm or a task: including the head's
    parameter_count: int | None = None
    task: dict | None = None  # task exports: the head (export.tasks.TaskSpec)
    dtype: str | None = None  # models: float32, or bfloat16 (bf16 weights and matmuls; not fine-tunable)
    # Preprocessing, and task exports' text signatures:
    default_seq_length: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    def summary_lines(self) -> list[str]:
        lines = []
        if self.checkpoint_format:
            lines.append(f"checkpoint: {self.checkpoint_description} [{self.checkpoint_format}]")
        if self.config:
            c = self.config
            lines.append(f"config: L={c['num_hidden_layers']} H={c['hidden_size']} A={c['num_attention_heads']} "
                         f"I={c['intermediate_size']} V={c['vocab_size']} hidden_act={c['hidden_act']!r}"
                         + (f" read as {self.activation} ({self.activation_convention} convention)"
                            if self.activation else ""))
        lines.append(f"tokenizer: {self.tokenizer['kind']} ({self.tokenizer['file']}, "
                     f"{self.tokenizer['vocab_size']} entries)")
        lines.append(f"do_lower_case: {self.do_lower_case} ({self.do_lower_case_decided_by})")
        if self.export_format:
            lines.append(f"type: {self.export_type}; format: {self.export_format}; {self.variable_count} variables, "
                         f"{self.parameter_count:,} parameters")
        elif self.task:
            text = (f"text signatures at seq_length {self.default_seq_length}" if self.default_seq_length
                    else "no text signatures")
            lines.append(f"type: {self.export_type}; {self.variable_count} variables, {self.parameter_count:,} "
                         f"parameters; {text}")
            lines.append(f"task head: {self.task['describe']} (--export_type=model exports the bare encoder)")
        else:
            lines.append(f"type: {self.export_type}; default_seq_length: {self.default_seq_length}")
        if self.dtype and self.dtype != "float32":
            lines.append(f"dtype: {self.dtype} (matmuls and their weights in {self.dtype}; LayerNorm, softmax "
                         "and residual sums in float32; fine-tunable: no)")
        lines += [f"note: {note}" for note in self.notes]
        if self.untrained_weights:
            lines.append(f"UNTRAINED: {', '.join(sorted(self.untrained_weights))} "
                         f"({'; '.join(sorted(set(self.untrained_weights.values())))})")
        if self.verification is None:
            lines.append("verification: skipped (--noverify)")
        else:
            v = self.verification
            lines.append(f"verification: {'PASSED' if v['passed'] else 'FAILED'}: {v['summary']}")
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_seconds.items()))
        return lines


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (checkpoints run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_file(path: str, role: str) -> SourceFile:
    return SourceFile(os.path.basename(path), role, os.path.getsize(path), sha256_of(path))


def runtime_versions() -> tuple[str, str]:
    import tensorflow as tf

    return tf.__version__, f"{platform.python_implementation()} {sys.version.split()[0]}"
