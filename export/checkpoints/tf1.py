"""Reader for the original google-research BERT checkpoint (TF1, name-based: `bert/...`)."""

from __future__ import annotations

import re

from export.checkpoints.base import TRANSPOSE, HeadLayout, SourceTensor, find_heads, invert_tables
from export.checkpoints.tf_files import TFCheckpointFiles, TFCheckpointReader
from export.tasks import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION

_EMBEDDINGS = {
    "bert/embeddings/word_embeddings": "embeddings/word",
    "bert/embeddings/position_embeddings": "embeddings/position",
    "bert/embeddings/token_type_embeddings": "embeddings/type",
    "bert/embeddings/LayerNorm/gamma": "embeddings/ln/gamma",
    "bert/embeddings/LayerNorm/beta": "embeddings/ln/beta",
    "bert/pooler/dense/kernel": "pooler/kernel",
    "bert/pooler/dense/bias": "pooler/bias",
}
_MLM_HEAD = {  # the pretraining checkpoint's masked-LM head; its decoder is the word embeddings
    "cls/predictions/transform/dense/kernel": "mlm/transform/kernel",
    "cls/predictions/transform/dense/bias": "mlm/transform/bias",
    "cls/predictions/transform/LayerNorm/gamma": "mlm/ln/gamma",
    "cls/predictions/transform/LayerNorm/beta": "mlm/ln/beta",
    "cls/predictions/output_bias": "mlm/output_bias",
}
_LAYER = re.compile(r"^bert/encoder/layer_(\d+)/(.+)$")
_LAYER_SUFFIXES = {
    "attention/self/query/kernel": "attention/query/kernel",
    "attention/self/query/bias": "attention/query/bias",
    "attention/self/key/kernel": "attention/key/kernel",
    "attention/self/key/bias": "attention/key/bias",
    "attention/self/value/kernel": "attention/value/kernel",
    "attention/self/value/bias": "attention/value/bias",
    "attention/output/dense/kernel": "attention/output/kernel",
    "attention/output/dense/bias": "attention/output/bias",
    "attention/output/LayerNorm/gamma": "attention/ln/gamma",
    "attention/output/LayerNorm/beta": "attention/ln/beta",
    "intermediate/dense/kernel": "intermediate/kernel",
    "intermediate/dense/bias": "intermediate/bias",
    "output/dense/kernel": "output/kernel",
    "output/dense/bias": "output/bias",
    "output/LayerNorm/gamma": "output/ln/gamma",
    "output/LayerNorm/beta": "output/ln/beta",
}
# Fine-tuning heads: kernels are stored [outputs, hidden] (the scripts multiply with transpose_b).
# run_classifier.py's head is on the pooled output; NER forks of it reuse its names on every token.
_HEADS = (
    HeadLayout("output_weights", "output_bias", TRANSPOSE, (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION),
               ("google-research run_classifier.py", "a run_classifier.py-style tagger")),
    HeadLayout("cls/squad/output_weights", "cls/squad/output_bias", TRANSPOSE, (QUESTION_ANSWERING,),
               ("google-research run_squad.py",)),
)
_HEAD_NAMES = {name for layout in _HEADS for name in (layout.kernel, layout.bias)}
# Present in real checkpoints, not part of the encoder: optimizer slots, the step counter and the
# next-sentence head (cls/seq_relationship).
_SKIPPED = re.compile(r"(^global_step$|/adam_[mv]$|^cls/seq_relationship/|^good_steps$|^loss_scale$)")


def google_name(canonical: str) -> str:
    """The google-research variable name of a canonical weight."""
    name = invert_tables(canonical, [*_EMBEDDINGS.items(), *_MLM_HEAD.items()], _LAYER_SUFFIXES.items(),
                         lambda index, suffix: f"bert/encoder/layer_{index}/{suffix}")
    if name is None:
        raise KeyError(canonical)
    return name


def looks_like_tf1(names: list[str]) -> bool:
    return any(name.startswith("bert/") for name in names)


class TF1CheckpointReader(TFCheckpointReader):
    format_name = "tf1"
    description = "google-research BERT (TF1 name-based checkpoint)"

    def source_name_for(self, canonical_name: str) -> str:
        return google_name(canonical_name)

    def __init__(self, files: TFCheckpointFiles):
        super().__init__(files)
        layers: set[int] = set()
        heads: dict[str, SourceTensor] = {}
        for name, shape in sorted(files.shapes.items()):
            if _SKIPPED.search(name):
                continue
            if name in _HEAD_NAMES:
                heads[name] = SourceTensor(name, shape)
                continue
            canonical = _EMBEDDINGS.get(name) or _MLM_HEAD.get(name)
            match = _LAYER.match(name)
            if match and match.group(2) in _LAYER_SUFFIXES:
                layers.add(int(match.group(1)))
                canonical = f"layer_{int(match.group(1))}/{_LAYER_SUFFIXES[match.group(2)]}"
            if canonical is None:
                self.unexpected.append(name)
            else:
                self.tensors[canonical] = SourceTensor(name, shape)
        self.num_layers = max(layers) + 1 if layers else 0
        self.heads = find_heads(_HEADS, heads)
