"""`bert-package`: absl flags in, `export.publish.package.package_export` called, the written files listed.

Exit codes: 0 written; 2 bad input (one line); 1 internal error.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from export.cli.common import answered_help, fail, missing_package, parse_flags  # noqa: E402
from export.errors import InputError  # noqa: E402

PROGRAM = "bert-package"
USAGE = """\
Usage: bert-package --saved_model_dir=VERSION_DIR --output_dir=DIR [card flags]

Makes the publishable artifact of one bert-export version: a reproducible <name>.tar.gz with the
SavedModel at its top level, SHA256SUMS, the model card README.md (every model fact read from the
export itself) and the model-instance-metadata.json that `kaggle models instances create -p DIR`
reads. What the export cannot tell (name, dataset, language, license, Kaggle slugs) comes from
the flags below, --card_metadata_file, or --config for a published TF Hub BERT.

Example:
  bert-package --saved_model_dir=/models/my_bert/1 --output_dir=dist --model_name=my_bert \\
    --owner_slug=me --model_slug=my-bert

Exit codes: 0 written, 2 bad input (one line), 1 internal error."""

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model_dir", None, "A version directory written by bert-export (<export_path>/<N>).")
flags.DEFINE_string("output_dir", None, "Where to write the tarball, SHA256SUMS, README.md and Kaggle metadata.")
flags.DEFINE_string("config", None, "A published TF Hub BERT's name: its card facts come from configs/cards.json.")
flags.DEFINE_string("card_metadata_file", None, "JSON with the card facts the export cannot tell "
                    "(model_name, dataset, language, license_name, owner_slug, model_slug, instance_slug, "
                    "instance_version, description, companion); the flags below override it.")
_CARD_FLAGS = {
    "model_name": "The model's name on the card (and the tarball's, e.g. my_bert).",
    "dataset": "What the model was trained on (card metadata).",
    "language": "The language code of the text (card metadata; default en).",
    "license_name": "The Kaggle license name (default Apache 2.0).",
    "owner_slug": "Your Kaggle user or organisation (the handle's first part).",
    "model_slug": "The Kaggle model (the handle's second part).",
    "instance_slug": "The Kaggle variation (the handle's fourth part; default from the export, e.g. L-12_H-768_A-12).",
    "description": "The card's overview paragraph.",
    "companion": "The complete handle of the matching preprocessor (for an encoder) or encoder (for a preprocessor), "
                 "e.g. me/my-bert/tensorFlow2/preprocess/1.",
}
for _name, _help in _CARD_FLAGS.items():
    flags.DEFINE_string(_name, None, _help)
flags.DEFINE_integer("instance_version", None, "The Kaggle version number the cards' handles end in "
                     "(<owner>/<model>/tensorFlow2/<instance_slug>/<version>): 1 (the default) for a new instance, "
                     "N+1 when uploading the instance's next version.", lower_bound=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if answered_help(argv, USAGE, __name__):
        return 0
    try:
        from export.publish.package import CardMetadata, package_export

        extra = parse_flags(argv)
        if extra:
            raise InputError(f"unexpected argument(s): {' '.join(extra)}")
        for name in ("saved_model_dir", "output_dir"):
            if not FLAGS[name].value:
                raise InputError(f"--{name} is required")
        if FLAGS.config and FLAGS.card_metadata_file:
            raise InputError("--config and --card_metadata_file are mutually exclusive; pass one")
        if FLAGS.config:
            meta = CardMetadata.for_published_model(FLAGS.config)
        elif FLAGS.card_metadata_file:
            meta = CardMetadata.from_json_file(FLAGS.card_metadata_file)
        else:
            meta = CardMetadata()
        for name in _CARD_FLAGS:
            if FLAGS[name].value is not None:
                setattr(meta, name, FLAGS[name].value)
        if FLAGS.instance_version is not None:
            meta.instance_version = FLAGS.instance_version
        result = package_export(FLAGS.saved_model_dir, FLAGS.output_dir, meta)
    except (InputError, flags.Error) as e:
        return fail(PROGRAM, str(e), 2)
    except ModuleNotFoundError as e:  # an install without a package this artifact needs
        return fail(PROGRAM, missing_package(e), 2)
    for path in result.files:
        print(path)
    return 0


def run() -> None:
    sys.exit(main())
