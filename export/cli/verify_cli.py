"""`bert-verify`: check a version directory or a downloaded `.tar.gz` (extracted safely into a
temporary directory), print a summary, optionally write a JSON report. Exit 0 only if every check
passes; 1 if a check fails; 2 for bad input, including an unsafe archive."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from export.cli.common import answered_help, fail, missing_package, one_line, parse_flags  # noqa: E402
from export.errors import InputError  # noqa: E402

PROGRAM = "bert-verify"
USAGE = """\
Usage: bert-verify --artifact=VERSION_DIR_OR_TARBALL [--bert_config_file=... --model_checkpoint_path=...]

Checks a bert-export version directory, or a .tar.gz made by bert-package (extracted safely, and
checked against the SHA256SUMS beside it): files, checksums, signatures, API, assets, casing, no
host paths, loading under tf_keras's hub.KerasLayer and Keras 3's TFSMLayer, and with the source
checkpoint, numerical parity against the same independent reference as export time.

Example:
  bert-verify --artifact=dist/my_bert.tar.gz --bert_config_file=model/bert_config.json \\
    --model_checkpoint_path=model/bert_model.ckpt --report_json=dist/verify.json

Exit codes: 0 every check passed, 1 a check failed (named on one line), 2 bad input or an unsafe
archive."""

FLAGS = flags.FLAGS
flags.DEFINE_string("artifact", None, "A bert-export version directory, or a .tar.gz made by bert-package.")
flags.DEFINE_string("sha256sums", None, "SHA256SUMS to check against (default: SHA256SUMS beside the artifact).")
flags.DEFINE_string("bert_config_file", None, "With --model_checkpoint_path: also check numerical parity.")
flags.DEFINE_string("model_checkpoint_path", None, "The source checkpoint, for the parity check.")
flags.DEFINE_string("report_json", None, "Write the checks here as JSON.")
flags.DEFINE_integer("max_extracted_bytes", 8 << 30, "Refuse archives that declare or expand to more bytes.")


def _checksums(artifact: str) -> dict[str, str] | None:
    from export.verify.conformance import read_sha256sums
    from export.report import sha256_of

    path = FLAGS.sha256sums or os.path.join(os.path.dirname(os.path.abspath(artifact)), "SHA256SUMS")
    if not os.path.isfile(path):
        if FLAGS.sha256sums:
            raise InputError(f"--sha256sums: {path} does not exist")
        return None
    sums = read_sha256sums(path)
    name = os.path.basename(artifact)
    if artifact.endswith(".tar.gz") and name in sums and sums[name] != sha256_of(artifact):
        raise InputError(f"{name}: SHA-256 does not match {path}: the download is corrupt or was altered")
    return sums


def main(argv: list[str] | None = None) -> int:
    from export.publish.archive import extract_safely
    from export.verify.conformance import check_version_dir

    argv = sys.argv if argv is None else argv
    if answered_help(argv, USAGE, __name__):
        return 0
    workdir = None
    try:
        extra = parse_flags(argv)
        if extra:
            raise InputError(f"unexpected argument(s): {' '.join(extra)}")
        artifact = FLAGS.artifact
        if not artifact or not os.path.exists(artifact):
            raise InputError(f"--artifact: {artifact!r} does not exist")
        sums = _checksums(artifact)
        if os.path.isdir(artifact):
            directory = artifact
        else:
            workdir = tempfile.mkdtemp(prefix="bert-verify-")
            directory = os.path.join(workdir, "artifact")
            os.mkdir(directory)
            extract_safely(artifact, directory, FLAGS.max_extracted_bytes)
        report = check_version_dir(directory, sums, FLAGS.bert_config_file, FLAGS.model_checkpoint_path)
    except (InputError, flags.Error, ModuleNotFoundError) as e:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        return fail(PROGRAM, missing_package(e) if isinstance(e, ModuleNotFoundError) else str(e), 2)
    try:
        for check in report.checks:
            print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        if FLAGS.report_json:
            with open(FLAGS.report_json, "w", encoding="utf-8") as f:
                json.dump(report.to_json_dict() | {"artifact": FLAGS.artifact}, f, indent=2)
        failed = [c for c in report.checks if not c.passed]
        if failed:
            print(f"{PROGRAM}: FAILED: {one_line(f'{failed[0].name}: {failed[0].detail}', verbose=False)}",
                  file=sys.stderr)
            return 1
        print(f"bert-verify: all {len(report.checks)} checks passed")
        return 0
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run() -> None:
    sys.exit(main())
