"""The export pipeline: validate everything, build, write, verify, publish.

Nothing is created under the export path until every input has been validated and every weight
has been read into the model; the version directory appears (by rename) only once it is complete
and verified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import gc
import json
import os
import re
import shutil
import time

from absl import logging

import export
from export.build import writer
from export.checkpoints.base import CheckpointReader
from export.checkpoints.check import check_checkpoint, check_mlm_head, found_heads_note, select_task_head
from export.config import BertConfig, parse_bert_config, read_config_json
from export.errors import InputError, VerificationError, WriteError, read_input_text
from export.build.dtypes import DTYPES, FLOAT32
from export.faults import fault_point
from export.progress import Progress
from export.report import REPORT_RELATIVE_PATH, ExportReport, hash_file, runtime_versions
from export.tasks import DEFAULT_MAX_ANSWER_LENGTH, HEAD_NAMES, QUESTION_ANSWERING, TASKS, TaskHints, TaskSpec, \
    parse_task_hints, read_label_names
from export.weights import MLM_NAMES, expected_shapes
from export.vocab import SENTENCEPIECE, WORDPIECE, CasingDecision, TokenizerFile, TokenizerSpec, Vocab, \
    decide_do_lower_case, read_tokenizer_file

EXPORT_FORMATS = ("legacy", "v2")
# As tf-models' export_tfhub: the encoder, the encoder with its `.mlm` subobject, or the
# preprocessing SavedModel (raw strings -> the encoder's three inputs); and a fine-tuned model's
# task (export/tasks.py), which a checkpoint holding its head exports by default.
ENCODER_TYPES = ("model", "model_with_mlm")
EXPORT_TYPES = ENCODER_TYPES + ("preprocessing",) + TASKS
# Text signatures' and the preprocessor's sequence length when --default_seq_length is not given.
DEFAULT_SEQ_LENGTH = 128
DEFAULT_QA_SEQ_LENGTH = 384  # run_squad.py's --max_seq_length


@dataclasses.dataclass
class ExportOptions:
    bert_config_file: str | None
    model_checkpoint_path: str | None
    vocab_file: str | None
    export_path: str
    export_format: str | None = None  # default: legacy for model, v2 for model_with_mlm
    do_lower_case: bool | None = None
    version: int | None = None
    overwrite: bool = False
    verify: bool = True
    keep_failed: bool = False
    strict: bool = False
    export_type: str | None = None  # None: the checkpoint's task if it holds a head, else model
    sp_model_file: str | None = None
    default_seq_length: int | None = None  # None: DEFAULT_SEQ_LENGTH (DEFAULT_QA_SEQ_LENGTH for QA)
    label_names: str | None = None  # comma-separated, in label-id order
    label_names_file: str | None = None  # one name a line
    problem_type: str | None = None  # sequence classification: single/multi-label or regression
    text_signatures: bool = True  # task exports: serve_text (needs the TF Text ops where served)
    max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH
    dtype: str = FLOAT32  # bfloat16: bf16 weights and matmuls, for serving (export/build/precision.py)

    @property
    def is_encoder(self) -> bool:
        """Whether a checkpoint is exported (every type but preprocessing)."""
        return self.export_type != "preprocessing"


@dataclasses.dataclass
class ExportResult:
    path: str
    report: ExportReport


@dataclasses.dataclass
class _Validated:
    config: BertConfig | None  # None: a preprocessing export given no config
    config_path: str | None
    reader: CheckpointReader | None  # None for preprocessing
    vocab: Vocab
    casing: CasingDecision
    warnings: list[str]
    export_format: str | None  # None for preprocessing and task exports
    export_type: str  # as resolved: a checkpoint without a head is `model`
    task: TaskSpec | None
    notes: list[str]  # what detection decided, for the summary
    seq_length: int | None  # the preprocessor's and the text signatures' length


def _beside_checkpoint(checkpoint_path: str, names: tuple[str, ...]) -> str | None:
    """A file the checkpoint's own directory holds (model directories ship config and vocab)."""
    directory = checkpoint_path if os.path.isdir(checkpoint_path) else os.path.dirname(checkpoint_path)
    for name in names:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def _tokenizer_config_casing(checkpoint_path: str | None) -> tuple[str, bool] | None:
    path = _beside_checkpoint(checkpoint_path, ("tokenizer_config.json",)) if checkpoint_path else None
    if path is None:
        return None
    try:
        value = json.loads(read_input_text(path, "tokenizer_config.json")).get("do_lower_case")
    except (ValueError, AttributeError) as e:
        raise InputError(f"{path}: not a valid tokenizer_config.json ({e})") from e
    return (os.path.basename(path), value) if isinstance(value, bool) else None


