"""Reliability: a catalogue of bad inputs, SIGKILL at every stage, full disks, read-only bases and
concurrent exports. A version is complete or absent; what existed before stays byte-identical."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, google_research_names, write_config, write_google_checkpoint
from export.faults import POINTS, VARIABLE
from test_cli import assert_one_line_error, run_cli, tree_digest

# --- the bad-input catalogue -------------------------------------------------------------------


def _config(d, **overrides):
    return write_config(os.path.join(d, "bad_config.json"), TINY, **overrides)


def _text(d, name, content, binary=False):
    path = os.path.join(d, name)
    with open(path, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
        f.write(content)
    return path


def _vocab_lines(d):
    with open(os.path.join(d, "vocab.txt"), encoding="utf-8") as f:
        return f.read().splitlines()


def _vocab(d, lines):
    return _text(d, "vocab_bad.txt", "\n".join(lines) + "\n")


def _checkpoint(d, name="bert_model.ckpt"):
    reader = tf.train.load_checkpoint(os.path.join(d, name))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _rewrite(d, change):
    arrays = _checkpoint(d)
    change(arrays)
    return write_google_checkpoint(os.path.join(d, "changed.ckpt"), arrays)


def _drop(prefix):
    names = google_research_names(TINY.num_hidden_layers)
    drop = {names[k] for k in names if k.startswith(prefix)}
    return lambda arrays: [arrays.pop(n) for n in drop]


def _nan(arrays):
    arrays["bert/encoder/layer_1/output/dense/bias"][2] = np.inf


def _truncated_data(d):
    prefix = _rewrite(d, lambda arrays: None)
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    return prefix


def _hidden_mismatch(d):
    # A consistent config with another hidden size: the checkpoint's word embeddings are 64 wide.
    return _config(d, hidden_size=128, num_attention_heads=4)


# name -> (flags to override, given the model's directory; fragments of the one-line error)
CATALOGUE = {
    "config_missing": (lambda d: {"--bert_config_file": f"{d}/nope.json"}, ["--bert_config_file", "does not exist"]),
    "config_is_a_directory": (lambda d: {"--bert_config_file": str(d)}, ["--bert_config_file", "not a file"]),
    "config_empty": (lambda d: {"--bert_config_file": _text(d, "c.json", "")}, ["c.json", "empty"]),
    "config_malformed_json": (lambda d: {"--bert_config_file": _text(d, "c.json", '{"vocab_size": 300,')},
                              ["c.json: not valid JSON"]),
    "config_not_an_object": (lambda d: {"--bert_config_file": _text(d, "c.json", "[1, 2]")}, ["expected a JSON object"]),
    "config_field_missing": (lambda d: {"--bert_config_file": _text(d, "c.json", '{"vocab_size": 300}')},
                             ["missing field(s)", "hidden_size"]),
    "config_wrong_type": (lambda d: {"--bert_config_file": _config(d, hidden_size="64")},
                          ["hidden_size must be an integer"]),
    "config_zero_size": (lambda d: {"--bert_config_file": _config(d, intermediate_size=0)},
                         ["intermediate_size must be positive"]),
    "config_negative_size": (lambda d: {"--bert_config_file": _config(d, num_hidden_layers=-2)},
                             ["num_hidden_layers must be positive"]),
    "config_hidden_not_divisible": (lambda d: {"--bert_config_file": _config(d, num_attention_heads=5)},
                                    ["hidden_size=64 is not divisible by num_attention_heads=5"]),
    "config_unknown_activation": (lambda d: {"--bert_config_file": _config(d, hidden_act="swishy")},
                                  ["unknown hidden_act 'swishy'"]),
    "config_absurd_size": (lambda d: {"--bert_config_file": _config(d, vocab_size=10 ** 12)},
                           ["vocab_size=1000000000000 is larger than the supported"]),
    "config_absurd_parameter_count": (lambda d: {"--bert_config_file": _config(
        d, hidden_size=65536, num_attention_heads=64, intermediate_size=262144, num_hidden_layers=1000)},
        ["parameters, more than the supported"]),
    "vocab_missing": (lambda d: {"--vocab_file": f"{d}/nope.txt"}, ["--vocab_file", "does not exist"]),
    "vocab_not_utf8": (lambda d: {"--vocab_file": _text(d, "v.txt", b"[PAD]\ncaf\xe9\n", binary=True)},
                       ["v.txt: not UTF-8"]),
    "vocab_empty": (lambda d: {"--vocab_file": _text(d, "v.txt", "")}, ["v.txt: the vocabulary is empty"]),
    "vocab_duplicate_token": (lambda d: {"--vocab_file": _vocab(d, _vocab_lines(d)[:-1] + ["the"])},
                              ["token 'the' appears twice"]),
    "vocab_missing_special_token": (lambda d: {"--vocab_file": _vocab(
        d, [t if t != "[CLS]" else "[CLS2]" for t in _vocab_lines(d)])}, ["[CLS] missing"]),
    "vocab_size_mismatch": (lambda d: {"--vocab_file": _vocab(d, _vocab_lines(d) + ["extra1", "extra2"])},
                            ["vocab_bad.txt has 302 lines but bert_config.json says vocab_size=300"]),
    "checkpoint_missing": (lambda d: {"--model_checkpoint_path": f"{d}/nope.ckpt"},
                           ["--model_checkpoint_path", "does not exist"]),
    "checkpoint_directory_empty": (lambda d: {"--model_checkpoint_path": str(_mkdir(d, "empty"))},
                                   ["no checkpoint (*.index file) in directory"]),
    "checkpoint_truncated_data": (lambda d: {"--model_checkpoint_path": _truncated_data(d)},
                                  ["changed.ckpt: cannot read variable"]),
    "checkpoint_corrupt_index": (lambda d: {"--model_checkpoint_path": _corrupt_index(d)},
                                 ["corrupt.index: not a readable TensorFlow checkpoint"]),
    "checkpoint_not_bert": (lambda d: {"--model_checkpoint_path": write_google_checkpoint(
        f"{d}/other.ckpt", {"dense/kernel": np.ones((2, 2), np.float32)})}, ["not a BERT checkpoint", "dense/kernel"]),
    "checkpoint_layer_count_mismatch": (lambda d: {"--bert_config_file": _config(d, num_hidden_layers=3)},
                                        ["has 2 transformer layers but bad_config.json says num_hidden_layers=3"]),
    "checkpoint_hidden_size_mismatch": (lambda d: {"--bert_config_file": _hidden_mismatch(d)},
                                        ["has hidden size 64", "hidden_size=128"]),
    "checkpoint_intermediate_mismatch": (lambda d: {"--bert_config_file": _config(d, intermediate_size=256)},
                                         ["does not match bad_config.json: intermediate_size: config 256, checkpoint "
                                          "128 (bert/encoder/layer_0/intermediate/dense/kernel is [64, 128]; 5 more "
                                          "variable(s) differ)"]),
    "checkpoint_position_mismatch": (lambda d: {"--bert_config_file": _config(d, max_position_embeddings=256)},
                                     ["max_position_embeddings: config 256, checkpoint 128",
                                      "bert/embeddings/position_embeddings is [128, 64]"]),
    "checkpoint_missing_variables": (lambda d: {"--model_checkpoint_path": _rewrite(d, _drop("layer_1/output"))},
                                     ["lacks 4 encoder variable(s)", "bert/encoder/layer_1/output/dense/kernel"]),
    "checkpoint_unexpected_extras_strict": (
        lambda d: {"--model_checkpoint_path": _rewrite(
            d, lambda a: a.update({"bert/encoder/layer_0/rotary": np.ones(3, np.float32)})), "--strict": None},
        ["unexpected variable(s)", "bert/encoder/layer_0/rotary", "--strict"]),
    "checkpoint_nan_or_inf": (lambda d: {"--model_checkpoint_path": _rewrite(d, _nan)},
                              ["bert/encoder/layer_1/output/dense/bias contains NaN or Inf"]),
    "export_path_is_a_file": (lambda d: {"--export_path": f"{d}/vocab.txt"}, ["--export_path", "not a directory"]),
    "export_path_inside_the_checkpoint_directory": (lambda d: {"--export_path": str(d)},
                                                    ["would hold the source file"]),
    "version_zero": (lambda d: {"--version": "0"}, ["--version must be a positive integer, got 0"]),
    "version_negative": (lambda d: {"--version": "-3"}, ["--version must be a positive integer, got -3"]),
    "version_not_an_integer": (lambda d: {"--version": "two"}, ["--version", "two"]),
    "version_already_present": (lambda d: {"--version": "1"}, ["--version", "already exists", "--overwrite"]),
    "vocab_file_and_sp_model_file": (lambda d: {"--sp_model_file": f"{d}/sp.model"}, ["mutually exclusive"]),
    "unknown_flag": (lambda d: {"--vocab_fiel": "x"}, ["vocab_fiel"]),
    "unknown_export_format": (lambda d: {"--export_format": "v3"}, ["export_format", "v3"]),
}


def _mkdir(d, name):
    path = os.path.join(d, name)
    os.makedirs(path, exist_ok=True)
    return path


def _corrupt_index(d):
    _text(d, "corrupt.index", b"\x00\x01garbage" * 20, binary=True)
    return os.path.join(d, "corrupt")


@pytest.fixture
def sandbox(tmp_path, tf1_model):
    """A copy of the tiny model to break, and an export base holding one version."""
    model_dir = tmp_path / "model"
    shutil.copytree(tf1_model.directory, model_dir)
    base = tmp_path / "base"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"an existing version")
    return model_dir, base


def test_the_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, sandbox):
    model_dir, base = sandbox
    make_overrides, fragments = CATALOGUE[case]
    flags = {"--bert_config_file": str(model_dir / "bert_config.json"), "--vocab_file": str(model_dir / "vocab.txt"),
             "--model_checkpoint_path": str(model_dir / "bert_model.ckpt"), "--export_path": str(base)}
    flags.update(make_overrides(model_dir))
    before = tree_digest(base)
    proc = run_cli(*[k if v is None else f"{k}={v}" for k, v in flags.items()])
    assert_one_line_error(proc, *fragments)
    assert tree_digest(base) == before and sorted(os.listdir(base)) == ["1"]
    assert not [n for n in os.listdir(model_dir) if n.isdigit() or n.startswith(".bert-export-tmp-")]


def test_unexpected_extras_only_warn_without_strict(sandbox):
    model_dir, base = sandbox
    prefix = _rewrite(model_dir, lambda a: a.update({"bert/encoder/layer_0/rotary": np.ones(3, np.float32)}))
    proc = run_cli(f"--model_checkpoint_path={prefix}", f"--bert_config_file={model_dir}/bert_config.json",
                   f"--vocab_file={model_dir}/vocab.txt", f"--export_path={base}", "--noverify")
    assert proc.returncode == 0 and "bert/encoder/layer_0/rotary" in proc.stderr


def test_verbose_lists_everything_the_short_line_leaves_out(sandbox):
    model_dir, base = sandbox
    prefix = _rewrite(model_dir, _drop("layer_0/"))  # 16 variables: the line names 3
    flags = [f"--model_checkpoint_path={prefix}", f"--bert_config_file={model_dir}/bert_config.json",
             f"--vocab_file={model_dir}/vocab.txt", f"--export_path={base}"]
    short = run_cli(*flags)
    assert_one_line_error(short, "lacks 16 encoder variable(s)", "and 13 more")
    full = run_cli(*flags, "--verbose")
    assert full.returncode == 2
    assert all(f"bert/encoder/layer_0/{name}" in full.stderr for name in (
        "output/LayerNorm/beta", "intermediate/dense/kernel", "attention/self/query/bias"))


def test_verbose_adds_the_traceback(sandbox):
    model_dir, base = sandbox
    proc = run_cli(f"--bert_config_file={_config(model_dir, vocab_size=5)}", f"--vocab_file={model_dir}/vocab.txt",
                   f"--model_checkpoint_path={model_dir}/bert_model.ckpt", f"--export_path={base}", "--verbose")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_bad_input_into_a_new_base_creates_no_directory(tmp_path, tf1_model):
    base = tmp_path / "does" / "not" / "exist"
    proc = run_cli(*tf1_model.flags(base, f"--bert_config_file={tmp_path}/missing.json"))
    assert_one_line_error(proc, "--bert_config_file", "does not exist")
    assert not (tmp_path / "does").exists()


# --- faults ------------------------------------------------------------------------------------

def _export_process(model, base, *extra, env_extra=None, preexec_fn=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "export", *model.flags(base, *extra)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=preexec_fn)


def _numeric(base):
    return sorted(name for name in os.listdir(base) if name.isdigit())


@pytest.fixture(scope="module")
def published_base(tmp_path_factory, tf1_model):
    """A base with version 1, and how long a verified export takes here."""
    base = tmp_path_factory.mktemp("faults") / "base"
    start = time.monotonic()
    proc = _export_process(tf1_model, base)
    proc.communicate()
    assert proc.returncode == 0
    return base, time.monotonic() - start


def _assert_recovered(model, base, before):
    assert tree_digest(base / "1") == before
    proc = _export_process(model, base, "--noverify")
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert not [n for n in os.listdir(base) if n.startswith(".bert-export-tmp-")]  # stale temporaries gone
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_stage_leaves_no_partial_version(point, tf1_model, published_base):
    base, _ = published_base
    before, versions = tree_digest(base / "1"), _numeric(base)
    proc = _export_process(tf1_model, base, env_extra={VARIABLE: point})
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    new = sorted(set(_numeric(base)) - set(versions), key=int)
    if point == "published":  # killed after the rename: the version is complete
        assert len(new) == 1
        assert tf.saved_model.load(str(base / new[0])).signatures["serving_default"] is not None
    else:
        assert new == []
    _assert_recovered(tf1_model, base, before)


@pytest.mark.parametrize("fraction", [0.15, 0.35, 0.55, 0.75, 0.9])
def test_sigkill_of_the_process_group_at_a_time(fraction, tf1_model, published_base):
    """Kills the exporter and its verifier child at a fraction of a normal run's duration."""
    base, duration = published_base
    before, versions = tree_digest(base / "1"), _numeric(base)
    proc = _export_process(tf1_model, base)
    time.sleep(duration * fraction)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    for name in sorted(set(_numeric(base)) - set(versions)):  # only a rename that finished may show
        assert os.path.isfile(base / name / "assets.extra" / "export_report.json")
    _assert_recovered(tf1_model, base, before)


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_file_size_limit_while_writing_is_a_clear_error(tf1_model, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    proc = _export_process(tf1_model, base, preexec_fn=_limit_file_size)
    _, err = proc.communicate()
    assert_one_line_error(subprocess.CompletedProcess([], proc.returncode, "", err),
                          "--export_path: cannot write under", "nothing was published", code=4)
    assert os.listdir(base) == []


@contextlib.contextmanager
def _tmpfs(path, options):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_disk_full_while_writing_is_a_clear_error(tf1_model, tmp_path):
    with _tmpfs(tmp_path / "small", "size=256k") as base:
        (base / "1").mkdir()
        (base / "1" / "keep").write_bytes(b"x" * 1000)
        proc = _export_process(tf1_model, base)
        _, err = proc.communicate()
        assert_one_line_error(subprocess.CompletedProcess([], proc.returncode, "", err),
                              "No space left on device", code=4)
        assert sorted(os.listdir(base)) == ["1"] and (base / "1" / "keep").read_bytes() == b"x" * 1000


def test_read_only_base_is_refused_before_any_heavy_work(tf1_model, tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as base:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "export", *tf1_model.flags(base)],
                              capture_output=True, text=True)
        errors = subprocess.CompletedProcess([], proc.returncode, "",
                                             "\n".join(l for l in proc.stderr.splitlines() if "import time:" not in l))
        assert_one_line_error(errors, "--export_path", "not a writable directory")
        imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line]
        assert "absl.flags" in imported and "tensorflow" not in imported  # refused before any heavy work


