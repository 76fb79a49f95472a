"""Reader for tf-models-official TF2 object-based checkpoints of `BertEncoder` / `BertEncoderV2`.

Saved as `tf.train.Checkpoint(encoder=...)` (older ones: `model=`). Two layouts exist: the
subclassed `BertEncoderV2` names its sublayers (`_embedding_layer`, `_transformer_layers/3/...`);
the functional `BertEncoder` (what tf-models' TF1->TF2 converter writes) numbers them
(`layer_with_weights-N`: word, position, type embeddings, embedding LayerNorm, the transformer
layers, then the pooler).
"""

from __future__ import annotations

import re

from export.checkpoints.base import KEEP, MERGE_ALL, MERGE_LEADING, MERGE_TRAILING, HeadLayout, SourceTensor, \
    find_heads, invert_tables
from export.checkpoints.tf_files import TFCheckpointFiles, TFCheckpointReader
from export.errors import InputError
from export.tasks import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from export.weights import MLM_DECODER

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_ROOTS = ("encoder", "model")
_NAMED_TOP = {
    "_embedding_layer/embeddings": "embeddings/word",
    "_position_embedding_layer/embeddings": "embeddings/position",
    "_type_embedding_layer/embeddings": "embeddings/type",
    "_embedding_norm_layer/gamma": "embeddings/ln/gamma",
    "_embedding_norm_layer/beta": "embeddings/ln/beta",
    "_pooler_layer/kernel": "pooler/kernel",
    "_pooler_layer/bias": "pooler/bias",
}
_NUMBERED_TOP = {  # functional BertEncoder: index of layer_with_weights-N -> names
    0: {"embeddings": "embeddings/word"},
    1: {"embeddings": "embeddings/position"},
    2: {"embeddings": "embeddings/type"},
    3: {"gamma": "embeddings/ln/gamma", "beta": "embeddings/ln/beta"},
}
_LAYER_SUFFIXES = {
    "_attention_layer/_query_dense/kernel": ("attention/query/kernel", MERGE_TRAILING),
    "_attention_layer/_query_dense/bias": ("attention/query/bias", MERGE_ALL),
    "_attention_layer/_key_dense/kernel": ("attention/key/kernel", MERGE_TRAILING),
    "_attention_layer/_key_dense/bias": ("attention/key/bias", MERGE_ALL),
    "_attention_layer/_value_dense/kernel": ("attention/value/kernel", MERGE_TRAILING),
    "_attention_layer/_value_dense/bias": ("attention/value/bias", MERGE_ALL),
    "_attention_layer/_output_dense/kernel": ("attention/output/kernel", MERGE_LEADING),
    "_attention_layer/_output_dense/bias": ("attention/output/bias", KEEP),
    "_attention_layer_norm/gamma": ("attention/ln/gamma", KEEP),
    "_attention_layer_norm/beta": ("attention/ln/beta", KEEP),
    "_intermediate_dense/kernel": ("intermediate/kernel", KEEP),
    "_intermediate_dense/bias": ("intermediate/bias", KEEP),
    "_output_dense/kernel": ("output/kernel", KEEP),
    "_output_dense/bias": ("output/bias", KEEP),
    "_output_layer_norm/gamma": ("output/ln/gamma", KEEP),
    "_output_layer_norm/beta": ("output/ln/beta", KEEP),
}
# BertPretrainerV2's masked-LM head, saved beside the encoder as `masked_lm/...`.
_MLM_ROOT = "masked_lm"
_MLM_HEAD = {
    "dense/kernel": "mlm/transform/kernel",
    "dense/bias": "mlm/transform/bias",
    "layer_norm/gamma": "mlm/ln/gamma",
    "layer_norm/beta": "mlm/ln/beta",
    "output_bias.Sbias": "mlm/output_bias",
    "embedding_table": MLM_DECODER,  # the encoder's word embeddings, saved again by the head
}
# tf-models' task models, saved as `Checkpoint(model=...)` by its trainer: the encoder is the
# model's first layer with weights, the head its second. Kernels are [hidden, outputs].
_TASK_ENCODER, _TASK_HEAD = "layer_with_weights-0/", "layer_with_weights-1/"
_HEADS = (
    HeadLayout("out_proj/kernel", "out_proj/bias", KEEP, (SEQUENCE_CLASSIFICATION,), ("tf-models BertClassifier",)),
    HeadLayout("kernel", "bias", KEEP, (TOKEN_CLASSIFICATION,), ("tf-models BertTokenClassifier",)),
    HeadLayout("layer_with_weights-0/kernel", "layer_with_weights-0/bias", KEEP, (QUESTION_ANSWERING,),
               ("tf-models BertSpanLabeler",)),
)
_NAMED_LAYER = re.compile(r"^_transformer_layers/(\d+)/(.+)$")
_NUMBERED = re.compile(r"^layer_with_weights-(\d+)/(.+)$")
_SKIPPED = re.compile(r"(^_CHECKPOINTABLE_OBJECT_GRAPH$|^save_counter/|/\.OPTIMIZER_SLOT/|^optimizer/)")


def _encoder_root(names: list[str]) -> str | None:
    for root in _ROOTS:
        if any(n.startswith(root + "/") and n.endswith(_SUFFIX) for n in names):
            return root
    return None


def _mlm_head_path(name: str) -> str | None:
    if name.startswith(_MLM_ROOT + "/") and name.endswith(_SUFFIX):
        return name[len(_MLM_ROOT) + 1: -len(_SUFFIX)]
    return None