_DEFAULT_TOKENIZER_FILES = ("vocab.txt", "spiece.model")


def _tokenizer_file(opts: ExportOptions) -> TokenizerFile:
    """The WordPiece vocab or SentencePiece model: from its flag, else beside the checkpoint."""
    if opts.vocab_file and opts.sp_model_file:
        raise InputError("--vocab_file and --sp_model_file are mutually exclusive; pass one")
    if opts.sp_model_file:
        return TokenizerFile(SENTENCEPIECE, opts.sp_model_file)
    if opts.vocab_file:
        return TokenizerFile(WORDPIECE, opts.vocab_file)
    found = _beside_checkpoint(opts.model_checkpoint_path, _DEFAULT_TOKENIZER_FILES) \
        if opts.model_checkpoint_path else None
    if not found:
        raise InputError("--vocab_file or --sp_model_file is required (the checkpoint's directory holds no "
                         + " or ".join(_DEFAULT_TOKENIZER_FILES) + ")")
    logging.info("--vocab_file not given: using %s from the checkpoint's directory", found)
    return TokenizerFile(SENTENCEPIECE if found.endswith(".model") else WORDPIECE, found)


def _check_type_and_format(opts: ExportOptions) -> None:
    if opts.export_type is not None and opts.export_type not in EXPORT_TYPES:
        raise InputError(f"--export_type must be one of {', '.join(EXPORT_TYPES)}, got {opts.export_type!r}")
    if opts.export_format is not None and opts.export_format not in EXPORT_FORMATS:
        raise InputError(f"--export_format must be one of {', '.join(EXPORT_FORMATS)}, got {opts.export_format!r}")
    if opts.export_type == "preprocessing" and opts.export_format is not None:
        raise InputError("--export_format applies to encoders; --export_type=preprocessing has none")
    if opts.max_answer_length < 1:
        raise InputError(f"--max_answer_length must be at least 1, got {opts.max_answer_length}")
    if opts.dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {opts.dtype!r}")
    if opts.export_type == "preprocessing" and opts.dtype != FLOAT32:
        raise InputError(f"--dtype={opts.dtype} applies to models; --export_type=preprocessing has no weights "
                         "(it tokenizes)")


def _resolve_export_format(export_type: str, export_format: str | None) -> str | None:
    if export_type == "preprocessing":
        return None
    if export_type in TASKS:
        if export_format is not None:
            raise InputError(f"--export_format applies to encoder exports; the {export_type} head found in the "
                             "checkpoint is exported with one API (dict in, dict out); drop --export_format, or "
                             "pass --export_type=model for the bare encoder")
        return None
    if export_type == "model_with_mlm":
        if export_format == "legacy":
            raise InputError("--export_type=model_with_mlm exports TF Hub's v2 encoder API (the .mlm subobject "
                             "takes dict inputs); drop --export_format=legacy or pass --export_format=v2")
        return "v2"
    return export_format or "legacy"


