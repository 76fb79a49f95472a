"""Hugging Face checkpoints: tiny random safetensors fixtures, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, call_export, google_research_names, random_batch, tf_models_encoder_v2, \
    write_google_checkpoint
from export import demo
from export.build import encoder as model_module
from export.errors import InputError, VerificationError
from export.pipeline import ExportOptions, run_export
from export.verify.numeric import TOLERANCE

HERE = os.path.dirname(os.path.abspath(__file__))


def hugging_face_names(num_layers: int) -> dict[str, tuple[str, bool]]:
    """canonical name -> (transformers' BertModel parameter name, stored transposed [out, in])."""
    names = {
        "embeddings/word": ("embeddings.word_embeddings.weight", False),
        "embeddings/position": ("embeddings.position_embeddings.weight", False),
        "embeddings/type": ("embeddings.token_type_embeddings.weight", False),
        "embeddings/ln/gamma": ("embeddings.LayerNorm.weight", False),
        "embeddings/ln/beta": ("embeddings.LayerNorm.bias", False),
        "pooler/kernel": ("pooler.dense.weight", True),
        "pooler/bias": ("pooler.dense.bias", False),
    }
    for i in range(num_layers):
        h, c = f"encoder.layer.{i}.", f"layer_{i}/"
        for kind in ("query", "key", "value"):
            names[f"{c}attention/{kind}/kernel"] = (f"{h}attention.self.{kind}.weight", True)
            names[f"{c}attention/{kind}/bias"] = (f"{h}attention.self.{kind}.bias", False)
        for ours, theirs in (("attention/output", "attention.output.dense"), ("intermediate", "intermediate.dense"),
                             ("output", "output.dense")):
            names[f"{c}{ours}/kernel"] = (f"{h}{theirs}.weight", True)
            names[f"{c}{ours}/bias"] = (f"{h}{theirs}.bias", False)
        for ours, theirs in (("attention/ln", "attention.output.LayerNorm"), ("output/ln", "output.LayerNorm")):
            names[f"{c}{ours}/gamma"] = (f"{h}{theirs}.weight", False)
            names[f"{c}{ours}/beta"] = (f"{h}{theirs}.bias", False)
    return names


def write_hf_model(directory, weights, hidden_act="gelu", prefix="", pooler=True, uncased=None, vocab_from=None):
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for canonical, (name, transposed) in hugging_face_names(TINY.num_hidden_layers).items():
        if not pooler and canonical.startswith("pooler/"):
            continue
        tensors[prefix + name] = np.ascontiguousarray(weights[canonical].T if transposed else weights[canonical])
    tensors[prefix + "embeddings.position_ids"] = np.arange(TINY.max_position_embeddings, dtype=np.int64)[None]
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    config = {k: v for k, v in vars(TINY).items() if k != "activation_convention"}
    config |= {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": hidden_act}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    if uncased is not None:
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": uncased}, f)
    shutil.copy(vocab_from, os.path.join(directory, "vocab.txt"))
    return str(directory)


@pytest.mark.parametrize("hidden_act, prefix", [("gelu", ""), ("gelu", "bert."), ("gelu_new", ""),
                                                ("gelu_pytorch_tanh", "bert.")])
def test_hf_checkpoint_parity(hidden_act, prefix, tmp_path, tf1_model):
    directory = write_hf_model(tmp_path / "hf", tf1_model.weights, hidden_act, prefix, vocab_from=tf1_model.vocab_file)
    result = run_export(ExportOptions("", directory, "", str(tmp_path / "out"), export_format="v2"))
    report = result.report
    assert report.checkpoint_format == "huggingface" and report.activation_convention == "huggingface"
    assert report.activation == ("gelu_erf" if hidden_act == "gelu" else "gelu_tanh")
    assert report.verification["passed"] and report.verification["worst"] <= TOLERANCE
    assert report.untrained_weights == {}

    # Independent second reference: tf-models' encoder with the same weights and GELU form.
    encoder = tf_models_encoder_v2(TINY, tf1_model.weights, approximate_gelu=hidden_act != "gelu")
    ids, mask, types = random_batch(2, 12, lengths=[12, 7], seed=9)
    pooled, sequence = call_export(tf.saved_model.load(result.path), "v2", ids, mask, types)
    expected = encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types), training=False)
    real = mask.astype(bool)
    np.testing.assert_allclose(pooled, expected["pooled_output"].numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(sequence[real], expected["sequence_output"].numpy()[real], atol=2e-5, rtol=0)


def test_hf_checkpoint_without_pooler_is_exported_loudly_or_refused(tmp_path, tf1_model):
    directory = write_hf_model(tmp_path / "hf", tf1_model.weights, pooler=False, vocab_from=tf1_model.vocab_file)
    with pytest.raises(InputError, match=r"no pooler .*pooler.dense.weight.*--strict"):
        run_export(ExportOptions("", directory, "", str(tmp_path / "strict"), strict=True))
    assert not (tmp_path / "strict").exists()
    result = run_export(ExportOptions("", directory, "", str(tmp_path / "out")))
    report = result.report
    assert set(report.untrained_weights) == {"pooler/kernel", "pooler/bias"}
    assert any(w.startswith("UNTRAINED WEIGHTS") and "pooled_output is UNTRAINED" in w for w in report.warnings)
    assert any(line.startswith("UNTRAINED: pooler/bias, pooler/kernel") for line in report.summary_lines())
    assert report.verification["passed"]  # the verifier initialises the same pooler
    # sequence_output still matches the trained weights exactly.
    encoder = tf_models_encoder_v2(TINY, tf1_model.weights, approximate_gelu=False)
    ids, mask, types = random_batch(1, 9, seed=3)
    _, sequence = call_export(tf.saved_model.load(result.path), "legacy", ids, mask, types)
    expected = encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types), training=False)
    np.testing.assert_allclose(sequence, expected["sequence_output"].numpy(), atol=2e-5, rtol=0)


