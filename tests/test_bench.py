"""Keeps scripts/bench.py working (a tiny smoke run) and checks its process-tree RSS sampling."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "scripts", "bench.py")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_peak_rss_is_summed_over_the_whole_process_tree():
    """Two grandchildren holding 300 MiB each at once must count as 600 MiB, not 300."""
    bench = _bench_module()
    hold = f"{sys.executable} -c 'import time; x = bytearray(300 << 20); time.sleep(1.5)'"
    m = bench.measure([["bash", "-c", f"{hold} & {hold} & wait"]], dict(os.environ))
    assert m.peak_tree_rss_bytes >= 2 * 300 * 2 ** 20
    assert 1.4 < m.wall_seconds < 30


def test_peak_rss_counts_a_child_that_another_thread_started():
    """The sampler follows main threads' children between full scans of /proc; a child forked by
    another thread (as a thread pool would) must still be counted."""
    bench = _bench_module()
    hold = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_HOLD!r}])"
    program = f"import threading; t = threading.Thread(target=exec, args=({hold!r},)); t.start(); t.join()"
    m = bench.measure([[sys.executable, "-c", program]], dict(os.environ))
    assert m.peak_tree_rss_bytes >= 300 * 2 ** 20


_HOLD = "import time; x = bytearray(300 << 20); time.sleep(1.5)"


def test_bench_smoke_tiny(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, BENCH, "--size=tiny", "--runs=1", "--latency_calls=3",
                           f"--json={out}", f"--cache_dir={tmp_path / 'cache'}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| tiny | export wall, no verification |" in proc.stdout
    assert "| tiny | export wall with verification; baseline: the encoder export |" in proc.stdout
    assert "| tiny | serve_text latency, batch 8 (padded to its longest text, at most 128 tokens);" in proc.stdout
    data = json.loads(out.read_text())
    (result,) = data["results"]
    assert set(result["ratios"]) == set(data["targets"]) | {"serve_text_latency"}  # the one ratio without a target
    assert all(ratio > 0 for ratio in result["ratios"].values())
    for key in ("ours_verify_wall", "ours_noverify_wall", "reference_wall", "ours_verify_peak_rss",
                "reference_peak_rss", "ours_serving_latency", "reference_serving_latency",
                "classifier_verify_wall", "classifier_encoder_verify_wall", "classifier_verify_peak_rss",
                "classifier_encoder_verify_peak_rss", "serve_text_latency", "python_tokenizer_serving_latency",
                "python_tokenization_latency"):
        assert result[key] > 0, key
    assert result["text_batch"]["texts"] == 8 and all(20 <= n <= 40 for n in result["text_batch"]["words"])
    assert {"classifier_verify", "classifier_encoder_verify"} <= set(result["all_runs"])
    assert all(len(runs) == 1 for runs in result["all_runs"].values())
    assert all(len(values) == 1 for values in result["all_latencies"].values())
    assert "| tiny | 8 × 128 |" in proc.stdout and "bfloat16" in proc.stdout  # the serving table
    assert all(result["serving"][f"{name} {batch} default"] > 0
               for name in ("float32", "bfloat16", "tf_models") for batch in (1, 8, 32))

    # What --noserving leaves out: the tables render without the serving rows.
    serving_keys = {"ours_serving_latency", "reference_serving_latency", "serve_text_latency",
                    "python_tokenizer_serving_latency", "python_tokenization_latency", "text_batch", "serving",
                    "all_latencies"}
    exports_only = {k: v for k, v in result.items() if k not in serving_keys}
    exports_only["ratios"] = {k: v for k, v in result["ratios"].items() if "serv" not in k}
    (tmp_path / "exports.json").write_text(json.dumps(data | {"results": [exports_only]}))
    rendered = subprocess.run([sys.executable, BENCH, f"--render_json={tmp_path / 'exports.json'}"],
                              capture_output=True, text=True, cwd=REPO)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert "| tiny | export wall with verification; baseline: the encoder export |" in rendered.stdout
    assert "latency" not in rendered.stdout and "| tiny | 8 × 128 |" not in rendered.stdout
