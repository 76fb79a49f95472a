"""Conformance checks of an exported (or downloaded) BERT SavedModel, for `bert-verify`.

Each check is named and reports pass/fail with a one-line detail. The numerical check is the same
fresh-process comparison with the float64 numpy reference that `bert-export --verify` runs
(`export.verify.numeric`; `export.verify.task` for a task export, which the artifact's export
report names, and whose checks replace the encoder's). `tflite_convertible` converts an encoder's
or a task export's `serving_default` to TFLite with builtin ops only and compares the converted
model with the SavedModel (`export.verify.tflite`); a preprocessing model runs TF Text ops, so
there it reports "not applicable". Loading a SavedModel runs its graph: check artifacts from
trusted sources, or inside a sandbox.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np

from export.report import REPORT_RELATIVE_PATH, sha256_of
from export.tasks import QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, TASKS, TaskSpec
from export.vocab import TokenizerSpec

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
# Absolute paths of a build machine that must not be baked into saved_model.pb.
_HOST_PATH = re.compile(rb"(/home/[^/\x00]+|/root/|/Users/[^/\x00]+|/tmp/|/var/folders/|[A-Z]:\\\\Users)")

_LOAD_PROGRAM = r"""
import os, sys, numpy as np
path, mode, kind = sys.argv[1:4]
fine_tunable = sys.argv[4] == "1"  # a bfloat16 export has no trainable variables, by design
if kind in ("preprocessing", "task_text"):
    import tensorflow_text  # noqa: F401 - registers the TF Text ops the SavedModel's graph uses
if kind == "preprocessing":
    import tensorflow as tf
    sentences = tf.constant(["Hello world!", ""])
    if mode == "hub":
        import tensorflow_hub as hub
        out = hub.KerasLayer(path)(sentences)
    else:
        import keras
        out = keras.layers.TFSMLayer(path, call_endpoint="serving_default")(sentences)
    print(sorted(out), np.asarray(out["input_word_ids"]).shape)
    sys.exit(0)
