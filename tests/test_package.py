"""bert-package: a reproducible tarball, checksums, the model card and Kaggle metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, call_export, random_batch
from export.errors import InputError
from export.publish.package import CardMetadata, ExportFacts, model_card, package_export
from export.report import sha256_of

BERT_PACKAGE = os.path.join(os.path.dirname(sys.executable), "bert-package")

# The metadata block of the seed page (tensorflow/bert_en_cased_L-24_H-1024_A-16/1).
SEED_METADATA = """<!-- dataset: wikipedia-and-bookscorpus -->
<!-- asset-path: legacy -->
<!-- fine-tunable: true -->
<!-- format: saved_model_2 -->
<!-- language: en -->
<!-- task: text-embedding -->
<!-- network-architecture: transformer -->"""


def test_tarball_is_reproducible_and_flat(exports, tmp_path):
    source = tmp_path / "copy"
    shutil.copytree(exports("legacy"), source)
    first = package_export(str(source), str(tmp_path / "a"), CardMetadata(model_name="tiny"))
    later = time.time() + 1000  # other mtimes and another run must not change a byte
    for root, _, files in os.walk(source):
        for name in files:
            os.utime(os.path.join(root, name), (later, later))
    second = package_export(str(source), str(tmp_path / "b"), CardMetadata(model_name="tiny"))
    with open(first.tarball, "rb") as a, open(second.tarball, "rb") as b:
        assert a.read() == b.read()
    with tarfile.open(first.tarball) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {"saved_model.pb", "variables/variables.index", "assets/vocab.txt"} <= set(names)
        assert all(not n.startswith(("/", "./", "..")) and ".." not in n.split("/") for n in names)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
        tar.extractall(tmp_path / "unpacked", filter="data")
    ids, mask, types = random_batch(2, 6, seed=11)
    for a, b in zip(call_export(tf.saved_model.load(str(tmp_path / "unpacked")), "legacy", ids, mask, types),
                    call_export(tf.saved_model.load(exports("legacy")), "legacy", ids, mask, types)):
        np.testing.assert_array_equal(a, b)


def test_checksums_cover_the_tarball_and_every_file(exports, tmp_path):
    result = package_export(exports("v2"), str(tmp_path / "out"), CardMetadata(model_name="tiny"))
    lines = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    sums = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sums["tiny.tar.gz"] == sha256_of(result.tarball)
    for root, _, files in os.walk(exports("v2")):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), exports("v2"))
            assert sums[relative] == sha256_of(os.path.join(root, name))
    assert len(sums) == 1 + sum(len(files) for _, _, files in os.walk(exports("v2")))


def test_card_and_kaggle_metadata_are_derived_from_the_export(exports, tmp_path):
    meta = CardMetadata(model_name="tiny_bert", dataset="wikipedia", owner_slug="me", model_slug="tiny-bert")
    package_export(exports("v2"), str(tmp_path / "out"), meta)
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"L={TINY.num_hidden_layers} hidden layers" in card and f"H={TINY.hidden_size}" in card
    assert f"A={TINY.num_attention_heads} attention heads" in card and "cased: the distinction" in card
    assert 'outputs["pooled_output"]' in card and "bert_layer([input_word_ids" not in card  # v2 call
    assert "max relative error" in card and "TFSMLayer" in card and "resolved_object.vocab_file" in card
    kaggle = json.loads((tmp_path / "out" / "model-instance-metadata.json").read_text())
    assert kaggle["framework"] == "tensorFlow2" and kaggle["fineTunable"] is True
    assert kaggle["ownerSlug"] == "me" and kaggle["modelSlug"] == "tiny-bert"
    assert kaggle["usage"] in card and kaggle["trainingData"] == ["wikipedia"]
    slug = f"L-{TINY.num_hidden_layers}_H-{TINY.hidden_size}_A-{TINY.num_attention_heads}"
    assert kaggle["instanceSlug"] == slug
    # The version's complete handle: the URL for tensorflow_hub, the kagglehub handle for TFSMLayer.
    assert f'hub.KerasLayer("https://www.kaggle.com/models/me/tiny-bert/tensorFlow2/{slug}/1"' in card
    assert f'kagglehub.model_download("me/tiny-bert/tensorFlow2/{slug}/1")' in card
    assert f"<!-- asset-path: https://www.kaggle.com/models/me/tiny-bert/tensorFlow2/{slug}/1 -->" in card


def test_instance_version_must_be_a_positive_integer(exports, tmp_path):
    for version in (0, -1, "2a", True):
        with pytest.raises(InputError, match="instance_version must be a positive integer"):
            package_export(exports("v2"), str(tmp_path / "out"), CardMetadata(instance_version=version))
    assert not (tmp_path / "out").exists()


def test_card_for_the_seed_model_matches_the_seed_page():
    facts = ExportFacts("model", "wordpiece", vocab_size=28996, do_lower_case=False,
                        verification="max relative error 6.9e-06 (tolerance 1e-05)", layers=24, hidden_size=1024,
                        heads=16, export_format="legacy", parameter_count=333_579_264, fine_tunable=True)
    card = model_card(facts, CardMetadata.for_published_model("bert_en_cased_L-24_H-1024_A-16"), "handle")
    assert card.startswith("# Module tensorflow/bert_en_cased_L-24_H-1024_A-16/1\n")
    assert SEED_METADATA in card
    assert "L=24 hidden layers (i.e., Transformer blocks), a hidden size of H=1024,\nand A=16 attention heads" in card
    assert "Inputs are cased" in card
    assert "pre-trained for English on the Wikipedia and BooksCorpus" in card
    assert "pooled_output, sequence_output = bert_layer([input_word_ids, input_mask, segment_ids])" in card


def test_bert_package_cli(exports, tmp_path):
    meta_file = tmp_path / "card.json"
    meta_file.write_text(json.dumps({"model_name": "from_file", "language": "de"}))
    proc = subprocess.run([BERT_PACKAGE, f"--saved_model_dir={exports('legacy')}", f"--output_dir={tmp_path / 'o'}",
                           f"--card_metadata_file={meta_file}", "--dataset=books", "--instance_version=3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(tmp_path / "o" / "from_file.tar.gz")
    card = (tmp_path / "o" / "README.md").read_text()
    assert "<!-- language: de -->" in card and "<!-- dataset: books -->" in card
    slug = f"L-{TINY.num_hidden_layers}_H-{TINY.hidden_size}_A-{TINY.num_attention_heads}"
    assert f'kagglehub.model_download("<owner>/from_file/tensorFlow2/{slug}/3")' in card  # placeholder owner
    zero = subprocess.run([BERT_PACKAGE, f"--saved_model_dir={exports('legacy')}", f"--output_dir={tmp_path / 'z'}",
                           "--instance_version=0"], capture_output=True, text=True)
    assert zero.returncode == 2 and zero.stderr.count("\n") == 1 and "instance_version" in zero.stderr, zero.stderr
    assert not (tmp_path / "z").exists()
    bad = subprocess.run([BERT_PACKAGE, f"--saved_model_dir={tmp_path}", f"--output_dir={tmp_path / 'x'}"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a bert-export version directory" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_bert_package_takes_card_facts_of_a_published_model(exports, tmp_path):
    proc = subprocess.run([BERT_PACKAGE, f"--saved_model_dir={exports('legacy')}", f"--output_dir={tmp_path / 'o'}",
                           "--config=bert_en_uncased_L-4_H-256_A-4"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(tmp_path / "o" / "bert_en_uncased_L-4_H-256_A-4.tar.gz")
    card = (tmp_path / "o" / "README.md").read_text()
    assert card.startswith("# Module tensorflow/small_bert/bert_en_uncased_L-4_H-256_A-4/1\n")
    assert "<!-- dataset: wikipedia-and-bookscorpus -->" in card and "Small BERTs" in card
    # The model facts still come from the export, not from the name.
    assert f"L={TINY.num_hidden_layers} hidden layers" in card
