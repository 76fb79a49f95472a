"""Conformance checks of an exported (or downloaded) BERT SavedModel, for `bert-verify`.

Each check is named and reports pass/fail with a one-line detail. The numerical check is the same
fresh-process comparison with the float64 numpy reference that `bert-export --verify` runs
(`export.verify.numeric`). Loading a SavedModel runs its graph: check artifacts from trusted sources, or
inside a sandbox.
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
from export.vocab import TokenizerSpec

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
# Absolute paths of a build machine that must not be baked into saved_model.pb.
_HOST_PATH = re.compile(rb"(/home/[^/\x00]+|/root/|/Users/[^/\x00]+|/tmp/|/var/folders/|[A-Z]:\\\\Users)")

_LOAD_PROGRAM = r"""
import os, sys, numpy as np
if sys.argv[3] == "preprocessing":
    import tensorflow as tf, tensorflow_text  # noqa: F401 - registers the preprocessor's ops
    sentences = tf.constant(["Hello world!", ""])
    if sys.argv[2] == "hub":
        import tensorflow_hub as hub
        out = hub.KerasLayer(sys.argv[1])(sentences)
    else:
        import keras
        out = keras.layers.TFSMLayer(sys.argv[1], call_endpoint="serving_default")(sentences)
    print(sorted(out), np.asarray(out["input_word_ids"]).shape)
    sys.exit(0)
ids = np.array([[2, 5, 7, 3, 0]], np.int32)
feeds = {"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32), "input_type_ids": np.zeros_like(ids)}
if sys.argv[2] == "hub":
    import tensorflow_hub as hub
    layer = hub.KerasLayer(sys.argv[1], trainable=True)
    out = layer([feeds[n] for n in ("input_word_ids", "input_mask", "input_type_ids")] if sys.argv[3] == "legacy"
                else feeds)
    pooled = out[0] if sys.argv[3] == "legacy" else out["pooled_output"]
    print(len(layer.trainable_weights), np.asarray(pooled).shape)
else:
    import keras
    out = keras.layers.TFSMLayer(sys.argv[1])(feeds)
    print(keras.__version__, np.asarray(out["pooled_output"]).shape)
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

    serving = obj.signatures.get("serving_default")
    if serving is not None and "sentences" in serving.structured_input_signature[1]:
        _check_preprocessor(obj, path, sha256sums, run)
        return ConformanceReport(path, checks)

    def signature():
        fn = obj.signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        if sorted(specs) != sorted(INPUT_NAMES):
            raise AssertionError(f"inputs {sorted(specs)}, expected {sorted(INPUT_NAMES)}")
        for name, spec in specs.items():
            if spec.dtype != tf.int32 or spec.shape.as_list() != [None, None]:
                raise AssertionError(f"input {name} is {spec.dtype.name} {spec.shape}, expected int32 [None, None]")
        outputs = fn.structured_outputs
        if sorted(outputs) != ["pooled_output", "sequence_output"]:
            raise AssertionError(f"outputs {sorted(outputs)}, expected pooled_output and sequence_output")
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

    _check_tokenizer_attributes(obj, path, sha256sums, run)

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

    _check_loads_elsewhere(path, state.get("format", "legacy"), run)

    if bert_config_file and model_checkpoint_path:
        def parity():
            from export.config import load_bert_config
            from export.checkpoints import open_checkpoint
            from export.verify.numeric import verify_in_fresh_process

            reader = open_checkpoint(model_checkpoint_path)
            config = load_bert_config(bert_config_file).with_convention(reader.activation_convention, "config")
            result = verify_in_fresh_process(path, state.get("format", "legacy"), config, reader.checkpoint_path,
                                             with_mlm=hasattr(obj, "mlm"))
            state["verification"] = result.to_json_dict()
            if not result.passed:
                raise AssertionError(result.summary())
            return result.summary()
        run("parity", parity)

    report_path = os.path.join(path, REPORT_RELATIVE_PATH)
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as f:
            exported = json.load(f).get("verification") or {}
        if "summary" in exported:
            checks.append(Check("export_report", True, f"export time: {exported['summary']}"))
    return ConformanceReport(path, checks)


def _tokenizer_file(obj) -> tuple[str, str]:
    """(kind, asset path) of the export's tokenizer: `vocab_file` or `sp_model_file`."""
    if hasattr(obj, "sp_model_file"):
        return "sentencepiece", obj.sp_model_file.asset_path.numpy().decode()
    return "wordpiece", obj.vocab_file.asset_path.numpy().decode()


def _check_tokenizer_attributes(obj, path: str, sha256sums: dict[str, str] | None, run) -> None:
    def vocab_asset():
        _, asset = _tokenizer_file(obj)
        if not os.path.isfile(asset) or not os.path.realpath(asset).startswith(os.path.realpath(path) + os.sep):
            raise AssertionError(f"tokenizer asset {asset} is not a file inside the artifact")
        relative = os.path.relpath(asset, path)
        if sha256sums is not None and sha256sums.get(relative) != sha256_of(asset):
            raise AssertionError(f"{relative} does not match SHA256SUMS")
        return relative + (" (matches SHA256SUMS)" if sha256sums is not None else "")
    run("vocab_asset", vocab_asset)

    def do_lower_case():
        value = obj.do_lower_case.numpy()
        if not isinstance(value, (bool, np.bool_)):
            raise AssertionError(f"do_lower_case is {type(value).__name__}, expected bool")
        return f"do_lower_case={bool(value)}"
    run("do_lower_case", do_lower_case)


def _check_loads_elsewhere(path: str, kind: str, run) -> None:
    """hub.KerasLayer under tf_keras and Keras 3's TFSMLayer, each in a fresh process."""
    for name, mode, env_change in (("hub_keraslayer_tf_keras", "hub", {"TF_USE_LEGACY_KERAS": "1"}),
                                   ("keras3_tfsmlayer", "keras3", {"TF_USE_LEGACY_KERAS": None})):
        def load_elsewhere(mode=mode, env_change=env_change):
            env = {k: v for k, v in os.environ.items() if k not in env_change} | {
                k: v for k, v in env_change.items() if v is not None} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
            proc = subprocess.run([sys.executable, "-c", _LOAD_PROGRAM, path, mode, kind],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
            return proc.stdout.strip().splitlines()[-1]
        run(name, load_elsewhere)


def _check_preprocessor(obj, path: str, sha256sums: dict[str, str] | None, run) -> None:
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

    _check_tokenizer_attributes(obj, path, sha256sums, run)
    _check_loads_elsewhere(path, "preprocessing", run)

    def tokenization():
        from export.verify.preprocessing import verify_preprocessor_in_fresh_process

        kind, asset = _tokenizer_file(obj)
        result = verify_preprocessor_in_fresh_process(path, TokenizerSpec(kind, asset, bool(obj.do_lower_case.numpy())))
        if not result.passed:
            raise AssertionError(result.summary())
        return result.summary()
    run("tokenization", tokenization)
