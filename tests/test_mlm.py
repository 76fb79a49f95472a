"""--export_type=model_with_mlm: the `.mlm` subobject from TF1, tf-models pretrainer and Hugging Face
checkpoints, against the numpy reference and against tf-models' own BertPretrainerV2."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, make_tf1_model, random_batch, write_google_checkpoint
from export.build import encoder as model_module
from export.errors import InputError, VerificationError
from export.pipeline import ExportOptions, run_export
from export.verify.numeric import TOLERANCE, relative_error
from test_cli import assert_one_line_error, run_cli
from test_huggingface import write_hf_model

MLM = "model_with_mlm"
# transformers' BertForPreTraining names for the masked-LM head: canonical -> (name, stored [out, in]).
HF_MLM_NAMES = {
    "mlm/transform/kernel": ("cls.predictions.transform.dense.weight", True),
    "mlm/transform/bias": ("cls.predictions.transform.dense.bias", False),
    "mlm/ln/gamma": ("cls.predictions.transform.LayerNorm.weight", False),
    "mlm/ln/beta": ("cls.predictions.transform.LayerNorm.bias", False),
    "mlm/output_bias": ("cls.predictions.bias", False),
}


@pytest.fixture(scope="module")
def mlm_model(tmp_path_factory):
    """A google-research pretraining checkpoint: encoder, cls/predictions and cls/seq_relationship."""
    return make_tf1_model(tmp_path_factory.mktemp("tf1-mlm"), mlm=True)


@pytest.fixture(scope="module")
def mlm_export(mlm_model, tmp_path_factory) -> str:
    return _export(mlm_model, tmp_path_factory.mktemp("mlm-export")).path


@pytest.fixture(scope="module")
def pretrainer_checkpoint(mlm_model, tmp_path_factory):
    """mlm_model converted by tf-models' own converter into a BertPretrainerV2 checkpoint."""
    from official.legacy.bert import configs
    from official.nlp.tools import tf2_bert_encoder_checkpoint_converter as converter

    directory = tmp_path_factory.mktemp("pretrainer")
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(os.path.join(mlm_model.directory, name), directory)
    bert_config = configs.BertConfig.from_json_file(mlm_model.bert_config_file)
    converter.convert_checkpoint(bert_config, str(directory / "ckpt" / "bert"), mlm_model.checkpoint,
                                 checkpoint_model_name="model", converted_model="pretrainer")
    return str(directory), tf.train.latest_checkpoint(str(directory / "ckpt"))


def _export(model, base, **kw):
    return run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(base),
                                    export_type=MLM, **kw))


def _batch(seed=3):
    ids, mask, types = random_batch(3, 12, seed=seed, lengths=[12, 7, 3])
    positions = np.array([[1, 5, 11], [0, 3, 6], [2, 1, 0]], np.int32)
    return ids, mask, types, positions


def _mlm(loaded, ids, mask, types, positions, training=False):
    return loaded.mlm({"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
                       "input_type_ids": tf.constant(types), "masked_lm_positions": tf.constant(positions)},
                      training=training)


def test_mlm_export_verifies_logits_and_keeps_the_v2_encoder(mlm_model, tmp_path):
    result = _export(mlm_model, tmp_path)
    v = result.report.verification
    assert v["passed"] and v["worst"] <= TOLERANCE
    assert set(v["figures"]) == {"__call__", "serving_default", "mlm", "mlm signature"}
    assert v["figures"]["mlm"]["mlm_logits"] <= TOLERANCE
    assert result.report.export_format == "v2" and result.report.export_type == MLM
    print(f"mlm_logits relative error {v['figures']['mlm']['mlm_logits']:.3g}, worst {v['worst']:.3g}")


def test_mlm_logits_match_tf_models_pretrainer(mlm_export, pretrainer_checkpoint):
    """Independent of our reader and reference: tf-models' BertPretrainerV2 restored from its own
    conversion of the same TF1 checkpoint."""
    from official.legacy.bert import configs
    from official.nlp.tools import tf2_bert_encoder_checkpoint_converter as converter

    directory, prefix = pretrainer_checkpoint
    pretrainer = converter._create_bert_pretrainer_model(
        configs.BertConfig.from_json_file(os.path.join(directory, "bert_config.json")))
    tf.train.Checkpoint(**pretrainer.checkpoint_items).read(prefix).assert_existing_objects_matched()
    ids, mask, types, positions = _batch()
    theirs = pretrainer(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types,
                             masked_lm_positions=positions), training=False)["mlm_logits"].numpy()
    ours = _mlm(tf.saved_model.load(mlm_export), ids, mask, types, positions)["mlm_logits"].numpy()
    assert ours.shape == (3, 3, TINY.vocab_size)
    error = relative_error([ours], [theirs])
    print(f"mlm_logits vs tf-models BertPretrainerV2: relative error {error:.3g}")
    assert error <= TOLERANCE


