"""Verification of a task export (a fine-tuned BERT and its head), in a fresh process.

Tensor entry points (`__call__`, `serve`, `serving_default`, `serve_int64`) are compared with
the independent float64 numpy reference, the encoder (`reference.py`) plus the head
(`head_reference.py`), both computed from the checkpoint's arrays, on the fixed batches of the
encoder's verification (`__call__` on all of them; the other three, which wrap the same graph, on
the first). Probabilities are compared with the reference's own softmax or sigmoid,
and the saved label names with the ones the export was given, in id order.

Text signatures: `tokenize` and `tokenize.with_char_offsets` must give the Python tokenizer's ids
on the built-in sentences; every text signature must return `serving_default`'s outputs on the
reference's packing of the same text; labels must be the given names at the argmax; offsets must
lie in the text, one per packed text token; and a QA answer must be the best allowed span (by
exhaustive search), its text the context's own characters at its offsets.

As for encoders (`numeric.py`), the exporter starts the process before it saves: the reference
is computed meanwhile (`compute_task_reference`), and `check_task` runs once the directory is
handed over. Its calls, tensor and text alike, run in one pool, two at a time (`run_calls`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import numpy as np

from export.config import BertConfig, parse_bert_config
from export.process import VerifierProcess, two_phase_verifier_main
from export.tasks import HEAD_BIAS, HEAD_KERNEL, QUESTION_ANSWERING, SEQUENCE_CLASSIFICATION, \
    TOKEN_CLASSIFICATION, TaskSpec
from export.verify.numeric import INPUT_NAMES, TOLERANCE, describe_batches, fixed_batches, relative_error, \
    run_calls
from export.vocab import TokenizerSpec

TENSOR_ENTRIES = ("__call__", "serve", "serving_default", "serve_int64")
TEXT_TOLERANCE = 1e-6  # a text signature against serving_default on the same ids: the same graph
# The end-to-end batches: each row costs its packed length twice (the text signature, then
# serving_default), so they are few; the tokenizer itself is checked on all the built-in
# sentences. An empty text and one with casing, accents and CJK; then, alone, one longer than any
# sequence length, so that truncation happens.
_LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog, again and again."] * 60)
_TEXT_BATCHES = (("", "İstanbul'da Crème brûlée yedik; 我爱北京天安门, DİYARBAKIR!"), (_LONG_TEXT,))
_QUESTIONS = (("What did we eat in İstanbul?", ""), ("Who jumps over the dog?",))


@dataclasses.dataclass
class TaskVerificationReport:
    passed: bool
    tolerance: float
    # entry point -> output -> relative error: tensor entries against the numpy reference,
    # text signatures against serving_default on the reference's packing of the same text
    figures: dict[str, dict[str, float]]
    batches: list[str]
    checks: dict[str, str]  # what else was checked, in words
    failures: list[str]

    @property
    def worst(self) -> float:
        return max((v for entry, outs in self.figures.items() if entry in TENSOR_ENTRIES for v in outs.values()),
                   default=0.0)

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self) | {"worst": self.worst, "summary": self.summary()}

    def summary(self) -> str:
        text = [entry for entry in self.figures if entry not in TENSOR_ENTRIES]
        if not self.passed:
            return f"{len(self.failures)} check(s) failed; first: {self.failures[0]}"
        words = (f"max relative error {self.worst:.3g} (tolerance {self.tolerance:.3g}) over "
                 + ", ".join(e for e in TENSOR_ENTRIES if e in self.figures))
        if text:
            worst_text = max(v for entry in text for v in self.figures[entry].values())
            words += (f"; {', '.join(text)} equal serving_default on the reference's ids within {worst_text:.3g}; "
                      + "; ".join(f"{k} {v}" for k, v in self.checks.items()))
        return words


def _numpy(outputs) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in outputs.items()}


def _per_token(spec: TaskSpec, name: str) -> bool:
    return spec.task != SEQUENCE_CLASSIFICATION and name not in ("answer", "answer_start", "answer_end",
                                                                   "answer_score")


def _compare(spec: TaskSpec, got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]],
             masks: list[np.ndarray], what: str, tolerance: float, failures: list[str]) -> dict[str, float]:
    """Relative error of each of the spec's tensor outputs (over real tokens for per-token ones)."""
    figures = {}
    for out in got:
        if sorted(k for k in out if k in spec.tensor_outputs()) != sorted(spec.tensor_outputs()):
            failures.append(f"{what}: outputs {sorted(out)}, expected {sorted(spec.tensor_outputs())}")
            return figures
    want, masks = want[:len(got)], masks[:len(got)]  # an entry that ran on the first batches only
    for name in spec.tensor_outputs():
        figures[name] = relative_error([o[name] for o in got], [w[name] for w in want],
                                       masks if _per_token(spec, name) else None)
        if figures[name] > tolerance:
            failures.append(f"{what} {name}: relative error {figures[name]:.3g} exceeds {tolerance:.3g}")
    return figures


