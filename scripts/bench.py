"""Benchmark bert-export against tf-models-official's two-step pipeline, side by side.

For each --size, on a cached random google-research TF1 checkpoint, this measures in one run,
alternating A/B/C after a warm-up round:
  A  bert-export with verification,
  B  bert-export --noverify,
  C  tf-models: tf2_bert_encoder_checkpoint_converter, then export_tfhub (via their module entry points),
each as wall time and peak RSS of the whole process tree (the sum over every live descendant,
sampled every 20 ms). Then the serving latency of both exports (median of `serving_default` on
batch 8 x seq 128, same thread settings, each in a fresh process). It prints medians and the
ratios ours / reference, and can write JSON and regenerate the table in BUILD.md.

    python scripts/bench.py --size=large            # the issue's targets are for this size
    python scripts/bench.py --size=base,large --json=bench.json --update_build_md
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
flags.DEFINE_list("size", ["large"], "Model sizes, from: tiny, base, large.")
flags.DEFINE_integer("runs", 3, "Timed runs of each pipeline, after one warm-up round.")
flags.DEFINE_integer("latency_calls", 5, "Timed serving_default calls per latency measurement "
                     "(BERT-large takes seconds per call on 2 cores).")
flags.DEFINE_string("cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "bert-export", "bench"),
                    "Where generated checkpoints are kept between runs.")
flags.DEFINE_string("json", None, "Write the results here as JSON.")
flags.DEFINE_boolean("update_build_md", False, "Rewrite the benchmark section of BUILD.md.")
flags.DEFINE_string("render_json", None, "Measure nothing: render the table from this --json output.")

# Targets from the performance issue, as ours / reference, for the `large` size.
TARGETS = {"export_noverify_wall": 0.15, "export_verify_wall": 0.3, "peak_rss": 0.2, "serving_latency": 1.05}

LATENCY_PROGRAM = r"""
import os, sys, statistics, time
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
names = sorted(fn.structured_input_signature[1])
rng = np.random.default_rng(0)
ids = rng.integers(1, int(sys.argv[3]), (8, 128)).astype(np.int32)
feeds = {n: tf.constant(ids if "word" in n else np.ones_like(ids) if "mask" in n else np.zeros_like(ids))
         for n in names}
for _ in range(3):
    fn(**feeds)
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); fn(**feeds); times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


