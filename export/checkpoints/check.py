"""Checks that a checkpoint, as its reader maps it, holds what the config describes.

Above the readers (they import `export.weights` for the canonical names; this module imports a
reader's interface): the pre-flight validation and the verifier both call it before reading any
weight.
"""

from __future__ import annotations

from export.checkpoints.base import CheckpointReader
from export.config import BertConfig
from export.errors import InputError
from export.weights import MLM_DECODER, OPTIONAL_CLASSES, expected_shapes, mlm_shapes


def check_mlm_head(reader: CheckpointReader, config: BertConfig, config_name: str) -> None:
    """Checks the checkpoint holds the whole masked-LM head, in the shapes `config` implies, and
    that any stored decoder matrix is the word embeddings (the tied decoder this tool exports)."""
    ckpt = reader.display_name
    expected = mlm_shapes(config)
    missing = [name for name in expected if name not in reader.tensors]
    if missing:
        raise InputError(f"{ckpt} lacks the masked-LM head --export_type=model_with_mlm needs: "
                         + ", ".join(reader.source_name_for(m) for m in missing)
                         + " (pretraining checkpoints hold it; fine-tuned ones usually do not)")
    wrong = [f"{reader.tensors[name].name} is {list(reader.tensors[name].shape)}, expected {list(shape)}"
             for name, shape in expected.items() if reader.tensors[name].canonical_shape != shape]
    if wrong:
        raise InputError(f"{ckpt} does not match {config_name}: " + "; ".join(wrong))
    decoder = reader.tensors.get(MLM_DECODER)
    if decoder is not None:
        import numpy as np

        word = reader.read("embeddings/word")
        if decoder.canonical_shape != word.shape or not np.array_equal(reader.read(MLM_DECODER), word):
            raise InputError(f"{ckpt}: the masked-LM decoder {decoder.name} is not tied to the word "
                             f"embeddings {reader.source_name_for('embeddings/word')} (an untied decoder "
                             "is not supported)")


def check_checkpoint(reader: CheckpointReader, config: BertConfig, config_name: str,
                     strict: bool = False) -> list[str]:
    """Checks the checkpoint holds exactly the encoder `config` describes, before anything is read.

    Raises InputError naming the first class of mismatch (layer count, sizes, missing variables by
    name, wrong shapes); returns warnings (unexpected extra variables, unless `strict`).
    """
    ckpt = reader.display_name
    if reader.num_layers != config.num_hidden_layers:
        raise InputError(f"{ckpt} has {reader.num_layers} transformer layers but {config_name} says "
                         f"num_hidden_layers={config.num_hidden_layers}")
    word = reader.tensors.get("embeddings/word")
    if word is not None:
        rows, width = word.canonical_shape[0], word.canonical_shape[-1]
        if width != config.hidden_size:
            raise InputError(f"{ckpt} has hidden size {width} (word embeddings {list(word.shape)}) but "
                             f"{config_name} says hidden_size={config.hidden_size}")
        if rows != config.vocab_size:
            raise InputError(f"{ckpt} has {rows} word-embedding rows but {config_name} says "
                             f"vocab_size={config.vocab_size}")
    expected = expected_shapes(config)
    missing = [name for name in expected if name not in reader.tensors]
    warnings = []
    for tensor_class, (names, consequence) in OPTIONAL_CLASSES.items():
        if not set(names) <= set(missing):
            continue
        message = (f"{ckpt} has no {tensor_class} ({', '.join(reader.source_name_for(n) for n in names)}): "
                   f"{consequence}")
        if strict:
            raise InputError(message + " (--strict)")
        for name in names:
            reader.initialise_missing(name, expected[name], consequence, config.initializer_range)
            missing.remove(name)
        warnings.append("UNTRAINED WEIGHTS: " + message)
    if missing:
        raise InputError(f"{ckpt} lacks {len(missing)} encoder variable(s): "
                         + ", ".join(reader.source_name_for(m) for m in missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
    wrong = [f"{reader.tensors[name].name} is {list(reader.tensors[name].shape)}, expected {list(shape)}"
             for name, shape in expected.items()
             if name in reader.tensors and reader.tensors[name].canonical_shape != shape]
    if wrong:
        raise InputError(f"{ckpt} does not match {config_name}: " + "; ".join(wrong[:6])
                         + (f"; ... ({len(wrong)} in all)" if len(wrong) > 6 else ""))
    unexpected = reader.unexpected
    if not unexpected:
        return warnings
    message = (f"{ckpt} holds {len(unexpected)} unexpected variable(s), not exported: "
               + ", ".join(unexpected[:12]) + (" ..." if len(unexpected) > 12 else ""))
    if strict:
        raise InputError(message + " (--strict)")
    return warnings + [message]

