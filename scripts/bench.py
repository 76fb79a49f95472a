"""Benchmark bert-export against tf-models-official's two-step pipeline, side by side.

For each --size, on a cached random google-research TF1 checkpoint, this measures in one run,
alternating A/B/C/D/E after a warm-up round:
  A  bert-export with verification,
  B  bert-export --noverify,
  C  tf-models: tf2_bert_encoder_checkpoint_converter, then export_tfhub (via their module entry points),
  D  bert-export with verification of the same encoder weights fine-tuned by run_classifier.py
     (a second cached checkpoint, plus a 3-label head): its default sequence_classification export,
  E  the encoder export (--export_type=model, with verification) of D's checkpoint,
each as wall time and peak RSS of the whole process tree (the sum over every live descendant,
sampled every 20 ms). Then the serving latency of A's and C's exports (median of `serving_default`
on batch 8 x seq 128), and of D's: `serve_text` on 8 English texts against tf-models' Python
FullTokenizer packing the same texts followed by `serving_default` (same thread settings, each in a
fresh process). It prints medians and the ratios ours / reference, classifier / encoder and
serve_text / Python tokenization, and can write JSON and regenerate the tables in BUILD.md.

    python scripts/bench.py --size=large            # most of the issues' targets are for this size
    python scripts/bench.py --size=base,large --json=bench.json --update_build_md
    python scripts/bench.py --size=base,large --noserving   # the export pipelines only (~30 min)
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
flags.DEFINE_integer("latency_calls", 5, "Timed calls (of serving_default, or serve_text) per latency "
                     "measurement (BERT-large takes seconds per call on 2 cores).")
flags.DEFINE_string("cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "bert-export", "bench"),
                    "Where generated checkpoints are kept between runs.")
flags.DEFINE_string("json", None, "Write the results here as JSON.")
flags.DEFINE_boolean("update_build_md", False, "Rewrite the benchmark section of BUILD.md.")
flags.DEFINE_boolean("serving", True, "Measure serving latency too (--noserving: the export pipelines only; "
                     "BERT-large's serving rounds take about an hour on 2 cores).")
flags.DEFINE_string("render_json", None, "Measure nothing: render the table from this --json output.")

# Targets from the performance issues, as ratios (ours / reference; the classifier export / the
# encoder export of its checkpoint), and the size each is set for.
TARGETS = {"export_noverify_wall": 0.1, "export_verify_wall": 0.2, "peak_rss": 0.2, "serving_latency": 1.05,
           "classifier_export_wall": 1.2, "classifier_peak_rss": 1.2}
TARGET_SIZES = {"classifier_export_wall": "base", "classifier_peak_rss": "base"}  # the others: large
CLASSIFIER_LABELS = 3
TEXT_BATCH = 8
SERVING_BATCHES = (1, 8, 32)  # x seq 128: serving latency and throughput of float32 and bfloat16
BF16_TARGET = 0.45  # bfloat16 / float32 serving_default latency at 8 x 128, on a CPU with amx_bf16
SENTENCES = os.path.join(REPO, "tests", "data", "sentences.txt")

# argv: mode, SavedModel, timed calls, then for "ids" the vocab size, else the packing length,
# then the batch size (ids); stdin: the texts, as a JSON list. Prints the medians, as JSON, of
# "call" (seconds) and of the parts a call times itself. Modes:
#   ids               serving_default on random ids, batch x seq 128;
#   serve_text        serve_text(text=texts);
#   python_tokenizer  tf-models' FullTokenizer (the export's vocab asset and do_lower_case)
#                     tokenizes and packs the texts ("tokenization"), then serving_default.
LATENCY_PROGRAM = r"""
import json, sys, statistics, time
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
mode, calls, size_argument, texts = sys.argv[1], int(sys.argv[3]), int(sys.argv[4]), json.load(sys.stdin)
batch = int(sys.argv[5])
if mode != "ids":
    import tensorflow_text  # noqa: F401  (the text signatures' ops)
loaded = tf.saved_model.load(sys.argv[2])
fn = loaded.signatures["serving_default"]
names = sorted(fn.structured_input_signature[1])

def feeds_of(ids, mask):
    return {n: tf.constant(ids if "word" in n else mask if "mask" in n else np.zeros_like(ids)) for n in names}