@dataclasses.dataclass
class Measurement:
    wall_seconds: float
    peak_tree_rss_bytes: int


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS over `root` and all its live descendants."""
    children, total, stack = _children_map(), 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def measure(commands: list[list[str]], env: dict[str, str]) -> Measurement:
    """Runs the commands one after another; wall time in all, and the highest tree RSS seen."""
    peak, start = 0, time.monotonic()
    for command in commands:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()
        peaks = [0]

        def sample(pid=proc.pid):
            while not done.is_set():
                peaks[0] = max(peaks[0], tree_rss_bytes(pid))
                done.wait(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])}... exited {proc.returncode}:\n{err[-3000:]}")
        peak = max(peak, peaks[0])
    return Measurement(time.monotonic() - start, peak)


def checkpoint_for(size: str):
    from export import synthetic

    directory = os.path.join(FLAGS.cache_dir, size)
    if not os.path.isfile(os.path.join(directory, "bert_model.ckpt.index")):
        print(f"generating the {size} checkpoint in {directory} ...", flush=True)
        subprocess.run([sys.executable, "-c", "import sys; from export import synthetic; "
                        "synthetic.make_google_checkpoint(sys.argv[1], synthetic.config_of_size(sys.argv[2]))",
                        directory, size], check=True, cwd=REPO, env=_env())
    return synthetic.CheckpointFiles(os.path.join(directory, "bert_config.json"),
                                     os.path.join(directory, "bert_model.ckpt"),
                                     os.path.join(directory, "vocab.txt"))


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, **extra)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # each tool gets its own default
    return env


def ours(files, export_path: str, verify: bool) -> list[list[str]]:
    return [[sys.executable, "-m", "export", f"--bert_config_file={files.bert_config_file}",
             f"--model_checkpoint_path={files.model_checkpoint_path}", f"--vocab_file={files.vocab_file}",
             f"--export_path={export_path}", "--verify" if verify else "--noverify", "--do_lower_case=false"]]


def reference(files, work: str) -> list[list[str]]:
    converted = os.path.join(work, "converted", "ckpt")
    return [
        [sys.executable, "-m", "official.nlp.tools.tf2_bert_encoder_checkpoint_converter",
         f"--bert_config_file={files.bert_config_file}", f"--checkpoint_to_convert={files.model_checkpoint_path}",
         f"--converted_checkpoint_path={converted}"],
        [sys.executable, "-m", "official.nlp.tools.export_tfhub", f"--bert_config_file={files.bert_config_file}",
         f"--model_checkpoint_path={converted}-1", f"--vocab_file={files.vocab_file}",
         f"--export_path={os.path.join(work, 'export')}", "--do_lower_case=false"],
    ]


def serving_latency(saved_model_dir: str, vocab_size: int) -> float:
    proc = subprocess.run([sys.executable, "-c", LATENCY_PROGRAM, saved_model_dir, str(FLAGS.latency_calls),
                           str(vocab_size)],
                          capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise RuntimeError(f"latency run failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench_size(size: str, work: str) -> dict:
    from export.config import load_bert_config

    files = checkpoint_for(size)
    config = load_bert_config(files.bert_config_file)
    params = config.parameter_count()
    env_ours, env_ref = _env(), _env(TF_USE_LEGACY_KERAS="1")
    runs: dict[str, list[Measurement]] = {"ours_verify": [], "ours_noverify": [], "reference": []}
    kept = {}
    for round_index in range(FLAGS.runs + 1):  # round 0 warms caches and is not counted
        for name in runs:
            target = os.path.join(work, f"{name}-{round_index}")
            if name == "reference":
                m = measure(reference(files, target), env_ref)
                result_dir = os.path.join(target, "export")
            else:
                m = measure(ours(files, target, verify=name == "ours_verify"), env_ours)
                result_dir = os.path.join(target, "1")
            print(f"  {size} round {round_index} {name}: {m.wall_seconds:.1f} s, "
                  f"{m.peak_tree_rss_bytes / 2**30:.2f} GiB{' (warm-up)' if round_index == 0 else ''}", flush=True)
            if round_index:
                runs[name].append(m)
            if name in ("ours_noverify", "reference") and round_index == FLAGS.runs:
                kept[name] = result_dir
            else:
                shutil.rmtree(target, ignore_errors=True)
    latencies: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(FLAGS.runs):  # alternating, fresh process each
        latencies["ours"].append(serving_latency(kept["ours_noverify"], config.vocab_size))
        latencies["reference"].append(serving_latency(kept["reference"], config.vocab_size))
    for path in kept.values():
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    def median(name, field):
        return statistics.median(getattr(m, field) for m in runs[name])

    result = {
        "size": size, "parameters": params, "runs": FLAGS.runs,
        "ours_verify_wall": median("ours_verify", "wall_seconds"),
        "ours_noverify_wall": median("ours_noverify", "wall_seconds"),
        "reference_wall": median("reference", "wall_seconds"),
        "ours_verify_peak_rss": median("ours_verify", "peak_tree_rss_bytes"),
        "ours_noverify_peak_rss": median("ours_noverify", "peak_tree_rss_bytes"),
        "reference_peak_rss": median("reference", "peak_tree_rss_bytes"),
        "ours_serving_latency": statistics.median(latencies["ours"]),
        "reference_serving_latency": statistics.median(latencies["reference"]),
        "all_runs": {k: [dataclasses.asdict(m) for m in v] for k, v in runs.items()},
        "all_latencies": latencies,
    }
    result["ratios"] = {
        "export_noverify_wall": result["ours_noverify_wall"] / result["reference_wall"],
        "export_verify_wall": result["ours_verify_wall"] / result["reference_wall"],
        "peak_rss": result["ours_verify_peak_rss"] / result["reference_peak_rss"],
        "serving_latency": result["ours_serving_latency"] / result["reference_serving_latency"],
    }
    return result


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "tensorflow": importlib.metadata.version("tensorflow"),
            "date": datetime.date.today().isoformat()}


def growth(results: list[dict]) -> dict | None:
    """From the smallest to the largest size: cost growth relative to parameter growth (≤ 1 is good)."""
    if len(results) < 2:
        return None
    small, large = min(results, key=lambda r: r["parameters"]), max(results, key=lambda r: r["parameters"])
    p = large["parameters"] / small["parameters"]
    return {"from": small["size"], "to": large["size"], "parameter_growth": p,
            "wall_growth_per_parameter_growth": large["ours_verify_wall"] / small["ours_verify_wall"] / p,
            "rss_growth_per_parameter_growth": large["ours_verify_peak_rss"] / small["ours_verify_peak_rss"] / p}


def render(results: list[dict], info: dict) -> str:
    gib = 2 ** 30
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; Python {info['python']}, "
             f"TF {info['tensorflow']}; {info['date']}. Medians of {results[0]['runs']} runs after a warm-up.",
             "",
             "| size | metric | bert-export | tf-models two-step | ours / reference | target |",
             "|---|---|---|---|---|---|"]
    for r in results:
        rows = [
            ("export wall, no verification", f"{r['ours_noverify_wall']:.1f} s", f"{r['reference_wall']:.1f} s",
             "export_noverify_wall"),
            ("export wall, with verification", f"{r['ours_verify_wall']:.1f} s", f"{r['reference_wall']:.1f} s",
             "export_verify_wall"),
            ("peak RSS of the process tree (ours with verification)", f"{r['ours_verify_peak_rss'] / gib:.2f} GiB",
             f"{r['reference_peak_rss'] / gib:.2f} GiB", "peak_rss"),
            ("serving_default latency, batch 8 × seq 128", f"{r['ours_serving_latency'] * 1e3:.1f} ms",
             f"{r['reference_serving_latency'] * 1e3:.1f} ms", "serving_latency"),
        ]
        for label, ours_value, ref_value, key in rows:
            ratio, target = r["ratios"][key], TARGETS[key]
            verdict = (f"≤ {target} ({'met' if ratio <= target else 'MISSED'})" if r["size"] == "large"
                       else "(set for large)")
            lines.append(f"| {r['size']} | {label} | {ours_value} | {ref_value} | {ratio:.3f} | {verdict} |")
        lines.append(f"| {r['size']} | peak RSS without verification | {r['ours_noverify_peak_rss'] / gib:.2f} GiB "
                     f"| | {r['ours_noverify_peak_rss'] / r['reference_peak_rss']:.3f} | |")
    g = growth(results)
    if g:
        lines += ["", f"Growth {g['from']} → {g['to']} (parameters ×{g['parameter_growth']:.2f}): wall time grew "
                  f"{g['wall_growth_per_parameter_growth']:.2f}× and peak RSS "
                  f"{g['rss_growth_per_parameter_growth']:.2f}× as fast as the parameter count (target ≤ 1)."]
    return "\n".join(lines)


def update_build_md(table: str) -> None:
    path = os.path.join(REPO, "BUILD.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(\n<!-- bench:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit("BUILD.md has no <!-- bench:begin --> ... <!-- bench:end --> section")
    with open(path, "w", encoding="utf-8") as f:
        f.write(pattern.sub(lambda m: m.group(1) + table + m.group(2), text))


def main(argv):
    del argv
    unknown = [s for s in FLAGS.size if s not in ("tiny", "base", "large")]
    if unknown:
        raise app.UsageError(f"--size: unknown size(s) {', '.join(unknown)}")
    if FLAGS.runs < 1:
        raise app.UsageError("--runs must be at least 1")
    if FLAGS.render_json:
        with open(FLAGS.render_json) as f:
            saved = json.load(f)
        info, results = saved["machine"], saved["results"]
    else:
        info = machine()
        work = tempfile.mkdtemp(prefix="bert-export-bench-")
        try:
            results = [bench_size(size, work) for size in FLAGS.size]
        finally:
            shutil.rmtree(work, ignore_errors=True)
    table = render(results, info)
    print(table)
    if FLAGS.json and not FLAGS.render_json:
        with open(FLAGS.json, "w") as f:
            json.dump({"machine": info, "results": results, "growth": growth(results), "targets": TARGETS}, f, indent=2)
    if FLAGS.update_build_md:
        update_build_md(table)


if __name__ == "__main__":
    app.run(main)