def _detect_task(opts: ExportOptions, reader: CheckpointReader, config: BertConfig, config_name: str,
                 config_data: object) -> tuple[str, TaskSpec | None, list[str]]:
    """The export type (a checkpoint holding one task head exports that task unless told
    otherwise), the head's spec, and notes for the summary."""
    labels = read_label_names(opts.label_names, opts.label_names_file)
    if opts.export_type is None or opts.export_type in TASKS:
        # What the config says about heads (Hugging Face's id2label...) matters only when there is one.
        hints = parse_task_hints(config_data, config_name) if reader.heads else TaskHints()
        spec, notes = select_task_head(reader, config, config_name, hints, opts.export_type, labels,
                                       opts.problem_type, opts.max_answer_length)
        return (spec.task if spec else "model"), spec, notes
    if labels or opts.problem_type:
        flag = "--label_names" if labels else "--problem_type"
        raise InputError(f"{flag} applies to task exports, not --export_type={opts.export_type}")
    note = found_heads_note(reader, opts.export_type)
    return opts.export_type, None, [note] if note else []


def _resolve_seq_length(opts: ExportOptions, export_type: str, config: BertConfig | None,
                        config_name: str | None) -> int | None:
    """The preprocessor's and the text signatures' sequence length (None: an encoder has none)."""
    if export_type in ENCODER_TYPES or (export_type in TASKS and not opts.text_signatures):
        return None
    given = opts.default_seq_length is not None
    length = opts.default_seq_length if given else (
        DEFAULT_QA_SEQ_LENGTH if export_type == QUESTION_ANSWERING else DEFAULT_SEQ_LENGTH)
    if length < 3:
        raise InputError(f"--default_seq_length must be at least 3 ([CLS] a [SEP]), got {length}")
    if config is not None and length > config.max_position_embeddings:
        raise InputError(f"--default_seq_length={length} exceeds {config_name}'s max_position_embeddings="
                         f"{config.max_position_embeddings}" + ("" if given else f" ({export_type}'s default; pass "
                                                                "a shorter --default_seq_length)"))
    return length


def validate_inputs(opts: ExportOptions) -> _Validated:
    """Every pre-flight check; raises InputError before anything is written."""
    from export.checkpoints import open_checkpoint

    _check_type_and_format(opts)
    if opts.export_type is not None:  # an explicit type's format is checked before any file is read
        _resolve_export_format(opts.export_type, opts.export_format)
    if opts.version is not None and opts.version <= 0:
        raise InputError(f"--version must be a positive integer, got {opts.version}")
    if opts.default_seq_length is not None and opts.default_seq_length < 3:
        raise InputError(f"--default_seq_length must be at least 3 ([CLS] a [SEP]), got {opts.default_seq_length}")
    writer.check_export_path(opts.export_path)
    if opts.is_encoder and not opts.model_checkpoint_path:
        raise InputError("--model_checkpoint_path is required")
    config_path = opts.bert_config_file or (_beside_checkpoint(
        opts.model_checkpoint_path, ("bert_config.json", "config.json")) if opts.model_checkpoint_path else None)
    if not config_path and opts.is_encoder:
        raise InputError("--bert_config_file is required (the checkpoint's directory holds no "
                         "bert_config.json or config.json)")
    if config_path and not opts.bert_config_file:
        logging.info("--bert_config_file not given: using %s from the checkpoint's directory", config_path)
    config_name = os.path.basename(config_path) if config_path else None
    config_data = read_config_json(config_path) if config_path else None
    config = parse_bert_config(config_data, config_name) if config_path else None
    vocab = read_tokenizer_file(_tokenizer_file(opts), for_lookup_table=opts.export_type == "preprocessing")
    vocab_name = os.path.basename(vocab.path)
    if config is not None and vocab.size != config.vocab_size:
        unit = "lines" if vocab.kind == WORDPIECE else "pieces"
        raise InputError(f"{vocab_name} has {vocab.size} {unit} but {config_name} says "
                         f"vocab_size={config.vocab_size}")
    reader, warnings, export_type, task, notes = None, [], "preprocessing", None, []
    if not opts.is_encoder:
        seq_length = _resolve_seq_length(opts, export_type, config, config_name)
    else:
        reader = open_checkpoint(opts.model_checkpoint_path)
        # What `hidden_act` means is decided by the code that trained the checkpoint, not the config file.
        config = config.with_convention(reader.activation_convention, config_name)
        export_type, task, notes = _detect_task(opts, reader, config, config_name, config_data)
        warnings = check_checkpoint(reader, config, config_name, strict=opts.strict,
                                    pooler=task is None or task.uses_pooler)
        if export_type == "model_with_mlm":
            check_mlm_head(reader, config, config_name)
        seq_length = _resolve_seq_length(opts, export_type, config, config_name)
    export_format = _resolve_export_format(export_type, opts.export_format)
    sources = (reader.source_files if reader else []) + [vocab.path] + ([config_path] if config_path else [])
    _check_not_inside_sources(opts.export_path, sources)
    casing, casing_warning = decide_do_lower_case(vocab, opts.do_lower_case,
                                                  _tokenizer_config_casing(opts.model_checkpoint_path))
    if casing_warning:
        warnings.append(casing_warning)
    return _Validated(config, config_path, reader, vocab, casing, warnings, export_format, export_type, task, notes,
                      seq_length)


