"""The one small interface every checkpoint reader implements.

A reader knows how its format names and lays out the encoder's tensors. It maps each canonical
name (see `export.weights`) to one source variable plus a reshape, and reads tensors one at a time,
so that a caller can stream them into TF variables without holding a second copy of the weights.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
from typing import Callable, Iterable

import numpy as np

from export.config import GOOGLE
from export.errors import InputError

# How a source tensor's dims merge into the canonical 1-D / 2-D layout.
KEEP = "keep"          # already canonical
MERGE_TRAILING = "trailing"  # [in, heads, head_size] -> [in, heads * head_size]
MERGE_LEADING = "leading"    # [heads, head_size, out] -> [heads * head_size, out]
MERGE_ALL = "all"      # [heads, head_size] -> [heads * head_size]
TRANSPOSE = "transpose"  # [out, in] (torch Linear) -> [in, out]


def merged_shape(shape: tuple[int, ...], merge: str) -> tuple[int, ...]:
    if merge == KEEP or len(shape) == 0:
        return tuple(shape)
    if merge == MERGE_TRAILING:
        return (shape[0], int(np.prod(shape[1:])))
    if merge == MERGE_LEADING:
        return (int(np.prod(shape[:-1])), shape[-1])
    if merge == MERGE_ALL:
        return (int(np.prod(shape)),)
    if merge == TRANSPOSE:
        return tuple(reversed(shape))
    raise ValueError(f"unknown merge rule {merge!r}")


def invert_tables(canonical_name: str, top: Iterable[tuple[str, str]], per_layer: Iterable[tuple[str, str]],
                  layer_name: Callable[[str, str], str]) -> str | None:
    """A reader's source name for a canonical weight, from its (source, canonical) tables:
    `top` for whole names, `per_layer` for suffixes inside a layer, `layer_name(index, source
    suffix)` to spell a layer's variable. None when the tables have no such weight."""
    for source, canonical in top:
        if canonical == canonical_name:
            return source
    layer, _, suffix = canonical_name.partition("/")
    for source, canonical in per_layer:
        if canonical == suffix:
            return layer_name(layer.removeprefix("layer_"), source)
    return None


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """Where a canonical weight lives in the source checkpoint."""
    name: str
    shape: tuple[int, ...]  # as stored
    merge: str = KEEP

    @property
    def canonical_shape(self) -> tuple[int, ...]:
        return merged_shape(self.shape, self.merge)


@dataclasses.dataclass(frozen=True)
class HeadCandidate:
    """A task head as a reader found it: its variables (None where the checkpoint lacks one) and
    the tasks its format's code trains such a head for, the default first. Which candidate is
    exported, and as which task, is decided above the readers (`export.checkpoints.check`)."""
    tasks: tuple[str, ...]
    kernel: SourceTensor | None
    bias: SourceTensor | None
    kernel_name: str  # the variable names as the format spells them, for messages
    bias_name: str
    trained_by: tuple[str, ...]  # per task, e.g. "google-research run_classifier.py"

    @property
    def names(self) -> str:
        return f"{self.kernel_name}, {self.bias_name}"

    def describe(self, task: str | None = None) -> str:
        """Its variables and what trained them (for `task`, else for every task it may be)."""
        by = self.trained_by[self.tasks.index(task)] if task else " / ".join(self.trained_by)
        return f"{self.names} ({by})"


@dataclasses.dataclass(frozen=True)
class HeadLayout:
    """How one format stores one kind of task head: its two variables (keys of the reader's
    lookup), how the stored kernel becomes [hidden, outputs], and what its code trains it for."""
    kernel: str
    bias: str
    kernel_merge: str
    tasks: tuple[str, ...]
    trained_by: tuple[str, ...]  # per task

    def candidate(self, found: dict[str, SourceTensor]) -> HeadCandidate | None:
        """The head among the variables `found` (lookup key -> where stored), if any part of it is there."""
        kernel, bias = found.get(self.kernel), found.get(self.bias)
        if kernel is None and bias is None:
            return None
        return HeadCandidate(self.tasks, kernel and dataclasses.replace(kernel, merge=self.kernel_merge), bias,
                             kernel.name if kernel else self.kernel, bias.name if bias else self.bias,
                             self.trained_by)


def find_heads(layouts: Iterable[HeadLayout], found: dict[str, SourceTensor]) -> list[HeadCandidate]:
    return [c for c in (layout.candidate(found) for layout in layouts) if c is not None]


class CheckpointReader(abc.ABC):
    """A checkpoint of one format, mapped onto canonical weight names."""

    format_name: str = ""
    description: str = ""
    activation_convention: str = GOOGLE  # what this format's code means by `hidden_act`

    @property
    @abc.abstractmethod
    def source_files(self) -> list[str]:
        """Files the checkpoint consists of (hashed into the export report)."""

    def __init__(self) -> None:
        # Filled by the subclass while it maps its variable names.
        self.tensors: dict[str, SourceTensor] = {}  # canonical name -> where it is stored
        self.unexpected: list[str] = []  # neither encoder weights nor known, skippable extras
        self.num_layers = 0  # transformer layers present in the checkpoint
        self.untrained: dict[str, str] = {}  # canonical name -> why it is initialised, not read
        self.heads: list[HeadCandidate] = []  # fine-tuned task heads found (none in a pretrained checkpoint)
        self._initial_shapes: dict[str, tuple[int, ...]] = {}
        self._initial_stddev = 0.02

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

    def initialise_missing(self, canonical_name: str, shape: tuple[int, ...], why: str,
                           stddev: float = 0.02) -> None:
        """Declares a weight the checkpoint lacks as untrained: initialised as tf-models initialises
        it (truncated normal for kernels, zeros for biases), deterministically from its name, so that
        the exporter and the verifier's reference see the same values."""
        self.untrained[canonical_name] = why
        self._initial_shapes[canonical_name] = shape
        self._initial_stddev = stddev

    def _initial_value(self, canonical_name: str) -> np.ndarray:
        shape = self._initial_shapes[canonical_name]
        if len(shape) == 1 or canonical_name.startswith("embeddings/"):
            return np.zeros(shape, np.float32)
        seed = int.from_bytes(hashlib.sha256(canonical_name.encode()).digest()[:8], "little")
        values = np.random.default_rng(seed).standard_normal(shape)
        return (np.clip(values, -2.0, 2.0) * self._initial_stddev).astype(np.float32)

    def read(self, canonical_name: str) -> np.ndarray:
        """Reads one canonical weight as float32 in canonical layout."""
        if canonical_name in self.untrained:
            return self._initial_value(canonical_name)
        source = self.tensors[canonical_name]
        array = self._read_source(source.name)
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != "bfloat16":
            raise InputError(f"{self.display_name}: variable {source.name} has dtype {array.dtype}, "
                             "expected floating point")
        array = np.asarray(array, dtype=np.float32)
        array = array.T if source.merge == TRANSPOSE else array.reshape(source.canonical_shape)
        if not np.isfinite(array).all():
            raise InputError(f"{self.display_name}: variable {source.name} contains NaN or Inf values")
        return array

    @property
    def display_name(self) -> str:
        return os.path.basename(self.source_files[0]) if self.source_files else self.format_name
