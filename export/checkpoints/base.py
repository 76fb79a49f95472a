"""The one small interface every checkpoint reader implements.

A reader knows how its format names and lays out the encoder's tensors. It maps each canonical
name (see `export.weights`) to one source variable plus a reshape, and reads tensors one at a time,
so that a caller can stream them into TF variables without holding a second copy of the weights.
"""

from __future__ import annotations

import abc
import dataclasses
import os

import numpy as np

from export.errors import InputError

# How a source tensor's dims merge into the canonical 1-D / 2-D layout.
KEEP = "keep"          # already canonical
MERGE_TRAILING = "trailing"  # [in, heads, head_size] -> [in, heads * head_size]
MERGE_LEADING = "leading"    # [heads, head_size, out] -> [heads * head_size, out]
MERGE_ALL = "all"      # [heads, head_size] -> [heads * head_size]


def merged_shape(shape: tuple[int, ...], merge: str) -> tuple[int, ...]:
    if merge == KEEP or len(shape) == 0:
        return tuple(shape)
    if merge == MERGE_TRAILING:
        return (shape[0], int(np.prod(shape[1:])))
    if merge == MERGE_LEADING:
        return (int(np.prod(shape[:-1])), shape[-1])
    if merge == MERGE_ALL:
        return (int(np.prod(shape)),)
    raise ValueError(f"unknown merge rule {merge!r}")


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """Where a canonical weight lives in the source checkpoint."""
    name: str
    shape: tuple[int, ...]  # as stored
    merge: str = KEEP

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        return merged_shape(self.shape, self.merge)


class CheckpointReader(abc.ABC):
    """A checkpoint of one format, mapped onto canonical weight names."""

    format_name: str = ""
    description: str = ""

    @property
    @abc.abstractmethod
    def source_files(self) -> list[str]:
        """Files the checkpoint consists of (hashed into the export report)."""

    def __init__(self) -> None:
        # Filled by the subclass while it maps its variable names.
        self.tensors: dict[str, SourceTensor] = {}  # canonical name -> where it is stored
        self.unexpected: list[str] = []  # neither encoder weights nor known, skippable extras
        self.num_layers = 0  # transformer layers present in the checkpoint

    @abc.abstractmethod
    def _read_source(self, name: str) -> np.ndarray:
        """Reads one source variable as stored."""

    @property
    @abc.abstractmethod
    def checkpoint_path(self) -> str:
        """The path to open this checkpoint again (e.g. in the verification process)."""

    def source_name_for(self, canonical_name: str) -> str:
        """How this format would name a canonical weight (for messages about missing ones)."""
        return canonical_name

    def read(self, canonical_name: str) -> np.ndarray:
        """Reads one canonical weight as float32 in canonical layout."""
        source = self.tensors[canonical_name]
        array = self._read_source(source.name)
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            raise InputError(f"{self.display_name}: variable {source.name} has dtype {array.dtype}, "
                             "expected floating point")
        array = np.asarray(array, dtype=np.float32).reshape(source.canonical_shape)
        if not np.isfinite(array).all():
            raise InputError(f"{self.display_name}: variable {source.name} contains NaN or Inf values")
        return array

    @property
    def display_name(self) -> str:
        return os.path.basename(self.source_files[0]) if self.source_files else self.format_name
