"""The export pipeline: validate everything, build, write, verify, publish.

Nothing is created under the export path until every input has been validated and every weight
has been read into the model; the version directory appears (by rename) only once it is complete
and verified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import shutil
import time

from absl import logging

import export
from export import writer
from export.checkpoints.base import CheckpointReader
from export.config import BertConfig, load_bert_config
from export.errors import InputError, VerificationError, WriteError, read_input_text
from export.faults import fault_point
from export.report import ExportReport, hash_file, runtime_versions
from export.vocab import CasingDecision, decide_do_lower_case, read_vocab
from export.weights import check_checkpoint

EXPORT_FORMATS = ("legacy", "v2")


@dataclasses.dataclass
class ExportOptions:
    bert_config_file: str
    model_checkpoint_path: str
    vocab_file: str
    export_path: str
    export_format: str = "legacy"
    do_lower_case: bool | None = None
    version: int | None = None
    overwrite: bool = False
    verify: bool = True
    keep_failed: bool = False
    strict: bool = False


@dataclasses.dataclass
class ExportResult:
    path: str
    report: ExportReport


@dataclasses.dataclass
class _Validated:
    config: BertConfig
    config_path: str
    reader: CheckpointReader
    vocab_path: str
    casing: CasingDecision
    warnings: list[str]


def _beside_checkpoint(checkpoint_path: str, names: tuple[str, ...]) -> str | None:
    """A file the checkpoint's own directory holds (model directories ship config and vocab)."""
    directory = checkpoint_path if os.path.isdir(checkpoint_path) else os.path.dirname(checkpoint_path)
    for name in names:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def _tokenizer_config_casing(checkpoint_path: str) -> tuple[str, bool] | None:
    path = _beside_checkpoint(checkpoint_path, ("tokenizer_config.json",))
    if path is None:
        return None
    try:
        value = json.loads(read_input_text(path, "tokenizer_config.json")).get("do_lower_case")
    except (ValueError, AttributeError) as e:
        raise InputError(f"{path}: not a valid tokenizer_config.json ({e})") from e
    return (os.path.basename(path), value) if isinstance(value, bool) else None


def validate_inputs(opts: ExportOptions) -> _Validated:
    """Every pre-flight check; raises InputError before anything is written."""
    from export.checkpoints import open_checkpoint

    if opts.export_format not in EXPORT_FORMATS:
        raise InputError(f"--export_format must be one of {', '.join(EXPORT_FORMATS)}, got {opts.export_format!r}")
    if opts.version is not None and opts.version <= 0:
        raise InputError(f"--version must be a positive integer, got {opts.version}")
    writer.check_export_path(opts.export_path)
    if not opts.model_checkpoint_path:
        raise InputError("--model_checkpoint_path is required")
    config_path = opts.bert_config_file or _beside_checkpoint(
        opts.model_checkpoint_path, ("bert_config.json", "config.json"))
    if not config_path:
        raise InputError("--bert_config_file is required (the checkpoint's directory holds no "
                         "bert_config.json or config.json)")
    vocab_path = opts.vocab_file or _beside_checkpoint(opts.model_checkpoint_path, ("vocab.txt",))
    if not vocab_path:
        raise InputError("--vocab_file is required (the checkpoint's directory holds no vocab.txt)")
    for flag, given, used in (("--bert_config_file", opts.bert_config_file, config_path),
                              ("--vocab_file", opts.vocab_file, vocab_path)):
        if not given:
            logging.info("%s not given: using %s from the checkpoint's directory", flag, used)
    config = load_bert_config(config_path)
    config_name = os.path.basename(config_path)
    vocab = read_vocab(vocab_path)
    if vocab.size != config.vocab_size:
        raise InputError(f"{os.path.basename(vocab_path)} has {vocab.size} lines but {config_name} says "
                         f"vocab_size={config.vocab_size}")
    reader = open_checkpoint(opts.model_checkpoint_path)
    # What `hidden_act` means is decided by the code that trained the checkpoint, not the config file.
    config = config.with_convention(reader.activation_convention, config_name)
    warnings = check_checkpoint(reader, config, config_name, strict=opts.strict)
    _check_not_inside_sources(opts.export_path, reader.source_files + [vocab_path, config_path])
    casing, casing_warning = decide_do_lower_case(vocab, opts.do_lower_case,
                                                  _tokenizer_config_casing(opts.model_checkpoint_path))
    if casing_warning:
        warnings.append(casing_warning)
    return _Validated(config, config_path, reader, vocab_path, casing, warnings)


def _check_not_inside_sources(export_path: str, sources: list[str]) -> None:
    base = os.path.realpath(export_path)
    for source in sources:
        if os.path.realpath(source).startswith(base + os.sep):
            raise InputError(f"--export_path: {export_path} would hold the source file {source}; "
                             "choose a directory outside the checkpoint's")


