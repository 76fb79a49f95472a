"""Saving the traced entry points without `tf.saved_model.save` tracing them again.

`save` lists each `tf.function`'s concrete functions and asks for them again, by their
structured input signature, inside its SaveContext. Two things make that a cache miss, and so a
second trace of every encoder graph (seconds on BERT-large): tf.function keys its cache on
whether a SaveContext is active, and on the TensorSpecs' names, which a listed signature spells
as tf.function named the placeholders (`inputs_0`, `inputs_input_word_ids`). Tracing inside the
same SaveContext, with specs named that way, makes `save` find every trace it asks for.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import tensorflow as tf

SAVE_OPTIONS = tf.saved_model.SaveOptions()


@contextlib.contextmanager
def tracing_for_save() -> Iterator[None]:
    """The SaveContext `save` runs in, for tracing ahead of it."""
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:  # a TensorFlow without it: save traces again, and the export is the same
        yield
        return
    with save_context.save_context(SAVE_OPTIONS):
        yield


def call_specs(names: tuple[str, ...] | None, count: int = 0, argument: str = "inputs"):
    """[None, None] int32 specs for a `__call__(inputs, training)`: a dict of `names`, or (names
    None) a list of `count`, each named as `save` will ask for it."""
    def spec(suffix) -> tf.TensorSpec:
        return tf.TensorSpec([None, None], tf.int32, name=f"{argument}_{suffix}")

    if names is None:
        return [spec(i) for i in range(count)]
    return {name: spec(name) for name in names}


def save(obj, path: str, signatures: dict) -> None:
    tf.saved_model.save(obj, path, signatures=signatures, options=SAVE_OPTIONS)
