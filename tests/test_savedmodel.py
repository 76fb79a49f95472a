"""Round-trip behaviour of exported SavedModels, as their consumers use them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from conftest import TINY, call_export, make_tf1_model, random_batch
from export.pipeline import ExportOptions, run_export

FORMATS = ["legacy", "v2"]
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


@pytest.mark.parametrize("export_format", FORMATS)
def test_padding_invariance(exports, export_format):
    loaded = tf.saved_model.load(exports(export_format))
    ids, mask, types = random_batch(2, 9, lengths=[9, 6], seed=1)
    pooled, sequence = call_export(loaded, export_format, ids, mask, types)
    pad = ((0, 0), (0, 23))
    pooled_padded, sequence_padded = call_export(
        loaded, export_format, np.pad(ids, pad), np.pad(mask, pad), np.pad(types, pad))
    np.testing.assert_allclose(pooled_padded, pooled, atol=1e-5, rtol=0)
    real = mask.astype(bool)
    np.testing.assert_allclose(sequence_padded[:, :9][real], sequence[real], atol=1e-5, rtol=0)
    # The figure is not trivially met: the padding tokens' own outputs do differ from the real ones.
    assert np.abs(sequence_padded[:, 9:]).max() > 0.1


@pytest.mark.parametrize("export_format", FORMATS)
def test_batch_and_sequence_dims_are_dynamic(exports, export_format):
    loaded = tf.saved_model.load(exports(export_format))
    serving = loaded.signatures["serving_default"]
    for batch_size in (1, 3, 7):
        for seq in (5, 16, 128):
            ids, mask, types = random_batch(batch_size, seq, seed=batch_size * seq)
            pooled, sequence = call_export(loaded, export_format, ids, mask, types)
            assert pooled.shape == (batch_size, TINY.hidden_size)
            assert sequence.shape == (batch_size, seq, TINY.hidden_size)
            served = serving(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
                             input_type_ids=tf.constant(types))
            assert served["sequence_output"].shape == (batch_size, seq, TINY.hidden_size)
            # Different graph optimisations of the same math: float32 rounding only.
            np.testing.assert_allclose(served["pooled_output"].numpy(), pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("export_format", FORMATS)
def test_dropout_only_in_training(exports, export_format):
    loaded = tf.saved_model.load(exports(export_format))
    ids, mask, types = random_batch(2, 12, seed=2)
    first = call_export(loaded, export_format, ids, mask, types, training=False)
    second = call_export(loaded, export_format, ids, mask, types, training=False)
    default = call_export(loaded, export_format, ids, mask, types)  # training not passed
    for a, b, c in zip(first, second, default):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    dropped_1 = call_export(loaded, export_format, ids, mask, types, training=True)
    dropped_2 = call_export(loaded, export_format, ids, mask, types, training=True)
    assert np.abs(dropped_1[1] - first[1]).max() > 1e-2
    assert np.abs(dropped_1[1] - dropped_2[1]).max() > 1e-2


def test_v2_outputs(exports):
    loaded = tf.saved_model.load(exports("v2"))
    ids, mask, types = random_batch(2, 7, seed=3)
    out = loaded({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}, training=False)
    assert set(out) == {"pooled_output", "sequence_output", "encoder_outputs", "default"}
    assert len(out["encoder_outputs"]) == TINY.num_hidden_layers
    np.testing.assert_array_equal(out["default"].numpy(), out["pooled_output"].numpy())
    np.testing.assert_array_equal(out["encoder_outputs"][-1].numpy(), out["sequence_output"].numpy())
    assert np.abs(out["encoder_outputs"][0].numpy() - out["encoder_outputs"][1].numpy()).max() > 1e-2


@pytest.mark.parametrize("export_format", FORMATS)
def test_reusable_savedmodel_attributes(exports, export_format, tf1_model):
    loaded = tf.saved_model.load(exports(export_format))
    assert len(loaded.trainable_variables) == 5 + 16 * TINY.num_hidden_layers + 2
    assert all(v.trainable for v in loaded.trainable_variables)
    assert list(loaded.regularization_losses) == []
    assert loaded.do_lower_case.dtype == tf.bool and not loaded.do_lower_case.trainable
    assert bool(loaded.do_lower_case.numpy()) is (not tf1_model.cased)
    assert any(v is loaded.do_lower_case for v in loaded.variables)
    with open(loaded.vocab_file.asset_path.numpy().decode(), encoding="utf-8") as f:
        with open(tf1_model.vocab_file, encoding="utf-8") as g:
            assert f.read() == g.read()


@pytest.mark.parametrize("export_format", FORMATS)
def test_gradients_reach_every_trainable_variable(exports, export_format):
    layer = hub.KerasLayer(exports(export_format), trainable=True)
    ids, mask, types = random_batch(2, 10, seed=4, lengths=[10, 6])
    args = ([ids, mask, types] if export_format == "legacy"
            else {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types})
    with tf.GradientTape() as tape:
        out = layer(args, training=True)
        pooled, sequence = (out if export_format == "legacy" else (out["pooled_output"], out["sequence_output"]))
        loss = tf.reduce_sum(pooled ** 2) + tf.reduce_sum(sequence ** 2)
    variables = layer.trainable_variables
    assert len(variables) == 5 + 16 * TINY.num_hidden_layers + 2
    grads = tape.gradient(loss, variables)
    zero = [v.name for v, g in zip(variables, grads)
            if g is None or float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) == 0.0]
    assert zero == []
    assert layer.non_trainable_weights and all(not w.trainable for w in layer.non_trainable_weights)


def test_seed_page_usage_snippet_verbatim(exports, tf1_model):
    """The seed page's two snippets, unchanged but for the handle (and the tokenization import)."""
    from official.nlp.tools import tokenization

    handle = exports("legacy")
    namespace = {"tf": tf, "hub": hub, "tokenization": tokenization}
    exec(SEED_USAGE.replace("https://tfhub.dev/tensorflow/bert_en_cased_L-24_H-1024_A-16/1", handle), namespace)
    assert namespace["pooled_output"].shape.as_list() == [None, TINY.hidden_size]
    assert namespace["sequence_output"].shape.as_list() == [None, 128, TINY.hidden_size]
    exec(SEED_TOKENIZATION, namespace)
    tokenizer = namespace["tokenizer"]
    assert namespace["do_lower_case"] == (not tf1_model.cased)
    assert namespace["vocab_file"].decode().startswith(handle)
    tokens = tokenizer.tokenize("Hello the world, playing music in Paris!")
    assert tokens == ["Hello", "the", "world", ",", "play", "##ing", "music", "in", "Paris", "!"]
    ids = tokenizer.convert_tokens_to_ids(["[CLS]"] + tokens + ["[SEP]"])
    with open(tf1_model.vocab_file, encoding="utf-8") as f:
        vocab = [line.strip() for line in f]
    assert [vocab[i] for i in ids] == ["[CLS]"] + tokens + ["[SEP]"]

    # And the snippet's model runs on those ids.
    model = tf.keras.Model([namespace["input_word_ids"], namespace["input_mask"], namespace["segment_ids"]],
                           [namespace["pooled_output"], namespace["sequence_output"]])
    row = np.zeros((1, 128), np.int32)
    row[0, :len(ids)] = ids
    pooled, sequence = model([row, (row > 0).astype(np.int32), np.zeros_like(row)])
    assert pooled.shape == (1, TINY.hidden_size) and np.isfinite(sequence.numpy()).all()


