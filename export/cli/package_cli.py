"""`bert-package`: absl flags in, `export.publish.package.package_export` called, the written files listed.

Exit codes: 0 written; 2 bad input (one line); 1 internal error.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

from export.errors import InputError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model_dir", None, "A version directory written by bert-export (<export_path>/<N>).")
flags.DEFINE_string("output_dir", None, "Where to write the tarball, SHA256SUMS, README.md and Kaggle metadata.")
flags.DEFINE_string("config", None, "A published TF Hub BERT's name: its card facts come from configs/cards.json.")
flags.DEFINE_string("card_metadata_file", None, "JSON with the card facts the export cannot tell "
                    "(model_name, dataset, language, license_name, owner_slug, model_slug, instance_slug, "
                    "description, companion); the flags below override it.")
_CARD_FLAGS = ("model_name", "dataset", "language", "license_name", "owner_slug", "model_slug", "instance_slug",
               "description", "companion")
for _name in _CARD_FLAGS:
    flags.DEFINE_string(_name, None, f"Card/Kaggle metadata: {_name}.")


def main(argv: list[str] | None = None) -> int:
    from export.publish.package import CardMetadata, package_export

    try:
        extra = FLAGS(sys.argv if argv is None else argv)[1:]
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
        result = package_export(FLAGS.saved_model_dir, FLAGS.output_dir, meta)
    except (InputError, flags.Error) as e:
        print(f"bert-package: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    for path in result.files:
        print(path)
    return 0


def run() -> None:
    sys.exit(main())
