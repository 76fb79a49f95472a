"""Packaging, checked fast and offline: setup.cfg ships every sub-package and configs/, the
declared dependencies cover what the code imports and agree with requirements.lock, and the
configs resolve through importlib.resources in an installed layout. Building, installing and
running the wheel is CI's job (.ci/wheel_flow.sh)."""

from __future__ import annotations

import ast
import configparser
import json
import os
import shutil
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from export import config as export_config
from export.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "export")
CONFIGS = os.path.join(ROOT, "configs")
# Import name -> distribution, for the third-party modules export/ imports.
DISTRIBUTIONS = {"absl": "absl-py", "numpy": "numpy", "scipy": "scipy", "tensorflow": "tensorflow",
                 "tensorflow_text": "tensorflow-text", "sentencepiece": "sentencepiece",
                 "safetensors": "safetensors", "tensorflow_hub": "tensorflow-hub", "keras": "keras",
                 "tf_keras": "tf-keras"}
# bert-verify's loaders run in a child process from program text, which ast cannot see:
# hub.KerasLayer (tensorflow-hub on tf_keras) and Keras 3's TFSMLayer.
LOADERS = {"tensorflow-hub", "tf-keras", "keras"}


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return parser


def cfg_list(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def install_requires() -> dict[str, Requirement]:
    requirements = [Requirement(line) for line in cfg_list(setup_cfg()["options"]["install_requires"])]
    return {canonical(r.name): r for r in requirements}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def locked() -> dict[str, str]:
    with open(os.path.join(ROOT, "requirements.lock"), encoding="utf-8") as f:
        pins = [line.split("==") for line in f.read().splitlines() if "==" in line and not line.startswith("#")]
    return {canonical(name): version for name, version in pins}


def third_party_imports() -> set[str]:
    """Top-level modules outside the standard library that any module of export/ imports."""
    found = set()
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found |= {alias.name.split(".")[0] for alias in node.names}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"export"}


def test_setup_cfg_lists_every_sub_package_and_maps_configs():
    options = setup_cfg()["options"]
    on_disk = {os.path.relpath(root, ROOT).replace(os.sep, ".") for root, _, files in os.walk(PACKAGE_DIR)
               if "__init__.py" in files}
    assert set(cfg_list(options["packages"])) == on_disk | {"export.configs"}
    assert [line.replace(" ", "") for line in cfg_list(options["package_dir"])] == ["export.configs=configs"]
    assert cfg_list(setup_cfg()["options.package_data"]["export.configs"]) == ["*.json"]
    # package_data ships *.json only: anything else in configs/ would be left out of the wheel.
    assert all(name.endswith(".json") for name in os.listdir(CONFIGS))


def test_install_requires_covers_the_runtime_imports_and_not_tf_models():
    declared = install_requires()
    imported = third_party_imports()
    assert "official" not in imported  # tf-models-official is a test and benchmark dependency only
    unknown = imported - set(DISTRIBUTIONS)
    assert not unknown, f"map these imports to their distributions: {unknown}"
    needed = {canonical(DISTRIBUTIONS[module]) for module in imported} | LOADERS
    assert needed <= set(declared), needed - set(declared)
    assert "tf-models-official" not in declared


def test_requirements_lock_satisfies_the_declared_ranges():
    pins = locked()
    for name, requirement in install_requires().items():
        assert name in pins, f"requirements.lock pins no {name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    # TF Text's SentencePiece op breaks equal-score ties as sentencepiece <= 0.2.1 does.
    assert not install_requires()["sentencepiece"].specifier.contains("0.2.2")
    # tensorflow-text and tf_keras are built per TensorFlow minor version: their ranges follow it.
    tensorflow = install_requires()["tensorflow"].specifier
    for name in ("tensorflow-text", "tf-keras"):
        for minor in range(10, 30):
            version = f"2.{minor}.1"
            assert install_requires()[name].specifier.contains(version) == tensorflow.contains(version), (name, version)


