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


MAX_ERROR_CHARS = 300  # an error message, after `bert-export: error: `


def assert_one_line_error(proc, *fragments, code=2, program="bert-export"):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    prefix = f"{program}: error: "
    errors = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(errors[0]) - len(prefix) <= MAX_ERROR_CHARS, f"{len(errors[0]) - len(prefix)} characters: {errors[0]}"
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


def test_help_prints_usage_an_example_and_the_flags():
    for flag in ("--help", "--helpfull", "-h"):
        proc = run_cli(flag)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Usage: bert-export --model_checkpoint_path=") and "Example:" in proc.stdout
        assert "--model_checkpoint_path:" in proc.stdout and "--export_type:" in proc.stdout
    assert "--log_dir" in run_cli("--helpfull").stdout and "--log_dir" not in run_cli("--help").stdout
    assert_one_line_error(run_cli("--hepl"), "hepl")  # an unknown flag stays one line, exit 2


def test_quiet_prints_only_the_version_path_and_progress_goes_to_stderr(tf1_model, tmp_path):
    loud = run_cli(*tf1_model.flags(tmp_path / "loud", "--noverify"))
    assert loud.returncode == 0, loud.stderr
    assert "bert-export: reading weights: 39/39 tensors" in loud.stderr and "bert-export: saving" in loud.stderr
    assert loud.stdout.strip().splitlines()[-1] == str(tmp_path / "loud" / "1")
    quiet = run_cli(*tf1_model.flags(tmp_path / "quiet", "--quiet"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == f"{tmp_path / 'quiet' / '1'}\n"
    assert "reading weights" not in quiet.stderr and "INFO" not in quiet.stderr


def test_list_configs():
    proc = run_cli("--list_configs")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 30 and any(line.startswith("bert_en_cased_L-24_H-1024_A-16") for line in lines)


def test_every_console_script_answers_help():
    for program, usage in (("bert-export", "Usage: bert-export"), ("bert-package", "Usage: bert-package"),
                           ("bert-verify", "Usage: bert-verify")):
        for flag in ("--help", "--helpfull"):
            proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), program), flag],
                                  capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            assert proc.returncode == 0, (program, flag, proc.stderr[-1000:])
            assert proc.stdout.startswith(usage) and "Example:" in proc.stdout and "Exit codes:" in proc.stdout


BLOCKED_IMPORT = """
import sys
sys.modules[sys.argv.pop(1)] = None  # `import` of it now raises ModuleNotFoundError, as when not installed
from export.cli.export_cli import run
run()
"""


def test_a_missing_package_is_one_line_naming_the_pip_install(tmp_path, tf1_model):
    from test_huggingface import write_hf_model

    directory = write_hf_model(tmp_path / "hf", tf1_model.weights, vocab_from=tf1_model.vocab_file)
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, "safetensors",
                           f"--model_checkpoint_path={directory}", f"--export_path={tmp_path / 'out'}"],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert_one_line_error(proc, "'safetensors' is not installed", "pip install safetensors")
    assert not (tmp_path / "out").exists()
