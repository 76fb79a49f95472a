"""--dtype=bfloat16: bf16 weights and matmuls, float32 interface, verified against the float64
reference with the tolerance bf16's rounding implies; planted mapping bugs still fail it."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, make_tf1_model, random_batch
from export.build import encoder as encoder_module
from export.errors import VerificationError
from export.pipeline import ExportOptions, run_export
from export.verify.numeric import TOLERANCE, tolerance_for
from test_cli import assert_one_line_error, run_cli
from test_parity import PLANTED_BUGS

HERE = os.path.dirname(os.path.abspath(__file__))


def _variables_bytes(version_dir: str) -> int:
    directory = os.path.join(version_dir, "variables")
    return sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory):
    return make_tf1_model(tmp_path_factory.mktemp("bf16"))


def _export(model, base, **kw):
    return run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(base), **kw))


def test_tolerance_follows_from_bfloat16_rounding():
    """16 u sqrt(L) with u = 2^-9 (export/verify/numeric.py derives it); float32 keeps 1e-5."""
    import dataclasses

    for layers, expected in ((2, 0.0442), (12, 0.1083), (24, 0.1531)):
        config = dataclasses.replace(TINY, num_hidden_layers=layers)
        assert math.isclose(tolerance_for("bfloat16", config), expected, rel_tol=1e-3)
        assert tolerance_for("float32", config) == TOLERANCE


@pytest.mark.parametrize("export_format", ["legacy", "v2"])
def test_bfloat16_export_verifies_and_keeps_the_interface(export_format, bf16_model, tmp_path):
    f32 = _export(bf16_model, tmp_path / "f32", export_format=export_format)
    bf16 = _export(bf16_model, tmp_path / "bf16", export_format=export_format, dtype="bfloat16")
    v = bf16.report.verification
    assert v["passed"] and v["tolerance"] == pytest.approx(tolerance_for("bfloat16", TINY))
    assert 1e-4 < v["worst"] <= v["tolerance"] and v["min_cosine"] > 0.999
    print(f"bf16 {export_format}: max relative error {v['worst']:.3g}, min cosine {v['min_cosine']:.6f}")
    assert bf16.report.dtype == "bfloat16" and "dtype: bfloat16" in "\n".join(bf16.report.summary_lines())
    assert _variables_bytes(bf16.path) <= 0.55 * _variables_bytes(f32.path)

    loaded = tf.saved_model.load(bf16.path)
    signature = loaded.signatures["serving_default"]
    assert {s.dtype for s in signature.structured_input_signature[1].values()} == {tf.int32}
    ids, mask, types = random_batch(2, 12, seed=4)
    served = signature(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask), input_type_ids=tf.constant(types))
    assert {t.dtype for t in served.values()} == {tf.float32}
    assert loaded.trainable_variables == [] and any(w.dtype == tf.bfloat16 for w in loaded.variables)
    want = tf.saved_model.load(f32.path).signatures["serving_default"](
        input_word_ids=tf.constant(ids), input_mask=tf.constant(mask), input_type_ids=tf.constant(types))
    got, ref = served["sequence_output"].numpy()[mask.astype(bool)], want["sequence_output"].numpy()[mask.astype(bool)]
    cosine = np.sum(got * ref, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cosine.min() > 0.999


@pytest.mark.parametrize("bug", ["swapped_key_value", "transposed_query_kernel", "swapped_layernorm_gamma_beta"])
def test_planted_mapping_bug_fails_bfloat16_verification(bug, monkeypatch, bf16_model, tmp_path):
    original = encoder_module.build_hub_encoder

    def build(config, read_weight, *args, **kwargs):
        return original(config, lambda name: PLANTED_BUGS[bug](name, read_weight), *args, **kwargs)
    monkeypatch.setattr(encoder_module, "build_hub_encoder", build)
    with pytest.raises(VerificationError, match="verification FAILED") as failed:
        _export(bf16_model, tmp_path, dtype="bfloat16")
    print(f"{bug}: {failed.value}")
    assert os.listdir(tmp_path) == []


def test_bfloat16_mlm_and_task_exports_verify(bf16_model, tmp_path):
    mlm_model = make_tf1_model(tmp_path / "mlm", mlm=True)
    mlm = _export(mlm_model, tmp_path / "mlm-out", export_type="model_with_mlm", dtype="bfloat16")
    assert mlm.report.verification["passed"] and "mlm_logits" in mlm.report.verification["figures"]["mlm"]

    from test_tasks import make_run_classifier

    ckpt = make_run_classifier(tmp_path / "cls")
    task = run_export(ExportOptions(None, os.path.join(ckpt.directory, "bert_model.ckpt"), None,
                                    str(tmp_path / "cls-out"), dtype="bfloat16"))
    v = task.report.verification
    assert task.report.export_type == "sequence_classification" and v["passed"], v["summary"]
    assert v["figures"]["serve_text"]["logits"] <= 1e-6  # the text signature is the same bf16 graph


def test_dtype_for_preprocessing_is_refused(bf16_model, tmp_path):
    proc = run_cli(f"--vocab_file={bf16_model.vocab_file}", "--export_type=preprocessing", "--dtype=bfloat16",
                   f"--export_path={tmp_path / 'out'}")
    assert_one_line_error(proc, "--dtype=bfloat16 applies to models", "no weights")
    assert not (tmp_path / "out").exists()


def test_bfloat16_artifact_packages_as_not_fine_tunable_and_passes_bert_verify(bf16_model, tmp_path):
    from export.publish.package import CardMetadata, package_export
    from test_verify_cli import verify

    result = _export(bf16_model, tmp_path / "bf16", export_format="v2", dtype="bfloat16")
    package_export(result.path, str(tmp_path / "dist"), CardMetadata(model_name="tiny_bf16"))
    card = (tmp_path / "dist" / "README.md").read_text()
    assert "<!-- fine-tunable: false -->" in card and "bfloat16" in card and "trainable=True" not in card
    metadata = json.loads((tmp_path / "dist" / "model-instance-metadata.json").read_text())
    assert metadata["fineTunable"] is False
    proc = verify(f"--artifact={tmp_path / 'dist' / 'tiny_bf16.tar.gz'}", f"--bert_config_file={bf16_model.bert_config_file}",
                  f"--model_checkpoint_path={bf16_model.checkpoint}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert checks["parity"]["passed"] and "min cosine" in checks["parity"]["detail"]
    assert checks["tflite_convertible"]["detail"].startswith("not applicable: a bfloat16 export")


def test_minilm_bfloat16_sentence_embeddings_stay_close(tmp_path):
    """The real MiniLM: mean-pooled, L2-normalised embeddings of the sentence set in bf16 against
    float32, minimum cosine >= 0.9995; the bf16 variables take <= 0.55x the bytes."""
    from export import demo
    from export.verify.tokenization_reference import load_vocab, wordpiece_tokenizer

    directory = demo.model_directory()
    exports = {dtype: run_export(ExportOptions(None, directory, None, str(tmp_path / dtype), dtype=dtype))
               for dtype in ("float32", "bfloat16")}
    assert all(r.report.verification["passed"] for r in exports.values())
    assert _variables_bytes(exports["bfloat16"].path) <= 0.55 * _variables_bytes(exports["float32"].path)
    with open(os.path.join(HERE, "data", "sentences.txt"), encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    vocab_file = os.path.join(directory, "vocab.txt")
    tokenize, vocab = wordpiece_tokenizer(vocab_file, True), load_vocab(vocab_file)
    rows = [[vocab["[CLS]"], *tokenize(s)[:126], vocab["[SEP]"]] for s in sentences]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for r, row in enumerate(rows):
        ids[r, :len(row)] = row
    mask = (ids > 0).astype(np.int32)
    embeddings = {}
    for dtype, result in exports.items():
        loaded = tf.saved_model.load(result.path)
        _, sequence = loaded([tf.constant(ids), tf.constant(mask), tf.zeros_like(ids)], training=False)
        pooled = (sequence.numpy() * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        embeddings[dtype] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    cosine = np.sum(embeddings["float32"] * embeddings["bfloat16"], axis=1)
    print(f"MiniLM bf16 vs f32 on {len(sentences)} sentences: min cosine {cosine.min():.6f}, "
          f"verification {exports['bfloat16'].report.verification['summary']}")
    assert cosine.min() >= 0.9995
