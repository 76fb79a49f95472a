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
    export_format: str
    checkpoint_format: str
    checkpoint_description: str
    version: int
    sources: list[SourceFile]
    config: dict
    activation: str
    activation_convention: str
    untrained_weights: dict[str, str]
    do_lower_case: bool
    do_lower_case_decided_by: str
    variable_count: int
    parameter_count: int
    warnings: list[str]
    timings_seconds: dict[str, float]
    verification: dict | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False) + "\n"

    def summary_lines(self) -> list[str]:
        lines = [
            f"checkpoint: {self.checkpoint_description} [{self.checkpoint_format}]",
            f"config: L={self.config['num_hidden_layers']} H={self.config['hidden_size']} "
            f"A={self.config['num_attention_heads']} I={self.config['intermediate_size']} "
            f"V={self.config['vocab_size']} hidden_act={self.config['hidden_act']!r} read as {self.activation} "
            f"({self.activation_convention} convention)",
            f"do_lower_case: {self.do_lower_case} ({self.do_lower_case_decided_by})",
            f"format: {self.export_format}; {self.variable_count} variables, {self.parameter_count:,} parameters",
        ]
        if self.untrained_weights:
            lines.append(f"UNTRAINED: {', '.join(sorted(self.untrained_weights))} "
                         f"({'; '.join(sorted(set(self.untrained_weights.values())))})")
        if self.verification is None:
            lines.append("verification: skipped (--noverify)")
        else:
            v = self.verification
            lines.append(f"verification: {'PASSED' if v['passed'] else 'FAILED'}: max relative error "
                         f"{v['worst']:.3g} (tolerance {v['tolerance']:g}) over "
                         f"{', '.join(sorted(v['figures']))}")
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
