"""Random BERT checkpoints in the original google-research format, for the demo, tests and benchmark.

Weights are random but non-trivial (LayerNorm gammas away from 1, betas and biases away from 0,
kernels scaled to keep activations O(1)), so that a mapping mistake changes the outputs visibly.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from export.checkpoints.tf1 import google_name
from export.config import BertConfig
from export.weights import expected_shapes

SIZES = {
    "tiny": dict(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, max_position_embeddings=512, type_vocab_size=2),
    "base": dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    "large": dict(vocab_size=28996, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2),
}

_WORDS = ("the of and to in is was for on that with as by it at from he his an were are which this be "
          "or has had first one their its new after who they two her she been other when there all also "
          "into during time but school more only would city can game world year over film may between "
          "hello model export bert hub serving token text verify paris london river music play house").split()
_SUFFIXES = ("s", "ed", "ing", "er", "ly", "ion", "al", "es", "y", "en")


def config_of_size(size: str, **overrides) -> BertConfig:
    return BertConfig(**(SIZES[size] | overrides))


def random_weights(config: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical name -> float32 array (TF1 layout: kernels [in, out])."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("/gamma"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith(("/beta", "/bias")):
            value = 0.1 * rng.standard_normal(shape)
        elif name.endswith("/kernel"):
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:  # embeddings
            value = 0.5 * rng.standard_normal(shape)
        weights[name] = value.astype(np.float32)
    return weights


def run_classifier_head(config: BertConfig, num_labels: int, seed: int = 2) -> dict[str, np.ndarray]:
    """google-research run_classifier.py's head under its own names, with the Adam slots its
    fine-tuned checkpoints also hold: `output_weights` [num_labels, hidden] (the script multiplies
    with transpose_b), `output_bias` [num_labels]. Scaled so that the logits on a pooled output
    (tanh, O(1)) are O(1) and differ per label."""
    rng = np.random.default_rng(seed)
    h = config.hidden_size
    head = {"output_weights": rng.standard_normal((num_labels, h)) / np.sqrt(h),
            "output_bias": 0.1 * rng.standard_normal(num_labels)}
    slots = {}
    for name, value in head.items():
        slots[f"{name}/adam_m"] = 1e-3 * rng.standard_normal(value.shape)
        slots[f"{name}/adam_v"] = 1e-6 * rng.random(value.shape)  # second moments are non-negative
    return {name: value.astype(np.float32) for name, value in (head | slots).items()}


def write_tf1_checkpoint(prefix: str, config: BertConfig, weights: dict[str, np.ndarray],
                         with_extras: bool = True, seed: int = 1,
                         variables: dict[str, np.ndarray] | None = None) -> str:
    """Writes `weights` under their original google-research names; returns the prefix.

    With `with_extras`, also writes what real checkpoints hold besides the encoder: the MLM/NSP
    heads, `global_step` and Adam slots for a few variables, which the exporter must skip.
    `variables` are written as they are, under their own names (e.g. `run_classifier_head`).
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    names, tensors = [], []
    for canonical, array in weights.items():
        names.append(google_name(canonical))
        tensors.append(tf.constant(array))
    if with_extras:
        h = config.hidden_size
        extras = {
            "cls/predictions/transform/dense/kernel": rng.standard_normal((h, h)),
            "cls/predictions/transform/dense/bias": rng.standard_normal(h),
            "cls/predictions/transform/LayerNorm/gamma": np.ones(h),
            "cls/predictions/transform/LayerNorm/beta": np.zeros(h),
            "cls/predictions/output_bias": np.zeros(config.vocab_size),
            "cls/seq_relationship/output_weights": rng.standard_normal((2, h)),
            "cls/seq_relationship/output_bias": np.zeros(2),
            "bert/pooler/dense/kernel/adam_m": np.zeros((h, h)),
            "bert/pooler/dense/kernel/adam_v": np.zeros((h, h)),
        }
        for name, array in extras.items():
            names.append(name)
            tensors.append(tf.constant(np.asarray(array, np.float32)))
        names.append("global_step")
        tensors.append(tf.constant(1000, tf.int64))
    for name, array in (variables or {}).items():
        names.append(name)
        tensors.append(tf.constant(array))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    return prefix


def write_vocab(path: str, vocab_size: int, cased: bool) -> str:
    """A WordPiece vocab of exactly `vocab_size` tokens: specials, words, pieces, then fillers."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(".,!?'-()") + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens += _WORDS + ["##" + s for s in _SUFFIXES]
    if cased:
        tokens += [c.upper() for c in "abcdefghijklmnopqrstuvwxyz"] + [w.capitalize() for w in _WORDS]
    seen, unique = set(), []
    for token in tokens:
        if token not in seen:
            seen.add(token)
            unique.append(token)
    if vocab_size < 9:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the special tokens")
    unique += [f"##w{i}" for i in range(vocab_size - len(unique))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(unique[:vocab_size]) + "\n")
    return path


def write_config(path: str, config: BertConfig) -> str:
    data = dataclasses.asdict(config)
    data.pop("layer_norm_eps")  # not google-research fields
    data.pop("activation_convention")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


@dataclasses.dataclass
class CheckpointFiles:
    bert_config_file: str
    model_checkpoint_path: str
    vocab_file: str


def make_google_checkpoint(directory: str, config: BertConfig, cased: bool = True,
                           seed: int = 0, num_labels: int = 0) -> CheckpointFiles:
    """A complete google-research style model directory: bert_config.json, vocab.txt, bert_model.ckpt.

    With `num_labels`, a run_classifier.py fine-tuned checkpoint: the same encoder weights as
    without (for the same seed), plus a sequence classification head of that many labels.
    """
    os.makedirs(directory, exist_ok=True)
    # A random stream of its own (the encoder draws from `seed`, the extras from 1).
    head = run_classifier_head(config, num_labels, seed + 2) if num_labels else None
    return CheckpointFiles(
        bert_config_file=write_config(os.path.join(directory, "bert_config.json"), config),
        model_checkpoint_path=write_tf1_checkpoint(os.path.join(directory, "bert_model.ckpt"), config,
                                                   random_weights(config, seed), variables=head),
        vocab_file=write_vocab(os.path.join(directory, "vocab.txt"), config.vocab_size, cased))
