"""--sp_model_file: SentencePiece vocabularies for every export type (tiny models trained here)."""

from __future__ import annotations

import filecmp
import json
import os
import shutil

import pytest
import tensorflow as tf

from conftest import make_tf1_model, write_sentencepiece_model
from export.pipeline import ExportOptions, run_export
from test_cli import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    """A pretraining checkpoint (with the masked-LM head) whose tokenizer is a cased SentencePiece model."""
    model = make_tf1_model(tmp_path_factory.mktemp("sp"), mlm=True)
    os.remove(model.vocab_file)
    model.sp_model_file = write_sentencepiece_model(os.path.join(model.directory, "spiece.model"))
    return model


def _options(model, base, **kw) -> ExportOptions:
    return ExportOptions(model.bert_config_file, model.checkpoint, None, str(base),
                         sp_model_file=model.sp_model_file, **kw)


@pytest.mark.parametrize("export_type", ["model", "model_with_mlm"])
def test_sentencepiece_encoder_exports_with_the_model_as_asset(export_type, sp_model, tmp_path):
    result = run_export(_options(sp_model, tmp_path, export_type=export_type))
    report = result.report
    assert report.verification["passed"]
    assert report.tokenizer == {"kind": "sentencepiece", "file": "spiece.model", "vocab_size": 300}
    assert not report.do_lower_case and "cased" in report.do_lower_case_decided_by
    assert [s.role for s in report.sources][:2] == ["bert_config", "sp_model"]
    loaded = tf.saved_model.load(result.path)
    asset = loaded.sp_model_file.asset_path.numpy().decode()
    assert asset.startswith(result.path + os.sep) and filecmp.cmp(asset, sp_model.sp_model_file, shallow=False)
    assert not hasattr(loaded, "vocab_file")
    assert loaded.do_lower_case.numpy() == False  # noqa: E712 - a tf bool


def test_sentencepiece_model_beside_the_checkpoint_is_found(sp_model, tmp_path):
    proc = run_cli(f"--model_checkpoint_path={sp_model.checkpoint}", f"--export_path={tmp_path}", "--noverify")
    assert proc.returncode == 0, proc.stderr
    assert "tokenizer: sentencepiece (spiece.model, 300 entries)" in proc.stdout


def test_uncased_sentencepiece_model_is_inferred_uncased(sp_model, tmp_path):
    directory = tmp_path / "uncased"
    shutil.copytree(sp_model.directory, directory)
    write_sentencepiece_model(directory / "spiece.model", lowercase=True)
    proc = run_cli(f"--model_checkpoint_path={directory / 'bert_model.ckpt'}", f"--export_path={tmp_path / 'out'}",
                   "--noverify")
    assert proc.returncode == 0, proc.stderr
    assert "do_lower_case: True (inferred from vocab content: uncased" in proc.stdout


def test_sentencepiece_bad_inputs(sp_model, tmp_path):
    base = [f"--bert_config_file={sp_model.bert_config_file}", f"--model_checkpoint_path={sp_model.checkpoint}",
            f"--export_path={tmp_path / 'out'}"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    assert_one_line_error(run_cli(*base, f"--sp_model_file={sp_model.sp_model_file}", f"--vocab_file={vocab}"),
                          "--vocab_file and --sp_model_file are mutually exclusive")
    small = write_sentencepiece_model(tmp_path / "small.model", vocab_size=250)
    assert_one_line_error(run_cli(*base, f"--sp_model_file={small}"),
                          "small.model has 250 pieces", "vocab_size=300")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"\x00not a sentencepiece model\xff" * 10)
    assert_one_line_error(run_cli(*base, f"--sp_model_file={garbage}"), "garbage.model: not a SentencePiece model")
    no_cls = write_sentencepiece_model(tmp_path / "no_cls.model", special_pieces=("[SEP]", "[MASK]"))
    assert_one_line_error(run_cli(*base, f"--sp_model_file={no_cls}"), "no_cls.model", "[CLS]")
    assert_one_line_error(run_cli(*base, f"--sp_model_file={tmp_path / 'missing.model'}"),
                          "--sp_model_file", "missing.model does not exist")
    assert not os.path.exists(tmp_path / "out")


