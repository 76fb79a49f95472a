"""Shared plumbing for TensorFlow checkpoint files (`<prefix>.index` + `<prefix>.data-*`).

Both the TF1 name-based and the TF2 object-based formats live in such files; only the naming of
their variables differs, which is the business of `tf1.py` and `tf2.py`.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from export.checkpoints.base import CheckpointReader
from export.errors import InputError

FLAG = "--model_checkpoint_path"


def resolve_prefix(path: str) -> str:
    """Turns a checkpoint prefix, one of its files, or a directory holding one into the prefix."""
    if not path:
        raise InputError(f"{FLAG} is required")
    for suffix in (".index", ".meta"):
        if path.endswith(suffix) and os.path.isfile(path):
            path = path[: -len(suffix)]
    if ".data-" in os.path.basename(path) and os.path.isfile(path):
        path = path[: path.rindex(".data-")]
    if os.path.isdir(path):
        return _prefix_in_directory(path)
    if os.path.isfile(path + ".index"):
        return path
    if os.path.exists(path):
        raise InputError(f"{FLAG}: {path} is not a checkpoint prefix ({path}.index does not exist)")
    raise InputError(f"{FLAG}: {path} does not exist (expected a checkpoint prefix or a directory holding one)")


def _prefix_in_directory(directory: str) -> str:
    import tensorflow as tf  # TF only where a checkpoint is actually touched

    latest = tf.train.latest_checkpoint(directory)
    if latest and os.path.isfile(latest + ".index"):
        return latest
    indexes = sorted(glob.glob(os.path.join(glob.escape(directory), "*.index")))
    if len(indexes) == 1:
        return indexes[0][: -len(".index")]
    if not indexes:
        raise InputError(f"{FLAG}: no checkpoint (*.index file) in directory {directory}")
    names = ", ".join(os.path.basename(p) for p in indexes)
    raise InputError(f"{FLAG}: directory {directory} holds several checkpoints ({names}); pass one prefix")


class TFCheckpointFiles:
    """The variables of a TF checkpoint: names and shapes from the index, tensors read on demand."""

    def __init__(self, prefix: str):
        import tensorflow as tf

        self.prefix = prefix
        try:
            self._reader = tf.train.load_checkpoint(prefix)
            shapes = self._reader.get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as e:
            message = getattr(e, "message", str(e)).splitlines()[0]
            raise InputError(f"{prefix}.index: not a readable TensorFlow checkpoint ({message})") from e
        self.shapes: dict[str, tuple[int, ...]] = {name: tuple(shape) for name, shape in shapes.items()}

    @property
    def files(self) -> list[str]:
        data = sorted(glob.glob(glob.escape(self.prefix) + ".data-*"))
        return [self.prefix + ".index"] + data

    def read(self, name: str) -> np.ndarray:
        import tensorflow as tf

        try:
            return self._reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:  # IndexError: truncated
            message = getattr(e, "message", str(e)).splitlines()[0]
            raise InputError(f"{os.path.basename(self.prefix)}: cannot read variable {name} "
                             f"(truncated or corrupt .data file? {message})") from e


class TFCheckpointReader(CheckpointReader):
    """Base of the readers whose checkpoints are TF checkpoint files."""

    def __init__(self, files: TFCheckpointFiles):
        super().__init__()
        self._files = files

    @property
    def source_files(self) -> list[str]:
        return self._files.files

    @property
    def checkpoint_path(self) -> str:
        return self._files.prefix

    def _read_source(self, name: str) -> np.ndarray:
        return self._files.read(name)
