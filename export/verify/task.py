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
handed over.
"""

from __future__ import annotations

import dataclasses
import sys

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


def _run_tensor_entries(loaded, batches) -> dict[str, list[dict[str, np.ndarray]]]:
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
    return run_calls(calls)


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
    failures: list[str] = []
    figures = {entry: _compare(spec, got, reference.expected, masks, entry, tolerance, failures)
               for entry, got in _run_tensor_entries(loaded, batches).items()}
    checks: dict[str, str] = {}
    if spec.label_names:
        saved = [name.decode() for name in loaded.label_names.numpy()]
        if saved != list(spec.label_names):
            failures.append(f"label_names: saved {saved[:8]}, expected {list(spec.label_names)[:8]} (in id order)")
    if tokenizer is not None:
        figures |= _TextChecks(loaded, spec, tokenizer, seq_length, failures, checks).run()
    return TaskVerificationReport(not failures, tolerance, figures, describe_batches(batches), checks, failures)


def verify_task(saved_model_dir: str, config: BertConfig, checkpoint_path: str, spec: TaskSpec,
                tokenizer: TokenizerSpec | None, seq_length: int | None,
                tolerance: float = TOLERANCE) -> TaskVerificationReport:
    """Compares the task export at `saved_model_dir` with the references (see the module's doc).
    `tokenizer` None: the export has no text signatures."""
    return check_task(saved_model_dir, compute_task_reference(config, checkpoint_path, spec), spec, tokenizer,
                      seq_length, tolerance)


class _TextChecks:
    """The text signatures against the Python tokenizer and packer and against serving_default."""

    def __init__(self, loaded, spec: TaskSpec, tokenizer: TokenizerSpec, seq_length: int, failures: list[str],
                 checks: dict[str, str]):
        from export.verify import tokenization_reference as reference

        self.loaded, self.spec, self.seq_length, self.failures, self.checks = loaded, spec, seq_length, failures, checks
        self.reference = reference
        self.tokenize = reference.reference_tokenizer(tokenizer.kind, tokenizer.path, tokenizer.do_lower_case)
        special = reference.special_token_ids(tokenizer.kind, tokenizer.path)
        self.special = special
        self.pack_ids = (special["start_of_sequence_id"], special["end_of_segment_id"], special["padding_id"])
        self.rows_checked = self.answered = 0

    def run(self) -> dict[str, dict[str, float]]:
        from export.verify.preprocessing import BUILTIN_SENTENCES

        self._check_tokenize(list(BUILTIN_SENTENCES))
        figures: dict[str, dict[str, float]] = {}
        for batch, questions in zip(_TEXT_BATCHES, _QUESTIONS):
            rows = list(batch)
            if self.spec.task == SEQUENCE_CLASSIFICATION:
                pairs = rows[::-1]
                found = {"serve_text": self._classification("serve_text", {"text": rows}, [rows]),
                         "serve_text_pair": self._classification(
                             "serve_text_pair", {"text": rows, "text_pair": pairs}, [rows, pairs])}
            elif self.spec.task == TOKEN_CLASSIFICATION:
                found = {"serve_text": self._tagging(rows)}
            else:
                found = {"serve_text": self._question_answering(list(questions), rows[::-1])}
            for entry, outputs in found.items():
                for name, value in outputs.items():
                    figures.setdefault(entry, {})[name] = max(value, figures.get(entry, {}).get(name, 0.0))
        if self.spec.task == TOKEN_CLASSIFICATION:
            self.checks["labels and offsets"] = f"on {self.rows_checked} texts"
        elif self.spec.task == QUESTION_ANSWERING:
            self.checks["answers"] = (f"the best span on {self.answered}/{self.rows_checked} rows (the others hold no "
                                      "context token)")
        return figures

    # -- tokenization -----------------------------------------------------------------------
    def _check_tokenize(self, sentences: list[str]) -> None:
        from export.verify.preprocessing import check_tokenize_object

        counts = check_tokenize_object(self.loaded.tokenize, sentences, self.tokenize, self.special, self.failures)
        self.checks["token ids"] = ", ".join(counts) + " equal the reference tokenizer's"

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

    def _signature(self, name: str, texts: dict[str, list[str]]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        return _numpy(self.loaded.signatures[name](**{k: tf.constant(v) for k, v in texts.items()}))

    def _against_serving(self, name: str, got: dict, arrays) -> dict[str, float]:
        return _compare(self.spec, [got], [self._serving(arrays)], [arrays[1]], name, TEXT_TOLERANCE, self.failures)

    def _labels_of(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(self.spec.label_names, dtype=object)[np.argmax(logits, axis=-1)]

    # -- per task ---------------------------------------------------------------------------
    def _classification(self, name: str, texts: dict[str, list[str]], segments: list[list[str]]) -> dict[str, float]:
        got = self._signature(name, texts)
        _, arrays = self._packed(segments)
        figures = self._against_serving(name, got, arrays)
        if self.spec.has_label_output:
            labels = [label.decode() for label in got["label"]]
            if labels != list(self._labels_of(got["logits"])):
                self.failures.append(f"{name} label: {labels[:4]} are not the label names at the logits' argmax")
        return figures

    def _tagging(self, texts: list[str]) -> dict[str, float]:
        got = self._signature("serve_text", {"text": texts})
        ids, arrays = self._packed([texts])
        figures = self._against_serving("serve_text", got, arrays)
        offsets = self.loaded.tokenize.with_char_offsets(np.array(texts, dtype=object))
        starts, ends = offsets["start"].to_list(), offsets["end"].to_list()
        for r, text in enumerate(texts):
            kept = min(len(ids[0][r]), self.seq_length - 2)
            where = np.zeros(arrays[0].shape[1], bool)
            where[1:1 + kept] = True
            labels = np.array([label.decode() for label in got["labels"][r]], dtype=object)
            want = np.where(where, self._labels_of(got["logits"][r]), "")
            if not np.array_equal(labels, want):
                self.failures.append(f"serve_text labels: row {r} {text[:40]!r}: {list(labels[:6])} are not the label "
                                     f"names at the logits' argmax on its {kept} text tokens")
            packed_offsets = (got["token_start"][r][where].tolist(), got["token_end"][r][where].tolist())
            if packed_offsets != (starts[r][:kept], ends[r][:kept]) or (got["token_start"][r][~where] != -1).any():
                self.failures.append(f"serve_text token_start/token_end: row {r} {text[:40]!r}: not the text tokens' "
                                     "offsets at the packed positions (and -1 elsewhere)")
        self.rows_checked += len(texts)
        return figures

    def _question_answering(self, questions: list[str], contexts: list[str]) -> dict[str, float]:
        from export.verify.head_reference import best_span

        got = self._signature("serve_text", {"question": questions, "context": contexts})
        ids, arrays = self._packed([questions, contexts])
        figures = self._against_serving("serve_text", got, arrays)
        offsets = self.loaded.tokenize.with_char_offsets(np.array(contexts, dtype=object))
        starts, ends = offsets["start"].to_list(), offsets["end"].to_list()
        answered = 0
        for r, context in enumerate(contexts):
            q_kept, c_kept = self.reference.round_robin_lengths([len(ids[0][r]), len(ids[1][r])],
                                                                self.seq_length - 3)
            first = q_kept + 2  # [CLS] question [SEP]
            where = np.zeros(arrays[0].shape[1], bool)
            where[first:first + c_kept] = True
            span = best_span(got["start_logits"][r].astype(np.float64), got["end_logits"][r].astype(np.float64),
                             where, self.spec.max_answer_length)
            answer = got["answer"][r].decode()
            start, end, score = int(got["answer_start"][r]), int(got["answer_end"][r]), float(got["answer_score"][r])
            if span is None:
                ok = (start, end, answer) == (-1, -1, "")
            else:
                i, j, best = span
                want = (starts[r][i - first], ends[r][j - first])
                ok = ((start, end) == want and answer == context[start:end]
                      and abs(score - best) <= 1e-4 * max(1.0, abs(best)))
                answered += 1
            if not ok:
                self.failures.append(f"serve_text answer: row {r}: {answer[:30]!r} at [{start}, {end}) score "
                                     f"{score:.4g} is not the best span {span} of the context")
        self.rows_checked += len(contexts)
        self.answered += answered
        return figures


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
