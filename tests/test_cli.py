"""The bert-export command: versions, overwrite, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

import numpy as np
import tensorflow as tf

from conftest import TINY, google_research_names, write_config, write_google_checkpoint

BERT_EXPORT = os.path.join(os.path.dirname(sys.executable), "bert-export")


def run_cli(*args, console_script=False):
    command = [BERT_EXPORT] if console_script else [sys.executable, "-m", "export"]
    return subprocess.run(command + list(args), capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def tree_digest(path) -> dict[str, str]:
    digests = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                digests[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def assert_one_line_error(proc, *fragments, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bert-export: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_versions_increment_and_existing_versions_are_never_touched(tf1_model, tmp_path):
    base = tmp_path / "models" / "bert"
    first = run_cli(*tf1_model.flags(base), console_script=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == str(base / "1")
    assert "verification: PASSED" in first.stdout
    before = tree_digest(base / "1")

    second = run_cli(*tf1_model.flags(base, "--noverify", "--export_format=v2"))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == str(base / "2")

    clash = run_cli(*tf1_model.flags(base, "--version=1", "--noverify"))
    assert_one_line_error(clash, "--version", "already exists", "--overwrite")
    assert tree_digest(base / "1") == before
    assert sorted(os.listdir(base)) == ["1", "2"]

    explicit = run_cli(*tf1_model.flags(base, "--version=10", "--noverify"))
    assert explicit.stdout.strip().splitlines()[-1] == str(base / "10")
    after_gap = run_cli(*tf1_model.flags(base, "--noverify"))
    assert after_gap.stdout.strip().splitlines()[-1] == str(base / "11")


def test_overwrite_replaces_a_version_in_place(tf1_model, tmp_path):
    base = tmp_path / "base"
    assert run_cli(*tf1_model.flags(base, "--noverify")).returncode == 0
    os.utime(base / "1" / "saved_model.pb", (0, 0))  # a mark the replacement must not carry
    proc = run_cli(*tf1_model.flags(base, "--version=1", "--overwrite", "--export_format=v2", "--noverify"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(base)) == ["1"]  # the replaced version and temporaries are gone
    assert os.stat(base / "1" / "saved_model.pb").st_mtime > 0
    with open(base / "1" / "assets.extra" / "export_report.json") as f:
        assert '"export_format": "v2"' in f.read()


def test_demo_exports_the_real_model_and_prints_path_last(tmp_path):
    proc = run_cli("--demo", f"--export_path={tmp_path / 'out'}", console_script=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == str(tmp_path / "out" / "1")
    assert any(line.startswith("verification: PASSED") for line in lines)
    assert any("[huggingface]" in line for line in lines)
    assert any(line.startswith("paraphrases score") for line in lines)
    refused = run_cli("--demo", f"--vocab_file={tmp_path}/v.txt", f"--export_path={tmp_path / 'out'}")
    assert_one_line_error(refused, "--demo", "--vocab_file")


def _bad_config(model_dir, **overrides):
    return write_config(os.path.join(model_dir, "bad_config.json"), TINY, **overrides)


@pytest.fixture
def sandbox(tmp_path, tf1_model):
    """A copy of the tiny model to break, and an export base holding one version."""
    model_dir = tmp_path / "model"
    shutil.copytree(tf1_model.directory, model_dir)
    base = tmp_path / "base"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"an existing version")
    return model_dir, base


BAD_INPUTS = {
    "vocab_size_mismatch": (lambda d: {"--bert_config_file": _bad_config(d, vocab_size=28996)},
                            ["vocab.txt has 300 lines but bad_config.json says vocab_size=28996"]),
    "layer_count_mismatch": (lambda d: {"--bert_config_file": _bad_config(d, num_hidden_layers=3)},
                             ["2 transformer layers", "num_hidden_layers=3"]),
    "hidden_not_divisible": (lambda d: {"--bert_config_file": _bad_config(d, num_attention_heads=5)},
                             ["hidden_size=64 is not divisible by num_attention_heads=5"]),
    "intermediate_mismatch": (lambda d: {"--bert_config_file": _bad_config(d, intermediate_size=256)},
                              ["intermediate/dense/kernel is [64, 128], expected [64, 256]"]),
    "unknown_activation": (lambda d: {"--bert_config_file": _bad_config(d, hidden_act="swishy")},
                           ["unknown hidden_act 'swishy'"]),
    "missing_checkpoint": (lambda d: {"--model_checkpoint_path": str(d / "nope.ckpt")}, ["does not exist"]),
    "not_bert_checkpoint": (lambda d: {"--model_checkpoint_path": _other_checkpoint(d)},
                            ["not a BERT checkpoint", "dense/kernel"]),
    "missing_variables": (lambda d: {"--model_checkpoint_path": _checkpoint_without(d, "layer_1/output")},
                          ["lacks 4 encoder variable(s)", "bert/encoder/layer_1/output/dense/kernel"]),
    "missing_special_token": (lambda d: {"--vocab_file": _vocab_replacing(d, "[MASK]", "[MASKX]")},
                              ["[MASK] missing"]),
    "vocab_and_sp_model": (lambda d: {"--sp_model_file": str(d / "sp.model")}, ["mutually exclusive"]),
    "version_zero": (lambda d: {"--version": "0"}, ["--version must be a positive integer"]),
    "version_not_integer": (lambda d: {"--version": "two"}, ["version"]),
    "export_path_is_file": (lambda d: {"--export_path": str(d / "vocab.txt")}, ["not a directory"]),
}


def _other_checkpoint(model_dir):
    return write_google_checkpoint(str(model_dir / "other.ckpt"), {"dense/kernel": np.ones((2, 2), np.float32)})


def _checkpoint_without(model_dir, dropped_prefix):
    reader = tf.train.load_checkpoint(str(model_dir / "bert_model.ckpt"))
    names = google_research_names(TINY.num_hidden_layers)
    drop = {names[k] for k in names if k.startswith(dropped_prefix)}
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in drop}
    return write_google_checkpoint(str(model_dir / "partial.ckpt"), arrays)


def _vocab_replacing(model_dir, old, new):
    text = (model_dir / "vocab.txt").read_text(encoding="utf-8").replace(old + "\n", new + "\n")
    path = model_dir / "vocab_bad.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, sandbox, tf1_model):
    model_dir, base = sandbox
    make_overrides, fragments = BAD_INPUTS[case]
    flags = {"--bert_config_file": str(model_dir / "bert_config.json"), "--vocab_file": str(model_dir / "vocab.txt"),
             "--model_checkpoint_path": str(model_dir / "bert_model.ckpt"), "--export_path": str(base)}
    flags.update(make_overrides(model_dir))
    before = tree_digest(base)
    proc = run_cli(*[f"{k}={v}" for k, v in flags.items()])
    assert_one_line_error(proc, *fragments)
    assert tree_digest(base) == before and sorted(os.listdir(base)) == ["1"]


def test_verbose_adds_the_traceback(sandbox):
    model_dir, base = sandbox
    proc = run_cli(f"--bert_config_file={_bad_config(model_dir, vocab_size=5)}", f"--vocab_file={model_dir}/vocab.txt",
                   f"--model_checkpoint_path={model_dir}/bert_model.ckpt", f"--export_path={base}", "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_bad_input_into_a_new_base_creates_no_directory(tmp_path, tf1_model):
    base = tmp_path / "does" / "not" / "exist"
    proc = run_cli(*tf1_model.flags(base, f"--bert_config_file={tmp_path}/missing.json"))
    assert_one_line_error(proc, "--bert_config_file", "does not exist")
    assert not (tmp_path / "does").exists()


def test_explicit_casing_flag_that_contradicts_vocab_warns(tf1_model, tmp_path):
    proc = run_cli(*tf1_model.flags(tmp_path / "b", "--do_lower_case", "--noverify"))
    assert proc.returncode == 0, proc.stderr
    assert "contradicts vocab.txt" in proc.stderr
    assert "do_lower_case: True (flag (contradicts vocab content))" in proc.stdout


def test_exports_of_the_same_input_have_identical_weights(tf1_model, tmp_path):
    for name in ("a", "b"):
        assert run_cli(*tf1_model.flags(tmp_path / name, "--noverify")).returncode == 0
    assert filecmp.cmp(tmp_path / "a" / "1" / "variables" / "variables.data-00000-of-00001",
                       tmp_path / "b" / "1" / "variables" / "variables.data-00000-of-00001", shallow=False)


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "export", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_concurrent_exports_into_one_base_get_distinct_versions(tf1_model, tmp_path):
    base = tmp_path / "base"
    procs = [_start(*tf1_model.flags(base, "--noverify")) for _ in range(3)]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    paths = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert paths == [str(base / v) for v in ("1", "2", "3")]
    assert sorted(os.listdir(base)) == ["1", "2", "3"]  # no temporaries left
    for version in ("1", "2", "3"):
        with open(base / version / "assets.extra" / "export_report.json") as f:
            assert f'"version": {version},' in f.read()  # the report names the number it ended up with


def test_concurrent_exports_asking_for_the_same_version(tf1_model, tmp_path):
    base = tmp_path / "base"
    procs = [_start(*tf1_model.flags(base, "--noverify", "--version=5")) for _ in range(2)]
    outputs = [p.communicate() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [err[-500:] for _, err in outputs]
    loser = next(err for p, (_, err) in zip(procs, outputs) if p.returncode == 2)
    assert "--version" in loser and "Traceback" not in loser
    assert sorted(os.listdir(base)) == ["5"]