def test_planted_transposition_fails_verification(monkeypatch, tmp_path, tf1_model):
    directory = write_hf_model(tmp_path / "hf", tf1_model.weights, vocab_from=tf1_model.vocab_file)
    original = model_module.build_hub_encoder

    def build(config, read_weight, *args, **kwargs):  # the builder forgets to transpose one torch Linear
        return original(config, lambda n: read_weight(n).T.copy() if n == "layer_0/attention/value/kernel"
                        else read_weight(n), *args, **kwargs)
    monkeypatch.setattr(model_module, "build_hub_encoder", build)
    with pytest.raises(VerificationError):
        run_export(ExportOptions("", directory, "", str(tmp_path / "out")))
    assert os.listdir(tmp_path / "out") == []


def test_tokenizer_config_decides_casing_and_unknown_activation_is_refused(tmp_path, tf1_model):
    directory = write_hf_model(tmp_path / "hf", tf1_model.weights, uncased=True, vocab_from=tf1_model.vocab_file)
    result = run_export(ExportOptions("", directory, "", str(tmp_path / "out"), verify=False))
    assert result.report.do_lower_case is True  # the cased test vocab disagrees: a warning, not a guess
    assert any("tokenizer_config.json (do_lower_case=True) contradicts vocab.txt" in w for w in result.report.warnings)
    bad = write_hf_model(tmp_path / "bad", tf1_model.weights, hidden_act="gelu_fast", vocab_from=tf1_model.vocab_file)
    with pytest.raises(InputError, match="unknown hidden_act 'gelu_fast'"):
        run_export(ExportOptions("", bad, "", str(tmp_path / "out2")))


# --- the real model --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def minilm_dir():
    return demo.model_directory()


@pytest.fixture(scope="session")
def minilm_exports(tmp_path_factory, minilm_dir):
    made = {}
    for export_format in ("legacy", "v2"):
        made[export_format] = run_export(ExportOptions(
            "", minilm_dir, "", str(tmp_path_factory.mktemp(f"minilm-{export_format}")), export_format=export_format))
    return made


def test_minilm_exports_verify_in_both_formats(minilm_exports):
    for export_format, result in minilm_exports.items():
        v = result.report.verification
        print(f"MiniLM {export_format}: worst relative error {v['worst']:.3g}")
        assert v["passed"] and v["worst"] <= TOLERANCE
        assert result.report.activation == "gelu_erf" and result.report.do_lower_case is True
        assert result.report.parameter_count == 22_713_216


def test_minilm_demo_similarities_separate_paraphrases(minilm_exports):
    report = demo.sentence_similarities(minilm_exports["legacy"].path)
    assert report.lowest_paraphrase > 0.5
    assert report.highest_unrelated < 0.3
    assert report.lowest_paraphrase - report.highest_unrelated > 0.3


