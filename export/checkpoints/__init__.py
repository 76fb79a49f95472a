"""Checkpoint readers. `open_checkpoint` detects the format and returns its reader.

Adding a format means one new module with a `CheckpointReader` subclass: TF checkpoint formats
register a `looks_like_*` test in `_FORMATS` below; Hugging Face safetensors are recognised by
their files.
"""

from __future__ import annotations

import os

from export.checkpoints.base import CheckpointReader, SourceTensor
from export.checkpoints.hf import HFCheckpointReader, safetensors_files
from export.checkpoints.tf1 import TF1CheckpointReader, looks_like_tf1
from export.checkpoints.tf2 import TF2CheckpointReader, looks_like_tf2
from export.checkpoints.tf_files import TFCheckpointFiles, resolve_prefix
from export.errors import InputError, listing

_FORMATS = (
    (looks_like_tf1, TF1CheckpointReader),
    (looks_like_tf2, TF2CheckpointReader),
)

__all__ = ["CheckpointReader", "SourceTensor", "open_checkpoint"]


def open_checkpoint(path: str) -> CheckpointReader:
    """Opens the checkpoint at `path` (prefix, file or directory) with the reader for its format."""
    hf_files = safetensors_files(path) if path else None
    if hf_files:
        return HFCheckpointReader(hf_files, path)
    files = TFCheckpointFiles(resolve_prefix(path))
    names = sorted(files.shapes)
    for looks_like, reader in _FORMATS:
        if looks_like(names):
            return reader(files)
    raise InputError(f"{os.path.basename(files.prefix)}: not a BERT checkpoint this tool reads (expected "
                     "google-research 'bert/...', tf-models 'encoder/...' or 'model/...' variables, or Hugging Face "
                     f"model.safetensors; found: {listing(names) or 'no variables'})",
                     detail="variables: " + ", ".join(names))