SEED_USAGE = '''
max_seq_length = 128  # Your choice here.
input_word_ids = tf.keras.layers.Input(shape=(max_seq_length,), dtype=tf.int32,
                                       name="input_word_ids")
input_mask = tf.keras.layers.Input(shape=(max_seq_length,), dtype=tf.int32,
                                   name="input_mask")
segment_ids = tf.keras.layers.Input(shape=(max_seq_length,), dtype=tf.int32,
                                    name="segment_ids")
bert_layer = hub.KerasLayer("https://tfhub.dev/tensorflow/bert_en_cased_L-24_H-1024_A-16/1",
                            trainable=True)
pooled_output, sequence_output = bert_layer([input_word_ids, input_mask, segment_ids])
'''

SEED_TOKENIZATION = '''
vocab_file = bert_layer.resolved_object.vocab_file.asset_path.numpy()
do_lower_case = bert_layer.resolved_object.do_lower_case.numpy()
tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
'''


def test_uncased_vocab_gives_lowercasing_tokenizer(tmp_path):
    from official.nlp.tools import tokenization

    model = make_tf1_model(tmp_path / "uncased", cased=False, extras=False)
    result = run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file,
                                      str(tmp_path / "out"), verify=False))
    assert result.report.do_lower_case is True
    assert "inferred from vocab content" in result.report.do_lower_case_decided_by
    loaded = tf.saved_model.load(result.path)
    tokenizer = tokenization.FullTokenizer(loaded.vocab_file.asset_path.numpy(), loaded.do_lower_case.numpy())
    assert tokenizer.tokenize("Hello World") == ["hello", "world"]