def test_minilm_tokenization_matches_hugging_face_tokenizers(minilm_exports, minilm_dir):
    """FullTokenizer on the exported asset and casing == `tokenizers` on the package's tokenizer.json."""
    from official.nlp.tools import tokenization
    from tokenizers import Tokenizer

    with open(os.path.join(HERE, "data", "sentences.txt"), encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f]
    assert len(sentences) >= 200
    loaded = tf.saved_model.load(minilm_exports["legacy"].path)
    ours = tokenization.FullTokenizer(loaded.vocab_file.asset_path.numpy().decode(), bool(loaded.do_lower_case.numpy()))
    theirs = Tokenizer.from_file(os.path.join(minilm_dir, "tokenizer.json"))
    theirs.no_truncation()
    theirs.no_padding()
    mismatches = []
    for sentence in sentences:
        expected = theirs.encode(sentence).ids
        got = ours.convert_tokens_to_ids(["[CLS]"] + ours.tokenize(sentence) + ["[SEP]"])
        if got != expected:
            mismatches.append((sentence, ours.tokenize(sentence), theirs.encode(sentence).tokens))
    assert mismatches == [], f"{len(mismatches)} of {len(sentences)} differ; first: {mismatches[:3]}"


def test_minilm_as_google_checkpoint_matches_when_gelu_form_matches(tmp_path, minilm_dir, minilm_exports):
    """The same weights as an original TF1 checkpoint ("gelu" = tanh there) equal the HF export
    read with a tanh GELU, and differ from the true (erf) HF export."""
    from safetensors.numpy import load_file

    with open(os.path.join(minilm_dir, "config.json")) as f:
        hf_config = json.load(f)
    arrays = load_file(os.path.join(minilm_dir, "model.safetensors"))
    layers = hf_config["num_hidden_layers"]
    google = google_research_names(layers)
    tf1 = {google[c]: (arrays[n].T if t else arrays[n]) for c, (n, t) in hugging_face_names(layers).items()}
    tf1_dir = tmp_path / "tf1"
    tf1_dir.mkdir()
    write_google_checkpoint(str(tf1_dir / "bert_model.ckpt"), {k: np.ascontiguousarray(v) for k, v in tf1.items()})
    google_config = {k: hf_config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                               "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                               "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
                                               "initializer_range")}
    with open(tf1_dir / "bert_config.json", "w") as f:
        json.dump(google_config, f)
    shutil.copy(os.path.join(minilm_dir, "vocab.txt"), tf1_dir)
    from_tf1 = run_export(ExportOptions("", str(tf1_dir / "bert_model.ckpt"), "", str(tmp_path / "out-tf1")))
    assert from_tf1.report.activation == "gelu_tanh" and from_tf1.report.checkpoint_format == "tf1"

    tanh_dir = tmp_path / "hf-tanh"
    shutil.copytree(minilm_dir, tanh_dir)
    with open(tanh_dir / "config.json", "w") as f:
        json.dump(hf_config | {"hidden_act": "gelu_new"}, f)
    from_hf_tanh = run_export(ExportOptions("", str(tanh_dir), "", str(tmp_path / "out-hf-tanh")))
    assert from_hf_tanh.report.activation == "gelu_tanh"

    with open(os.path.join(HERE, "data", "sentences.txt"), encoding="utf-8") as f:
        sample = [next(f).strip() for _ in range(8)]
    outputs = {}
    for name, path in (("tf1", from_tf1.path), ("hf_tanh", from_hf_tanh.path), ("hf_erf", minilm_exports["legacy"].path)):
        loaded = tf.saved_model.load(path)
        from official.nlp.tools import tokenization
        tok = tokenization.FullTokenizer(loaded.vocab_file.asset_path.numpy().decode(), True)
        ids = np.zeros((len(sample), 64), np.int32)
        for r, s in enumerate(sample):
            row = tok.convert_tokens_to_ids(["[CLS]"] + tok.tokenize(s)[:62] + ["[SEP]"])
            ids[r, :len(row)] = row
        outputs[name] = call_export(loaded, "legacy", ids, (ids > 0).astype(np.int32), np.zeros_like(ids))
    mask = ids > 0
    scale = np.abs(outputs["hf_erf"][1][mask]).max()
    same_form = np.abs(outputs["tf1"][1][mask] - outputs["hf_tanh"][1][mask]).max() / scale
    other_form = np.abs(outputs["tf1"][1][mask] - outputs["hf_erf"][1][mask]).max() / scale
    print(f"TF1 vs HF(tanh) {same_form:.3g}; TF1 vs HF(erf) {other_form:.3g}")
    assert same_form <= 1e-6
    assert other_form > 1e-4


def test_demo_refuses_weights_that_are_not_the_pinned_ones(monkeypatch):
    monkeypatch.setattr(demo, "MODEL_SHA256", "0" * 64)
    with pytest.raises(InputError, match="model.safetensors has SHA-256 53aa5117.*expected 0000"):
        demo.model_directory()
