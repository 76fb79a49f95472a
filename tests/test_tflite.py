"""TFLite: encoder exports (both formats, tanh and exact-erf GELU), the masked-LM export's two
signatures and the task exports' `serving_default` convert with builtin ops only, and the converted
model matches the SavedModel on the parity inputs; bert-verify checks it (`tflite_convertible`);
the `[tf.newaxis]` attention bias and a parity bug are caught."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import types

import numpy as np
import pytest

from conftest import TINY, make_tf1_model
from export.build import encoder as model_module
from export.errors import VerificationError
from export.pipeline import ExportOptions, run_export
from export.publish.package import CardMetadata, package_export
from export.verify import conformance
from export.verify import tflite as tflite_module
from export.verify.numeric import TOLERANCE, fixed_batches
from test_huggingface import write_hf_model
from test_tasks import QA, SEQ, TOKEN, NER_LABELS, _checkpoint_flag, make_hf_head, make_run_classifier, \
    make_run_squad
from test_verify_cli import one_failure_line, verify

BATCHES = fixed_batches(TINY)  # "the parity inputs"
BIAS_RESHAPE = "tf.reshape(1.0 - tf.cast(mask, tf.float32), [batch, 1, 1, seq])"
BIAS_NEWAXIS = "(1.0 - tf.cast(mask, tf.float32))[:, tf.newaxis, tf.newaxis, :]"


def _assert_converts_with_parity(report, outputs):
    assert report.passed and report.error is None, report.summary()
    assert set(report.figures) == set(outputs)
    assert report.worst <= TOLERANCE and report.model_bytes > 0
    assert "converts with TFLite builtin ops only" in report.summary()
    print(f"{report.signature}: {report.summary()}; {report.seconds}")


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, tf1_model) -> str:
    """tf1_model's weights as a Hugging Face checkpoint: `hidden_act: gelu` is exact-erf GELU there."""
    return write_hf_model(tmp_path_factory.mktemp("hf"), tf1_model.weights, "gelu", vocab_from=tf1_model.vocab_file)


@pytest.fixture(scope="module")
def encoder_export(exports, hf_model, tmp_path_factory):
    """(source, format) -> version directory: tf1 (google-research, tanh GELU: the session's
    verified exports) or hf (exact-erf GELU)."""
    made = {}

    def get(source, export_format):
        if source == "tf1":
            return exports(export_format)
        if export_format not in made:
            result = run_export(ExportOptions("", hf_model, "", str(tmp_path_factory.mktemp(f"hf-{export_format}")),
                                              export_format=export_format, verify=False))
            assert result.report.activation == "gelu_erf"
            made[export_format] = result.path
        return made[export_format]
    return get


@pytest.mark.parametrize("export_format", ["legacy", "v2"])
@pytest.mark.parametrize("source", ["tf1", "hf"])
def test_encoder_converts_with_builtin_ops_and_matches_the_saved_model(source, export_format, encoder_export):
    report = tflite_module.check_tflite(encoder_export(source, export_format), BATCHES)
    _assert_converts_with_parity(report, {"pooled_output", "sequence_output"})


def test_model_with_mlm_converts_both_signatures(tmp_path_factory):
    model = make_tf1_model(tmp_path_factory.mktemp("tf1-mlm"), mlm=True)
    path = run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file,
                                    str(tmp_path_factory.mktemp("mlm-export")), export_type="model_with_mlm",
                                    verify=False)).path
    _assert_converts_with_parity(tflite_module.check_tflite(path, BATCHES), {"pooled_output", "sequence_output"})
    _assert_converts_with_parity(tflite_module.check_tflite(path, BATCHES, signature="mlm"),
                                 {"pooled_output", "sequence_output", "mlm_logits"})


@pytest.fixture(scope="module")
def task_checkpoints(tmp_path_factory, tf1_model):
    """run_classifier.py (tanh GELU), a transformers tagger (exact-erf GELU), run_squad.py."""
    base = tmp_path_factory.mktemp("tflite-tasks")
    return {SEQ: make_run_classifier(base / "run_classifier"),
            TOKEN: make_hf_head(base / "hf_token", tf1_model.weights, tf1_model.vocab_file,
                                "BertForTokenClassification", "classifier", 5, NER_LABELS),
            QA: make_run_squad(base / "run_squad")}


TASK_OUTPUTS = {SEQ: {"logits", "probabilities"}, TOKEN: {"logits", "probabilities"},
                QA: {"start_logits", "end_logits"}}


@pytest.mark.parametrize("text_signatures", [True, False], ids=["text_signatures", "notext_signatures"])
@pytest.mark.parametrize("task", [SEQ, TOKEN, QA])
def test_task_serving_default_converts_with_builtin_ops_and_matches(task, text_signatures, task_checkpoints,
                                                                    tmp_path):
    """With text signatures the SavedModel's other functions hold TF Text ops: the helper registers
    them (import tensorflow_text) so the SavedModel loads, and converts serving_default only."""
    ckpt = task_checkpoints[task]
    result = run_export(ExportOptions(None, _checkpoint_flag(ckpt), None, str(tmp_path / "out"),
                                      text_signatures=text_signatures, verify=False,
                                      default_seq_length=64 if task == QA else None))
    assert any(name.startswith("serve_text") for name in result.report.signatures) == text_signatures
    _assert_converts_with_parity(tflite_module.check_tflite(result.path, BATCHES), TASK_OUTPUTS[task])


