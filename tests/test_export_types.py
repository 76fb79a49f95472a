"""--export_type=preprocessing through bert-export, bert-package and bert-verify; an encoder and
preprocessor pair published together, for WordPiece and SentencePiece."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops of the preprocessing SavedModels

from conftest import call_export, make_tf1_model, write_sentencepiece_model
from export.build import preprocessing
from export.verify import tokenization_reference as reference
from export.errors import VerificationError
from export.publish.package import CardMetadata, package_export
from export.pipeline import ExportOptions, run_export
from test_cli import assert_one_line_error, run_cli
from test_verify_cli import verify

SENTENCES = ["The city of London has a river.", "Grüße aus Köln!", "", "Hello, hello world"]


@pytest.fixture(scope="module")
def sp_checkpoint(tmp_path_factory):
    """A TF1 checkpoint whose tokenizer is a SentencePiece model beside it (spiece.model)."""
    model = make_tf1_model(tmp_path_factory.mktemp("sp-pair"))
    os.remove(model.vocab_file)
    model.sp_model_file = write_sentencepiece_model(os.path.join(model.directory, "spiece.model"))
    return model


def _pack(ids_rows, seq_length, tokenizer_kind, path):
    special = reference.special_token_ids(tokenizer_kind, path)
    rows = [reference.pack([row], seq_length, special["start_of_sequence_id"], special["end_of_segment_id"],
                           special["padding_id"]) for row in ids_rows]
    return [np.array([r[k] for r in rows], np.int32) for k in range(3)]


@pytest.mark.parametrize("tokenizer", ["wordpiece", "sentencepiece"])
def test_encoder_and_preprocessor_pair_compose_on_raw_strings(tokenizer, tf1_model, sp_checkpoint, tmp_path):
    """What a user publishes: `<base>/encoder/N` and `<base>/preprocess/N`, from the same model
    directory; composed in tf_keras, they equal the encoder run on the reference tokenizer's ids."""
    import tensorflow_hub as hub
    import tf_keras

    model = tf1_model if tokenizer == "wordpiece" else sp_checkpoint
    path = model.vocab_file if tokenizer == "wordpiece" else model.sp_model_file
    encoder = run_cli(f"--model_checkpoint_path={model.checkpoint}", f"--export_path={tmp_path / 'encoder'}",
                      "--export_format=v2")
    assert encoder.returncode == 0, encoder.stderr[-2000:]
    pre = run_cli(f"--model_checkpoint_path={model.checkpoint}", f"--export_path={tmp_path / 'preprocess'}",
                  "--export_type=preprocessing", "--default_seq_length=24")
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert f"tokenizer: {tokenizer}" in pre.stdout and "verification: PASSED" in pre.stdout
    enc_dir, pre_dir = encoder.stdout.strip().splitlines()[-1], pre.stdout.strip().splitlines()[-1]
    assert pre_dir == str(tmp_path / "preprocess" / "1")
    report = json.loads((tmp_path / "preprocess" / "1" / "assets.extra" / "export_report.json").read_text())
    assert report["export_type"] == "preprocessing" and report["default_seq_length"] == 24
    assert report["tokenizer"]["kind"] == tokenizer and report["verification"]["passed"]

    text = tf_keras.layers.Input(shape=(), dtype=tf.string)
    outputs = hub.KerasLayer(enc_dir)(hub.KerasLayer(pre_dir)(text))
    pooled = tf_keras.Model(text, outputs["pooled_output"])(tf.constant(SENTENCES)).numpy()
    tokenize = reference.reference_tokenizer(tokenizer, path, do_lower_case=False)
    ids, mask, types = _pack([tokenize(s) for s in SENTENCES], 24, tokenizer, path)
    assert mask.sum() > 3 * len(SENTENCES)  # real tokens, not only [CLS] [SEP]
    want, _ = call_export(tf.saved_model.load(enc_dir), "v2", ids, mask, types)
    np.testing.assert_allclose(pooled, want, rtol=0, atol=1e-5)


def test_preprocessing_packages_and_passes_bert_verify(sp_checkpoint, tmp_path):
    result = run_export(ExportOptions(None, None, None, str(tmp_path / "pre"), export_type="preprocessing",
                                      sp_model_file=sp_checkpoint.sp_model_file, do_lower_case=True))
    package_export(result.path, str(tmp_path / "dist"), CardMetadata(model_name="tiny_preprocess",
                                                                     companion="me/tiny-bert/tensorFlow2/tiny"))
    card = (tmp_path / "dist" / "README.md").read_text()
    assert "It is the preprocessing model of the encoder `me/tiny-bert/tensorFlow2/tiny`." in card
    assert card.startswith("# Module tiny_preprocess\nText preprocessing for BERT.")
    assert "SentencePiece model of 300" in card and "import tensorflow_text" in card and "uncased" in card
    assert "<!-- fine-tunable: false -->" in card
    proc = verify(f"--artifact={tmp_path / 'dist' / 'tiny_preprocess.tar.gz'}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert {"checksums", "signature", "call_convention", "vocab_asset", "do_lower_case", "hub_keraslayer_tf_keras",
            "keras3_tfsmlayer", "tokenization", "no_host_paths"} <= set(checks)
    assert checks["vocab_asset"]["detail"].startswith("assets/spiece.model")
    assert "60/60 sentences" in checks["tokenization"]["detail"]


def test_planted_normalisation_bug_fails_export_verification(monkeypatch, tf1_model, tmp_path):
    """The exporter's graph forgets FullTokenizer's control-character removal: the fresh-process
    check against FullTokenizer refuses the export, and nothing is published."""
    monkeypatch.setattr(preprocessing, "DROPPED_CHARS", "\x00")
    with pytest.raises(VerificationError, match="token ids equal the reference tokenizer's on 5[0-9]/60"):
        run_export(ExportOptions(None, None, tf1_model.vocab_file, str(tmp_path / "pre"),
                                 export_type="preprocessing"))
    assert os.listdir(tmp_path / "pre") == []


def test_preprocessing_bad_inputs(tf1_model, tmp_path):
    out = tmp_path / "out"
    base = ["--export_type=preprocessing", f"--export_path={out}"]
    assert_one_line_error(run_cli(*base), "--vocab_file or --sp_model_file is required")
    assert_one_line_error(run_cli(*base, f"--vocab_file={tf1_model.vocab_file}", "--export_format=v2"),
                          "--export_type=preprocessing has none")
    assert_one_line_error(run_cli(*base, f"--vocab_file={tf1_model.vocab_file}", "--default_seq_length=2"),
                          "--default_seq_length must be at least 3")
    assert_one_line_error(run_cli(*base, f"--model_checkpoint_path={tf1_model.checkpoint}",
                                  "--default_seq_length=512"),
                          "--default_seq_length=512 exceeds bert_config.json's max_position_embeddings=128")
    crlf = tmp_path / "crlf_vocab.txt"
    crlf.write_bytes(open(tf1_model.vocab_file, "rb").read().replace(b"\n", b"\r\n"))
    assert_one_line_error(run_cli(*base, f"--vocab_file={crlf}"), "crlf_vocab.txt", "CRLF")
    assert not out.exists()