if mode == "ids":
    ids = np.random.default_rng(0).integers(1, size_argument, (batch, 128)).astype(np.int32)
    feeds = feeds_of(ids, np.ones_like(ids))
    def step():
        fn(**feeds)
elif mode == "serve_text":
    serve_text = loaded.signatures["serve_text"]
    def step():  # the texts' tensor is made inside, as the Python path's ids are
        serve_text(text=tf.constant(texts))
elif mode == "python_tokenizer":
    seq_length = size_argument
    from official.nlp.tools.tokenization import FullTokenizer
    tokenizer = FullTokenizer(loaded.vocab_file.asset_path.numpy().decode(),
                              do_lower_case=bool(loaded.do_lower_case.numpy()))
    cls_id, sep_id, pad_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]"])

    def pack(texts):  # as serve_text packs one segment: [CLS] tokens[:seq_length - 2] [SEP], padded to the longest
        rows = [[cls_id, *tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[:seq_length - 2], sep_id]
                for text in texts]
        width = max(len(row) for row in rows)
        ids = np.full((len(texts), width), pad_id, np.int32)
        mask = np.zeros((len(texts), width), np.int32)
        for row, row_ids in enumerate(rows):
            ids[row, :len(row_ids)], mask[row, :len(row_ids)] = row_ids, 1
        return ids, mask

    def step():
        t = time.perf_counter(); ids, mask = pack(texts); tokenization = time.perf_counter() - t
        fn(**feeds_of(ids, mask))
        return {"tokenization": tokenization}
    # Both sides of the comparison must compute the same thing.
    python_logits = fn(**feeds_of(*pack(texts)))["logits"].numpy()
    text_logits = loaded.signatures["serve_text"](text=tf.constant(texts))["logits"].numpy()
    if not np.allclose(python_logits, text_logits, rtol=1e-4, atol=1e-5):
        sys.exit(f"serve_text and FullTokenizer + serving_default disagree: {text_logits} vs {python_logits}")
times = {}
warm_up = 2
for i in range(warm_up + calls):
    t = time.perf_counter(); parts = step() or {}; parts["call"] = time.perf_counter() - t
    for name, seconds in parts.items():
        if i >= warm_up:
            times.setdefault(name, []).append(seconds)
print(json.dumps({name: statistics.median(values) for name, values in times.items()}))
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


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0  # gone


def _main_thread_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_RESCAN_SECONDS = 0.25


class TreeRss:
    """Samples the RSS of `root` and all its live descendants, cheaply enough not to slow what it
    measures on 2 cores: a scan of all of /proc (~2 ms of CPU with a hundred processes) only every
    _RESCAN_SECONDS; in between, each known process's statm, and its main thread's children (how
    subprocess and the shell start theirs). A child that another thread started is found by the
    next scan."""

    def __init__(self, root: int):
        self._root, self._pids, self._scanned = root, {root}, float("-inf")

    def bytes(self) -> int:
        now = time.monotonic()
        if now - self._scanned >= _RESCAN_SECONDS:
            self._pids, self._scanned = self._descendants(_children_map()), now
        else:
            for pid in list(self._pids):
                self._pids.update(_main_thread_children(pid))
        return sum(_rss_bytes(pid) for pid in self._pids)

    def _descendants(self, children: dict[int, list[int]]) -> set[int]:
        found, stack = set(), [self._root]
        while stack:
            pid = stack.pop()
            found.add(pid)
            stack.extend(children.get(pid, []))
        return found


def measure(commands: list[list[str]], env: dict[str, str]) -> Measurement:
    """Runs the commands one after another; wall time in all, and the highest tree RSS seen
    (sampled every 20 ms)."""
    peak, start = 0, time.monotonic()
    for command in commands:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()
        peaks = [0]

        def sample(tree=TreeRss(proc.pid)):
            while not done.is_set():
                peaks[0] = max(peaks[0], tree.bytes())
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