def _check_not_inside_sources(export_path: str, sources: list[str]) -> None:
    base = os.path.realpath(export_path)
    for source in sources:
        if os.path.realpath(source).startswith(base + os.sep):
            raise InputError(f"--export_path: {export_path} would hold the source file {os.path.basename(source)}; "
                             "choose a directory outside the checkpoint's")


def run_export(opts: ExportOptions, progress: Progress | None = None) -> ExportResult:
    """Exports what `opts` describes; returns the published version directory. `progress`
    reports the stages (the CLI's on stderr; silent by default)."""
    progress = progress or Progress.silent()
    timings: dict[str, float] = {}
    start = time.monotonic()
    progress.stage("validating inputs")
    v = validate_inputs(opts)
    fault_point("validated")
    for warning in v.warnings:
        logging.warning("%s", warning)
    for note in v.notes:
        logging.info("%s", note)
    logging.info("do_lower_case=%s (%s)", v.casing.do_lower_case, v.casing.how)
    version = writer.choose_version(opts.export_path, opts.version, opts.overwrite)

    import tensorflow  # noqa: F401  (only once inputs are valid)

    timings["validate_and_import"] = time.monotonic() - start
    # The verifier process starts now, on the other core: it imports TensorFlow and computes its
    # reference from the checkpoint while this process builds and saves.
    pending = _start_verification(opts, v) if opts.verify else None
    try:
        return _build_save_verify_publish(opts, v, version, pending, progress, timings, start)
    finally:
        if pending is not None:
            pending.cancel()