def _tensor_entry_calls(loaded, batches) -> list[tuple[str, Callable[[], dict]]]:
    """`__call__` on every batch; `serve`, `serving_default` and `serve_int64`, which wrap the same
    graph (their wiring, and the int64 cast, is what they add), on the first: padded rows, two
    segments."""
    import tensorflow as tf

    calls = []
    for b, arrays in enumerate(batches):
        feeds = {name: tf.constant(a) for name, a in zip(INPUT_NAMES, arrays)}
        calls.append(("__call__", lambda feeds=feeds: _numpy(loaded(feeds, training=False))))
        if b == 0:
            int64 = {name: tf.cast(t, tf.int64) for name, t in feeds.items()}
            calls += [("serve", lambda feeds=feeds: _numpy(loaded.serve(feeds))),
                      ("serving_default", lambda feeds=feeds: _numpy(loaded.signatures["serving_default"](**feeds))),
                      ("serve_int64", lambda int64=int64: _numpy(loaded.signatures["serve_int64"](**int64)))]
    return calls


@dataclasses.dataclass
class TaskReference:
    """What the verifier computes before the SavedModel exists: the probe batches and the
    encoder-plus-head reference's outputs on them."""
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    expected: list[dict[str, np.ndarray]]


def compute_task_reference(config: BertConfig, checkpoint_path: str, spec: TaskSpec) -> TaskReference:
    from export.checkpoints import open_checkpoint
    from export.checkpoints.check import bind_head, check_checkpoint
    from export.verify.head_reference import REFERENCES
    from export.verify.reference import reference_forward

    reader = open_checkpoint(checkpoint_path)
    check_checkpoint(reader, config, "config", pooler=spec.uses_pooler)  # declares what the exporter initialised
    bind_head(reader, spec)
    batches = fixed_batches(config)
    kernel, bias = reader.read(HEAD_KERNEL).astype(np.float64), reader.read(HEAD_BIAS).astype(np.float64)
    # Layer at a time: its working set is gone before the SavedModel loads.
    return TaskReference(batches, [REFERENCES[spec.task](spec, r.pooled_output, r.sequence_output, kernel, bias)
                                   for r in reference_forward(config, reader.read, batches, pooler=spec.uses_pooler)])


def check_task(saved_model_dir: str, reference: TaskReference, spec: TaskSpec, tokenizer: TokenizerSpec | None,
               seq_length: int | None, tolerance: float = TOLERANCE) -> TaskVerificationReport:
    """Compares the task export at `saved_model_dir` with the precomputed reference and, with a
    `tokenizer`, its text signatures with the Python tokenizer and serving_default."""
    import tensorflow as tf

    if tokenizer is not None:
        import tensorflow_text  # noqa: F401  (registers the text signatures' ops before loading)
    batches = reference.batches
    masks = [mask for _, mask, _ in batches]
    loaded = tf.saved_model.load(saved_model_dir)
    text = _TextChecks(loaded, spec, tokenizer, seq_length) if tokenizer is not None else None
    # The tensor entries' and the text checks' calls in one pool, two at a time: seven functions
    # run here for the first time, and their single-threaded preparation overlaps.
    results = run_calls(_tensor_entry_calls(loaded, batches) + (text.calls() if text else []))
    failures: list[str] = []
    figures = {entry: _compare(spec, results[entry], reference.expected, masks, entry, tolerance, failures)
               for entry in TENSOR_ENTRIES if entry in results}
    checks: dict[str, str] = {}
    if spec.label_names:
        saved = [name.decode() for name in loaded.label_names.numpy()]
        if saved != list(spec.label_names):
            failures.append(f"label_names: saved {saved[:8]}, expected {list(spec.label_names)[:8]} (in id order)")
    if text:
        figures |= text.check(results, failures, checks)
    return TaskVerificationReport(not failures, tolerance, figures, describe_batches(batches), checks, failures)