def checkpoint_for(size: str, num_labels: int = 0):
    """The cached checkpoint of `size`; with `num_labels`, its run_classifier.py twin (the same
    encoder weights, plus a head of that many labels)."""
    from export import synthetic

    directory = os.path.join(FLAGS.cache_dir, f"{size}-classifier{num_labels}" if num_labels else size)
    if not os.path.isfile(os.path.join(directory, "bert_model.ckpt.index")):
        print(f"generating the {size} checkpoint in {directory} ...", flush=True)
        subprocess.run([sys.executable, "-c", "import sys; from export import synthetic; "
                        "synthetic.make_google_checkpoint(sys.argv[1], synthetic.config_of_size(sys.argv[2]), "
                        "num_labels=int(sys.argv[3]))",
                        directory, size, str(num_labels)], check=True, cwd=REPO, env=_env())
    return synthetic.CheckpointFiles(os.path.join(directory, "bert_config.json"),
                                     os.path.join(directory, "bert_model.ckpt"),
                                     os.path.join(directory, "vocab.txt"))


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # each tool gets its own default, unless `extra` sets one
    return env | extra


def ours(files, export_path: str, verify: bool, export_type: str | None = None,
         dtype: str = "float32") -> list[list[str]]:
    """bert-export's command; `export_type` None leaves the choice to the tool (a head's task)."""
    return [[sys.executable, "-m", "export", f"--bert_config_file={files.bert_config_file}",
             f"--model_checkpoint_path={files.model_checkpoint_path}", f"--vocab_file={files.vocab_file}",
             f"--export_path={export_path}", "--verify" if verify else "--noverify", "--do_lower_case=false",
             f"--dtype={dtype}", *([f"--export_type={export_type}"] if export_type else [])]]


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


def latency(mode: str, saved_model_dir: str, size_argument: int, texts: list[str] | None = None, batch: int = 8,
            **env: str) -> dict[str, float]:
    """Runs LATENCY_PROGRAM in a fresh process (with `env` added to its environment); its medians
    in seconds ("call", and parts). Bigger batches get fewer timed calls: they take seconds each."""
    calls = max(2, FLAGS.latency_calls * 8 // batch)
    proc = subprocess.run([sys.executable, "-c", LATENCY_PROGRAM, mode, saved_model_dir, str(calls),
                           str(size_argument), str(batch)], input=json.dumps(texts or []),
                          capture_output=True, text=True, env=_env(**env))
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} latency run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def serving_latency(saved_model_dir: str, vocab_size: int, batch: int = 8, **env: str) -> float:
    """Median seconds of serving_default on batch x seq 128."""
    return latency("ids", saved_model_dir, vocab_size, batch=batch, **env)["call"]


def benchmark_texts(count: int = TEXT_BATCH, min_words: int = 20, max_words: int = 40) -> list[str]:
    """`count` English texts of `min_words` to `max_words` words, the same every run: consecutive
    ASCII lines of tests/data/sentences.txt joined (most of its sentences are shorter)."""
    with open(SENTENCES, encoding="utf-8") as f:
        english = [line.strip() for line in f if line.strip() and line.isascii()]
    texts, words = [], []
    for sentence in english:
        words += sentence.split()
        if len(words) >= min_words:
            if len(words) <= max_words:
                texts.append(" ".join(words))
            words = []
        if len(texts) == count:
            return texts
    raise RuntimeError(f"{SENTENCES} holds fewer than {count} texts of {min_words}-{max_words} words")


def bench_size(size: str, work: str) -> dict:
    from export.config import load_bert_config

    files, classifier_files = checkpoint_for(size), checkpoint_for(size, CLASSIFIER_LABELS)
    config = load_bert_config(files.bert_config_file)
    params = config.parameter_count()
    env_ours, env_ref = _env(), _env(TF_USE_LEGACY_KERAS="1")
    # bert-export's runs: (checkpoint, verify, --export_type, --dtype).
    ours_runs = {"ours_verify": (files, True, None, "float32"), "ours_noverify": (files, False, None, "float32"),
                 "classifier_verify": (classifier_files, True, None, "float32"),
                 "classifier_encoder_verify": (classifier_files, True, "model", "float32"),
                 "bf16_verify": (files, True, None, "bfloat16")}
    runs: dict[str, list[Measurement]] = {name: [] for name in ("ours_verify", "ours_noverify", "reference",
                                                                "classifier_verify", "classifier_encoder_verify",
                                                                "bf16_verify")}
    kept = {}
    for round_index in range(FLAGS.runs + 1):  # round 0 warms caches and is not counted
        for name in runs:
            target = os.path.join(work, f"{name}-{round_index}")
            if name == "reference":
                m = measure(reference(files, target), env_ref)
                result_dir = os.path.join(target, "export")
            else:
                checkpoint, verify, export_type, dtype = ours_runs[name]
                m = measure(ours(checkpoint, target, verify, export_type, dtype), env_ours)
                result_dir = os.path.join(target, "1")
            print(f"  {size} round {round_index} {name}: {m.wall_seconds:.1f} s, "
                  f"{m.peak_tree_rss_bytes / 2**30:.2f} GiB{' (warm-up)' if round_index == 0 else ''}", flush=True)
            if round_index:
                runs[name].append(m)
            if name in ("ours_noverify", "reference", "classifier_verify", "bf16_verify") and round_index == FLAGS.runs:
                kept[name] = result_dir
            else:
                shutil.rmtree(target, ignore_errors=True)
    result = export_results(size, params, runs)
    if FLAGS.serving:
        result = serving_results(result, kept, config.vocab_size)
    for path in kept.values():
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return result