def _build_save_verify_publish(opts: ExportOptions, v: _Validated, version: int, pending, progress: Progress,
                               timings: dict[str, float], start: float) -> ExportResult:
    from export.build import saving

    t = time.monotonic()
    obj, signatures, counts = _build(opts, v, progress)
    signature_names = sorted(signatures)
    timings["read_and_trace"] = time.monotonic() - t

    for stale in writer.remove_stale_temp_dirs(opts.export_path):
        logging.info("removed stale temporary directory %s", stale)
    temp_dir = _writing(opts.export_path, lambda: writer.make_temp_dir(opts.export_path))
    try:
        fault_point("temp_created")
        t = time.monotonic()
        progress.stage("saving the SavedModel")
        with _quiet_absl_info():  # TF's saver logs internals (temporary paths, sharding) at INFO
            _writing(opts.export_path, functools.partial(saving.save, obj, temp_dir, signatures))
        fault_point("saved")
        del obj, signatures
        gc.collect()  # the weights are on disk now; free them before the verifier loads its copy
        timings["save"] = time.monotonic() - t

        verification = None
        if pending is not None:
            t = time.monotonic()
            progress.stage("verifying in a fresh process, against an independent reference")
            fault_point("verifier_started")
            result = pending.finish(temp_dir)
            timings["verify"] = time.monotonic() - t  # after the save: the reference was computed during it
            # The verifier's own phases: its reference ran during the build and save.
            verification = result.to_json_dict() | {"process_seconds": pending.phase_seconds}
            logging.info("verification: %s", result.summary())
            fault_point("verified")
            if not result.passed:
                kept = writer.keep_aside(temp_dir, opts.export_path, version) if opts.keep_failed else None
                raise VerificationError(f"verification FAILED: {result.summary()}" + (f"; kept at {kept}" if kept else ""))

        timings["total"] = time.monotonic() - start
        report = _report(opts, v, version, counts, signature_names, timings, verification)
        report_path = os.path.join(temp_dir, REPORT_RELATIVE_PATH)
        _writing(opts.export_path, lambda: os.makedirs(os.path.dirname(report_path), exist_ok=True))

        def write_report(final_version: int) -> None:  # the number is final only at publication
            report.version = final_version
            _writing(opts.export_path, lambda: _write_text(report_path, report.to_json()))
            fault_point("report_written")

        final = writer.publish(temp_dir, opts.export_path, version, opts.version is not None, opts.overwrite,
                               before_rename=write_report)
        fault_point("published")
        return ExportResult(final, report)
    finally:
        if os.path.isdir(temp_dir):
            shutil.rmtree(temp_dir, ignore_errors=True)


def _build(opts: ExportOptions, v: _Validated, progress: Progress):
    """The object to save, its signatures, and (variables, parameters) counts of the encoder."""
    if not opts.is_encoder:
        from export.build.preprocessing import build_preprocessor

        progress.stage("building the preprocessor")
        obj, signatures = build_preprocessor(_tokenizer_spec(v), v.seq_length)
        fault_point("weights_read")
        fault_point("traced")
        return obj, signatures, None
    from export.build import saving  # TensorFlow: only once the inputs were checked
    from export.build.precision import Precision

    read = progress.counting(v.reader.read, _weights_read(v))
    if v.task is not None:
        from export.build.task_model import build_task_model

        obj = build_task_model(v.config, read, v.task, _tokenizer_spec(v), v.seq_length,
                               text_signatures=opts.text_signatures, precision=Precision(opts.dtype))
    else:
        from export.build.encoder import build_hub_encoder

        obj = build_hub_encoder(v.config, read, v.export_format, v.vocab.file, v.casing.do_lower_case,
                                with_mlm=v.export_type == "model_with_mlm", precision=Precision(opts.dtype))
    fault_point("weights_read")
    progress.stage("tracing the signatures")
    with saving.tracing_for_save():  # so that saving finds these traces instead of tracing again
        signatures = obj.trace()
    fault_point("traced")
    # The model's weights (in bfloat16 none is trainable), without the do_lower_case flag.
    weights = [w for w in (obj.mlm if v.export_type == "model_with_mlm" else obj).variables if w.dtype.name != "bool"]
    return obj, signatures, (len(weights), sum(int(w.shape.num_elements()) for w in weights))


def _weights_read(v: _Validated) -> int:
    """How many weights the builder reads (for the progress count)."""
    if v.task is not None:
        return len(expected_shapes(v.config, v.task.uses_pooler)) + len(HEAD_NAMES)
    return len(expected_shapes(v.config)) + (len(MLM_NAMES) if v.export_type == "model_with_mlm" else 0)


def _tokenizer_spec(v: _Validated) -> TokenizerSpec:
    return TokenizerSpec(v.vocab.kind, v.vocab.path, v.casing.do_lower_case)


class _AfterSave:
    """A verification that needs nothing before the save (the preprocessor's: no reference)."""

    phase_seconds: dict[str, float] = {}  # no phases: all of it runs after the save

    def __init__(self, verify):
        self._verify = verify

    def finish(self, saved_model_dir: str):
        return self._verify(saved_model_dir)

    def cancel(self) -> None:
        pass


