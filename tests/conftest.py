"""Fixtures: tiny random BERT checkpoints the tests write themselves, in every supported format.

The TF1 checkpoint is written under the original google-research variable names spelled out
below (not taken from the package under test); the TF2 checkpoints come from tf-models-official
itself: a `BertEncoderV2` holding the same weights, and tf-models' own TF1->TF2 converter.
"""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # hub.KerasLayer and tf-models need tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from export import synthetic  # noqa: E402
from export.config import BertConfig  # noqa: E402

TINY = BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=128, type_vocab_size=2)


def google_research_names(num_layers: int) -> dict[str, str]:
    """canonical name -> variable name in google-research/bert's modeling.py."""
    names = {
        "embeddings/word": "bert/embeddings/word_embeddings",
        "embeddings/position": "bert/embeddings/position_embeddings",
        "embeddings/type": "bert/embeddings/token_type_embeddings",
        "embeddings/ln/gamma": "bert/embeddings/LayerNorm/gamma",
        "embeddings/ln/beta": "bert/embeddings/LayerNorm/beta",
        "pooler/kernel": "bert/pooler/dense/kernel",
        "pooler/bias": "bert/pooler/dense/bias",
    }
    for i in range(num_layers):
        g, c = f"bert/encoder/layer_{i}/", f"layer_{i}/"
        for kind in ("query", "key", "value"):
            for part in ("kernel", "bias"):
                names[f"{c}attention/{kind}/{part}"] = f"{g}attention/self/{kind}/{part}"
        for part in ("kernel", "bias"):
            names[f"{c}attention/output/{part}"] = f"{g}attention/output/dense/{part}"
            names[f"{c}intermediate/{part}"] = f"{g}intermediate/dense/{part}"
            names[f"{c}output/{part}"] = f"{g}output/dense/{part}"
        for part in ("gamma", "beta"):
            names[f"{c}attention/ln/{part}"] = f"{g}attention/output/LayerNorm/{part}"
            names[f"{c}output/ln/{part}"] = f"{g}output/LayerNorm/{part}"
    return names


def write_google_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> str:
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])
    return prefix


def write_config(path: str, config: BertConfig, **overrides) -> str:
    data = {k: v for k, v in vars(config).items()
            if k not in ("layer_norm_eps", "activation_convention")} | overrides
    with open(path, "w") as f:
        json.dump(data, f)
    return path


class Model:
    """A model directory: config, vocab, checkpoint prefix, and the weights it holds."""

    def __init__(self, directory, config, checkpoint, weights, cased=True):
        self.directory = str(directory)
        self.config = config
        self.bert_config_file = os.path.join(self.directory, "bert_config.json")
        self.vocab_file = os.path.join(self.directory, "vocab.txt")
        self.checkpoint = checkpoint
        self.weights = weights
        self.cased = cased

    def flags(self, export_path, *extra) -> list[str]:
        return [f"--bert_config_file={self.bert_config_file}", f"--vocab_file={self.vocab_file}",
                f"--model_checkpoint_path={self.checkpoint}", f"--export_path={export_path}", *extra]


# canonical name -> google-research run_pretraining.py's masked-LM head variable.
GOOGLE_MLM_NAMES = {
    "mlm/transform/kernel": "cls/predictions/transform/dense/kernel",
    "mlm/transform/bias": "cls/predictions/transform/dense/bias",
    "mlm/ln/gamma": "cls/predictions/transform/LayerNorm/gamma",
    "mlm/ln/beta": "cls/predictions/transform/LayerNorm/beta",
    "mlm/output_bias": "cls/predictions/output_bias",
}


def random_mlm_head(config: BertConfig, seed: int = 1) -> dict[str, np.ndarray]:
    """Random masked-LM head weights, LayerNorm gamma away from 1 so a swapped gamma/beta shows."""
    rng = np.random.default_rng(seed)
    h, v = config.hidden_size, config.vocab_size
    return {"mlm/transform/kernel": rng.normal(0, 0.1, (h, h)).astype(np.float32),
            "mlm/transform/bias": rng.normal(0, 0.1, h).astype(np.float32),
            "mlm/ln/gamma": rng.uniform(0.5, 1.5, h).astype(np.float32),
            "mlm/ln/beta": rng.normal(0, 0.1, h).astype(np.float32),
            "mlm/output_bias": rng.normal(0, 0.5, v).astype(np.float32)}


