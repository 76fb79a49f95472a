"""The model cards' code runs: every ```python block of a generated card (legacy and v2 encoders,
an `.mlm` export, a SentencePiece encoder, WordPiece and SentencePiece preprocessors) runs, each in a
fresh process, against the extracted tarball, with the Kaggle handle replaced by its directory; and
the cards and the Kaggle metadata name the version by its complete handle.

The helpers (`python_blocks`, `card_handle`, `run_card_code`) also run the task cards'
(tests/test_task_publish.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from conftest import TINY, make_tf1_model, write_sentencepiece_model
from export.pipeline import ExportOptions, run_export
from export.publish.package import CardMetadata, package_export

KAGGLE_MODELS_URL = "https://www.kaggle.com/models/"
# owner/model/framework/variation/version, as kagglehub.model_download takes it.
COMPLETE_HANDLE = r"[^/\s\"`()]+/[^/\s\"`()]+/tensorFlow2/[^/\s\"`()]+/[0-9]+"

# What the cards leave to the reader, as small literal inputs. numpy only, under a private name, so a
# block that forgets its own `import tensorflow as tf` (or numpy) still fails.
PREAMBLE = """import numpy as _np
# Encoder cards, Keras 3 and `.mlm` blocks: "ids, mask, type_ids: int32 [batch, seq]".
ids = _np.array([[2, 10, 11, 12, 3, 0], [2, 13, 3, 0, 0, 0]], _np.int32)
mask = (ids > 0).astype(_np.int32)
type_ids = _np.zeros_like(ids)
# `.mlm` block: "positions: int32 [batch, num_predictions]".
positions = _np.array([[1, 3], [1, 0]], _np.int32)
# Preprocessor cards, Keras 3 block: "sentences: string [batch]".
sentences = _np.array(["Hello world!", ""])
# Preprocessor cards, pairs block: "first_segments, second_segments: string [batch]".
first_segments = _np.array(["Hello world!", "The city of London has a river."])
second_segments = _np.array(["How are you?", ""])
del _np
"""

# kagglehub is not a dependency of the project: the replaced calls need no download, and the
# stub makes `import kagglehub` work and any call the replacement missed fail.
_KAGGLEHUB_STUB = '''"""A stand-in: the card's model_download call should have been replaced by the artifact path."""


def model_download(handle, *args, **kwargs):
    raise AssertionError(f"kagglehub.model_download({handle!r}) is not the handle under test")