def _is_task_model(entries) -> bool:
    # An encoder's own first weighted layer is its word embeddings (`layer_with_weights-0/embeddings`);
    # a task model's is the whole encoder, so its paths go deeper.
    return any(path.startswith(_TASK_ENCODER) and path.count("/") >= 2 for path in entries)


def looks_like_tf2(names: list[str]) -> bool:
    return _encoder_root(names) is not None


class TF2CheckpointReader(TFCheckpointReader):
    format_name = "tf2"
    description = "tf-models-official BertEncoder (TF2 object-based checkpoint)"

    def __init__(self, files: TFCheckpointFiles):
        super().__init__(files)
        root = _encoder_root(list(files.shapes))
        entries: dict[str, tuple[str, tuple[int, ...]]] = {}  # path inside the encoder -> (name, shape)
        for name, shape in sorted(files.shapes.items()):
            if _SKIPPED.search(name):
                continue
            if name.startswith(root + "/") and name.endswith(_SUFFIX):
                entries[name[len(root) + 1: -len(_SUFFIX)]] = (name, shape)
            elif _mlm_head_path(name) in _MLM_HEAD:
                self._add(_MLM_HEAD[_mlm_head_path(name)], (name, shape))
            else:
                self.unexpected.append(name)
        if _is_task_model(entries):
            entries = self._map_task_head(entries)
        numbered = any(_NUMBERED.match(path) for path in entries)
        layers = self._map_numbered(entries) if numbered else self._map_named(entries)
        if "embeddings/word" not in self.tensors and MLM_DECODER in self.tensors:
            # A variable two objects share is saved once, under its first path: in BertPretrainerV2
            # checkpoints the word embeddings are stored only as the head's `masked_lm/embedding_table`.
            self.tensors["embeddings/word"] = self.tensors.pop(MLM_DECODER)
        self.num_layers = max(layers) + 1 if layers else 0

    def source_name_for(self, canonical_name: str) -> str:
        if canonical_name.startswith("mlm/"):
            return next(f"{_MLM_ROOT}/{path}" for path, c in _MLM_HEAD.items() if c == canonical_name)
        name = invert_tables(canonical_name, _NAMED_TOP.items(),
                             ((path, canonical) for path, (canonical, _) in _LAYER_SUFFIXES.items()),
                             lambda index, path: f"_transformer_layers/{index}/{path}")
        return canonical_name if name is None else f"encoder/{name}"

    def _map_task_head(self, entries: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Finds the head of a task model; returns the encoder's entries, relative to the encoder."""
        encoder, head = {}, {}
        for path, entry in entries.items():
            if path.startswith(_TASK_ENCODER):
                encoder[path[len(_TASK_ENCODER):]] = entry
            elif path.startswith(_TASK_HEAD):
                head[path[len(_TASK_HEAD):]] = SourceTensor(*entry)
            else:
                self.unexpected.append(entry[0])
        if any(path.startswith("pooler_dense/") for path in head):
            raise InputError(f"{self.display_name}: the classification head has its own pooler "
                             f"({next(t.name for p, t in head.items() if p.startswith('pooler_dense/'))}: "
                             "BertClassifier(use_encoder_pooler=False)), which is not supported")
        self.heads = find_heads(_HEADS, head)
        known = {name for layout in _HEADS for name in (layout.kernel, layout.bias)}
        self.unexpected += [t.name for path, t in head.items() if path not in known]
        return encoder

    def _add(self, canonical: str, entry: tuple[str, tuple[int, ...]], merge: str = KEEP) -> None:
        self.tensors[canonical] = SourceTensor(entry[0], entry[1], merge)

    def _add_layer_weight(self, index: int, suffix: str, entry) -> bool:
        if suffix not in _LAYER_SUFFIXES:
            return False
        canonical, merge = _LAYER_SUFFIXES[suffix]
        self._add(f"layer_{index}/{canonical}", entry, merge)
        return True

    def _map_named(self, entries) -> set[int]:
        layers: set[int] = set()
        for path, entry in entries.items():
            match = _NAMED_LAYER.match(path)
            if path in _NAMED_TOP:
                self._add(_NAMED_TOP[path], entry)
            elif match and self._add_layer_weight(int(match.group(1)), match.group(2), entry):
                layers.add(int(match.group(1)))
            else:
                self.unexpected.append(entry[0])
        return layers

    def _map_numbered(self, entries) -> set[int]:
        by_index: dict[int, dict[str, tuple]] = {}
        for path, entry in entries.items():
            match = _NUMBERED.match(path)
            if match:
                by_index.setdefault(int(match.group(1)), {})[match.group(2)] = entry
            else:
                self.unexpected.append(entry[0])
        transformer = sorted(i for i, sub in by_index.items()
                             if any(k.startswith("_attention_layer/") for k in sub))
        for index, sub in sorted(by_index.items()):
            if index in _NUMBERED_TOP:
                names = _NUMBERED_TOP[index]
            elif index in transformer:
                names = {}
                for suffix, entry in sub.items():
                    if not self._add_layer_weight(transformer.index(index), suffix, entry):
                        self.unexpected.append(entry[0])
                continue
            elif transformer and index == transformer[-1] + 1:
                names = {"kernel": "pooler/kernel", "bias": "pooler/bias"}
            else:
                names = {}
            for key, entry in sub.items():
                if key in names:
                    self._add(names[key], entry)
                else:
                    self.unexpected.append(entry[0])
        return set(range(len(transformer)))
