"""Numerical verification of a SavedModel against the independent numpy reference.

`verify_saved_model` does the work in the calling process; `verify_in_fresh_process` runs it in a
new Python process (as `python -m export.verify.numeric`), so that what is checked is the SavedModel on
disk, loaded the way a consumer loads it, not the objects that wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import numpy as np

from export.config import BertConfig, parse_bert_config
from export.errors import VerificationError
from export.process import run_verifier_process, verifier_process_main

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
    """Fixed int32 batches: several batch sizes and lengths, padded and unpadded rows, two segments."""
    rng = np.random.default_rng(20240611)
    longest = min(48, config.max_position_embeddings)
    cases = [(1, min(5, longest), [min(5, longest)]),
             (3, min(16, longest), [min(16, longest), min(9, longest), min(3, longest)]),
             (2, longest, [longest, max(1, longest // 3)])]
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


def run_saved_model(saved_model_dir: str, export_format: str, batches,
                    mlm_positions: list[np.ndarray] | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Runs the batches through `__call__` (training=False) and `serving_default`; with
    `mlm_positions`, also through `.mlm` (training=False) and the `mlm` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    serving = loaded.signatures["serving_default"]
    results: dict[str, list[dict[str, np.ndarray]]] = {"__call__": [], "serving_default": []}
    if mlm_positions is not None:
        results |= {"mlm": [], "mlm signature": []}
        for (ids, mask, types), positions in zip(batches, mlm_positions):
            inputs = {name: tf.constant(array) for name, array in (
                ("input_word_ids", ids), ("input_mask", mask), ("input_type_ids", types),
                ("masked_lm_positions", positions))}
            out = loaded.mlm(inputs, training=False)
            results["mlm"].append({k: [t.numpy() for t in v] if isinstance(v, list) else v.numpy()
                                   for k, v in out.items()})
            served = loaded.signatures["mlm"](**inputs)
            results["mlm signature"].append({k: v.numpy() for k, v in served.items()})
    for ids, mask, types in batches:
        ids_t, mask_t, types_t = (tf.constant(a) for a in (ids, mask, types))
        if export_format == "legacy":
            pooled, sequence = loaded([ids_t, mask_t, types_t], training=False)
            results["__call__"].append({"pooled_output": pooled.numpy(), "sequence_output": sequence.numpy()})
        else:
            out = loaded({"input_word_ids": ids_t, "input_mask": mask_t, "input_type_ids": types_t},
                         training=False)
            results["__call__"].append({
                "pooled_output": out["pooled_output"].numpy(), "sequence_output": out["sequence_output"].numpy(),
                "default": out["default"].numpy(), "encoder_outputs": [t.numpy() for t in out["encoder_outputs"]]})
        served = serving(input_word_ids=ids_t, input_mask=mask_t, input_type_ids=types_t)
        results["serving_default"].append({k: v.numpy() for k, v in served.items()})
    return results


def min_row_cosine(exported: list[np.ndarray], reference: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """The smallest cosine between an exported and a reference row (one token's vector), over real tokens."""
    lowest = 1.0
    for e, r, mask in zip(exported, reference, masks):
        e, r = np.asarray(e, np.float64)[mask.astype(bool)], np.asarray(r, np.float64)[mask.astype(bool)]
        norms = np.maximum(np.linalg.norm(e, axis=-1) * np.linalg.norm(r, axis=-1), 1e-30)
        lowest = min(lowest, float(np.min(np.sum(e * r, axis=-1) / norms)))
    return lowest


def compare_to_reference(results, reference, batches) -> dict[str, dict[str, float]]:
    masks = [mask for _, mask, _ in batches]
    figures: dict[str, dict[str, float]] = {}
    for entry, per_batch in results.items():
        figures[entry] = {
            "pooled_output": relative_error([o["pooled_output"] for o in per_batch],
                                            [r.pooled_output for r in reference]),
            "sequence_output": relative_error([o["sequence_output"] for o in per_batch],
                                              [r.sequence_output for r in reference], masks),
        }
        if "default" in per_batch[0]:
            figures[entry]["default"] = relative_error([o["default"] for o in per_batch],
                                                       [r.pooled_output for r in reference])
        if "encoder_outputs" in per_batch[0]:
            layers = len(reference[0].encoder_outputs)
            if any(len(o["encoder_outputs"]) != layers for o in per_batch):
                raise VerificationError(f"encoder_outputs does not hold {layers} layers")
            figures[entry]["encoder_outputs"] = max(
                relative_error([o["encoder_outputs"][i] for o in per_batch],
                               [r.encoder_outputs[i] for r in reference], masks) for i in range(layers))
        if "mlm_logits" in per_batch[0]:
            figures[entry]["mlm_logits"] = relative_error([o["mlm_logits"] for o in per_batch],
                                                          [r.mlm_logits for r in reference])
    return figures


def verify_saved_model(saved_model_dir: str, export_format: str, config: BertConfig,
                       checkpoint_path: str, tolerance: float = TOLERANCE,
                       with_mlm: bool = False) -> VerificationReport:
    """Compares the SavedModel at `saved_model_dir` with the numpy reference of the checkpoint
    (`with_mlm`: the `.mlm` subobject's logits too)."""
    from export.checkpoints import open_checkpoint
    from export.verify.reference import reference_forward
    from export.checkpoints.check import check_checkpoint

    batches = fixed_batches(config)
    positions = fixed_mlm_positions(batches) if with_mlm else None
    reader = open_checkpoint(checkpoint_path)
    check_checkpoint(reader, config, "config")  # also declares the weights the exporter initialised
    # The reference first: its layer-at-a-time working set is gone before the SavedModel loads.
    reference = reference_forward(config, reader.read, batches, positions)
    results = run_saved_model(saved_model_dir, export_format, batches, positions)
    figures = compare_to_reference(results, reference, batches)
    passed = all(v <= tolerance for outputs in figures.values() for v in outputs.values())
    cosine = min(min_row_cosine([o["sequence_output"] for o in per_batch], [r.sequence_output for r in reference],
                                [mask for _, mask, _ in batches]) for per_batch in results.values())
    return VerificationReport(passed, tolerance, figures, describe_batches(batches), cosine)


def verify_in_fresh_process(saved_model_dir: str, export_format: str, config: BertConfig,
                            checkpoint_path: str, tolerance: float = TOLERANCE,
                            with_mlm: bool = False) -> VerificationReport:
    """`verify_saved_model` in a new Python process; raises VerificationError if that fails to run."""
    data = run_verifier_process("export.verify.numeric", [saved_model_dir, export_format, json.dumps(config.to_json_dict()),
                                                  checkpoint_path, repr(tolerance), "mlm" if with_mlm else "encoder"])
    return VerificationReport(data["passed"], data["tolerance"], data["figures"], data["batches"], data["min_cosine"])


def _main(argv: list[str]) -> int:
    saved_model_dir, export_format, config_json, checkpoint_path, tolerance, entries = argv
    config = parse_bert_config(json.loads(config_json), "config")
    return verifier_process_main(lambda: verify_saved_model(
        saved_model_dir, export_format, config, checkpoint_path, float(tolerance), with_mlm=entries == "mlm"))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