def export_results(size: str, params: int, runs: dict[str, list[Measurement]]) -> dict:
    """The pipelines' medians and ratios."""
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
        "classifier_verify_wall": median("classifier_verify", "wall_seconds"),
        "classifier_encoder_verify_wall": median("classifier_encoder_verify", "wall_seconds"),
        "classifier_verify_peak_rss": median("classifier_verify", "peak_tree_rss_bytes"),
        "classifier_encoder_verify_peak_rss": median("classifier_encoder_verify", "peak_tree_rss_bytes"),
        "bf16_verify_wall": median("bf16_verify", "wall_seconds"),
        "all_runs": {k: [dataclasses.asdict(m) for m in v] for k, v in runs.items()},
    }
    result["ratios"] = {
        "export_noverify_wall": result["ours_noverify_wall"] / result["reference_wall"],
        "export_verify_wall": result["ours_verify_wall"] / result["reference_wall"],
        "peak_rss": result["ours_verify_peak_rss"] / result["reference_peak_rss"],
        "classifier_export_wall": result["classifier_verify_wall"] / result["classifier_encoder_verify_wall"],
        "classifier_peak_rss": result["classifier_verify_peak_rss"] / result["classifier_encoder_verify_peak_rss"],
    }
    return result


def serving_results(result: dict, kept: dict[str, str], vocab_size: int) -> dict:
    """`result` plus the serving latencies of the kept exports (alternating, a fresh process each)."""
    from export.report import REPORT_RELATIVE_PATH

    texts = benchmark_texts()
    with open(os.path.join(kept["classifier_verify"], REPORT_RELATIVE_PATH)) as f:
        seq_length = json.load(f)["default_seq_length"]  # what serve_text packs to
    latencies: dict[str, list[float]] = {"ours": [], "reference": [], "serve_text": [],
                                         "python_tokenizer_serving_default": [], "python_tokenization": []}
    # serving_default of the float32 and bfloat16 exports and tf-models' at each batch (x seq 128),
    # and at batch 8 with oneDNN off: (export, batch, environment) -> seconds, one list per key.
    exports = {"float32": kept["ours_noverify"], "bfloat16": kept["bf16_verify"], "tf_models": kept["reference"]}
    serving_runs = [(name, batch, "default") for batch in SERVING_BATCHES for name in exports]
    serving_runs += [(name, 8, "onednn_off") for name in ("float32", "bfloat16")]
    serving: dict[str, list[float]] = {f"{n} {b} {e}": [] for n, b, e in serving_runs}
    for _ in range(FLAGS.runs):  # alternating, fresh process each
        for name, batch, environment in serving_runs:
            env = {"TF_ENABLE_ONEDNN_OPTS": "0"} if environment == "onednn_off" else {}
            serving[f"{name} {batch} {environment}"].append(
                serving_latency(exports[name], vocab_size, batch, **env))
        latencies["ours"].append(serving["float32 8 default"][-1])
        latencies["reference"].append(serving["tf_models 8 default"][-1])
        latencies["serve_text"].append(latency("serve_text", kept["classifier_verify"], seq_length, texts)["call"])
        python = latency("python_tokenizer", kept["classifier_verify"], seq_length, texts)
        latencies["python_tokenizer_serving_default"].append(python["call"])
        latencies["python_tokenization"].append(python["tokenization"])
    result = result | {
        "ours_serving_latency": statistics.median(latencies["ours"]),
        "reference_serving_latency": statistics.median(latencies["reference"]),
        "serve_text_latency": statistics.median(latencies["serve_text"]),
        "python_tokenizer_serving_latency": statistics.median(latencies["python_tokenizer_serving_default"]),
        "python_tokenization_latency": statistics.median(latencies["python_tokenization"]),
        "text_batch": {"texts": len(texts), "seq_length": seq_length,
                       "words": [len(text.split()) for text in texts]},
        "serving": {key: statistics.median(values) for key, values in serving.items()},
        "all_latencies": latencies | {f"serving {key}": values for key, values in serving.items()},
    }
    result["ratios"] = result["ratios"] | {
        "serving_latency": result["ours_serving_latency"] / result["reference_serving_latency"],
        "serve_text_latency": result["serve_text_latency"] / result["python_tokenizer_serving_latency"],  # no target
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
            "date": datetime.date.today().isoformat(), "bf16_flags": bf16_flags()}


