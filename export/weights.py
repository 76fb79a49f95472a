"""The canonical weight layout every checkpoint reader maps onto.

Canonical names and layouts follow the original google-research checkpoint: dense kernels are
2-D [in, out], biases 1-D. Readers reshape their own layouts into these; the TF model builder and the
numpy reference both consume only these names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from export.config import BertConfig
from export.errors import InputError

if TYPE_CHECKING:
    from export.checkpoints import CheckpointReader

EMBEDDING_NAMES = ("embeddings/word", "embeddings/position", "embeddings/type",
                   "embeddings/ln/gamma", "embeddings/ln/beta")
LAYER_SUFFIXES = (
    "attention/query/kernel", "attention/query/bias",
    "attention/key/kernel", "attention/key/bias",
    "attention/value/kernel", "attention/value/bias",
    "attention/output/kernel", "attention/output/bias",
    "attention/ln/gamma", "attention/ln/beta",
    "intermediate/kernel", "intermediate/bias",
    "output/kernel", "output/bias",
    "output/ln/gamma", "output/ln/beta",
)
POOLER_NAMES = ("pooler/kernel", "pooler/bias")
# The masked-LM head (google-research `cls/predictions`): a dense transform in the encoder's
# activation, a LayerNorm, then logits against the word embeddings (the decoder is tied to them)
# plus an output bias.
MLM_NAMES = ("mlm/transform/kernel", "mlm/transform/bias", "mlm/ln/gamma", "mlm/ln/beta", "mlm/output_bias")
# A separate copy of the decoder matrix some formats store (Hugging Face `cls.predictions.decoder
# .weight`, tf-models' `masked_lm/embedding_table`); it must equal the word embeddings.
MLM_DECODER = "mlm/decoder"

# Weight classes a checkpoint may lack and still export (with a loud warning, or an error with
# --strict): name -> (canonical names, what exporting without them means).
OPTIONAL_CLASSES = {
    "pooler": (POOLER_NAMES, "pooled_output is UNTRAINED (randomly initialised pooler); "
                             "sequence_output is unaffected"),
    "token type embeddings": (("embeddings/type",), "initialised to zeros: input_type_ids have no effect"),
}


def layer_name(index: int, suffix: str) -> str:
    return f"layer_{index}/{suffix}"


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical weight the encoder needs, in build order, with its shape."""
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings/word": (config.vocab_size, h),
        "embeddings/position": (config.max_position_embeddings, h),
        "embeddings/type": (config.type_vocab_size, h),
        "embeddings/ln/gamma": (h,),
        "embeddings/ln/beta": (h,),
    }
    per_layer = {
        "attention/query/kernel": (h, h), "attention/query/bias": (h,),
        "attention/key/kernel": (h, h), "attention/key/bias": (h,),
        "attention/value/kernel": (h, h), "attention/value/bias": (h,),
        "attention/output/kernel": (h, h), "attention/output/bias": (h,),
        "attention/ln/gamma": (h,), "attention/ln/beta": (h,),
        "intermediate/kernel": (h, i), "intermediate/bias": (i,),
        "output/kernel": (i, h), "output/bias": (h,),
        "output/ln/gamma": (h,), "output/ln/beta": (h,),
    }
    for index in range(config.num_hidden_layers):
        for suffix in LAYER_SUFFIXES:
            shapes[layer_name(index, suffix)] = per_layer[suffix]
    shapes["pooler/kernel"] = (h, h)
    shapes["pooler/bias"] = (h,)
    return shapes


def mlm_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """The masked-LM head's canonical weights with their shapes."""
    h = config.hidden_size
    return dict(zip(MLM_NAMES, ((h, h), (h,), (h,), (h,), (config.vocab_size,))))


def check_mlm_head(reader: "CheckpointReader", config: BertConfig, config_name: str) -> None:
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


def check_checkpoint(reader: "CheckpointReader", config: BertConfig, config_name: str,
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