def _start_verification(opts: ExportOptions, v: _Validated):
    """The fresh-process verifier of this export, started: numerical for encoders and task models
    (its reference computed while the export is built and saved), token by token for the
    preprocessor. `finish(saved_model_dir)` returns a report with `passed`, `summary()` and
    `to_json_dict()`; `cancel()` stops it."""
    if not opts.is_encoder:
        from export.verify.preprocessing import verify_preprocessor_in_fresh_process

        return _AfterSave(lambda path: verify_preprocessor_in_fresh_process(path, _tokenizer_spec(v)))
    from export.verify.numeric import PendingVerification, tolerance_for

    tolerance = tolerance_for(opts.dtype, v.config)  # derived from the precision's rounding
    if v.task is not None:
        from export.verify.task import PendingTaskVerification

        return PendingTaskVerification(v.config, v.reader.checkpoint_path, v.task,
                                       _tokenizer_spec(v) if opts.text_signatures else None, v.seq_length, tolerance)
    return PendingVerification(v.export_format, v.config, v.reader.checkpoint_path, tolerance,
                               with_mlm=v.export_type == "model_with_mlm")


def _report(opts: ExportOptions, v: _Validated, version: int, counts: tuple[int, int] | None,
            signature_names: list[str], timings: dict[str, float], verification: dict | None) -> ExportReport:
    tf_version, python_version = runtime_versions()
    sources = [hash_file(v.config_path, "bert_config")] if v.config_path else []
    sources.append(hash_file(v.vocab.path, "vocab" if v.vocab.kind == WORDPIECE else "sp_model"))
    report = ExportReport(
        tool=f"bert-export {export.__version__}", tensorflow_version=tf_version, python_version=python_version,
        export_type=v.export_type, version=version, sources=sources,
        tokenizer={"kind": v.vocab.kind, "file": os.path.basename(v.vocab.path), "vocab_size": v.vocab.size},
        do_lower_case=v.casing.do_lower_case, do_lower_case_decided_by=v.casing.how, warnings=v.warnings,
        timings_seconds={k: round(x, 3) for k, x in timings.items()}, verification=verification, notes=v.notes)
    if v.config is not None:
        report.config = v.config.to_json_dict()
    report.default_seq_length, report.signatures = v.seq_length, signature_names
    if not opts.is_encoder:
        return report
    report.task = v.task.to_json_dict() if v.task else None
    report.dtype = opts.dtype
    report.sources += [hash_file(path, "checkpoint") for path in v.reader.source_files]
    report.export_format = v.export_format
    report.checkpoint_format, report.checkpoint_description = v.reader.format_name, v.reader.description
    report.activation, report.activation_convention = v.config.activation, v.config.activation_convention
    report.untrained_weights = dict(v.reader.untrained)
    report.variable_count, report.parameter_count = counts
    return report


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _writing(path: str, write):
    """Runs `write`; a failure of the disk (full, file too large, I/O) becomes one clear WriteError."""
    import tensorflow as tf

    try:
        return write()
    except (OSError, tf.errors.OpError) as e:
        raise WriteError(f"--export_path: cannot write under {path}: {_write_failure_reason(e)}; nothing was "
                         "published") from e


# What the OS says when a write fails for want of room or rights (TF's errors bury it in node names
# and temporary paths).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


def _write_failure_reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error)
    for code in _WRITE_ERRNOS:
        if os.strerror(code).lower() in text.lower():
            return os.strerror(code)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^]]*\]", "", lines[-1] if lines else "unknown error")
    return (last[:120] + " ...") if len(last) > 120 else last


@contextlib.contextmanager
def _quiet_absl_info():
    previous = logging.get_verbosity()
    logging.set_verbosity(min(previous, logging.WARNING))  # absl: lower is quieter
    try:
        yield
    finally:
        logging.set_verbosity(previous)