def bf16_flags() -> list[str]:
    """The CPU's bfloat16 features (/proc/cpuinfo): amx_bf16 and avx512_bf16 are what make bf16 pay."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(flag for flag in flags if flag in ("amx_bf16", "avx512_bf16", "amx_tile", "avx512f"))


def growth(results: list[dict]) -> dict | None:
    """From the smallest to the largest size: cost growth relative to parameter growth (≤ 1 is good)."""
    if len(results) < 2:
        return None
    small, large = min(results, key=lambda r: r["parameters"]), max(results, key=lambda r: r["parameters"])
    p = large["parameters"] / small["parameters"]
    return {"from": small["size"], "to": large["size"], "parameter_growth": p,
            "wall_growth_per_parameter_growth": large["ours_verify_wall"] / small["ours_verify_wall"] / p,
            "rss_growth_per_parameter_growth": large["ours_verify_peak_rss"] / small["ours_verify_peak_rss"] / p}


def table_row(r: dict, label: str, value: str, baseline: str, key: str) -> str:
    """A row of measured values, with the ratio `key` and its target cell: met or MISSED at the size
    the target is set for, else which size that is."""
    target, size = TARGETS.get(key), TARGET_SIZES.get(key, "large")
    if target is None:
        verdict = ""
    elif r["size"] != size:
        verdict = f"(set for {size})"
    else:
        verdict = f"≤ {target} ({'met' if r['ratios'][key] <= target else 'MISSED'})"
    return f"| {r['size']} | {label} | {value} | {baseline} | {r['ratios'][key]:.3f} | {verdict} |"


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
        ]
        if "ours_serving_latency" in r:  # not with --noserving
            rows.append(("serving_default latency, batch 8 × seq 128", f"{r['ours_serving_latency'] * 1e3:.1f} ms",
                         f"{r['reference_serving_latency'] * 1e3:.1f} ms", "serving_latency"))
        lines += [table_row(r, *row) for row in rows]
        lines.append(f"| {r['size']} | peak RSS without verification | {r['ours_noverify_peak_rss'] / gib:.2f} GiB "
                     f"| | {r['ours_noverify_peak_rss'] / r['reference_peak_rss']:.3f} | |")
    classifiers = [r for r in results if "classifier_verify_wall" in r]  # older --render_json input lacks them
    if classifiers:
        lines += ["", "Fine-tuned export: the encoder weights above plus a run_classifier.py head of "
                  f"{CLASSIFIER_LABELS} labels, one checkpoint exported as sequence_classification (the default) "
                  "and as its encoder (`--export_type=model`), both with verification; and its `serve_text` "
                  f"against tf-models' Python FullTokenizer packing the same {TEXT_BATCH} English texts "
                  "(20–40 words) before `serving_default`.",
                  "",
                  "| size | metric | sequence_classification | baseline | ratio | target |",
                  "|---|---|---|---|---|---|"]
    for r in classifiers:
        rows = [
            ("export wall with verification; baseline: the encoder export", f"{r['classifier_verify_wall']:.1f} s",
             f"{r['classifier_encoder_verify_wall']:.1f} s", "classifier_export_wall"),
            ("peak RSS of the process tree with verification; baseline: the encoder export",
             f"{r['classifier_verify_peak_rss'] / gib:.2f} GiB",
             f"{r['classifier_encoder_verify_peak_rss'] / gib:.2f} GiB", "classifier_peak_rss"),
        ]
        if "serve_text_latency" in r:  # not with --noserving
            rows.append((f"serve_text latency, batch {TEXT_BATCH} (padded to its longest text, at most "
                         f"{r['text_batch']['seq_length']} tokens); baseline: FullTokenizer + serving_default on the "
                         "same ids", f"{r['serve_text_latency'] * 1e3:.1f} ms",
                         f"{r['python_tokenizer_serving_latency'] * 1e3:.1f} ms", "serve_text_latency"))
        lines += [table_row(r, *row) for row in rows]
        if "python_tokenization_latency" in r:
            lines.append(f"| {r['size']} | Python FullTokenizer alone (tokenize + pack the {TEXT_BATCH} texts) | "
                         f"| {r['python_tokenization_latency'] * 1e3:.1f} ms | | |")
    lines += _serving_table(results, info)
    g = growth(results)
    if g:
        lines += ["", f"Growth {g['from']} → {g['to']} (parameters ×{g['parameter_growth']:.2f}): wall time grew "
                  f"{g['wall_growth_per_parameter_growth']:.2f}× and peak RSS "
                  f"{g['rss_growth_per_parameter_growth']:.2f}× as fast as the parameter count (target ≤ 1)."]
    return "\n".join(lines)


def _serving_table(results: list[dict], info: dict) -> list[str]:
    """serving_default latency and throughput of the float32 and bfloat16 exports and tf-models'."""
    measured = [r for r in results if "serving" in r]  # older --render_json input lacks them
    if not measured:
        return []
    flags = ", ".join(info.get("bf16_flags") or []) or "none"
    lines = ["", f"Serving: `serving_default` on random ids, seq 128, 2 intra-op threads, fresh process per measurement; "
             f"bfloat16 is `--dtype=bfloat16`. This CPU's bf16-related flags: {flags}. The bf16 target "
             f"(≤ {BF16_TARGET}× float32 at 8 × 128) is set for CPUs with `amx_bf16`.", "",
             "| size | batch × seq | float32 | bfloat16 | tf-models | bf16 / f32 | f32 / tf-models | target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in measured:
        s = r["serving"]
        for batch in SERVING_BATCHES:
            f32, bf16, ref = (s[f"{name} {batch} default"] for name in ("float32", "bfloat16", "tf_models"))
            tokens = batch * 128

            def cell(seconds: float) -> str:
                return f"{seconds * 1e3:.1f} ms ({tokens / seconds:,.0f} tok/s)"
            amx = "amx_bf16" in (info.get("bf16_flags") or [])
            target = (f"≤ {BF16_TARGET} ({'met' if bf16 / f32 <= BF16_TARGET else 'MISSED'})" if batch == 8 and amx
                      else f"(≤ {BF16_TARGET} on AMX)" if batch == 8 else "")
            lines.append(f"| {r['size']} | {batch} × 128 | {cell(f32)} | {cell(bf16)} | {cell(ref)} | "
                         f"{bf16 / f32:.2f} | {f32 / ref:.2f} | {target} |")
        f32_off, bf16_off = s["float32 8 onednn_off"], s["bfloat16 8 onednn_off"]
        lines.append(f"| {r['size']} | 8 × 128, `TF_ENABLE_ONEDNN_OPTS=0` | {f32_off * 1e3:.1f} ms | "
                     f"{bf16_off * 1e3:.1f} ms | | {bf16_off / f32_off:.2f} | | |")
    return lines


def update_build_md(table: str) -> None:
    path = os.path.join(REPO, "BUILD.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(r"(<!-- bench:begin -->\n).*?(\n<!-- bench:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit("BUILD.md has no <!-- bench:begin --> ... <!-- bench:end --> section")
    with open(path, "w", encoding="utf-8") as f:
        f.write(pattern.sub(lambda m: m.group(1) + table + m.group(2), text))


def write_json(path: str, info: dict, results: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"machine": info, "results": results, "growth": growth(results), "targets": TARGETS}, f, indent=2)


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
        results = []
        try:
            for size in FLAGS.size:
                results.append(bench_size(size, work))
                if FLAGS.json:  # after each size: an interrupted long run keeps what it measured
                    write_json(FLAGS.json, info, results)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    table = render(results, info)
    print(table)
    if FLAGS.update_build_md:
        update_build_md(table)


if __name__ == "__main__":
    app.run(main)