def test_tf_models_pretrainer_checkpoint_exports_the_same_logits(pretrainer_checkpoint, mlm_export, tmp_path):
    directory, prefix = pretrainer_checkpoint
    result = run_export(ExportOptions(os.path.join(directory, "bert_config.json"), prefix,
                                      os.path.join(directory, "vocab.txt"), str(tmp_path), export_type=MLM))
    assert result.report.checkpoint_format == "tf2" and result.report.verification["passed"]
    ids, mask, types, positions = _batch()
    theirs = _mlm(tf.saved_model.load(mlm_export), ids, mask, types, positions)["mlm_logits"].numpy()
    ours = _mlm(tf.saved_model.load(result.path), ids, mask, types, positions)["mlm_logits"].numpy()
    np.testing.assert_array_equal(ours, theirs)


def _write_hf_pretraining_model(directory, model, prefix: str, extra: dict[str, np.ndarray]) -> str:
    """`model`'s weights as transformers' BertForPreTraining (gelu_new = the tanh GELU): the
    encoder, the masked-LM head under HF_MLM_NAMES, and the `extra` tensors."""
    from safetensors.numpy import load_file, save_file

    directory = write_hf_model(directory, model.weights, "gelu_new", prefix, vocab_from=model.vocab_file)
    tensors = load_file(os.path.join(directory, "model.safetensors")) | extra
    for canonical, (name, transposed) in HF_MLM_NAMES.items():
        array = model.weights[canonical]
        tensors[name] = np.ascontiguousarray(array.T if transposed else array)
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    return directory


@pytest.mark.parametrize("prefix", ["bert.", ""])
def test_hugging_face_head_gives_the_same_logits_as_tf1(prefix, mlm_model, mlm_export, tmp_path):
    """The same weights spelled as transformers' BertForPreTraining (gelu_new = the tanh GELU)."""
    directory = _write_hf_pretraining_model(tmp_path / "hf", mlm_model, prefix, {
        "cls.predictions.decoder.weight": mlm_model.weights["embeddings/word"],
        "cls.predictions.decoder.bias": mlm_model.weights["mlm/output_bias"],
        "cls.seq_relationship.weight": np.zeros((2, TINY.hidden_size), np.float32)})
    result = run_export(ExportOptions(None, directory, None, str(tmp_path / "out"), export_type=MLM, strict=True))
    assert result.report.verification["passed"]
    ids, mask, types, positions = _batch()
    theirs = _mlm(tf.saved_model.load(mlm_export), ids, mask, types, positions)["mlm_logits"].numpy()
    ours = _mlm(tf.saved_model.load(result.path), ids, mask, types, positions)["mlm_logits"].numpy()
    assert relative_error([ours], [theirs]) <= 1e-6


def test_untied_hugging_face_decoder_is_refused(mlm_model, tmp_path):
    directory = _write_hf_pretraining_model(tmp_path / "hf", mlm_model, "bert.", {
        "cls.predictions.decoder.weight": mlm_model.weights["embeddings/word"] + 1.0})
    with pytest.raises(InputError, match="cls.predictions.decoder.weight is not tied"):
        run_export(ExportOptions(None, directory, None, str(tmp_path / "out"), export_type=MLM))
    assert not os.path.exists(tmp_path / "out")


def test_missing_head_is_one_clear_error_naming_the_variables(tmp_path):
    model = make_tf1_model(tmp_path / "m", mlm=True)
    reader = tf.train.load_checkpoint(model.checkpoint)
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
              if n not in ("cls/predictions/transform/dense/kernel", "cls/predictions/transform/LayerNorm/beta")}
    for suffix in (".index", ".data-00000-of-00001"):
        os.remove(model.checkpoint + suffix)
    write_google_checkpoint(model.checkpoint, arrays)
    proc = run_cli(*model.flags(tmp_path / "out", "--export_type=model_with_mlm"))
    assert_one_line_error(proc, "lacks the masked-LM head", "cls/predictions/transform/dense/kernel",
                          "cls/predictions/transform/LayerNorm/beta")
    assert not os.path.exists(tmp_path / "out")
    # The encoder alone still exports from it.
    assert run_cli(*model.flags(tmp_path / "out", "--noverify")).returncode == 0