'''


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.DOTALL)


def card_handle(kaggle: dict, tarball: str, version: int = 1) -> str:
    """The handle the card should name: the Kaggle metadata's slugs (the card's placeholders where
    it has none), and the version."""
    stem = os.path.basename(tarball).removesuffix(".tar.gz")
    return "/".join((kaggle["ownerSlug"] or "<owner>", kaggle["modelSlug"] or stem, kaggle["framework"],
                     kaggle["instanceSlug"], str(version)))


def extract_artifact(tarball: str, directory) -> str:
    if not os.path.isdir(directory):
        with tarfile.open(tarball) as tar:
            tar.extractall(directory, filter="data")
    return str(directory)


def localize(code: str, handle: str, local: str) -> str:
    """The code with the handle's kagglehub call and its Kaggle URL replaced by the local directory."""
    code = code.replace(f'kagglehub.model_download("{handle}")', repr(local))
    code = code.replace(KAGGLE_MODELS_URL + handle, local)
    assert "kaggle.com/models" not in code and "model_download(" not in code, f"another handle in:\n{code}"
    return code


def run_python(program: str, workdir) -> str:
    """Runs `program` in a fresh Python process; returns its stdout. tf_keras (TF_USE_LEGACY_KERAS=1)
    where the program uses it, as the cards say; not for Keras 3-only code."""
    stubs = os.path.join(str(workdir), "stubs")
    os.makedirs(stubs, exist_ok=True)
    with open(os.path.join(stubs, "kagglehub.py"), "w", encoding="utf-8") as f:
        f.write(_KAGGLEHUB_STUB)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([stubs] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TF_USE_LEGACY_KERAS", None)
    if "tf.keras" in program or "hub.KerasLayer" in program:
        env["TF_USE_LEGACY_KERAS"] = "1"
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env,
                          cwd=str(workdir))
    assert proc.returncode == 0, f"{program}\n--- exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def run_card_code(card: str, kaggle: dict, tarball: str, workdir, separately: bool = True, preamble: str = "",
                  epilogue: str = "", version: int = 1) -> list[str]:
    """Runs the card's Python blocks against the extracted tarball, with the handle (its URL and its
    kagglehub call) replaced by the directory: each block in a fresh process (`separately`), or all
    of them, in order, as one program. Returns the stdouts."""
    local = extract_artifact(tarball, os.path.join(str(workdir), "artifact"))
    handle = card_handle(kaggle, tarball, version)
    blocks = python_blocks(card)
    assert blocks
    programs = blocks if separately else ["\n".join(blocks)]
    return [run_python(preamble + localize(block, handle, local) + epilogue, workdir) for block in programs]


class Packaged:
    """An export and its bert-package output."""

    def __init__(self, dist: str, name: str, version: int = 1):
        self.dist, self.tarball, self.version = dist, os.path.join(dist, f"{name}.tar.gz"), version
        with open(os.path.join(dist, "README.md"), encoding="utf-8") as f:
            self.card = f.read()
        with open(os.path.join(dist, "model-instance-metadata.json"), encoding="utf-8") as f:
            self.kaggle = json.load(f)

    @property
    def handle(self) -> str:
        return card_handle(self.kaggle, self.tarball, self.version)


def _package(tmp_path_factory, version_dir: str, meta: CardMetadata) -> Packaged:
    dist = str(tmp_path_factory.mktemp("dist"))
    result = package_export(version_dir, dist, meta)
    return Packaged(dist, os.path.basename(result.tarball).removesuffix(".tar.gz"), meta.instance_version)


def _export(tmp_path_factory, **options) -> str:
    """An unverified export (the export's own verification is tested elsewhere; here only the card)."""
    return run_export(ExportOptions(export_path=str(tmp_path_factory.mktemp("export")), verify=False,
                                    **options)).path


@pytest.fixture(scope="module")
def sp_model_file(tmp_path_factory) -> str:
    return write_sentencepiece_model(tmp_path_factory.mktemp("sp") / "spiece.model")


CASES = ("legacy", "v2", "mlm", "sentencepiece_encoder", "wordpiece_preprocessor", "sentencepiece_preprocessor")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, exports, tf1_model, sp_model_file):
    """CASES -> Packaged, made on first use."""
    made = {}
    model = tf1_model

    def get(case: str) -> Packaged:
        if case in made:
            return made[case]
        if case == "legacy":  # no owner or model slug: the card's placeholders
            made[case] = _package(tmp_path_factory, exports("legacy"), CardMetadata(model_name="tiny_legacy"))
        elif case == "v2":
            made[case] = _package(tmp_path_factory, exports("v2"), CardMetadata(
                model_name="tiny_v2", owner_slug="me", model_slug="tiny-bert",
                companion="me/tiny-bert-preprocess/tensorFlow2/preprocess/1"))
        elif case == "mlm":
            mlm = make_tf1_model(tmp_path_factory.mktemp("tf1-mlm"), mlm=True)
            made[case] = _package(tmp_path_factory, _export(
                tmp_path_factory, bert_config_file=mlm.bert_config_file, model_checkpoint_path=mlm.checkpoint,
                vocab_file=mlm.vocab_file, export_type="model_with_mlm"), CardMetadata(
                model_name="tiny_mlm", owner_slug="me", model_slug="tiny-bert-mlm", instance_version=2))
        elif case == "sentencepiece_encoder":
            made[case] = _package(tmp_path_factory, _export(
                tmp_path_factory, bert_config_file=model.bert_config_file, model_checkpoint_path=model.checkpoint,
                vocab_file=None, sp_model_file=sp_model_file, export_format="v2"), CardMetadata(
                model_name="tiny_sp", owner_slug="me", model_slug="tiny-sp"))
        elif case == "wordpiece_preprocessor":
            made[case] = _package(tmp_path_factory, _export(
                tmp_path_factory, bert_config_file=None, model_checkpoint_path=None, vocab_file=model.vocab_file,
                export_type="preprocessing", default_seq_length=16), CardMetadata(
                model_name="tiny_preprocess", owner_slug="me", model_slug="tiny-bert-preprocess",
                companion="https://www.kaggle.com/models/me/tiny-bert/tensorFlow2/L-2_H-64_A-4/1"))
        else:
            made[case] = _package(tmp_path_factory, _export(
                tmp_path_factory, bert_config_file=None, model_checkpoint_path=None, vocab_file=None,
                sp_model_file=sp_model_file, export_type="preprocessing", do_lower_case=True), CardMetadata(
                model_name="tiny_sp_preprocess", owner_slug="me", model_slug="tiny-sp"))
        return made[case]
    return get


@pytest.mark.parametrize("case", CASES)
def test_card_names_the_version_by_its_complete_handle(case, packaged):
    published = packaged(case)
    card, kaggle, handle = published.card, published.kaggle, published.handle
    url = KAGGLE_MODELS_URL + handle
    assert re.fullmatch(COMPLETE_HANDLE, handle), handle
    assert kaggle["framework"] == "tensorFlow2" and handle.split("/")[3] == kaggle["instanceSlug"]
    assert handle.endswith(f"/{published.version}")
    # Every Kaggle URL of the card is the version's (or the companion's), never the model page.
    for found in re.findall(r"https://www\.kaggle\.com/models/[^\"`\s)]*", card):
        assert re.fullmatch(re.escape(KAGGLE_MODELS_URL) + COMPLETE_HANDLE, found), found
    assert f'hub.KerasLayer("{url}"' in card or f'hub.load("{url}")' in card
    assert f'path = kagglehub.model_download("{handle}")' in card and "keras.layers.TFSMLayer(path" in card
    assert 'TFSMLayer("' not in card  # a Kaggle URL is not a local directory
    asset_path = re.search(r"<!-- asset-path: (\S+) -->", card).group(1)
    assert asset_path == ("legacy" if case == "legacy" else url)
    assert kaggle["usage"] in card and url in kaggle["usage"]


def test_handles_follow_the_card_metadata(packaged):
    assert packaged("legacy").handle == f"<owner>/tiny_legacy/tensorFlow2/L-{TINY.num_hidden_layers}_H-" \
                                        f"{TINY.hidden_size}_A-{TINY.num_attention_heads}/1"
    assert packaged("mlm").handle.startswith("me/tiny-bert-mlm/tensorFlow2/L-") and packaged("mlm").version == 2
    assert packaged("wordpiece_preprocessor").handle == "me/tiny-bert-preprocess/tensorFlow2/preprocess/1"
    # A complete companion handle (or its URL) is named by both; an incomplete one stays as given
    # (test_export_types).
    assert ("matching preprocessing model `https://www.kaggle.com/models/me/tiny-bert-preprocess/tensorFlow2/"
            "preprocess/1` (kagglehub handle `me/tiny-bert-preprocess/tensorFlow2/preprocess/1`)") in packaged("v2").card
    assert ("encoder `https://www.kaggle.com/models/me/tiny-bert/tensorFlow2/L-2_H-64_A-4/1` (kagglehub handle "
            "`me/tiny-bert/tensorFlow2/L-2_H-64_A-4/1`)") in packaged("wordpiece_preprocessor").card


@pytest.mark.parametrize("case", CASES)
def test_every_python_block_of_the_card_runs_against_the_artifact(case, packaged, tmp_path):
    published = packaged(case)
    blocks = python_blocks(published.card)
    assert len(blocks) == {"mlm": 4}.get(case, 3), blocks
    run_card_code(published.card, published.kaggle, published.tarball, tmp_path, preamble=PREAMBLE,
                  version=published.version)
