"""TFLite conversion of an export's tensor signature, and the converted model's parity with it.

On-device users convert TF Hub encoders with
`tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"])`. This converts
the same way with builtin ops only (`TFLITE_BUILTINS`: no Select TF ("flex") ops, no custom ops, no
quantization), runs the converted model's signature in the TFLite interpreter on the parity inputs
(`fixed_batches`, sized from the SavedModel's own embedding tables) and compares every output with
the SavedModel's signature on the same inputs: max |tflite - savedmodel| / max |savedmodel|, over
real tokens for per-token outputs, at most TOLERANCE.

`check_in_fresh_process` runs it in a new Python process (`python -m export.verify.tflite`), as
bert-verify does: the converter holds the frozen graph and the flatbuffer beside the SavedModel
(several copies of the weights at its peak), and all of it is returned to the OS when the process
ends.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from export.config import BertConfig
from export.errors import VerificationError
from export.process import run_verifier_process, verifier_process_main
from export.verify.numeric import TOLERANCE, describe_batches, fixed_batches, fixed_mlm_positions, relative_error

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
MLM_POSITIONS = "masked_lm_positions"


@dataclasses.dataclass
class TFLiteReport:
    passed: bool
    signature: str
    tolerance: float
    model_bytes: int  # the .tflite flatbuffer; 0 when conversion failed
    figures: dict[str, float]  # output -> max |tflite - savedmodel| / max |savedmodel|
    batches: list[str]
    seconds: dict[str, float]
    error: str | None = None  # why conversion (or running the converted model) failed

    @property
    def worst(self) -> float | None:
        return max(self.figures.values()) if self.figures else None

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self) | {"worst": self.worst, "summary": self.summary()}

    def summary(self) -> str:
        if self.error:
            return self.error
        size = f"{self.model_bytes / 1e6:.3g} MB .tflite"
        if self.passed:
            return (f"{self.signature} converts with TFLite builtin ops only ({size}); TFLite vs SavedModel: "
                    f"max relative error {self.worst:.3g} (tolerance {self.tolerance:g}) over "
                    f"{', '.join(sorted(self.figures))} on {len(self.batches)} batches")
        output = max(self.figures, key=self.figures.get)
        return (f"{self.signature} converts ({size}) but TFLite differs from the SavedModel: max relative error "
                f"{self.worst:.3g} exceeds {self.tolerance:g} (worst: {output})")


def _conversion_problem(error: Exception) -> str:
    """The converter's reason in one line: the ops TFLite's builtins lack, else its last error."""
    import re

    text = str(error)
    ops = sorted(set(re.findall(r"'([\w.]+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return f"{', '.join(ops)} {'is not a TFLite builtin op' if len(ops) == 1 else 'are not TFLite builtin ops'}"
    errors = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    lines = errors or [line.strip() for line in text.splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1][:300]


def _register_text_ops() -> None:
    """The converter (like tf.saved_model.load) loads the whole SavedModel: a task export's text
    signatures need the TF Text ops registered to load, though only a tensor signature is converted."""
    try:
        import tensorflow_text  # noqa: F401 - registers the ops
    except ImportError:
        pass


def convert(saved_model_dir: str, signature: str = "serving_default") -> bytes:
    """The TFLite flatbuffer of `signature`, builtin ops only; VerificationError (one line) if it
    does not convert."""
    import tensorflow as tf

    _register_text_ops()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError, or the SavedModel failing to load
        raise VerificationError(f"{signature} does not convert to TFLite with builtin ops only: "
                                f"{_conversion_problem(e)}") from e


def batch_feeds(batches, mlm_positions=None) -> list[dict[str, np.ndarray]]:
    """The signature's keyword inputs per batch (int32); with `mlm_positions`, the `mlm` signature's."""
    feeds = [dict(zip(INPUT_NAMES, batch)) for batch in batches]
    if mlm_positions is not None:
        feeds = [f | {MLM_POSITIONS: positions} for f, positions in zip(feeds, mlm_positions)]
    return feeds


def run_tflite(model_content: bytes, feeds: list[dict[str, np.ndarray]],
               signature: str = "serving_default") -> list[dict[str, np.ndarray]]:
    """The converted model's signature on each batch (its runner resizes the inputs to each batch)."""
    import tensorflow as tf

    runner = tf.lite.Interpreter(model_content=model_content).get_signature_runner(signature)
    return [{k: np.array(v) for k, v in runner(**f).items()} for f in feeds]


