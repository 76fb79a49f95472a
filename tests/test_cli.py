"""The bert-export command: versions, overwrite, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import filecmp
import hashlib
import os
import subprocess
import sys


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
    refused = run_cli("--demo", "--export_type=preprocessing", f"--export_path={tmp_path / 'out'}")
    assert_one_line_error(refused, "--demo exports the encoder")


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


def test_config_by_name(tf1_model, tmp_path):
    flags = [f for f in tf1_model.flags(tmp_path / "b") if not f.startswith("--bert_config_file")]
    proc = run_cli(*flags, "--config=bert_en_uncased_L-2_H-128_A-2")
    assert_one_line_error(proc, "vocab.txt has 300 lines but bert_en_uncased_L-2_H-128_A-2.json says vocab_size=30522")
    unknown = run_cli(*flags, "--config=bert_en_uncased_L-2_H-129_A-2")
    assert_one_line_error(unknown, "--config", "did you mean", "bert_en_uncased_L-2_H-128_A-2")
    both = run_cli(*tf1_model.flags(tmp_path / "b"), "--config=bert_en_uncased_L-2_H-128_A-2")
    assert_one_line_error(both, "--config and --bert_config_file are mutually exclusive")