def test_preprocessing_does_not_convert_and_bert_verify_says_not_applicable(tf1_model, tmp_path, monkeypatch):
    path = run_export(ExportOptions(None, None, tf1_model.vocab_file, str(tmp_path / "pre"),
                                    export_type="preprocessing", verify=False)).path
    with pytest.raises(VerificationError, match="are not TFLite builtin ops") as refused:
        tflite_module.convert(path)
    assert "tf.WordpieceTokenizeWithOffsets" in str(refused.value)
    print(refused.value)
    # The conformance report, in process; the loaders' and tokenizer's fresh processes are other tests'.
    monkeypatch.setattr(conformance, "_check_loads_elsewhere", lambda *args: None)
    from export.verify import preprocessing as verify_preprocessing
    monkeypatch.setattr(verify_preprocessing, "verify_preprocessor_in_fresh_process",
                        lambda *args: types.SimpleNamespace(passed=True, summary=lambda: "skipped"))
    checks = {c.name: c for c in conformance.check_version_dir(path).checks}
    assert checks["tflite_convertible"].passed and checks["tflite_convertible"].detail.startswith("not applicable")


def test_bert_verify_checks_tflite_convertible_on_an_encoder_tarball(exports, tmp_path):
    package_export(exports("v2"), str(tmp_path / "dist"), CardMetadata(model_name="tiny"))
    proc = verify(f"--artifact={tmp_path / 'dist' / 'tiny.tar.gz'}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}["tflite_convertible"]
    assert check["passed"], check
    assert re.search(r"converts with TFLite builtin ops only \(0\.[0-9]+ MB \.tflite\)", check["detail"])
    assert "max relative error" in check["detail"] and "over pooled_output, sequence_output" in check["detail"]
    print(check["detail"])


# --- the check bites ---------------------------------------------------------------------------

def _encode_with(old: str, new: str):
    """BertEncoderCore.encode with one expression of its source replaced."""
    source = textwrap.dedent(inspect.getsource(model_module.BertEncoderCore.encode))
    assert source.count(old) == 1, f"{old!r} is no longer in encode: update the plant"
    namespace: dict = {}
    exec(compile(source.replace(old, new), model_module.__file__, "exec"), dict(vars(model_module)), namespace)
    return namespace["encode"]


@pytest.fixture(scope="module")
def newaxis_export(tf1_model, tmp_path_factory):
    """The attention bias back to `mask[:, tf.newaxis, tf.newaxis, :]`: the same math, a graph op
    (StridedSlice with new_axis_mask) TFLite's builtins lack."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_module.BertEncoderCore, "encode", _encode_with(BIAS_RESHAPE, BIAS_NEWAXIS))
        return run_export(ExportOptions(tf1_model.bert_config_file, tf1_model.checkpoint, tf1_model.vocab_file,
                                        str(tmp_path_factory.mktemp("newaxis")), verify=False)).path


def test_planted_newaxis_attention_bias_fails_conversion(newaxis_export):
    report = tflite_module.check_tflite(newaxis_export, BATCHES)
    assert not report.passed and report.model_bytes == 0
    assert report.summary() == ("serving_default does not convert to TFLite with builtin ops only: "
                                "tf.StridedSlice is not a TFLite builtin op")


def test_planted_newaxis_attention_bias_fails_bert_verify_in_one_line(newaxis_export):
    proc = verify(f"--artifact={newaxis_export}")
    one_failure_line(proc, 1, "FAILED: tflite_convertible", "tf.StridedSlice is not a TFLite builtin op")
    assert "PASS call_convention" in proc.stdout  # the SavedModel itself is fine


def _plant_all_ones_mask(monkeypatch):
    """The TFLite model is fed input_mask = 1 everywhere: padding is attended to."""
    original = tflite_module.run_tflite

    def run(model, feeds, signature="serving_default"):
        return original(model, [f | {"input_mask": np.ones_like(f["input_mask"])} for f in feeds], signature)
    monkeypatch.setattr(tflite_module, "run_tflite", run)


def test_planted_parity_bug_fails_the_check(exports, monkeypatch):
    _plant_all_ones_mask(monkeypatch)
    report = tflite_module.check_tflite(exports("legacy"), BATCHES)
    assert not report.passed and report.worst > TOLERANCE
    assert "TFLite differs from the SavedModel" in report.summary() and "exceeds 1e-05" in report.summary()
    print(report.summary())
    # bert-verify's check, in process (its fresh process cannot see the plant): one failed line.
    monkeypatch.setattr(conformance, "_check_loads_elsewhere", lambda *args: None)
    monkeypatch.setattr(tflite_module, "check_in_fresh_process", lambda path: tflite_module.check_tflite(path))
    checks = {c.name: c for c in conformance.check_version_dir(exports("legacy")).checks}
    failed = checks["tflite_convertible"]
    assert not failed.passed and "\n" not in failed.detail
    assert re.match(r"AssertionError: serving_default converts \(0\.[0-9]+ MB \.tflite\) but TFLite differs from the "
                    r"SavedModel: max relative error [0-9.e-]+ exceeds 1e-05", failed.detail), failed.detail
