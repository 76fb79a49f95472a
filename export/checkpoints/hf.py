"""Reader for Hugging Face BERT checkpoints (`model.safetensors`, possibly sharded), without torch.

Names may carry the `bert.` prefix (BertForPreTraining and friends) or not (BertModel). Linear
weights are stored [out, in], the transpose of TF kernels. Hugging Face's `hidden_act: "gelu"` is
exact erf, so this format reads its config with the Hugging Face convention.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from export.checkpoints.base import KEEP, TRANSPOSE, CheckpointReader, HeadLayout, SourceTensor, find_heads, \
    invert_tables
from export.config import HUGGING_FACE
from export.errors import InputError
from export.tasks import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from export.weights import MLM_DECODER

FLAG = "--model_checkpoint_path"
_TOP = {
    "embeddings.word_embeddings.weight": ("embeddings/word", KEEP),
    "embeddings.position_embeddings.weight": ("embeddings/position", KEEP),
    "embeddings.token_type_embeddings.weight": ("embeddings/type", KEEP),
    "embeddings.LayerNorm.weight": ("embeddings/ln/gamma", KEEP),
    "embeddings.LayerNorm.bias": ("embeddings/ln/beta", KEEP),
    "pooler.dense.weight": ("pooler/kernel", TRANSPOSE),
    "pooler.dense.bias": ("pooler/bias", KEEP),
    # BertForPreTraining / BertForMaskedLM's masked-LM head (`cls.predictions`).
    "cls.predictions.transform.dense.weight": ("mlm/transform/kernel", TRANSPOSE),
    "cls.predictions.transform.dense.bias": ("mlm/transform/bias", KEEP),
    "cls.predictions.transform.LayerNorm.weight": ("mlm/ln/gamma", KEEP),
    "cls.predictions.transform.LayerNorm.bias": ("mlm/ln/beta", KEEP),
    "cls.predictions.bias": ("mlm/output_bias", KEEP),
    "cls.predictions.decoder.weight": (MLM_DECODER, KEEP),  # tied to the word embeddings
}
# The decoder's bias is `cls.predictions.bias` under a second name; some files hold only it.
_DECODER_BIAS = "cls.predictions.decoder.bias"
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_LAYER_SUFFIXES = {
    "attention.self.query.weight": ("attention/query/kernel", TRANSPOSE),
    "attention.self.query.bias": ("attention/query/bias", KEEP),
    "attention.self.key.weight": ("attention/key/kernel", TRANSPOSE),
    "attention.self.key.bias": ("attention/key/bias", KEEP),
    "attention.self.value.weight": ("attention/value/kernel", TRANSPOSE),
    "attention.self.value.bias": ("attention/value/bias", KEEP),
    "attention.output.dense.weight": ("attention/output/kernel", TRANSPOSE),
    "attention.output.dense.bias": ("attention/output/bias", KEEP),
    "attention.output.LayerNorm.weight": ("attention/ln/gamma", KEEP),
    "attention.output.LayerNorm.bias": ("attention/ln/beta", KEEP),
    "intermediate.dense.weight": ("intermediate/kernel", TRANSPOSE),
    "intermediate.dense.bias": ("intermediate/bias", KEEP),
    "output.dense.weight": ("output/kernel", TRANSPOSE),
    "output.dense.bias": ("output/bias", KEEP),
    "output.LayerNorm.weight": ("output/ln/gamma", KEEP),
    "output.LayerNorm.bias": ("output/ln/beta", KEEP),
}
# The fine-tuning heads of BertFor{Sequence,Token}Classification (both `classifier`: config.json's
# `architectures` tells them apart) and BertForQuestionAnswering.
_HEADS = (
    HeadLayout("classifier.weight", "classifier.bias", TRANSPOSE, (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION),
               ("transformers BertForSequenceClassification", "transformers BertForTokenClassification")),
    HeadLayout("qa_outputs.weight", "qa_outputs.bias", TRANSPOSE, (QUESTION_ANSWERING,),
               ("transformers BertForQuestionAnswering",)),
)
_HEAD_NAMES = {name for layout in _HEADS for name in (layout.kernel, layout.bias)}
# Not part of the encoder: the position-ids buffer and the next-sentence head.
_SKIPPED = re.compile(r"(^embeddings\.position_ids$|^cls\.seq_relationship\.)")
_OLD_LAYER_NORM_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))  # pre-2019 PyTorch conversions


def safetensors_files(path: str) -> list[str] | None:
    """The safetensors files `path` names (a file, a shard index, or a directory), else None."""
    if os.path.isdir(path):
        for candidate in ("model.safetensors", "model.safetensors.index.json"):
            if os.path.isfile(os.path.join(path, candidate)):
                return safetensors_files(os.path.join(path, candidate))
        return None
    if path.endswith(".safetensors.index.json") and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{os.path.basename(path)}: not a safetensors shard index ({e})") from e
        files = [os.path.join(os.path.dirname(path), shard) for shard in shards]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise InputError(f"{os.path.basename(path)} names shard(s) that do not exist: "
                             + ", ".join(os.path.basename(f) for f in missing))
        return files
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise InputError(f"{FLAG}: {path} does not exist")
        return [path]
    return None


def _canonical_hf_name(name: str) -> str:
    name = name.removeprefix("bert.")
    for old, new in _OLD_LAYER_NORM_NAMES:
        if "LayerNorm" in name and name.endswith(old):
            name = name[: -len(old)] + new
    return name


class HFCheckpointReader(CheckpointReader):
    format_name = "huggingface"
    description = "Hugging Face BERT (safetensors)"
    activation_convention = HUGGING_FACE

    def __init__(self, files: list[str], path: str):
        super().__init__()
        from safetensors import safe_open

        self._files, self._path = files, path
        self._handles = {}
        self._file_of: dict[str, str] = {}
        self._prefixed = False
        layers: set[int] = set()
        decoder_bias = None
        heads: dict[str, SourceTensor] = {}
        for file in files:
            try:
                handle = safe_open(file, framework="numpy")
                keys = list(handle.keys())
            except Exception as e:  # safetensors raises its own SafetensorError for a bad header
                raise InputError(f"{os.path.basename(file)}: not a readable safetensors file ({e})") from e
            self._handles[file] = handle
            for name in keys:
                self._file_of[name] = file
                hf_name = _canonical_hf_name(name)
                self._prefixed |= name.startswith("bert.")
                if _SKIPPED.search(hf_name):
                    continue
                shape = tuple(handle.get_slice(name).get_shape())
                if hf_name in _HEAD_NAMES:
                    heads[hf_name] = SourceTensor(name, shape)
                    continue
                mapped = _TOP.get(hf_name)
                match = _LAYER.match(hf_name)
                if match and match.group(2) in _LAYER_SUFFIXES:
                    canonical, merge = _LAYER_SUFFIXES[match.group(2)]
                    mapped = (f"layer_{int(match.group(1))}/{canonical}", merge)
                    layers.add(int(match.group(1)))
                if hf_name == _DECODER_BIAS:
                    decoder_bias = SourceTensor(name, shape)
                elif mapped is None:
                    self.unexpected.append(name)
                else:
                    self.tensors[mapped[0]] = SourceTensor(name, shape, mapped[1])
        if decoder_bias is not None:
            self.tensors.setdefault("mlm/output_bias", decoder_bias)
        self.num_layers = max(layers) + 1 if layers else 0
        self.heads = find_heads(_HEADS, heads)

    @property
    def source_files(self) -> list[str]:
        return self._files

    @property
    def checkpoint_path(self) -> str:
        return self._path

    def source_name_for(self, canonical_name: str) -> str:
        name = invert_tables(canonical_name, ((n, c) for n, (c, _) in _TOP.items()),
                             ((n, c) for n, (c, _) in _LAYER_SUFFIXES.items()),
                             lambda index, suffix: f"encoder.layer.{index}.{suffix}")
        if name is None:
            return canonical_name
        return name if name.startswith("cls.") or not self._prefixed else "bert." + name

    def _read_source(self, name: str) -> np.ndarray:
        try:
            return self._handles[self._file_of[name]].get_tensor(name)
        except Exception as e:  # e.g. a truncated file, or a dtype numpy lacks (bfloat16)
            raise InputError(f"{os.path.basename(self._file_of[name])}: cannot read tensor {name} ({e})") from e
