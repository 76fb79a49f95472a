"""Numerical parity: exports vs the numpy reference and vs tf-models' BertEncoder; planted bugs bite."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, call_export, random_batch
from export.build import encoder as model_module
from export.checkpoints import open_checkpoint
from export.errors import VerificationError
from export.pipeline import ExportOptions, run_export
from export.verify.reference import reference_forward
from export.verify.numeric import TOLERANCE, fixed_batches


def _options(model, base, **kw) -> ExportOptions:
    return ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(base), **kw)


def test_numpy_reference_matches_tf_models(tf1_model, tf_models_reference):
    """The reference itself agrees with tf-models' BertEncoder (restored via tf-models' converter)."""
    batches = fixed_batches(TINY)
    reference = reference_forward(TINY, open_checkpoint(tf1_model.checkpoint).read, batches)
    for (ids, mask, types), ref in zip(batches, reference):
        pooled, sequence = tf_models_reference(ids, mask, types)
        real = mask.astype(bool)
        np.testing.assert_allclose(pooled, ref.pooled_output, atol=2e-5, rtol=0)
        np.testing.assert_allclose(sequence[real], ref.sequence_output[real], atol=2e-5, rtol=0)


@pytest.mark.parametrize("export_format", ["legacy", "v2"])
@pytest.mark.parametrize("source", ["tf1_model", "tf2_model", "converted_model"])
def test_export_parity(source, export_format, request, tmp_path, tf_models_reference):
    model = request.getfixturevalue(source)
    result = run_export(_options(model, tmp_path, export_format=export_format))
    assert result.path == str(tmp_path / "1")
    report = result.report
    assert report.checkpoint_format == ("tf1" if source == "tf1_model" else "tf2")
    v = report.verification
    assert v["passed"] and v["worst"] <= TOLERANCE
    assert set(v["figures"]) == {"__call__", "serving_default"}
    expected_outputs = {"pooled_output", "sequence_output"} | (
        {"default", "encoder_outputs"} if export_format == "v2" else set())
    assert set(v["figures"]["__call__"]) == expected_outputs
    print(f"{source}/{export_format}: worst relative error {v['worst']:.3g}")

    # Second, independent reference: tf-models' own BertEncoder on the same weights.
    loaded = tf.saved_model.load(result.path)
    ids, mask, types = random_batch(3, 20, lengths=[20, 11, 4], seed=5)
    pooled, sequence = call_export(loaded, export_format, ids, mask, types)
    ref_pooled, ref_sequence = tf_models_reference(ids, mask, types)
    real = mask.astype(bool)
    np.testing.assert_allclose(pooled, ref_pooled, atol=2e-5, rtol=0)
    np.testing.assert_allclose(sequence[real], ref_sequence[real], atol=2e-5, rtol=0)


def _plant(monkeypatch, corrupt):
    """Makes the builder receive corrupted weights; the verifier reads the checkpoint on its own."""
    original = model_module.build_hub_encoder

    def build(config, read_weight, *args, **kwargs):
        return original(config, lambda name: corrupt(name, read_weight), *args, **kwargs)
    monkeypatch.setattr(model_module, "build_hub_encoder", build)


PLANTED_BUGS = {
    "transposed_query_kernel": lambda name, read: (
        read(name).T.copy() if name == "layer_1/attention/query/kernel" else read(name)),
    "swapped_layernorm_gamma_beta": lambda name, read: read(
        name.replace("gamma", "beta") if name == "layer_0/output/ln/gamma"
        else name.replace("beta", "gamma") if name == "layer_0/output/ln/beta" else name),
    "swapped_key_value": lambda name, read: read(
        name.replace("/key/", "/value/") if "/key/" in name
        else name.replace("/value/", "/key/") if "/value/" in name else name),
    "pooler_bias_dropped": lambda name, read: read(name) * 0 if name == "pooler/bias" else read(name),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_mapping_bug_fails_verification(bug, monkeypatch, tmp_path, tf1_model):
    _plant(monkeypatch, PLANTED_BUGS[bug])
    base = tmp_path / "base"
    with pytest.raises(VerificationError, match="verification FAILED"):
        run_export(_options(tf1_model, base, export_format="v2"))
    assert os.listdir(base) == []  # no numeric directory, no temporary left behind


def _mask_ignored(monkeypatch):
    encode = model_module.BertEncoderCore.encode
    monkeypatch.setattr(model_module.BertEncoderCore, "encode", lambda self, ids, mask, types, training: encode(
        self, ids, tf.ones_like(mask), types, training))


def _serving_inputs_swapped(monkeypatch):
    specs = [tf.TensorSpec([None, None], tf.int32, name=name) for name in model_module.INPUT_NAMES]
    monkeypatch.setattr(model_module._HubEncoder, "_serving_default", tf.function(
        lambda self, input_word_ids, input_mask, input_type_ids: self._outputs(input_word_ids, input_type_ids,
                                                                                input_mask),
        input_signature=specs, autograph=False))


# Bugs in the graph rather than the weights: only padded rows see the mask, and serving_default,
# which runs the first probe batch only, must still be checked on it.
PLANTED_GRAPH_BUGS = {"attention_mask_ignored": (_mask_ignored, "worst: __call__"),
                      "serving_default_mask_and_types_swapped": (_serving_inputs_swapped, "worst: serving_default")}


@pytest.mark.parametrize("bug", sorted(PLANTED_GRAPH_BUGS))
def test_planted_graph_bug_fails_verification(bug, monkeypatch, tmp_path, tf1_model):
    plant, worst = PLANTED_GRAPH_BUGS[bug]
    plant(monkeypatch)
    with pytest.raises(VerificationError, match=f"verification FAILED.*{worst}"):
        run_export(_options(tf1_model, tmp_path))
    assert os.listdir(tmp_path) == []


def test_wrong_gelu_form_fails_verification(monkeypatch, tmp_path, tf1_model):
    """Exact-erf GELU where the checkpoint means the tanh approximation is caught (issue's 5e-4 trap)."""
    monkeypatch.setattr(model_module, "_activation",
                        lambda name: (lambda x: tf.nn.gelu(x, approximate=False)))
    with pytest.raises(VerificationError):
        run_export(_options(tf1_model, tmp_path))
    assert os.listdir(tmp_path) == []


def test_failed_export_kept_aside_only_when_asked(monkeypatch, tmp_path, tf1_model):
    _plant(monkeypatch, PLANTED_BUGS["transposed_query_kernel"])
    with pytest.raises(VerificationError, match="kept at"):
        run_export(_options(tf1_model, tmp_path, keep_failed=True))
    entries = os.listdir(tmp_path)
    assert len(entries) == 1 and entries[0].startswith("failed-1-")
    assert not any(name.isdigit() for name in entries)
    assert os.path.isfile(tmp_path / entries[0] / "saved_model.pb")
