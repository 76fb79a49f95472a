"""The canonical weight layout every checkpoint reader maps onto.

Canonical names and layouts follow the original google-research checkpoint: dense kernels are
2-D [in, out], biases 1-D. Readers reshape their own layouts into these; the TF model builder and the
numpy reference both consume only these names.
"""

from __future__ import annotations

from export.config import BertConfig

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


def expected_shapes(config: BertConfig, pooler: bool = True) -> dict[str, tuple[int, ...]]:
    """Every canonical weight the encoder needs, in build order, with its shape. Without `pooler`
    (token classifiers and span heads use only sequence_output), the pooler's two are left out."""
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
    if pooler:
        shapes["pooler/kernel"] = (h, h)
        shapes["pooler/bias"] = (h,)
    return shapes


def mlm_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """The masked-LM head's canonical weights with their shapes."""
    h = config.hidden_size
    return dict(zip(MLM_NAMES, ((h, h), (h,), (h,), (h,), (config.vocab_size,))))
