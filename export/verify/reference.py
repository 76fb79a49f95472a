"""An independent float64 numpy forward pass of BERT, straight from the checkpoint's arrays.

Written from the google-research `modeling.py` formulas, sharing no code with the TF builder
(`export.build.encoder`): verification compares the two. Weights are read one layer at a time and
widened to float64 only while that layer runs, so memory stays at one layer's worth.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from export.config import BertConfig


@dataclasses.dataclass
class ReferenceOutputs:
    pooled_output: np.ndarray | None  # [B, H] float64 (None: computed without the pooler)
    sequence_output: np.ndarray    # [B, S, H] float64
    encoder_outputs: list[np.ndarray]
    mlm_logits: np.ndarray | None = None  # [B, P, V] float64, when masked positions were given


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


_ACTIVATIONS = {"gelu_tanh": _gelu_tanh, "gelu_erf": _gelu_erf, "relu": lambda x: np.maximum(x, 0.0)}


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_forward(config: BertConfig, read_weight: Callable[[str], np.ndarray],
                      batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      mlm_positions: list[np.ndarray] | None = None, pooler: bool = True) -> list[ReferenceOutputs]:
    """Runs every (word_ids, mask, type_ids) batch through the encoder, layer by layer; with
    `mlm_positions` ([B, P] per batch) also through the masked-LM head (`cls/predictions`);
    without `pooler` (a head on sequence_output only), pooled_output is not computed."""
    def w(name: str) -> np.ndarray:
        return read_weight(name).astype(np.float64)

    act = _ACTIVATIONS[config.activation]
    eps = config.layer_norm_eps
    heads, head_size = config.num_attention_heads, config.hidden_size // config.num_attention_heads

    word, position, token_type = w("embeddings/word"), w("embeddings/position"), w("embeddings/type")
    gamma, beta = w("embeddings/ln/gamma"), w("embeddings/ln/beta")
    states = []
    for ids, _, types in batches:
        emb = word[ids] + token_type[types] + position[np.newaxis, : ids.shape[1]]
        states.append(_layer_norm(emb, gamma, beta, eps))
    del word, position, token_type
    biases = [(1.0 - mask.astype(np.float64))[:, np.newaxis, np.newaxis, :] * -10000.0
              for _, mask, _ in batches]
    layer_outputs: list[list[np.ndarray]] = [[] for _ in batches]

    for i in range(config.num_hidden_layers):
        p = {suffix: w(f"layer_{i}/{suffix}") for suffix in (
            "attention/query/kernel", "attention/query/bias", "attention/key/kernel", "attention/key/bias",
            "attention/value/kernel", "attention/value/bias", "attention/output/kernel",
            "attention/output/bias", "attention/ln/gamma", "attention/ln/beta", "intermediate/kernel",
            "intermediate/bias", "output/kernel", "output/bias", "output/ln/gamma", "output/ln/beta")}
        for b, x in enumerate(states):
            n, s, _ = x.shape

            def heads_of(t: np.ndarray) -> np.ndarray:  # [B, S, H] -> [B, A, S, d]
                return t.reshape(n, s, heads, head_size).transpose(0, 2, 1, 3)

            q = heads_of(x @ p["attention/query/kernel"] + p["attention/query/bias"])
            k = heads_of(x @ p["attention/key/kernel"] + p["attention/key/bias"])
            v = heads_of(x @ p["attention/value/kernel"] + p["attention/value/bias"])
            probs = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_size) + biases[b])
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, s, -1)
            attended = context @ p["attention/output/kernel"] + p["attention/output/bias"]
            x = _layer_norm(x + attended, p["attention/ln/gamma"], p["attention/ln/beta"], eps)
            inner = act(x @ p["intermediate/kernel"] + p["intermediate/bias"])
            x = _layer_norm(x + inner @ p["output/kernel"] + p["output/bias"],
                            p["output/ln/gamma"], p["output/ln/beta"], eps)
            states[b] = x
            layer_outputs[b].append(x)
        del p

    if pooler:
        pooler_kernel, pooler_bias = w("pooler/kernel"), w("pooler/bias")
    outputs = [ReferenceOutputs(np.tanh(x[:, 0] @ pooler_kernel + pooler_bias) if pooler else None, x, outs)
               for x, outs in zip(states, layer_outputs)]
    if mlm_positions is not None:
        # google-research run_pretraining.get_masked_lm_output, with the decoder tied to the word embeddings.
        head = {name: w(name) for name in ("mlm/transform/kernel", "mlm/transform/bias", "mlm/ln/gamma",
                                           "mlm/ln/beta", "mlm/output_bias", "embeddings/word")}
        for out, positions in zip(outputs, mlm_positions):
            picked = np.take_along_axis(out.sequence_output, positions[:, :, np.newaxis], axis=1)  # [B, P, H]
            x = act(picked @ head["mlm/transform/kernel"] + head["mlm/transform/bias"])
            x = _layer_norm(x, head["mlm/ln/gamma"], head["mlm/ln/beta"], eps)
            out.mlm_logits = x @ head["embeddings/word"].T + head["mlm/output_bias"]
    return outputs