@pytest.mark.parametrize("export_format", FORMATS)
def test_relocated_export_still_resolves_its_vocab(tmp_path, tf1_model, export_format):
    source = tmp_path / "source"
    shutil.copytree(tf1_model.directory, source)
    base = tmp_path / "base"
    result = run_export(ExportOptions(str(source / "bert_config.json"), str(source / "bert_model.ckpt"),
                                      str(source / "vocab.txt"), str(base), export_format=export_format,
                                      verify=False))
    ids, mask, types = random_batch(2, 8, seed=6)
    before = call_export(tf.saved_model.load(result.path), export_format, ids, mask, types)

    moved = tmp_path / "elsewhere" / "7"
    shutil.copytree(result.path, moved)
    shutil.rmtree(base)
    shutil.rmtree(source)
    loaded = tf.saved_model.load(str(moved))
    asset = loaded.vocab_file.asset_path.numpy().decode()
    assert asset == str(moved / "assets" / "vocab.txt") and os.path.isfile(asset)
    after = call_export(loaded, export_format, ids, mask, types)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)

    resaved = tmp_path / "resaved"
    tf.saved_model.save(loaded, str(resaved))
    shutil.rmtree(moved)
    reloaded = tf.saved_model.load(str(resaved))
    asset = reloaded.vocab_file.asset_path.numpy().decode()
    assert asset.startswith(str(resaved)) and os.path.isfile(asset)
    for a, b in zip(before, call_export(reloaded, export_format, ids, mask, types)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("export_format", FORMATS)
def test_no_host_path_in_saved_model(exports, export_format, tf1_model):
    path = exports(export_format)
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        graph = f.read()
    for host_path in (os.path.dirname(path), tf1_model.directory, os.path.expanduser("~"), "bert-export-tmp"):
        assert host_path.encode() not in graph, host_path
    with open(os.path.join(path, "assets.extra", "export_report.json"), encoding="utf-8") as f:
        report_text = f.read()
    assert tf1_model.directory not in report_text and os.path.dirname(path) not in report_text


@pytest.mark.parametrize("export_format", FORMATS)
def test_saved_model_cli_show_and_run(exports, export_format, tmp_path):
    path = exports(export_format)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    show = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", path, "--tag_set", "serve",
                           "--signature_def", "serving_default"], capture_output=True, text=True, env=env)
    assert show.returncode == 0, show.stderr
    for name in ("input_word_ids", "input_mask", "input_type_ids"):
        block = show.stdout.split(f"inputs['{name}'] tensor_info:")[1].split("name:")[0]
        assert "dtype: DT_INT32" in block and "shape: (-1, -1)" in block
    for name in ("pooled_output", "sequence_output"):
        assert f"outputs['{name}']" in show.stdout
    assert show.stdout.count("outputs['") == 2

    ids, mask, types = random_batch(2, 6, seed=7)
    inputs = []
    for name, array in zip(("input_word_ids", "input_mask", "input_type_ids"), (ids, mask, types)):
        np.save(tmp_path / f"{name}.npy", array)
        inputs.append(f"{name}={tmp_path / (name + '.npy')}")
    run = subprocess.run([SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", ";".join(inputs), "--outdir", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    pooled = np.load(tmp_path / "out" / "pooled_output.npy")
    expected, _ = call_export(tf.saved_model.load(path), export_format, ids, mask, types)
    np.testing.assert_allclose(pooled, expected, atol=1e-5, rtol=0)


def test_report_contents(exports, tf1_model):
    with open(os.path.join(exports("legacy"), "assets.extra", "export_report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["version"] == 1 and report["checkpoint_format"] == "tf1"
    assert report["export_format"] == "legacy" and report["activation"] == "gelu_tanh"
    assert report["config"]["num_hidden_layers"] == TINY.num_hidden_layers
    assert report["variable_count"] == 5 + 16 * TINY.num_hidden_layers + 2
    assert report["parameter_count"] == TINY.parameter_count()
    roles = {s["role"] for s in report["sources"]}
    assert roles == {"bert_config", "vocab", "checkpoint"}
    import hashlib
    with open(tf1_model.vocab_file, "rb") as f:
        vocab_sha = hashlib.sha256(f.read()).hexdigest()
    assert any(s["name"] == "vocab.txt" and s["sha256"] == vocab_sha for s in report["sources"])
    assert report["verification"]["passed"] and report["verification"]["worst"] <= 1e-5
    assert report["tensorflow_version"] == tf.__version__
    assert any("unexpected" in w for w in report["warnings"]) is False  # extras are known and skipped


KERAS3_PROGRAM = '''
import sys, json
import keras, numpy as np
layer = keras.layers.TFSMLayer(sys.argv[1])  # default endpoint: "serve"
ids = np.array(json.loads(sys.argv[2]), np.int32)
out = layer({"input_word_ids": ids, "input_mask": (ids > 0).astype("int32"), "input_type_ids": np.zeros_like(ids)})
print(keras.__version__, json.dumps(np.asarray(out["pooled_output"]).tolist()))
'''


@pytest.mark.parametrize("export_format", FORMATS)
def test_keras3_tfsmlayer_loads_the_export(exports, export_format):
    ids = [[7, 50, 60, 8, 0, 0], [9, 11, 12, 13, 14, 15]]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", KERAS3_PROGRAM, exports(export_format), json.dumps(ids)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version, pooled = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert version.startswith("3.")
    ids = np.array(ids, np.int32)
    expected, _ = call_export(tf.saved_model.load(exports(export_format)), export_format,
                              ids, (ids > 0).astype(np.int32), np.zeros_like(ids))
    np.testing.assert_allclose(np.array(json.loads(pooled)), expected, atol=1e-5, rtol=0)
