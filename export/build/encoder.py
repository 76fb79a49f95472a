"""The TensorFlow encoder and the two TF Hub objects built around it.

The encoder is written with raw TF ops in one Python function, not as Keras layers: each exported
entry point is then one traced graph (instead of a SavedModel function per Keras layer) holding
the transformer layer once, as a function it calls per layer, and each weight is one `tf.Variable` created straight from the reader's array (no second copy is kept).
The math is tf-models-official's `BertEncoder` (post-LayerNorm transformer, the google-research
`(1 - mask) * -10000` attention bias, GELU in the source's form).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tensorflow as tf

from export.build.precision import Precision
from export.build.saving import call_specs
from export.config import BertConfig
from export.vocab import TokenizerFile
from export.weights import LAYER_SUFFIXES, expected_shapes, mlm_shapes

FORMATS = ("legacy", "v2")
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
MLM_POSITIONS = "masked_lm_positions"
_NAMED_SPECS = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES}
_AutoTrackable = tf.__internal__.tracking.AutoTrackable


def _activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    if name == "gelu_tanh":
        return lambda x: tf.nn.gelu(x, approximate=True)
    if name == "gelu_erf":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if name == "relu":
        return tf.nn.relu
    raise ValueError(f"unsupported activation {name!r}")


def _layer_norm(x: tf.Tensor, gamma: tf.Variable, beta: tf.Variable, eps: float) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + eps) * gamma + beta


def dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    return tf.nn.dropout(x, rate=rate) if training and rate > 0 else x


class BertEncoderCore(_AutoTrackable):
    """The encoder's weights (one tf.Variable each) and its forward pass."""

    def __init__(self, config: BertConfig, read_weight: Callable[[str], np.ndarray], pooler: bool = True,
                 precision: Precision = Precision()):
        self._config = config
        self._activation = _activation(config.activation)
        self._pooler = pooler  # without it (heads on sequence_output only), pooled_output is None
        self.precision = precision
        self.weights = precision.variables(expected_shapes(config, pooler), read_weight)
        self._by_name = dict(zip(expected_shapes(config, pooler), self.weights))

    def _w(self, name: str) -> tf.Variable:
        return self._by_name[name]

    @property
    def word_embeddings(self) -> tf.Variable:
        return self._by_name["embeddings/word"]

    def _layer_norm(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        return _layer_norm(x, self._w(prefix + "/gamma"), self._w(prefix + "/beta"), self._config.layer_norm_eps)

    def _dense(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        return self.precision.matmul(x, self._w(prefix + "/kernel")) + self._w(prefix + "/bias")

    def encode(self, word_ids: tf.Tensor, mask: tf.Tensor, type_ids: tf.Tensor,
               training: bool) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """Returns pooled_output [B, H] (None without a pooler), sequence_output [B, S, H] and every
        layer's output."""
        c = self._config
        batch, seq = tf.shape(word_ids)[0], tf.shape(word_ids)[1]
        heads, head_size, hidden = c.num_attention_heads, c.head_size, c.hidden_size
        # expand_dims and reshape, not `[tf.newaxis]` indexing: TFLite's builtins lack the strided
        # slice that `mask[:, tf.newaxis, tf.newaxis, :]` becomes, and on-device users convert encoders.
        embed = self.precision.embed
        x = (embed(self._w("embeddings/word"), word_ids) + embed(self._w("embeddings/type"), type_ids)
             + tf.expand_dims(self.precision.as_float32(tf.slice(self._w("embeddings/position"), [0, 0], [seq, -1])),
                              0))
        x = dropout(self._layer_norm(x, "embeddings/ln"), c.hidden_dropout_prob, training)
        x = tf.reshape(x, [-1, hidden])  # [B*S, H]: every dense layer is one plain matmul
        attention_bias = tf.reshape(1.0 - tf.cast(mask, tf.float32), [batch, 1, 1, seq]) * -10000.0
        scale = 1.0 / math.sqrt(head_size)

        def split_heads(t: tf.Tensor) -> tf.Tensor:  # [B*S, H] -> [B, A, S, d]
            return tf.transpose(tf.reshape(t, [batch, seq, heads, head_size]), [0, 2, 1, 3])

        def dense(t: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
            return self.precision.matmul(t, kernel) + bias

        def layer_norm(t: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) -> tf.Tensor:
            return _layer_norm(t, gamma, beta, c.layer_norm_eps)

        def transformer_layer(x, attention_bias, *weights):
            w = dict(zip(LAYER_SUFFIXES, weights))
            q = split_heads(dense(x, w["attention/query/kernel"], w["attention/query/bias"]))
            k = split_heads(dense(x, w["attention/key/kernel"], w["attention/key/bias"]))
            v = split_heads(dense(x, w["attention/value/kernel"], w["attention/value/bias"]))
            scores = self.precision.matmul(q, k, transpose_b=True) * scale + attention_bias
            probs = dropout(tf.nn.softmax(scores, axis=-1), c.attention_probs_dropout_prob, training)
            context = tf.reshape(tf.transpose(self.precision.matmul(probs, v), [0, 2, 1, 3]), [-1, hidden])
            attended = dropout(dense(context, w["attention/output/kernel"], w["attention/output/bias"]),
                               c.hidden_dropout_prob, training)
            x = layer_norm(x + attended, w["attention/ln/gamma"], w["attention/ln/beta"])
            inner = self._activation(dense(x, w["intermediate/kernel"], w["intermediate/bias"]))
            out = dropout(dense(inner, w["output/kernel"], w["output/bias"]), c.hidden_dropout_prob, training)
            return layer_norm(x + out, w["output/ln/gamma"], w["output/ln/beta"])

        # Every layer is the same graph on its own weights: traced once and called per layer, the
        # entry points' graphs (and the SavedModel) hold it once, not num_hidden_layers times.
        # TensorFlow inlines the calls when it runs the graph, so what runs is unchanged. Made
        # here, it is no attribute of the object: nothing saves it but the calls.
        layer = tf.function(transformer_layer, autograph=False)
        layer_outputs = []
        for i in range(c.num_hidden_layers):
            x = layer(x, attention_bias, *(self._w(f"layer_{i}/{name}").value() for name in LAYER_SUFFIXES))
            layer_outputs.append(tf.reshape(x, [batch, seq, hidden]))
        sequence_output = layer_outputs[-1]
        pooled_output = tf.tanh(self._dense(sequence_output[:, 0, :], "pooler")) if self._pooler else None
        return pooled_output, sequence_output, layer_outputs


class MaskedLMHead(_AutoTrackable):
    """google-research's `cls/predictions`: dense (the encoder's activation) and LayerNorm at the
    masked positions, then logits against the word embeddings (tied decoder) plus an output bias."""

    def __init__(self, config: BertConfig, read_weight: Callable[[str], np.ndarray], word_embeddings: tf.Variable,
                 precision: Precision = Precision()):
        self._config = config
        self._activation = _activation(config.activation)
        self._precision = precision
        self.weights = precision.variables(mlm_shapes(config), read_weight)
        self._by_name = dict(zip(mlm_shapes(config), self.weights))
        self._word_embeddings = word_embeddings  # the encoder's variable itself, saved once

    def logits(self, sequence_output: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        """[B, S, H] sequence output, [B, P] positions -> [B, P, V] logits."""
        w = self._by_name
        x = tf.gather(sequence_output, positions, batch_dims=1)
        matmul = self._precision.matmul
        x = self._activation(matmul(x, w["mlm/transform/kernel"]) + w["mlm/transform/bias"])
        x = _layer_norm(x, w["mlm/ln/gamma"], w["mlm/ln/beta"], self._config.layer_norm_eps)
        return matmul(x, self._word_embeddings, transpose_b=True) + w["mlm/output_bias"]


class MaskedLMEntry(_AutoTrackable):
    """The `.mlm` subobject of TF Hub's BERT encoders: the encoder inputs plus
    `masked_lm_positions` [batch, num_predictions] in; the encoder outputs plus `mlm_logits`
    [batch, num_predictions, vocab_size] out. Its variables include the head's; the root's do not."""

    def __init__(self, core: BertEncoderCore, head: MaskedLMHead):
        self.core = core
        self.head = head
        self.variables = list(core.weights) + list(head.weights)
        self.trainable_variables = [v for v in self.variables if v.trainable]  # none in bfloat16
        self.regularization_losses = []

    @tf.function(autograph=False)
    def __call__(self, inputs, training=False):
        pooled, sequence, layers = self.core.encode(
            inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"], training)
        return {"pooled_output": pooled, "sequence_output": sequence, "encoder_outputs": layers,
                "mlm_logits": self.head.logits(sequence, inputs[MLM_POSITIONS])}

    @tf.function(input_signature=[_NAMED_SPECS[name] for name in INPUT_NAMES]
                 + [tf.TensorSpec([None, None], tf.int32, name=MLM_POSITIONS)], autograph=False)
    def _serving_mlm(self, input_word_ids, input_mask, input_type_ids, masked_lm_positions):
        out = self.__call__(dict(zip(INPUT_NAMES + (MLM_POSITIONS,),
                                     (input_word_ids, input_mask, input_type_ids, masked_lm_positions))),
                            training=False)
        return {key: out[key] for key in ("pooled_output", "sequence_output", "mlm_logits")}

    def trace(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        spec = call_specs(INPUT_NAMES + (MLM_POSITIONS,))
        self.__call__.get_concrete_function(spec, training=True)
        self.__call__.get_concrete_function(spec, training=False)
        return {"mlm": self._serving_mlm.get_concrete_function()}


class _HubEncoder(_AutoTrackable):
    """What both formats share: the reusable-SavedModel attributes and `serving_default`.

    The tokenizer travels as an Asset: `vocab_file` (WordPiece) or `sp_model_file`
    (SentencePiece), as tf-models' export_tfhub names them, plus the `do_lower_case` Variable.
    """

    def __init__(self, core: BertEncoderCore, tokenizer: TokenizerFile, do_lower_case: bool):
        self.core = core
        setattr(self, tokenizer.attribute, tf.saved_model.Asset(tokenizer.path))
        self.do_lower_case = tf.Variable(do_lower_case, trainable=False, name="do_lower_case")
        self.variables = list(core.weights) + [self.do_lower_case]
        self.trainable_variables = [w for w in core.weights if w.trainable]  # none in bfloat16
        self.regularization_losses = []

    def trace(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Traces every entry point; returns the signatures to save.

        Only `__call__` traces the encoder (for training=False and True). `serve` (dict of the
        three inputs in, dict of pooled_output and sequence_output out) is the endpoint Keras 3's
        `TFSMLayer` calls by default; `serving_default` is the same with keyword inputs, for TF
        Serving and `saved_model_cli`. Both call the traced inference graph.
        """
        self.__call__.get_concrete_function(self._call_spec(), training=True)
        self.__call__.get_concrete_function(self._call_spec(), training=False)
        self.serve.get_concrete_function()
        signatures = {"serving_default": self._serving_default.get_concrete_function()}
        if hasattr(self, "mlm"):
            signatures |= self.mlm.trace()
        return signatures

    def _outputs(self, word_ids, mask, type_ids) -> dict[str, tf.Tensor]:
        pooled, sequence = self._pooled_and_sequence(
            self.__call__(self._pack(word_ids, mask, type_ids), training=False))
        return {"pooled_output": pooled, "sequence_output": sequence}

    @tf.function(input_signature=[_NAMED_SPECS], autograph=False)
    def serve(self, inputs):
        return self._outputs(*(inputs[name] for name in INPUT_NAMES))

    @tf.function(input_signature=[_NAMED_SPECS[name] for name in INPUT_NAMES], autograph=False)
    def _serving_default(self, input_word_ids, input_mask, input_type_ids):
        return self._outputs(input_word_ids, input_mask, input_type_ids)


class LegacyHubEncoder(_HubEncoder):
    """The seed page's API: called on [input_word_ids, input_mask, segment_ids],
    returns [pooled_output, sequence_output]."""

    @tf.function(autograph=False)  # plain Python control flow only; autograph would slow tracing
    def __call__(self, inputs, training=False):
        word_ids, mask, type_ids = inputs
        pooled, sequence, _ = self.core.encode(word_ids, mask, type_ids, training)
        return [pooled, sequence]

    @staticmethod
    def _call_spec():
        return call_specs(None, len(INPUT_NAMES))

    @staticmethod
    def _pack(word_ids, mask, type_ids):
        return [word_ids, mask, type_ids]

    @staticmethod
    def _pooled_and_sequence(outputs):
        return outputs[0], outputs[1]


class V2HubEncoder(_HubEncoder):
    """TF Hub's encoder API: dict in (input_word_ids, input_mask, input_type_ids), dict out."""

    @tf.function(autograph=False)  # plain Python control flow only; autograph would slow tracing
    def __call__(self, inputs, training=False):
        pooled, sequence, layers = self.core.encode(
            inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"], training)
        return {"pooled_output": pooled, "sequence_output": sequence,
                "encoder_outputs": layers, "default": pooled}

    @staticmethod
    def _call_spec():
        return call_specs(INPUT_NAMES)

    @staticmethod
    def _pack(word_ids, mask, type_ids):
        return dict(zip(INPUT_NAMES, (word_ids, mask, type_ids)))

    @staticmethod
    def _pooled_and_sequence(outputs):
        return outputs["pooled_output"], outputs["sequence_output"]


def build_hub_encoder(config: BertConfig, read_weight: Callable[[str], np.ndarray], export_format: str,
                      tokenizer: TokenizerFile, do_lower_case: bool, with_mlm: bool = False,
                      precision: Precision = Precision()) -> _HubEncoder:
    """Builds the exportable object of `export_format` with weights streamed from `read_weight`;
    `with_mlm` (v2 only) adds the `.mlm` subobject and an `mlm` signature."""
    cls = {"legacy": LegacyHubEncoder, "v2": V2HubEncoder}[export_format]
    core = BertEncoderCore(config, read_weight, precision=precision)
    obj = cls(core, tokenizer, do_lower_case)
    if with_mlm:
        if export_format != "v2":
            raise ValueError("the masked-LM head is exported in the v2 format only")
        obj.mlm = MaskedLMEntry(core, MaskedLMHead(config, read_weight, core.word_embeddings, precision))
    return obj
