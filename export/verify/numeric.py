"""Numerical verification of a SavedModel against the independent numpy reference.

`verify_saved_model` does the work in the calling process. `PendingVerification` runs it in a new
Python process (`python -m export.verify.numeric`), so that what is checked is the SavedModel on
disk, loaded the way a consumer loads it, not the objects that wrote it; the exporter starts that
process before it saves, and the process computes the reference meanwhile (the two phases:
`compute_encoder_reference`, then `check_saved_model` once the directory is handed over).
`verify_in_fresh_process` is both at once, for a SavedModel that exists already.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import sys
from typing import Callable

import numpy as np

from export.config import BertConfig, parse_bert_config
from export.errors import VerificationError
from export.process import VerifierProcess, two_phase_verifier_main

INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
MLM_POSITIONS = "masked_lm_positions"
TOLERANCE = 1e-5  # float32 exports
BFLOAT16_UNIT_ROUNDOFF = 2.0 ** -9  # round-to-nearest of an 8-bit significand: relative error <= 2^-9


def tolerance_for(dtype: str, config: BertConfig) -> float:
    """The verification tolerance of an export computed in `dtype` (export.build.precision).

    float32: 1e-5. bfloat16: 16 u sqrt(L), u = 2^-9 (0.044 for L=2, 0.108 for L=12, 0.153 for
    L=24). Derivation: each bfloat16 matmul operand is rounded with a relative error uniform in
    [-u, u] (standard deviation u/sqrt(3)); a layer's longest path rounds 8 of them (the q/k/v
    input, both score operands, the probabilities, the attention output's and the intermediate
    and output layers' inputs), and independent errors add in quadrature, so a layer adds
    sqrt(8/3) u relative error and L layers sqrt(8L/3) u = 1.63 u sqrt(L) (LayerNorm rescales,
    it does not shrink a relative error). The largest of the thousands of compared values lies
    within about 5 standard deviations, 8.2 u sqrt(L); the factor 2 on top of that is room for a
    sum's conditioning (cancellation) at well-conditioned, O(1), activations. A mapping bug moves
    outputs by tens of percent (a swapped key/value: 0.6-1.6), well above it.
    """
    if dtype == "bfloat16":
        return 16 * BFLOAT16_UNIT_ROUNDOFF * math.sqrt(config.num_hidden_layers)
    return TOLERANCE


@dataclasses.dataclass
class VerificationReport:
    passed: bool
    tolerance: float
    # entry point -> output -> max |export - reference| / max |reference| over real tokens
    figures: dict[str, dict[str, float]]
    batches: list[str]
    min_cosine: float | None = None  # of sequence_output rows (real tokens) against the reference's

    @property
    def worst(self) -> float:
        return max(v for outputs in self.figures.values() for v in outputs.values())

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self) | {"worst": self.worst, "summary": self.summary()}

    def summary(self) -> str:
        if self.passed:
            # In float32 the cosine is 1 to the printed digits; bfloat16 exports report it.
            cosine = (f", min cosine of sequence_output rows {self.min_cosine:.6f}"
                      if self.min_cosine is not None and self.tolerance > TOLERANCE else "")
            return (f"max relative error {self.worst:.3g} (tolerance {self.tolerance:.3g}) over "
                    + ", ".join(sorted(self.figures)) + cosine)
        entry, output, value = max(((e, o, x) for e, outs in self.figures.items() for o, x in outs.items()),
                                   key=lambda item: item[2])
        return (f"max relative error {self.worst:.3g} exceeds {self.tolerance:g} "
                f"(worst: {entry} {output} {value:.3g})")


def fixed_batches(config: BertConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fixed int32 probe batches, few tokens for what they cover: batch 3 x seq 16 (real lengths
    16, 9 and 3: unpadded and padded rows), and batch 1 x seq 48 (one row of 48 real tokens:
    positions past 16); each row's second half is segment 1. 96 token positions in all."""
    rng = np.random.default_rng(20240611)
    longest = min(48, config.max_position_embeddings)
    cases = [(3, min(16, longest), [min(16, longest), min(9, longest), min(3, longest)]),
             (1, longest, [longest])]
    batches = []
    for batch, seq, lengths in cases:
        ids = np.zeros((batch, seq), np.int32)
        mask = np.zeros((batch, seq), np.int32)
        types = np.zeros((batch, seq), np.int32)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(0, config.vocab_size, length)
            mask[row, :length] = 1
            if config.type_vocab_size > 1:
                types[row, length // 2: length] = 1  # second segment
        batches.append((ids, mask, types))
    return batches


def fixed_mlm_positions(batches) -> list[np.ndarray]:
    """Fixed int32 [B, P] masked positions per batch, inside each row's real tokens."""
    rng = np.random.default_rng(20240612)
    positions = []
    for ids, mask, _ in batches:
        count = min(4, ids.shape[1])
        positions.append(np.stack([rng.integers(0, max(1, int(row.sum())), count) for row in mask]).astype(np.int32))
    return positions


def describe_batches(batches) -> list[str]:
    return [f"batch {ids.shape[0]} x seq {ids.shape[1]}, real lengths {mask.sum(axis=1).tolist()}"
            for ids, mask, _ in batches]


def relative_error(exported: list[np.ndarray], reference: list[np.ndarray],
                   masks: list[np.ndarray] | None = None) -> float:
    """max |exported - reference| / max |reference|, over real (mask = 1) tokens when masks given."""
    diffs, scales = [], []
    for i, (e, r) in enumerate(zip(exported, reference)):
        e, r = np.asarray(e, np.float64), np.asarray(r, np.float64)
        if e.shape != r.shape:
            raise VerificationError(f"output shape {list(e.shape)} differs from reference {list(r.shape)}")
        if masks is not None:
            real = masks[i].astype(bool)
            e, r = e[real], r[real]
        diffs.append(np.max(np.abs(e - r)))
        scales.append(np.max(np.abs(r)))
    return float(max(diffs) / max(max(scales), 1e-30))


def run_calls(calls: list[tuple[str, Callable[[], dict]]]) -> dict[str, list[dict]]:
    """Runs each (entry, call), two at a time; returns entry -> its calls' outputs, in order. A
    loaded function's first call on a new input shape spends about a second (BERT-large) in
    TensorFlow's single-threaded preparation of the graph; two of those overlap on two cores."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outputs = list(pool.map(lambda call: call[1](), calls))
    results: dict[str, list[dict]] = {}
    for (entry, _), output in zip(calls, outputs):
        results.setdefault(entry, []).append(output)
    return results


def _numpy_outputs(outputs: dict) -> dict:
    return {k: [t.numpy() for t in v] if isinstance(v, list) else v.numpy() for k, v in outputs.items()}


def run_saved_model(saved_model_dir: str, export_format: str, batches,
                    mlm_positions: list[np.ndarray] | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Runs the batches through `__call__` (training=False), and the first (padded rows, two
    segments) through `serving_default`, which wraps the same graph: its inputs' and outputs'
    wiring is what it adds. With `mlm_positions`, likewise `.mlm` and the `mlm` signature.
    Each entry's list holds its batches' outputs, in order."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    serving = loaded.signatures["serving_default"]
    calls = []
    for b, (ids, mask, types) in enumerate(batches):
        inputs = dict(zip(INPUT_NAMES, (tf.constant(a) for a in (ids, mask, types))))
        if export_format == "legacy":
            def call(inputs=inputs):
                pooled, sequence = loaded([inputs[name] for name in INPUT_NAMES], training=False)
                return {"pooled_output": pooled.numpy(), "sequence_output": sequence.numpy()}
        else:
            def call(inputs=inputs):
                out = _numpy_outputs(loaded(inputs, training=False))
                return {k: out[k] for k in ("pooled_output", "sequence_output", "default", "encoder_outputs")}
        calls.append(("__call__", call))
        if b == 0:
            calls.append(("serving_default", lambda inputs=inputs: _numpy_outputs(serving(**inputs))))
        if mlm_positions is not None:
            with_positions = inputs | {MLM_POSITIONS: tf.constant(mlm_positions[b])}
            calls.append(("mlm", lambda feeds=with_positions: _numpy_outputs(loaded.mlm(feeds, training=False))))
            if b == 0:
                calls.append(("mlm signature",
                              lambda feeds=with_positions: _numpy_outputs(loaded.signatures["mlm"](**feeds))))
    return run_calls(calls)


def min_row_cosine(exported: list[np.ndarray], reference: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """The smallest cosine between an exported and a reference row (one token's vector), over real tokens."""
    lowest = 1.0
    for e, r, mask in zip(exported, reference, masks):
        e, r = np.asarray(e, np.float64)[mask.astype(bool)], np.asarray(r, np.float64)[mask.astype(bool)]
        norms = np.maximum(np.linalg.norm(e, axis=-1) * np.linalg.norm(r, axis=-1), 1e-30)
        lowest = min(lowest, float(np.min(np.sum(e * r, axis=-1) / norms)))
    return lowest


def compare_to_reference(results, reference, batches) -> dict[str, dict[str, float]]:
    """Each entry's figures over the batches it ran (the first ones: see run_saved_model)."""
    figures: dict[str, dict[str, float]] = {}
    for entry, per_batch in results.items():
        reference_of, masks = reference[:len(per_batch)], [mask for _, mask, _ in batches[:len(per_batch)]]
        figures[entry] = {
            "pooled_output": relative_error([o["pooled_output"] for o in per_batch],
                                            [r.pooled_output for r in reference_of]),
            "sequence_output": relative_error([o["sequence_output"] for o in per_batch],
                                              [r.sequence_output for r in reference_of], masks),
        }
        if "default" in per_batch[0]:
            figures[entry]["default"] = relative_error([o["default"] for o in per_batch],
                                                       [r.pooled_output for r in reference_of])
        if "encoder_outputs" in per_batch[0]:
            layers = len(reference_of[0].encoder_outputs)
            if any(len(o["encoder_outputs"]) != layers for o in per_batch):
                raise VerificationError(f"encoder_outputs does not hold {layers} layers")
            figures[entry]["encoder_outputs"] = max(
                relative_error([o["encoder_outputs"][i] for o in per_batch],
                               [r.encoder_outputs[i] for r in reference_of], masks) for i in range(layers))
        if "mlm_logits" in per_batch[0]:
            figures[entry]["mlm_logits"] = relative_error([o["mlm_logits"] for o in per_batch],
                                                          [r.mlm_logits for r in reference_of])
    return figures


@dataclasses.dataclass
class EncoderReference:
    """What the verifier computes before the SavedModel exists: the probe batches, and the numpy
    reference's outputs on them (a layer at a time; its working set is gone before the load)."""
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    positions: list[np.ndarray] | None
    outputs: list  # ReferenceOutputs, one per batch


def compute_encoder_reference(config: BertConfig, checkpoint_path: str, with_mlm: bool = False) -> EncoderReference:
    from export.checkpoints import open_checkpoint
    from export.checkpoints.check import check_checkpoint
    from export.verify.reference import reference_forward

    batches = fixed_batches(config)
    positions = fixed_mlm_positions(batches) if with_mlm else None
    reader = open_checkpoint(checkpoint_path)
    check_checkpoint(reader, config, "config")  # also declares the weights the exporter initialised
    return EncoderReference(batches, positions, reference_forward(config, reader.read, batches, positions))


def check_saved_model(saved_model_dir: str, export_format: str, reference: EncoderReference,
                      tolerance: float = TOLERANCE) -> VerificationReport:
    """Compares the SavedModel at `saved_model_dir` with the precomputed reference."""
    results = run_saved_model(saved_model_dir, export_format, reference.batches, reference.positions)
    figures = compare_to_reference(results, reference.outputs, reference.batches)
    passed = all(v <= tolerance for outputs in figures.values() for v in outputs.values())
    masks = [mask for _, mask, _ in reference.batches]
    cosine = min(min_row_cosine([o["sequence_output"] for o in per_batch],
                                [r.sequence_output for r in reference.outputs[:len(per_batch)]], masks)
                 for per_batch in results.values())
    return VerificationReport(passed, tolerance, figures, describe_batches(reference.batches), cosine)


def verify_saved_model(saved_model_dir: str, export_format: str, config: BertConfig,
                       checkpoint_path: str, tolerance: float = TOLERANCE,
                       with_mlm: bool = False) -> VerificationReport:
    """Compares the SavedModel at `saved_model_dir` with the numpy reference of the checkpoint
    (`with_mlm`: the `.mlm` subobject's logits too)."""
    return check_saved_model(saved_model_dir, export_format, compute_encoder_reference(config, checkpoint_path,
                                                                                       with_mlm), tolerance)


class PendingVerification(VerifierProcess):
    """A fresh verifier process started before the save: it computes the reference meanwhile.
    `finish(saved_model_dir)` returns the report; `cancel()` stops it."""

    def __init__(self, export_format: str, config: BertConfig, checkpoint_path: str, tolerance: float = TOLERANCE,
                 with_mlm: bool = False, alongside_export: bool = True):
        super().__init__("export.verify.numeric", {
            "export_format": export_format, "config": config.to_json_dict(), "checkpoint_path": checkpoint_path,
            "tolerance": tolerance, "with_mlm": with_mlm}, alongside_export)

    def finish(self, saved_model_dir: str) -> VerificationReport:
        data = self.finish_json(saved_model_dir)
        return VerificationReport(data["passed"], data["tolerance"], data["figures"], data["batches"],
                                  data["min_cosine"])


def verify_in_fresh_process(saved_model_dir: str, export_format: str, config: BertConfig,
                            checkpoint_path: str, tolerance: float = TOLERANCE,
                            with_mlm: bool = False) -> VerificationReport:
    """`verify_saved_model` in a new Python process; raises VerificationError if that fails to run."""
    return PendingVerification(export_format, config, checkpoint_path, tolerance, with_mlm,
                               alongside_export=False).finish(saved_model_dir)


def _prepare(request: dict) -> tuple[dict, EncoderReference]:
    import tensorflow  # noqa: F401  (imported while the exporter still saves, off the critical path)

    config = parse_bert_config(request["config"], "config")
    return request, compute_encoder_reference(config, request["checkpoint_path"], request["with_mlm"])


def _check(prepared: tuple[dict, EncoderReference], saved_model_dir: str) -> VerificationReport:
    request, reference = prepared
    return check_saved_model(saved_model_dir, request["export_format"], reference, request["tolerance"])


if __name__ == "__main__":
    sys.exit(two_phase_verifier_main(_prepare, _check))