def make_tf1_model(directory, config=TINY, seed=0, cased=True, extras=True, mlm=False) -> Model:
    """A google-research checkpoint of random weights; `mlm` adds the pretraining heads."""
    os.makedirs(directory, exist_ok=True)
    weights = synthetic.random_weights(config, seed)
    arrays = {google_research_names(config.num_hidden_layers)[k]: v for k, v in weights.items()}
    h = config.hidden_size
    if extras:  # what real checkpoints also hold and the exporter must skip
        arrays |= {"cls/predictions/output_bias": np.zeros(config.vocab_size, np.float32),
                   "cls/seq_relationship/output_weights": np.ones((2, h), np.float32),
                   "bert/pooler/dense/kernel/adam_m": np.zeros((h, h), np.float32),
                   "bert/pooler/dense/kernel/adam_v": np.zeros((h, h), np.float32),
                   "global_step": np.array(7, np.int64)}
    if mlm:
        weights |= random_mlm_head(config, seed + 1)
        arrays |= {GOOGLE_MLM_NAMES[k]: weights[k] for k in GOOGLE_MLM_NAMES}
        arrays |= {"cls/seq_relationship/output_weights": np.ones((2, h), np.float32),
                   "cls/seq_relationship/output_bias": np.zeros(2, np.float32)}
    model = Model(directory, config, os.path.join(str(directory), "bert_model.ckpt"), weights, cased)
    write_google_checkpoint(model.checkpoint, arrays)
    write_config(model.bert_config_file, config)
    synthetic.write_vocab(model.vocab_file, config.vocab_size, cased=cased)
    return model


def write_sentencepiece_model(path, vocab_size: int = TINY.vocab_size, lowercase: bool = False,
                              special_pieces=("[CLS]", "[SEP]", "[MASK]")) -> str:
    """Trains a tiny SentencePiece model (the `sentencepiece` trainer) on the Latin-script lines of
    tests/data/sentences.txt, lowercased when `lowercase`, with BERT's special pieces and <pad>."""
    import io

    import sentencepiece

    with open(os.path.join(os.path.dirname(__file__), "data", "sentences.txt"), encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line and all(ord(c) < 0x2000 for c in line)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([line.lower() for line in lines] if lowercase else lines), model_writer=model,
        vocab_size=vocab_size, user_defined_symbols=list(special_pieces), pad_id=0, unk_id=1, bos_id=-1,
        eos_id=-1, model_type="unigram", character_coverage=0.98, minloglevel=2)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return str(path)


def tf_models_encoder_v2(config: BertConfig, weights: dict[str, np.ndarray], approximate_gelu: bool = True):
    """tf-models' BertEncoderV2 holding `weights` (kernels reshaped to its [H, A, d] layouts)."""
    from official.nlp.modeling import networks

    a, d = config.num_attention_heads, config.head_size
    enc = networks.BertEncoderV2(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
        num_attention_heads=a, inner_dim=config.intermediate_size,
        max_sequence_length=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
        inner_activation=lambda x: tf.nn.gelu(x, approximate=approximate_gelu))
    dummy = tf.zeros([1, 2], tf.int32)
    enc(dict(input_word_ids=dummy, input_mask=dummy + 1, input_type_ids=dummy))
    enc._embedding_layer.embeddings.assign(weights["embeddings/word"])
    enc._position_embedding_layer._position_embeddings.assign(weights["embeddings/position"])
    enc._type_embedding_layer.embeddings.assign(weights["embeddings/type"])
    enc._embedding_norm_layer.gamma.assign(weights["embeddings/ln/gamma"])
    enc._embedding_norm_layer.beta.assign(weights["embeddings/ln/beta"])
    for i, layer in enumerate(enc._transformer_layers):
        w = {k.split("/", 1)[1]: v for k, v in weights.items() if k.startswith(f"layer_{i}/")}
        att = layer._attention_layer
        for kind, dense in (("query", att._query_dense), ("key", att._key_dense), ("value", att._value_dense)):
            dense.kernel.assign(w[f"attention/{kind}/kernel"].reshape(-1, a, d))
            dense.bias.assign(w[f"attention/{kind}/bias"].reshape(a, d))
        att._output_dense.kernel.assign(w["attention/output/kernel"].reshape(a, d, -1))
        att._output_dense.bias.assign(w["attention/output/bias"])
        layer._attention_layer_norm.gamma.assign(w["attention/ln/gamma"])
        layer._attention_layer_norm.beta.assign(w["attention/ln/beta"])
        layer._intermediate_dense.kernel.assign(w["intermediate/kernel"])
        layer._intermediate_dense.bias.assign(w["intermediate/bias"])
        layer._output_dense.kernel.assign(w["output/kernel"])
        layer._output_dense.bias.assign(w["output/bias"])
        layer._output_layer_norm.gamma.assign(w["output/ln/gamma"])
        layer._output_layer_norm.beta.assign(w["output/ln/beta"])
    enc._pooler_layer.kernel.assign(weights["pooler/kernel"])
    enc._pooler_layer.bias.assign(weights["pooler/bias"])
    return enc