def test_sentencepiece_export_passes_bert_verify(sp_model, tmp_path):
    from test_verify_cli import verify

    path = run_export(_options(sp_model, tmp_path / "out", verify=False)).path
    proc = verify(f"--artifact={path}", f"--bert_config_file={sp_model.bert_config_file}",
                  f"--model_checkpoint_path={sp_model.checkpoint}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["checks"]}
    assert checks["vocab_asset"]["detail"] == "assets/spiece.model" and checks["parity"]["passed"]


def test_hugging_face_checkpoint_with_a_sentencepiece_model(sp_model, tmp_path):
    """An HF directory whose tokenizer is spiece.model: the encoder and the preprocessor both export."""
    from test_huggingface import write_hf_model

    directory = write_hf_model(tmp_path / "hf", sp_model.weights, "gelu_new", "bert.",
                               vocab_from=sp_model.sp_model_file)
    os.rename(os.path.join(directory, "vocab.txt"), os.path.join(directory, "spiece.model"))
    for export_type in ("model", "preprocessing"):
        result = run_export(ExportOptions(None, directory, None, str(tmp_path / export_type), export_type=export_type))
        assert result.report.tokenizer["kind"] == "sentencepiece" and result.report.verification["passed"]
    assert result.report.config["vocab_size"] == 300  # the preprocessor checked the pieces against config.json


@pytest.mark.parametrize("lowercase", [False, True])
def test_sentencepiece_offsets_map_the_librarys_pieces_back_to_the_text(lowercase, tmp_path):
    """tokenize.with_char_offsets (a tagging or QA export's) against the `sentencepiece` library's
    pieces and offsets in the normalised text, mapped back to code points here in Python
    (each code point normalised alone, bisected per sentence), over tests/data/sentences.txt and
    empty and leading-space sentences. A sentence's first piece is often a lone "▁" spanning no
    byte: its end - 1 lies before the sentence."""
    import bisect
    import itertools

    import sentencepiece

    from export.build.preprocessing import build_tokenize
    from export.verify.tokenization_reference import sentencepiece_normalize
    from export.vocab import TokenizerSpec

    model = write_sentencepiece_model(tmp_path / "spiece.model", lowercase=lowercase)
    tokenize, _, _ = build_tokenize(TokenizerSpec("sentencepiece", model, lowercase), with_offsets=True)
    with open(os.path.join(os.path.dirname(__file__), "data", "sentences.txt"), encoding="utf-8") as f:
        sentences = ["", " x", "  "] + [line.rstrip("\n") for line in f]
    ours = tokenize.with_char_offsets(tf.constant(sentences))
    processor = sentencepiece.SentencePieceProcessor(model_file=model)
    mismatches, checked = [], 0
    for i, sentence in enumerate(sentences):
        produced = [len(sentencepiece_normalize(c, lowercase).encode()) for c in sentence]
        normalized = sentencepiece_normalize(sentence, lowercase)
        if sum(produced) != len(normalized.encode()):
            continue  # normalisation is not per code point here; the graph's mapping assumes it is
        ends_of_chars = list(itertools.accumulate(produced))
        pieces = processor.encode(normalized, out_type="immutable_proto").pieces
        # The library's Python offsets count code points of `normalized`; the graph's op, bytes.
        spans = [(len(normalized[:p.begin].encode()), len(normalized[:p.end].encode())) for p in pieces]
        want = [(p.id, bisect.bisect_right(ends_of_chars, begin), bisect.bisect_right(ends_of_chars, end - 1) + 1)
                for p, (begin, end) in zip(pieces, spans)]
        got = list(zip(*(ours[k][i].numpy().tolist() for k in ("ids", "start", "end"))))
        checked += 1
        if got != want:
            at = next(k for k, (g, w) in enumerate(zip(got + [None], want + [None])) if g != w)
            mismatches.append((sentence, at, got[max(at - 1, 0):at + 2], want[max(at - 1, 0):at + 2]))
    assert checked >= len(sentences) - 5
    assert mismatches == [], f"{len(mismatches)} of {checked} differ; first: {mismatches[0]}"