def run_export(opts: ExportOptions) -> ExportResult:
    """Exports the checkpoint described by `opts`; returns the published version directory."""
    timings: dict[str, float] = {}
    start = time.monotonic()
    v = validate_inputs(opts)
    fault_point("validated")
    for warning in v.warnings:
        logging.warning("%s", warning)
    logging.info("do_lower_case=%s (%s)", v.casing.do_lower_case, v.casing.how)
    version = writer.choose_version(opts.export_path, opts.version, opts.overwrite)

    from export.model import build_hub_encoder  # TensorFlow is imported only once inputs are valid

    timings["validate_and_import"] = time.monotonic() - start
    t = time.monotonic()
    obj = build_hub_encoder(v.config, v.reader.read, opts.export_format, v.vocab_path, v.casing.do_lower_case)
    fault_point("weights_read")
    signatures = obj.trace()
    fault_point("traced")
    timings["read_and_trace"] = time.monotonic() - t
    variable_count = len(obj.trainable_variables)
    parameter_count = sum(int(w.shape.num_elements()) for w in obj.trainable_variables)

    import tensorflow as tf

    for stale in writer.remove_stale_temp_dirs(opts.export_path):
        logging.info("removed stale temporary directory %s", stale)
    temp_dir = _writing(opts.export_path, lambda: writer.make_temp_dir(opts.export_path))
    try:
        fault_point("temp_created")
        t = time.monotonic()
        with _quiet_absl_info():  # TF's saver logs internals (temporary paths, sharding) at INFO
            _writing(opts.export_path, functools.partial(tf.saved_model.save, obj, temp_dir, signatures=signatures))
        fault_point("saved")
        del obj, signatures
        gc.collect()  # the weights are on disk now; free them before the verifier loads its copy
        timings["save"] = time.monotonic() - t

        verification = None
        if opts.verify:
            from export.verify import verify_in_fresh_process

            t = time.monotonic()
            fault_point("verifier_started")
            result = verify_in_fresh_process(temp_dir, opts.export_format, v.config, v.reader.checkpoint_path)
            timings["verify"] = time.monotonic() - t
            verification = result.to_json_dict()
            logging.info("verification: max relative error %.3g (tolerance %g)", result.worst, result.tolerance)
            fault_point("verified")
            if not result.passed:
                kept = writer.keep_aside(temp_dir, opts.export_path, version) if opts.keep_failed else None
                raise VerificationError(
                    f"verification FAILED: max relative error {result.worst:.3g} exceeds {result.tolerance:g} "
                    f"({_worst_entry(result.figures)})" + (f"; kept at {kept}" if kept else ""))

        tf_version, python_version = runtime_versions()
        sources = [hash_file(v.config_path, "bert_config"), hash_file(v.vocab_path, "vocab")]
        sources += [hash_file(path, "checkpoint") for path in v.reader.source_files]
        timings["total"] = time.monotonic() - start
        report = ExportReport(
            tool=f"bert-export {export.__version__}", tensorflow_version=tf_version,
            python_version=python_version, export_format=opts.export_format,
            checkpoint_format=v.reader.format_name, checkpoint_description=v.reader.description,
            version=version, sources=sources, config=v.config.to_json_dict(), activation=v.config.activation,
            activation_convention=v.config.activation_convention, untrained_weights=dict(v.reader.untrained),
            do_lower_case=v.casing.do_lower_case, do_lower_case_decided_by=v.casing.how,
            variable_count=variable_count, parameter_count=parameter_count, warnings=v.warnings,
            timings_seconds={k: round(x, 3) for k, x in timings.items()}, verification=verification)
        report_path = os.path.join(temp_dir, writer.REPORT_RELATIVE_PATH)
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


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _writing(path: str, write):
    """Runs `write`; a failure of the disk (full, file too large, I/O) becomes one clear WriteError."""
    import tensorflow as tf

    try:
        return write()
    except (OSError, tf.errors.OpError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
        reason = [line for line in str(reason).splitlines() if line.strip()][-1:] or ["unknown error"]
        raise WriteError(f"--export_path: cannot write under {path}: {reason[0].strip()} "
                         "(disk full or quota?); nothing was published") from e


@contextlib.contextmanager
def _quiet_absl_info():
    previous = logging.get_verbosity()
    logging.set_verbosity(min(previous, logging.WARNING))  # absl: lower is quieter
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def _worst_entry(figures: dict[str, dict[str, float]]) -> str:
    entry, output, value = max(((e, o, x) for e, outs in figures.items() for o, x in outs.items()),
                               key=lambda item: item[2])
    return f"worst: {entry} {output} {value:.3g}"