def test_encoder_only_checkpoint_refuses_mlm(tf1_model, tmp_path):
    """The fixture's fine-tuning-style checkpoint holds cls/predictions/output_bias only."""
    proc = run_cli(*tf1_model.flags(tmp_path / "out", "--export_type=model_with_mlm"))
    assert_one_line_error(proc, "cls/predictions/transform/dense/kernel")


def test_legacy_format_with_mlm_is_refused(mlm_model, tmp_path):
    proc = run_cli(*mlm_model.flags(tmp_path / "out", "--export_type=model_with_mlm", "--export_format=legacy"))
    assert_one_line_error(proc, "--export_type=model_with_mlm", "v2")


def test_mlm_api_variables_dropout_and_keras(mlm_export):
    import tensorflow_hub as hub

    loaded = tf.saved_model.load(mlm_export)
    head_names = {v.name for v in loaded.mlm.trainable_variables} - {v.name for v in loaded.trainable_variables}
    assert len(head_names) == 5 and all(name.startswith("mlm_") for name in head_names)
    assert len(loaded.trainable_variables) == 39  # the root's list leaves the head out, as tf-models does
    ids, mask, types, positions = _batch()
    out = _mlm(loaded, ids, mask, types, positions)
    assert set(out) == {"pooled_output", "sequence_output", "encoder_outputs", "mlm_logits"}
    root = loaded({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}, training=False)
    np.testing.assert_array_equal(out["sequence_output"].numpy(), root["sequence_output"].numpy())
    again = _mlm(loaded, ids, mask, types, positions)["mlm_logits"].numpy()
    np.testing.assert_array_equal(out["mlm_logits"].numpy(), again)
    trained = _mlm(loaded, ids, mask, types, positions, training=True)["mlm_logits"].numpy()
    assert not np.allclose(trained, again)  # dropout is on in training only
    signature = loaded.signatures["mlm"](input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
                                         input_type_ids=tf.constant(types), masked_lm_positions=tf.constant(positions))
    np.testing.assert_allclose(signature["mlm_logits"].numpy(), again, rtol=0, atol=1e-5)

    # Continued pretraining through hub.KerasLayer: gradients reach the head and the embeddings.
    layer = hub.KerasLayer(loaded.mlm, trainable=True)
    with tf.GradientTape() as tape:
        logits = layer({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types,
                        "masked_lm_positions": positions}, training=False)["mlm_logits"]
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(ids[:, :3]), logits))
    grads = dict(zip([v.name for v in layer.trainable_variables], tape.gradient(loss, layer.trainable_variables)))
    assert len(grads) == 44
    assert all(grads[name] is not None for name in head_names)
    assert grads["embeddings_word:0"] is not None


@pytest.mark.parametrize("bug", ["transform_skipped", "output_bias_dropped", "erf_gelu_in_head", "ln_eps_1e-3"])
def test_planted_head_bug_fails_verification(bug, monkeypatch, mlm_model, tmp_path):
    def planted(self, sequence_output, positions):
        w = self._by_name
        x = tf.gather(sequence_output, positions, batch_dims=1)
        if bug != "transform_skipped":
            x = tf.nn.gelu(tf.matmul(x, w["mlm/transform/kernel"]) + w["mlm/transform/bias"],
                           approximate=bug != "erf_gelu_in_head")
        x = model_module._layer_norm(x, w["mlm/ln/gamma"], w["mlm/ln/beta"], 1e-3 if bug == "ln_eps_1e-3" else 1e-12)
        logits = tf.matmul(x, self._word_embeddings, transpose_b=True)
        return logits if bug == "output_bias_dropped" else logits + w["mlm/output_bias"]

    monkeypatch.setattr(model_module.MaskedLMHead, "logits", planted)
    with pytest.raises(VerificationError, match="mlm_logits"):
        _export(mlm_model, tmp_path)
    assert not os.path.exists(tmp_path / "1")


def test_mlm_export_packages_and_passes_bert_verify(mlm_model, mlm_export, tmp_path):
    from export.publish.package import CardMetadata, package_export
    from test_verify_cli import verify

    package_export(mlm_export, str(tmp_path / "dist"), CardMetadata(model_name="tiny_mlm"))
    card = (tmp_path / "dist" / "README.md").read_text()
    assert "encoder.mlm(dict(" in card and f"[batch, num_predictions, {TINY.vocab_size}]" in card
    proc = verify(f"--artifact={tmp_path / 'dist' / 'tiny_mlm.tar.gz'}", f"--bert_config_file={mlm_model.bert_config_file}",
                  f"--model_checkpoint_path={mlm_model.checkpoint}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert checks["mlm"]["passed"] and "mlm_logits" in checks["mlm"]["detail"]
    assert checks["parity"]["passed"] and "mlm signature" in checks["parity"]["detail"]