def run_signature(fn, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """A loaded SavedModel's signature function on each batch."""
    import tensorflow as tf

    return [{k: v.numpy() for k, v in fn(**{n: tf.constant(a) for n, a in f.items()}).items()} for f in feeds]


def compare(tflite: list[dict[str, np.ndarray]], saved: list[dict[str, np.ndarray]],
            masks: list[np.ndarray]) -> dict[str, float]:
    """output -> relative error; an output is per-token (compared over real tokens only) when it is
    [batch, seq, ...] on every batch."""
    if any(set(t) != set(s) for t, s in zip(tflite, saved)):
        raise VerificationError(f"the TFLite signature returns {sorted(tflite[0])}, the SavedModel's "
                                f"{sorted(saved[0])}")
    figures = {}
    for name in saved[0]:
        per_token = all(s[name].ndim >= 2 and s[name].shape[:2] == m.shape for s, m in zip(saved, masks))
        figures[name] = relative_error([t[name] for t in tflite], [s[name] for s in saved],
                                       masks if per_token else None)
    return figures


def parity_batches(loaded):
    """`fixed_batches` sized from a loaded export's own embedding tables (ids inside its vocabulary,
    lengths inside its position table, a second segment if it has one)."""
    shapes = {v.name.split(":")[0]: v.shape for v in getattr(loaded, "variables", ())}
    tables = [shapes.get(f"embeddings_{name}") for name in ("word", "position", "type")]
    if any(t is None or t.rank != 2 for t in tables):
        raise VerificationError("no embeddings_word / embeddings_position / embeddings_type variables: cannot "
                                "size the parity inputs")
    (vocab, hidden), (positions, _), (types, _) = (t.as_list() for t in tables)
    return fixed_batches(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1,
                                    num_attention_heads=1, intermediate_size=1,
                                    max_position_embeddings=positions, type_vocab_size=types))


def check_tflite(saved_model_dir: str, batches=None, signature: str = "serving_default",
                 tolerance: float = TOLERANCE) -> TFLiteReport:
    """Converts `signature` with builtin ops only and compares the TFLite model with the SavedModel
    on `batches` (default: `parity_batches`); the `mlm` signature also gets `fixed_mlm_positions`."""
    import gc

    import tensorflow as tf

    start = time.perf_counter()
    _register_text_ops()
    loaded = tf.saved_model.load(saved_model_dir)
    if signature not in loaded.signatures:
        raise VerificationError(f"no {signature} signature")
    batches = parity_batches(loaded) if batches is None else batches
    feeds = batch_feeds(batches, fixed_mlm_positions(batches) if signature == "mlm" else None)
    saved = run_signature(loaded.signatures[signature], feeds)
    del loaded  # the SavedModel's weights go before the converter makes its copies
    gc.collect()
    seconds = {"savedmodel": round(time.perf_counter() - start, 3)}
    described = describe_batches(batches)

    start = time.perf_counter()
    try:
        model = convert(saved_model_dir, signature)
    except VerificationError as e:
        return TFLiteReport(False, signature, tolerance, 0, {}, described, seconds, error=str(e))
    seconds["convert"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    try:
        tflite = run_tflite(model, feeds, signature)
    except Exception as e:  # noqa: BLE001 - the interpreter refusing the model is a failed check
        line = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        return TFLiteReport(False, signature, tolerance, len(model), {}, described, seconds,
                            error=f"{signature} converts but the TFLite interpreter fails on it: {line[:300]}")
    seconds["tflite"] = round(time.perf_counter() - start, 3)
    try:
        figures = compare(tflite, saved, [mask for _, mask, _ in batches])
    except VerificationError as e:  # other outputs, or other shapes, than the SavedModel's
        return TFLiteReport(False, signature, tolerance, len(model), {}, described, seconds,
                            error=f"{signature} converts but its TFLite outputs differ from the SavedModel's: {e}")
    passed = all(v <= tolerance for v in figures.values())
    return TFLiteReport(passed, signature, tolerance, len(model), figures, described, seconds)


def check_in_fresh_process(saved_model_dir: str, signature: str = "serving_default",
                           tolerance: float = TOLERANCE) -> TFLiteReport:
    """`check_tflite` on the parity batches in a new Python process; VerificationError if that
    process fails to run."""
    data = run_verifier_process("export.verify.tflite", [saved_model_dir, signature, repr(tolerance)])
    return TFLiteReport(data["passed"], data["signature"], data["tolerance"], data["model_bytes"], data["figures"],
                        data["batches"], data["seconds"], data["error"])


def _main(argv: list[str]) -> int:
    saved_model_dir, signature, tolerance = argv
    return verifier_process_main(lambda: check_tflite(saved_model_dir, signature=signature,
                                                      tolerance=float(tolerance)))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