def test_configs_resolve_in_the_checkout():
    # Editable installs and runs from the checkout read the top-level configs/ itself; an
    # installed package (the tests run against a wheel) its own export/configs/.
    package = os.path.dirname(export_config.__file__)
    expected = CONFIGS if os.path.samefile(package, PACKAGE_DIR) else os.path.join(package, "configs")
    assert os.path.samefile(export_config.CONFIGS_DIR, expected)
    names = export_config.known_config_names()
    assert len(names) == 30 and "cards.json" not in names
    assert os.path.isfile(export_config.config_path_for("bert_en_uncased_L-2_H-128_A-2"))
    with open(export_config.cards_json_path(), encoding="utf-8") as f:
        assert sorted(json.load(f)) == names  # every config has its card, and no card lacks a config


def test_configs_resolve_through_importlib_resources_in_an_installed_layout(tmp_path):
    # The wheel's layout: the package with configs/ inside it, imported from elsewhere.
    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE_DIR, site / "export", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CONFIGS, site / "export" / "configs")
    program = ("from export import config; "
               "print(config.CONFIGS_DIR); print(config.config_path_for('bert_en_cased_L-12_H-768_A-12')); "
               "print(config.cards_json_path()); print(len(config.known_config_names()))")
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    configs_dir, path, cards, count = proc.stdout.split("\n")[:4]
    assert configs_dir == str(site / "export" / "configs")
    assert path == str(site / "export" / "configs" / "bert_en_cased_L-12_H-768_A-12.json")
    assert cards == str(site / "export" / "configs" / "cards.json") and count == "30"


@pytest.mark.parametrize("typed, expected", [
    ("bert_en_uncased_L-2_H-129_A-2", "bert_en_uncased_L-2_H-128_A-2"),
    ("BERT_EN_CASED_L-24_H-1024_A-16", "bert_en_cased_L-24_H-1024_A-16"),
    ("uncased_L-12_H-768_A-12", "bert_en_uncased_L-12_H-768_A-12"),  # the google-research download's name
    ("https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-4_H-256_A-4/1", "bert_en_uncased_L-4_H-256_A-4"),
    ("bert_en_uncased_L-4_H-256_A-4.json", "bert_en_uncased_L-4_H-256_A-4"),
])
def test_an_unknown_name_suggests_real_close_names_in_one_line(typed, expected):
    with pytest.raises(InputError) as e:
        export_config.config_path_for(typed)
    message = str(e.value)
    assert "\n" not in message and len(message) <= 300, message
    assert message.startswith(f"--config: no shipped config named {typed!r} (did you mean {expected}"), message
    suggested = message.split("did you mean ", 1)[1].split("?", 1)[0].split(", ")
    assert 1 <= len(suggested) <= 3 and set(suggested) <= set(export_config.known_config_names())


def test_a_name_like_none_suggests_none_and_a_broken_install_says_so(tmp_path, monkeypatch):
    with pytest.raises(InputError) as e:
        export_config.config_path_for("roberta-base")
    assert "did you mean" not in str(e.value) and "()" not in str(e.value)
    assert str(e.value) == ("--config: no shipped config named 'roberta-base' (no known name is close); "
                            "bert-export --list_configs lists all 30")
    monkeypatch.setattr(export_config, "CONFIGS_DIR", str(tmp_path))
    with pytest.raises(InputError, match=r"^--config: no shipped configs found in .*; reinstall bert-export$"):
        export_config.config_path_for("bert_en_uncased_L-2_H-128_A-2")


def test_describe_configs_gives_one_line_each_with_l_h_a_and_vocab():
    lines = export_config.describe_configs()
    assert len(lines) == 30
    by_name = {line.split()[0]: line.split()[1:] for line in lines}
    assert by_name["bert_multi_cased_L-12_H-768_A-12"] == ["L=12", "H=768", "A=12", "vocab=119547"]
    assert by_name["bert_en_uncased_L-2_H-128_A-2"] == ["L=2", "H=128", "A=2", "vocab=30522"]
    assert sorted(by_name) == export_config.known_config_names()