@pytest.fixture(scope="session")
def tf1_model(tmp_path_factory) -> Model:
    return make_tf1_model(tmp_path_factory.mktemp("tf1"))


@pytest.fixture(scope="session")
def tf2_model(tmp_path_factory, tf1_model) -> Model:
    """The same weights in a TF2 checkpoint of tf-models' BertEncoderV2 (`Checkpoint(encoder=...)`)."""
    directory = tmp_path_factory.mktemp("tf2")
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(os.path.join(tf1_model.directory, name), directory)
    enc = tf_models_encoder_v2(tf1_model.config, tf1_model.weights)
    prefix = tf.train.Checkpoint(encoder=enc).write(str(directory / "ckpt"))
    return Model(directory, tf1_model.config, prefix, tf1_model.weights, tf1_model.cased)


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory, tf1_model) -> Model:
    """tf1_model converted by tf-models' own converter (functional BertEncoder, root `model`)."""
    from official.legacy.bert import configs
    from official.nlp.tools import tf2_bert_encoder_checkpoint_converter as converter

    directory = tmp_path_factory.mktemp("converted")
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(os.path.join(tf1_model.directory, name), directory)
    bert_config = configs.BertConfig.from_json_file(tf1_model.bert_config_file)
    converter.convert_checkpoint(bert_config, str(directory / "ckpt" / "bert"), tf1_model.checkpoint,
                                 checkpoint_model_name="model")
    return Model(directory, tf1_model.config, str(directory / "ckpt"), tf1_model.weights, tf1_model.cased)


@pytest.fixture(scope="session")
def tf_models_reference(converted_model):
    """tf-models' BertEncoder restored from its own conversion of the TF1 checkpoint: a second,
    independent reference. Returns f(ids, mask, types) -> (pooled, sequence) as numpy."""
    from official.legacy.bert import configs
    from official.nlp.tools import tf2_bert_encoder_checkpoint_converter as converter

    encoder = converter._create_bert_model(configs.BertConfig.from_json_file(converted_model.bert_config_file))
    prefix = tf.train.latest_checkpoint(converted_model.checkpoint)
    tf.train.Checkpoint(model=encoder).read(prefix).assert_existing_objects_matched()

    def run(ids, mask, types):
        sequence, pooled = encoder([ids, mask, types], training=False)
        return pooled.numpy(), sequence.numpy()
    return run


@pytest.fixture(scope="session")
def exports(tmp_path_factory, tf1_model):
    """Session cache of verified exports of tf1_model: exports(fmt) -> version directory."""
    from export.pipeline import ExportOptions, run_export

    made = {}

    def get(export_format: str) -> str:
        if export_format not in made:
            base = tmp_path_factory.mktemp(f"export-{export_format}")
            made[export_format] = run_export(ExportOptions(
                tf1_model.bert_config_file, tf1_model.checkpoint, tf1_model.vocab_file, str(base),
                export_format=export_format)).path
        return made[export_format]
    return get


def batch(ids_rows, seq, type_split=True):
    """int32 (ids, mask, types) from lists of ids, padded to `seq`."""
    n = len(ids_rows)
    ids, mask, types = (np.zeros((n, seq), np.int32) for _ in range(3))
    for r, row in enumerate(ids_rows):
        ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
        if type_split:
            types[r, len(row) // 2:len(row)] = 1
    return ids, mask, types


def random_batch(batch_size, seq, vocab_size=TINY.vocab_size, seed=0, lengths=None):
    rng = np.random.default_rng(seed)
    lengths = lengths or [seq] * batch_size
    return batch([rng.integers(0, vocab_size, n).tolist() for n in lengths], seq)


def call_export(loaded, export_format, ids, mask, types, training=False):
    """Calls a loaded export in its format's convention; returns (pooled, sequence) as numpy."""
    ids, mask, types = (tf.constant(x) for x in (ids, mask, types))
    if export_format == "legacy":
        pooled, sequence = loaded([ids, mask, types], training=training)
    else:
        out = loaded({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}, training=training)
        pooled, sequence = out["pooled_output"], out["sequence_output"]
    return pooled.numpy(), sequence.numpy()