def verify_task(saved_model_dir: str, config: BertConfig, checkpoint_path: str, spec: TaskSpec,
                tokenizer: TokenizerSpec | None, seq_length: int | None,
                tolerance: float = TOLERANCE) -> TaskVerificationReport:
    """Compares the task export at `saved_model_dir` with the references (see the module's doc).
    `tokenizer` None: the export has no text signatures."""
    return check_task(saved_model_dir, compute_task_reference(config, checkpoint_path, spec), spec, tokenizer,
                      seq_length, tolerance)


@dataclasses.dataclass
class _TextRequest:
    """One text signature call of the checks: its inputs, and the reference's tokens and packing
    of the same text."""
    key: str  # the call's key in run_calls' results; its serving_default twin is key + " ids"
    signature: str
    texts: dict[str, list[str]]
    ids: list[list[list[int]]]  # per segment, per row: the reference tokenizer's ids
    arrays: tuple[np.ndarray, ...]  # the reference's packing, cut to the longest row
    offsets_of: list[str] | None  # the texts whose character offsets the check needs (key + " offsets")


class _TextChecks:
    """The text signatures against the Python tokenizer and packer and against serving_default.
    `calls()` lists what to run on the loaded model; `check(results, ...)` compares."""

    def __init__(self, loaded, spec: TaskSpec, tokenizer: TokenizerSpec, seq_length: int):
        from export.verify import tokenization_reference as reference

        self.loaded, self.spec, self.seq_length = loaded, spec, seq_length
        self.reference = reference
        self.tokenize = reference.reference_tokenizer(tokenizer.kind, tokenizer.path, tokenizer.do_lower_case)
        self.special = reference.special_token_ids(tokenizer.kind, tokenizer.path)
        self.pack_ids = (self.special["start_of_sequence_id"], self.special["end_of_segment_id"],
                         self.special["padding_id"])
        self.requests: list[_TextRequest] = []
        for b, (batch, questions) in enumerate(zip(_TEXT_BATCHES, _QUESTIONS)):
            rows = list(batch)
            if spec.task == SEQUENCE_CLASSIFICATION:
                pairs = rows[::-1]
                self._request(f"serve_text#{b}", "serve_text", {"text": rows}, [rows])
                self._request(f"serve_text_pair#{b}", "serve_text_pair", {"text": rows, "text_pair": pairs},
                              [rows, pairs])
            elif spec.task == TOKEN_CLASSIFICATION:
                self._request(f"serve_text#{b}", "serve_text", {"text": rows}, [rows], offsets_of=rows)
            else:
                contexts = rows[::-1]
                self._request(f"serve_text#{b}", "serve_text", {"question": list(questions), "context": contexts},
                              [list(questions), contexts], offsets_of=contexts)

    def _request(self, key: str, signature: str, texts: dict[str, list[str]], segments: list[list[str]],
                 offsets_of: list[str] | None = None) -> None:
        ids, arrays = self._packed(segments)
        self.requests.append(_TextRequest(key, signature, texts, ids, arrays, offsets_of))

    def calls(self) -> list[tuple[str, Callable[[], object]]]:
        import tensorflow as tf
        from export.verify.preprocessing import BUILTIN_SENTENCES, check_tokenize_object

        def check_tokenize():
            mismatches: list[str] = []
            counts = check_tokenize_object(self.loaded.tokenize, list(BUILTIN_SENTENCES), self.tokenize,
                                           self.special, mismatches)
            return counts, mismatches

        calls: list[tuple[str, Callable[[], object]]] = [("tokenize", check_tokenize)]
        for r in self.requests:
            signature = self.loaded.signatures[r.signature]
            feeds = {k: tf.constant(v) for k, v in r.texts.items()}
            calls += [(r.key, lambda signature=signature, feeds=feeds: _numpy(signature(**feeds))),
                      (r.key + " ids", lambda arrays=r.arrays: self._serving(arrays))]
            if r.offsets_of is not None:
                calls.append((r.key + " offsets", lambda texts=r.offsets_of: self._offsets(texts)))
        return calls

    def check(self, results: dict[str, list], failures: list[str],
              checks: dict[str, str]) -> dict[str, dict[str, float]]:
        counts, mismatches = results["tokenize"][0]
        failures += mismatches
        checks["token ids"] = ", ".join(counts) + " equal the reference tokenizer's"
        figures: dict[str, dict[str, float]] = {}
        rows_checked = answered = 0
        for r in self.requests:
            got = results[r.key][0]
            found = _compare(self.spec, [got], results[r.key + " ids"], [r.arrays[1]], r.signature, TEXT_TOLERANCE,
                             failures)
            for name, value in found.items():
                figures.setdefault(r.signature, {})[name] = max(value, figures.get(r.signature, {}).get(name, 0.0))
            if self.spec.task == SEQUENCE_CLASSIFICATION:
                self._check_label(r.signature, got, failures)
            elif self.spec.task == TOKEN_CLASSIFICATION:
                self._check_tagging(r, got, results[r.key + " offsets"][0], failures)
            else:
                answered += self._check_answers(r, got, results[r.key + " offsets"][0], failures)
            rows_checked += len(r.arrays[0])
        if self.spec.task == TOKEN_CLASSIFICATION:
            checks["labels and offsets"] = f"on {rows_checked} texts"
        elif self.spec.task == QUESTION_ANSWERING:
            checks["answers"] = (f"the best span on {answered}/{rows_checked} rows (the others hold no "
                                 "context token)")
        return figures

    # -- helpers ----------------------------------------------------------------------------
    def _packed(self, segments: list[list[str]]) -> tuple[list[list[list[int]]], tuple[np.ndarray, ...]]:
        """The reference tokenizer's ids, and their packing at seq_length cut to the longest row
        (as the text signatures pad a batch)."""
        ids = [[self.tokenize(text) for text in texts] for texts in segments]
        rows = [self.reference.pack([segment[r] for segment in ids], self.seq_length, *self.pack_ids)
                for r in range(len(segments[0]))]
        arrays = tuple(np.array([row[k] for row in rows], np.int32) for k in range(3))
        longest = int(arrays[1].sum(axis=1).max())
        return ids, tuple(a[:, :longest] for a in arrays)

    def _serving(self, arrays) -> dict[str, np.ndarray]:
        import tensorflow as tf

        feeds = {name: tf.constant(a) for name, a in zip(INPUT_NAMES, arrays)}
        return _numpy(self.loaded.signatures["serving_default"](**feeds))

    def _offsets(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        offsets = self.loaded.tokenize.with_char_offsets(np.array(texts, dtype=object))
        return offsets["start"].to_list(), offsets["end"].to_list()

    def _labels_of(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(self.spec.label_names, dtype=object)[np.argmax(logits, axis=-1)]

    # -- per task ---------------------------------------------------------------------------
    def _check_label(self, name: str, got: dict, failures: list[str]) -> None:
        if self.spec.has_label_output:
            labels = [label.decode() for label in got["label"]]
            if labels != list(self._labels_of(got["logits"])):
                failures.append(f"{name} label: {labels[:4]} are not the label names at the logits' argmax")

    def _check_tagging(self, r: _TextRequest, got: dict, offsets, failures: list[str]) -> None:
        starts, ends = offsets
        for row, text in enumerate(r.offsets_of):
            kept = min(len(r.ids[0][row]), self.seq_length - 2)
            where = np.zeros(r.arrays[0].shape[1], bool)
            where[1:1 + kept] = True
            labels = np.array([label.decode() for label in got["labels"][row]], dtype=object)
            want = np.where(where, self._labels_of(got["logits"][row]), "")
            if not np.array_equal(labels, want):
                failures.append(f"serve_text labels: row {row} {text[:40]!r}: {list(labels[:6])} are not the label "
                                f"names at the logits' argmax on its {kept} text tokens")
            packed_offsets = (got["token_start"][row][where].tolist(), got["token_end"][row][where].tolist())
            elsewhere = got["token_start"][row][~where]
            if packed_offsets != (starts[row][:kept], ends[row][:kept]) or (elsewhere != -1).any():
                failures.append(f"serve_text token_start/token_end: row {row} {text[:40]!r}: not the text tokens' "
                                "offsets at the packed positions (and -1 elsewhere)")

    def _check_answers(self, r: _TextRequest, got: dict, offsets, failures: list[str]) -> int:
        """Checks each row's answer; returns how many rows had a context token to answer from."""
        from export.verify.head_reference import best_span

        starts, ends = offsets
        answered = 0
        for row, context in enumerate(r.offsets_of):
            q_kept, c_kept = self.reference.round_robin_lengths([len(r.ids[0][row]), len(r.ids[1][row])],
                                                                self.seq_length - 3)
            first = q_kept + 2  # [CLS] question [SEP]
            where = np.zeros(r.arrays[0].shape[1], bool)
            where[first:first + c_kept] = True
            span = best_span(got["start_logits"][row].astype(np.float64), got["end_logits"][row].astype(np.float64),
                             where, self.spec.max_answer_length)
            answer = got["answer"][row].decode()
            start, end = int(got["answer_start"][row]), int(got["answer_end"][row])
            score = float(got["answer_score"][row])
            if span is None:
                ok = (start, end, answer) == (-1, -1, "")
            else:
                i, j, best = span
                want = (starts[row][i - first], ends[row][j - first])
                ok = ((start, end) == want and answer == context[start:end]
                      and abs(score - best) <= 1e-4 * max(1.0, abs(best)))
                answered += 1
            if not ok:
                failures.append(f"serve_text answer: row {row}: {answer[:30]!r} at [{start}, {end}) score "
                                f"{score:.4g} is not the best span {span} of the context")
        return answered


class PendingTaskVerification(VerifierProcess):
    """A fresh verifier process started before the save: it imports TensorFlow (and TF Text) and
    computes the reference meanwhile. `finish(saved_model_dir)` returns the report; `cancel()`
    stops it."""

    def __init__(self, config: BertConfig, checkpoint_path: str, spec: TaskSpec, tokenizer: TokenizerSpec | None,
                 seq_length: int | None, tolerance: float = TOLERANCE, alongside_export: bool = True):
        super().__init__("export.verify.task", {
            "config": config.to_json_dict(), "checkpoint_path": checkpoint_path, "spec": spec.to_json_dict(),
            "tokenizer": dataclasses.asdict(tokenizer) if tokenizer else None, "seq_length": seq_length,
            "tolerance": tolerance}, alongside_export)

    def finish(self, saved_model_dir: str) -> TaskVerificationReport:
        data = self.finish_json(saved_model_dir)
        data.pop("summary")
        data.pop("worst")
        return TaskVerificationReport(**data)


def verify_task_in_fresh_process(saved_model_dir: str, config: BertConfig, checkpoint_path: str, spec: TaskSpec,
                                 tokenizer: TokenizerSpec | None, seq_length: int | None,
                                 tolerance: float = TOLERANCE) -> TaskVerificationReport:
    """`verify_task` in a new Python process; raises VerificationError if that fails to run."""
    return PendingTaskVerification(config, checkpoint_path, spec, tokenizer, seq_length, tolerance,
                                   alongside_export=False).finish(saved_model_dir)


def _prepare(request: dict) -> tuple[dict, TaskReference]:
    import tensorflow  # noqa: F401  (imported while the exporter still saves, off the critical path)

    if request["tokenizer"]:
        import tensorflow_text  # noqa: F401
    config = parse_bert_config(request["config"], "config")
    return request, compute_task_reference(config, request["checkpoint_path"], TaskSpec.from_json_dict(request["spec"]))


def _check(prepared: tuple[dict, TaskReference], saved_model_dir: str) -> TaskVerificationReport:
    request, reference = prepared
    tokenizer = TokenizerSpec(**request["tokenizer"]) if request["tokenizer"] else None
    return check_task(saved_model_dir, reference, TaskSpec.from_json_dict(request["spec"]), tokenizer,
                      request["seq_length"], request["tolerance"])


if __name__ == "__main__":
    sys.exit(two_phase_verifier_main(_prepare, _check))