ids = np.array([[2, 5, 7, 3, 0]], np.int32)
feeds = {"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32), "input_type_ids": np.zeros_like(ids)}
task = kind.startswith("task")
if mode == "hub":
    import tensorflow_hub as hub
    layer = hub.KerasLayer(path, trainable=True)
    out = layer([feeds[n] for n in ("input_word_ids", "input_mask", "input_type_ids")] if kind == "legacy"
                else feeds)
    if task:
        if bool(layer.trainable_weights) != fine_tunable:
            sys.exit(f"hub.KerasLayer(trainable=True) has {len(layer.trainable_weights)} trainable weights; the "
                     f"export is {'' if fine_tunable else 'not '}fine-tunable")
        print(len(layer.trainable_weights), {k: tuple(np.asarray(v).shape) for k, v in sorted(out.items())})
    else:
        pooled = out[0] if kind == "legacy" else out["pooled_output"]
        print(len(layer.trainable_weights), np.asarray(pooled).shape)
else:
    import keras
    out = keras.layers.TFSMLayer(path)(feeds)
    print(keras.__version__, {k: tuple(np.asarray(v).shape) for k, v in sorted(out.items())} if task
          else np.asarray(out["pooled_output"]).shape)
"""


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclasses.dataclass
class ConformanceReport:
    artifact: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json_dict(self) -> dict:
        return {"artifact": self.artifact, "passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks]}


def read_sha256sums(path: str) -> dict[str, str]:
    sums = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                digest, name = line.rstrip("\n").split("  ", 1)
                sums[name] = digest
    return sums


def check_version_dir(path: str, sha256sums: dict[str, str] | None = None, bert_config_file: str | None = None,
                      model_checkpoint_path: str | None = None) -> ConformanceReport:
    """Runs every check on the SavedModel directory `path`."""
    checks: list[Check] = []

    def run(name, fn):
        try:
            detail = fn()
            checks.append(Check(name, True, detail))
        except Exception as e:  # noqa: BLE001 - every failure is a failed check with its reason
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            checks.append(Check(name, False, f"{type(e).__name__}: {lines[-1] if lines else ''}"[:500]))

    def files():
        missing = [p for p in ("saved_model.pb", "variables/variables.index", "assets")
                   if not os.path.exists(os.path.join(path, p))]
        if missing:
            raise AssertionError(f"missing {', '.join(missing)}")
        return "saved_model.pb, variables/, assets/ present"
    run("files", files)

    if sha256sums is not None:
        def checksums():
            inside = {name: digest for name, digest in sha256sums.items() if not name.endswith(".tar.gz")}
            bad = [name for name, digest in sorted(inside.items())
                   if not os.path.isfile(os.path.join(path, name)) or sha256_of(os.path.join(path, name)) != digest]
            if bad:
                raise AssertionError(f"SHA-256 mismatch or missing file: {', '.join(bad)}")
            return f"{len(inside)} files match SHA256SUMS"
        run("checksums", checksums)

    def host_paths():
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            found = sorted({m.group(0).decode(errors="replace") for m in _HOST_PATH.finditer(f.read())})
        if found:
            raise AssertionError(f"saved_model.pb holds host path(s): {', '.join(found[:5])}")
        return "no host paths in saved_model.pb"
    run("no_host_paths", host_paths)

    import tensorflow as tf

    state = {}

    try:
        import tensorflow_text  # noqa: F401 - preprocessing SavedModels need its ops registered to load
    except ImportError:
        pass

    def load():
        state["obj"] = tf.saved_model.load(path)
        return "tf.saved_model.load"
    run("loads", load)
    if "obj" not in state:
        return ConformanceReport(path, checks)
    obj = state["obj"]

    report = _export_report(path)
    serving = obj.signatures.get("serving_default")
    if serving is not None and "sentences" in serving.structured_input_signature[1]:
        _check_preprocessor(obj, path, sha256sums, report, run)
        return ConformanceReport(path, checks)
    if report.get("task") is not None:
        _check_task(obj, path, sha256sums, report, bert_config_file, model_checkpoint_path, run)
        _append_export_report(report, checks)
        return ConformanceReport(path, checks)

    def signature():
        fn = obj.signatures["serving_default"]
        problem = _id_inputs_problem(fn, tf.int32)
        if problem:
            raise AssertionError(problem)
        outputs = fn.structured_outputs
        if sorted(outputs) != ["pooled_output", "sequence_output"]:
            raise AssertionError(f"outputs {sorted(outputs)}, expected pooled_output and sequence_output"
                                 + (f" ({REPORT_RELATIVE_PATH} names no task)" if "logits" in outputs
                                    or "start_logits" in outputs else ""))
        return "serving_default: 3 int32 [-1, -1] inputs; pooled_output, sequence_output"
    run("signature", signature)

    def call_convention():
        ids = np.array([[2, 5, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0]], np.int32)
        mask, types = (ids > 0).astype(np.int32), np.zeros_like(ids)
        try:
            pooled, sequence = obj([ids, mask, types], training=False)
            state["format"] = "legacy"
        except (TypeError, ValueError):
            out = obj(dict(zip(INPUT_NAMES, (ids, mask, types))), training=False)
            pooled, sequence = out["pooled_output"], out["sequence_output"]
            if not {"encoder_outputs", "default"} <= set(out):
                raise AssertionError("v2 call lacks encoder_outputs/default")
            state["format"] = "v2"
        if pooled.shape[0] != 2 or sequence.shape[:2] != (2, 6):
            raise AssertionError(f"unexpected output shapes {pooled.shape}, {sequence.shape}")
        if not (hasattr(obj, "trainable_variables") and hasattr(obj, "regularization_losses")):
            raise AssertionError("not a reusable SavedModel (no trainable_variables/regularization_losses)")
        return f"{state['format']} API, training argument, reusable attributes"
    run("call_convention", call_convention)

    _check_tokenizer_attributes(obj, path, sha256sums, report, run)

    if hasattr(obj, "mlm"):
        def mlm():
            ids = np.array([[2, 5, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0]], np.int32)
            inputs = dict(zip(INPUT_NAMES, (ids, (ids > 0).astype(np.int32), np.zeros_like(ids))))
            out = obj.mlm(inputs | {"masked_lm_positions": np.array([[1, 2], [1, 0]], np.int32)}, training=False)
            vocab_size = obj.variables[0].shape[0]
            if tuple(out["mlm_logits"].shape) != (2, 2, vocab_size):
                raise AssertionError(f"mlm_logits has shape {out['mlm_logits'].shape}, expected (2, 2, {vocab_size})")
            if "mlm" not in obj.signatures:
                raise AssertionError("no mlm signature")
            return f".mlm: mlm_logits [batch, num_predictions, {vocab_size}]; mlm signature"
        run("mlm", mlm)

    _check_loads_elsewhere(path, state.get("format", "legacy"), run, _fine_tunable(report))
    _check_tflite(path, report, run)

    if bert_config_file and model_checkpoint_path:
        def parity():
            from export.verify.numeric import verify_in_fresh_process

            reader, config = _open_source(bert_config_file, model_checkpoint_path)
            result = verify_in_fresh_process(path, state.get("format", "legacy"), config, reader.checkpoint_path,
                                             _tolerance(report, config), with_mlm=hasattr(obj, "mlm"))
            state["verification"] = result.to_json_dict()
            if not result.passed:
                raise AssertionError(result.summary())
            return result.summary()
        run("parity", parity)

    _append_export_report(report, checks)
    return ConformanceReport(path, checks)


def _export_report(path: str) -> dict:
    """The artifact's export report ({} when it has none, or an unreadable one)."""
    try:
        with open(os.path.join(path, REPORT_RELATIVE_PATH), encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _append_export_report(report: dict, checks: list[Check]) -> None:
    exported = report.get("verification") or {}
    if "summary" in exported:
        checks.append(Check("export_report", True, f"export time: {exported['summary']}"))


def _open_source(bert_config_file: str, model_checkpoint_path: str):
    """The source checkpoint's reader and its config, read with the checkpoint's activation convention."""
    from export.checkpoints import open_checkpoint
    from export.config import load_bert_config

    reader = open_checkpoint(model_checkpoint_path)
    return reader, load_bert_config(bert_config_file).with_convention(reader.activation_convention, "config")


def _id_inputs_problem(fn, dtype) -> str | None:
    """What is wrong with a signature's token-id inputs (the three INPUT_NAMES, `dtype` [None, None])."""
    specs = fn.structured_input_signature[1]
    if sorted(specs) != sorted(INPUT_NAMES):
        return f"inputs {sorted(specs)}, expected {sorted(INPUT_NAMES)}"
    for name, spec in specs.items():
        if spec.dtype != dtype or spec.shape.as_list() != [None, None]:
            return f"input {name} is {spec.dtype.name} {spec.shape}, expected {dtype.name} [None, None]"
    return None


def _tokenizer_file(obj) -> tuple[str, str]:
    """(kind, asset path) of the export's tokenizer: `vocab_file` or `sp_model_file`."""
    if hasattr(obj, "sp_model_file"):
        return "sentencepiece", obj.sp_model_file.asset_path.numpy().decode()
    return "wordpiece", obj.vocab_file.asset_path.numpy().decode()


def _exported_tokenizer_problem(obj, path: str, report: dict) -> str | None:
    """Whether the tokenizer asset is the file the export was built and verified with: its SHA-256
    against the export report's record of the source (None when it is, or there is no record)."""
    kind, asset = _tokenizer_file(obj)
    role = "vocab" if kind == "wordpiece" else "sp_model"
    recorded = [s for s in report.get("sources") or () if isinstance(s, dict) and s.get("role") == role]
    if len(recorded) != 1:
        return None
    relative = os.path.relpath(asset, path)
    if sha256_of(asset) != recorded[0].get("sha256"):
        return (f"{relative} is not the {role} the model was exported with ({recorded[0].get('name')}: "
                f"SHA-256 differs from {REPORT_RELATIVE_PATH})")
    return None


def _check_tokenizer_attributes(obj, path: str, sha256sums: dict[str, str] | None, report: dict, run) -> None:
    def vocab_asset():
        _, asset = _tokenizer_file(obj)
        if not os.path.isfile(asset) or not os.path.realpath(asset).startswith(os.path.realpath(path) + os.sep):
            raise AssertionError(f"tokenizer asset {asset} is not a file inside the artifact")
        relative = os.path.relpath(asset, path)
        if sha256sums is not None and sha256sums.get(relative) != sha256_of(asset):
            raise AssertionError(f"{relative} does not match SHA256SUMS")
        problem = _exported_tokenizer_problem(obj, path, report)
        if problem:
            raise AssertionError(problem)
        return relative + (" (matches SHA256SUMS)" if sha256sums is not None else "")
    run("vocab_asset", vocab_asset)

    def do_lower_case():
        value = obj.do_lower_case.numpy()
        if not isinstance(value, (bool, np.bool_)):
            raise AssertionError(f"do_lower_case is {type(value).__name__}, expected bool")
        if "do_lower_case" in report and bool(value) != report["do_lower_case"]:
            raise AssertionError(f"do_lower_case variable is {bool(value)} but {REPORT_RELATIVE_PATH} says "
                                 f"{report['do_lower_case']}")
        return f"do_lower_case={bool(value)}"
    run("do_lower_case", do_lower_case)


def _check_loads_elsewhere(path: str, kind: str, run, fine_tunable: bool = True) -> None:
    """hub.KerasLayer under tf_keras and Keras 3's TFSMLayer, each in a fresh process."""
    for name, mode, env_change in (("hub_keraslayer_tf_keras", "hub", {"TF_USE_LEGACY_KERAS": "1"}),
                                   ("keras3_tfsmlayer", "keras3", {"TF_USE_LEGACY_KERAS": None})):
        def load_elsewhere(mode=mode, env_change=env_change):
            env = {k: v for k, v in os.environ.items() if k not in env_change} | {
                k: v for k, v in env_change.items() if v is not None} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
            proc = subprocess.run([sys.executable, "-c", _LOAD_PROGRAM, path, mode, kind, "1" if fine_tunable else "0"],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
            return proc.stdout.strip().splitlines()[-1]
        run(name, load_elsewhere)


def _tolerance(report: dict, config) -> float:
    """Parity's tolerance: export time's, for the precision the report states."""
    from export.verify.numeric import tolerance_for

    return tolerance_for(report.get("dtype") or "float32", config)


def _fine_tunable(report: dict) -> bool:
    """float32 exports are fine-tunable; bfloat16 ones are for serving (their variables are not trainable)."""
    return report.get("dtype", "float32") == "float32"


def _check_tflite(path: str, report: dict, run) -> None:
    """`serving_default` converted to TFLite with builtin ops only, and the converted model against
    the SavedModel on the parity inputs (`export.verify.tflite`, in a fresh process: the converter's
    working copies of the weights are returned to the OS when it ends)."""
    def tflite_convertible():
        from export.verify.tflite import check_in_fresh_process

        if not _fine_tunable(report):
            return (f"not applicable: a {report.get('dtype')} export (TFLite's builtin ops have no bfloat16 "
                    "matmul); convert the float32 export")

        result = check_in_fresh_process(path)
        if not result.passed:
            raise AssertionError(result.summary())
        return result.summary()
    run("tflite_convertible", tflite_convertible)


def _check_preprocessor(obj, path: str, sha256sums: dict[str, str] | None, report: dict, run) -> None:
    """The checks of a preprocessing SavedModel: its API, attributes, loaders, and its tokenization
    against the independent Python tokenizer, on the artifact's own vocabulary."""
    import tensorflow as tf

    def signature():
        fn = obj.signatures["serving_default"]
        spec = fn.structured_input_signature[1]["sentences"]
        if spec.dtype != tf.string or spec.shape.rank != 1:
            raise AssertionError(f"input sentences is {spec.dtype.name} {spec.shape}, expected string [None]")
        if sorted(fn.structured_outputs) != sorted(INPUT_NAMES):
            raise AssertionError(f"outputs {sorted(fn.structured_outputs)}, expected {sorted(INPUT_NAMES)}")
        return "serving_default: sentences (string) -> the 3 int32 encoder inputs"
    run("signature", signature)

    def call_convention():
        sentences = tf.constant(["Hello world!", "A second, longer sentence."])
        out = obj(sentences)
        seq_length = out["input_word_ids"].shape[1]
        tokens = obj.tokenize(sentences)
        packed = obj.bert_pack_inputs([tokens, tokens], seq_length=tf.constant(16))
        if any(out[n].dtype != tf.int32 or out[n].shape != (2, seq_length) for n in INPUT_NAMES):
            raise AssertionError("root call does not return the 3 int32 [batch, seq_length] inputs")
        if packed["input_word_ids"].shape != (2, 16):
            raise AssertionError(f"bert_pack_inputs(seq_length=16) gave {packed['input_word_ids'].shape}")
        special = {k: int(v) for k, v in obj.tokenize.get_special_tokens_dict().items()}
        return f"root call (seq_length {seq_length}), tokenize, bert_pack_inputs(seq_length=), special tokens {special}"
    run("call_convention", call_convention)

    _check_tokenizer_attributes(obj, path, sha256sums, report, run)
    _check_loads_elsewhere(path, "preprocessing", run)
    run("tflite_convertible", lambda: "not applicable: the preprocessing model runs TF Text ops (normalisation, "
        "WordPiece or SentencePiece) and lookup tables, which TFLite's builtin ops do not have; convert the "
        "encoder and tokenize beside it")

    def tokenization():
        from export.verify.preprocessing import verify_preprocessor_in_fresh_process

        kind, asset = _tokenizer_file(obj)
        result = verify_preprocessor_in_fresh_process(path, TokenizerSpec(kind, asset, bool(obj.do_lower_case.numpy())))
        if not result.passed:
            raise AssertionError(result.summary())
        return result.summary()
    run("tokenization", tokenization)


# -- task exports (export.build.task_model) ----------------------------------------------------
_TEXT_ROWS = ("Hello world!", "A second, longer sentence about the city of London.")
_QUESTIONS = ("Who said hello?", "Which city is it about?")


def _id_feeds(dtype=np.int32) -> dict[str, np.ndarray]:
    ids = np.array([[2, 5, 7, 3, 0, 0], [2, 9, 3, 0, 0, 0]], dtype)
    return dict(zip(INPUT_NAMES, (ids, (ids > 0).astype(dtype), np.zeros_like(ids))))


def _expected_shape(spec: TaskSpec, name: str, batch: int, seq: int) -> tuple[int, ...]:
    """The shape of a tensor output or of a text signature's extra output."""
    if name in ("label", "answer", "answer_start", "answer_end", "answer_score"):
        return (batch,)
    if name in ("labels", "token_start", "token_end") or spec.task == QUESTION_ANSWERING:
        return (batch, seq)
    return (batch, spec.num_outputs) if spec.task == SEQUENCE_CLASSIFICATION else (batch, seq, spec.num_outputs)


def _packed_width(tokenize, segments: list[tuple[str, ...]], seq_length: int) -> int:
    """How wide the text signatures pack these rows: the longest row's [CLS] a [SEP] (b [SEP]),
    truncated at seq_length (they cut padding past the batch's longest row)."""
    import tensorflow as tf

    lengths = []
    for texts in segments:
        tokens = tokenize(tf.constant(texts))
        lengths.append((tokens.merge_dims(1, -1) if tokens.ragged_rank > 1 else tokens).row_lengths().numpy())
    return int(max(min(int(sum(row)) + len(segments) + 1, seq_length) for row in zip(*lengths)))


def _outputs_problem(spec: TaskSpec, what: str, outputs: dict, expected: tuple[str, ...], batch: int,
                     seq: int) -> str | None:
    if sorted(outputs) != sorted(expected):
        return f"{what} returns {sorted(outputs)}, expected {sorted(expected)}"
    for name, value in outputs.items():
        want = _expected_shape(spec, name, batch, seq)
        if tuple(value.shape) != want:
            return f"{what} {name} has shape {tuple(value.shape)}, expected {want}"
    return None


def _check_task(obj, path: str, sha256sums: dict[str, str] | None, report: dict, bert_config_file: str | None,
                model_checkpoint_path: str | None, run) -> None:
    """The checks of a task export: its signatures and call convention, its text signatures on
    short strings, its labels against the report, its tokenizer against the Python reference on
    the built-in sentences, the loaders, and parity through the export-time verifier."""
    import tensorflow as tf

    state: dict = {}

    def task():
        spec = TaskSpec.from_json_dict(report["task"])
        if spec.task not in TASKS:
            raise AssertionError(f"{REPORT_RELATIVE_PATH}: task {spec.task!r} is not one of {', '.join(TASKS)}")
        if report.get("export_type") != spec.task:
            raise AssertionError(f"{REPORT_RELATIVE_PATH}: export_type {report.get('export_type')!r} but task "
                                 f"{spec.task!r}")
        state["spec"] = spec
        return spec.describe()
    run("task", task)
    if "spec" not in state:
        return
    spec: TaskSpec = state["spec"]
    seq_length = report.get("default_seq_length")
    text = bool(seq_length)

    def signature():
        for name, dtype in (("serving_default", tf.int32), ("serve_int64", tf.int64)):
            fn = obj.signatures.get(name)
            if fn is None:
                raise AssertionError(f"no {name} signature")
            problem = _id_inputs_problem(fn, dtype)
            if problem:
                raise AssertionError(f"{name}: {problem}")
            if sorted(fn.structured_outputs) != sorted(spec.tensor_outputs()):
                raise AssertionError(f"{name} outputs {sorted(fn.structured_outputs)}, expected "
                                     f"{sorted(spec.tensor_outputs())}")
            feeds = _id_feeds(dtype.as_numpy_dtype)
            problem = _outputs_problem(spec, name, fn(**{k: tf.constant(v) for k, v in feeds.items()}),
                                       spec.tensor_outputs(), 2, 6)
            if problem:
                raise AssertionError(problem)
        return (f"serving_default: 3 int32 [-1, -1] inputs, serve_int64: the same as int64; both -> "
                f"{', '.join(spec.tensor_outputs())}")
    run("signature", signature)

    def call_convention():
        feeds = {k: tf.constant(v) for k, v in _id_feeds().items()}
        for what, outputs in (("__call__(training=False)", obj(feeds, training=False)),
                              ("__call__(training=True)", obj(feeds, training=True)),
                              ("serve", obj.serve(feeds))):
            problem = _outputs_problem(spec, what, outputs, spec.tensor_outputs(), 2, 6)
            if problem:
                raise AssertionError(problem)
        if not all(hasattr(obj, a) for a in ("variables", "trainable_variables", "regularization_losses")):
            raise AssertionError("not a reusable SavedModel (no variables/trainable_variables/regularization_losses)")
        if bool(obj.trainable_variables) != _fine_tunable(report):
            raise AssertionError(f"{len(obj.trainable_variables)} trainable variables, but the export is "
                                 f"{report.get('dtype', 'float32')}: " + ("it cannot be fine-tuned" if
                                                                          _fine_tunable(report) else
                                                                          "bfloat16 exports are not fine-tunable"))
        return (f"__call__(dict, training) and serve: dict of the 3 inputs -> {', '.join(spec.tensor_outputs())}; "
                f"{len(obj.trainable_variables)} trainable variables; reusable attributes")
    run("call_convention", call_convention)

    def labels():
        if spec.task == QUESTION_ANSWERING:
            if hasattr(obj, "label_names") or spec.label_names:
                raise AssertionError("a question-answering export has no label names, but this one has")
            return "none: question answering (start_logits, end_logits)"
        served = obj.signatures["serving_default"](**{k: tf.constant(v) for k, v in _id_feeds().items()})
        width = int(served["logits"].shape[-1])  # the head's width, as the model computes it
        saved = [name.decode() for name in obj.label_names.numpy()]
        if saved != list(spec.label_names):
            raise AssertionError(f"label_names variable holds {saved[:8]} but {REPORT_RELATIVE_PATH} says "
                                 f"{list(spec.label_names)[:8]} (in id order)")
        if len(saved) != width or width != spec.num_outputs:
            raise AssertionError(f"{len(saved)} label names for a head of {width} outputs (the report says "
                                 f"{spec.num_outputs})")
        shown = ", ".join(saved[:8]) + (", ..." if len(saved) > 8 else "")
        return f"{len(saved)} labels in id order, as the report states ({spec.labels_from}): {shown}"
    run("labels", labels)

    def text_signatures():
        expected = spec.text_signature_inputs() if text else {}
        present = sorted(name for name in obj.signatures if name.startswith("serve_text"))
        if present != sorted(expected) or sorted(obj.signatures) != sorted(report.get("signatures", ())):
            raise AssertionError(f"signatures {sorted(obj.signatures)}; {REPORT_RELATIVE_PATH} says "
                                 f"{report.get('signatures')} and default_seq_length={seq_length}, which "
                                 f"implies text signatures {sorted(expected) or 'none'}")
        if not text:
            return "none (exported with --notext_signatures), as the report says"
        for name, inputs in expected.items():
            specs = obj.signatures[name].structured_input_signature[1]
            if sorted(specs) != sorted(inputs) or any(s.dtype != tf.string or s.shape.as_list() != [None]
                                                      for s in specs.values()):
                raise AssertionError(f"{name} takes {({k: f'{v.dtype.name} {v.shape}' for k, v in specs.items()})}, "
                                     f"expected {', '.join(inputs)} as string [None]")
            feeds = dict(zip(inputs, (_QUESTIONS, _TEXT_ROWS) if spec.task == QUESTION_ANSWERING
                             else (_TEXT_ROWS, _TEXT_ROWS[::-1])))
            outputs = {k: v.numpy() for k, v in
                       obj.signatures[name](**{k: tf.constant(v) for k, v in feeds.items()}).items()}
            width = _packed_width(obj.tokenize, list(feeds.values()), seq_length)
            problem = _outputs_problem(spec, name, outputs, spec.tensor_outputs() + spec.text_extra_outputs(),
                                       len(_TEXT_ROWS), width)
            if problem:
                raise AssertionError(problem)
            _check_text_outputs(spec, name, feeds, outputs)
        return (", ".join(f"{n}({', '.join(i)})" for n, i in expected.items()) + f" at seq_length {seq_length}: "
                f"outputs {', '.join(spec.tensor_outputs() + spec.text_extra_outputs())} on {len(_TEXT_ROWS)} texts")
    run("text_signatures", text_signatures)

    if text:
        def text_ids():
            from export.verify import tokenization_reference as reference
            from export.verify.preprocessing import BUILTIN_SENTENCES, check_tokenize_object

            kind, asset = _tokenizer_file(obj)
            do_lower_case = bool(obj.do_lower_case.numpy())
            tokenize_reference = reference.reference_tokenizer(kind, asset, do_lower_case)
            # The ids must also be the model's: the asset must be the vocabulary it was exported
            # with (a WordPiece table reads the asset at load time, as the reference does).
            exported = _exported_tokenizer_problem(obj, path, report)
            sentences, mismatches = list(BUILTIN_SENTENCES), [exported] if exported else []
            counts = check_tokenize_object(obj.tokenize, sentences, tokenize_reference,
                                           reference.special_token_ids(kind, asset), mismatches)
            # Tagging and QA answer with positions in the text: their tokenize has offsets.
            if spec.task != SEQUENCE_CLASSIFICATION and not hasattr(obj.tokenize, "with_char_offsets"):
                mismatches.append(f"tokenize has no with_char_offsets, which {spec.task}'s serve_text needs")
            if mismatches:
                raise AssertionError(f"{len(mismatches)} problem(s); first: {mismatches[0]}")
            return (f"token ids equal the reference tokenizer's ({kind}, {os.path.relpath(asset, path)}, "
                    f"do_lower_case={do_lower_case}) on {' and '.join(counts)}; special tokens equal")
        run("text_ids", text_ids)

    _check_tokenizer_attributes(obj, path, sha256sums, report, run)
    _check_loads_elsewhere(path, "task_text" if text else "task", run, _fine_tunable(report))
    _check_tflite(path, report, run)

    if bert_config_file and model_checkpoint_path:
        def parity():
            from export.checkpoints.check import select_task_head
            from export.config import read_config_json
            from export.tasks import parse_task_hints
            from export.verify.task import verify_task_in_fresh_process

            reader, config = _open_source(bert_config_file, model_checkpoint_path)
            config_name = os.path.basename(bert_config_file)
            # The head the report names, bound as the exporter bound it; the labels, problem type
            # and answer length are the artifact's claims, which the verifier checks.
            source_spec, _ = select_task_head(reader, config, config_name,
                                              parse_task_hints(read_config_json(bert_config_file), config_name),
                                              spec.task, spec.label_names or None, spec.problem_type,
                                              spec.max_answer_length)
            if source_spec.head != spec.head:
                raise AssertionError(f"{reader.display_name}'s head is {source_spec.head}; the artifact's report "
                                     f"says {spec.head}")
            kind, asset = _tokenizer_file(obj)
            tokenizer = TokenizerSpec(kind, asset, bool(obj.do_lower_case.numpy())) if text else None
            result = verify_task_in_fresh_process(path, config, reader.checkpoint_path, source_spec, tokenizer,
                                                  seq_length, _tolerance(report, config))
            if not result.passed:
                raise AssertionError(result.summary())
            return result.summary()
        run("parity", parity)


def _check_text_outputs(spec: TaskSpec, name: str, feeds: dict[str, tuple[str, ...]], outputs: dict) -> None:
    """The values a text signature adds: label names from the saved ones, offsets inside the text,
    and a QA answer that is the context's own text at its offsets."""
    names = set(spec.label_names)
    if "label" in outputs and not {v.decode() for v in outputs["label"]} <= names:
        raise AssertionError(f"{name} label {[v.decode() for v in outputs['label']]} not among the label names")
    if "labels" in outputs:
        for row, text in enumerate(feeds["text"]):
            tagged = {v.decode() for v in outputs["labels"][row]}
            if not tagged <= names | {""}:
                raise AssertionError(f"{name} labels {sorted(tagged - names - {''})[:4]} not among the label names")
            starts, ends = outputs["token_start"][row], outputs["token_end"][row]
            real = starts >= 0
            if (not real.any() or (ends[~real] != -1).any() or (starts[real] >= ends[real]).any()
                    or (ends[real] > len(text)).any()):
                raise AssertionError(f"{name} row {row}: token offsets {list(zip(starts, ends))[:6]} are not "
                                     f"[start, end) pairs inside the text of {len(text)} characters")
    if "answer" in outputs:
        for row, context in enumerate(feeds["context"]):
            start, end = int(outputs["answer_start"][row]), int(outputs["answer_end"][row])
            answer = outputs["answer"][row].decode()
            found = (start, end) == (-1, -1) and answer == ""
            if not found and not (0 <= start < end <= len(context) and context[start:end] == answer):
                raise AssertionError(f"{name} row {row}: answer {answer!r} at [{start}, {end}) is not the "
                                     f"context's text there ({context[max(start, 0):max(end, 0)]!r})")