def test_four_concurrent_exports_get_four_verified_versions(tf1_model, tmp_path):
    base = tmp_path / "base"
    procs = [_export_process(tf1_model, base) for _ in range(4)]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in outputs]
    assert sorted(out.strip().splitlines()[-1] for out, _ in outputs) == [str(base / v) for v in "1234"]
    assert sorted(os.listdir(base)) == ["1", "2", "3", "4"]
    for v in "1234":
        assert "verification: PASSED" in next(out for out, _ in outputs if out.strip().endswith(str(base / v)))
        with open(base / v / "assets.extra" / "export_report.json") as f:
            assert f'"version": {v},' in f.read()


def test_two_concurrent_exports_asking_for_the_same_version(tf1_model, tmp_path):
    base = tmp_path / "base"
    procs = [_export_process(tf1_model, base, "--noverify", "--version=5") for _ in range(2)]
    outputs = [p.communicate() for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], [err[-500:] for _, err in outputs]
    loser = next(err for p, (_, err) in zip(procs, outputs) if p.returncode == 2)
    assert "--version" in loser and "Traceback" not in loser
    assert sorted(os.listdir(base)) == ["5"]


# --- nothing of the exporting machine in the export ---------------------------------------------

def test_no_host_path_user_or_home_in_any_exported_file(exports, tf1_model):
    import getpass

    needles = {os.path.expanduser("~"), tf1_model.directory, os.path.dirname(exports("legacy")), "bert-export-tmp"}
    user = getpass.getuser()
    for export_format in ("legacy", "v2"):
        root = exports(export_format)
        for directory, _, files in os.walk(root):
            for name in files:
                with open(os.path.join(directory, name), "rb") as f:
                    content = f.read()
                for needle in needles:
                    assert needle.encode() not in content, (name, needle)
                if name.endswith((".pb", ".json", ".index")):
                    assert f"/{user}/".encode() not in content, (name, user)
