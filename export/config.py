"""The BERT config JSON (google-research `bert_config.json` or Hugging Face `config.json`),
parsed and validated."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json
import math
import os
import re
from typing import Any

from export.errors import InputError, read_input_text

# hidden_act -> the function it denotes, per convention. What a name means depends on the code
# that trained the checkpoint: google-research BERT's "gelu" is the tanh approximation (tf-models
# follows it); Hugging Face's "gelu" is exact erf, its tanh forms are "gelu_new" and
# "gelu_pytorch_tanh". The convention is the checkpoint's (see `with_convention`).
GOOGLE = "google-research"
HUGGING_FACE = "huggingface"
ACTIVATIONS = {
    GOOGLE: {"gelu": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"},
    HUGGING_FACE: {"gelu": "gelu_erf", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "relu": "relu"},
}

# Refuse configs whose tensors could not sensibly be allocated, before any allocation.
MAX_PARAMETERS = 20_000_000_000
MAX_DIMENSION = 1 << 20


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    activation_convention: str = GOOGLE

    @property
    def activation(self) -> str:
        """The activation function the source means: `gelu_tanh`, `gelu_erf` or `relu`."""
        return ACTIVATIONS[self.activation_convention][self.hidden_act]

    def with_convention(self, convention: str, source: str) -> "BertConfig":
        """This config read with the checkpoint's meaning of `hidden_act`."""
        if self.hidden_act not in ACTIVATIONS[convention]:
            raise InputError(f"{source}: hidden_act {self.hidden_act!r} is not a {convention} activation "
                             f"(supported: {', '.join(sorted(ACTIVATIONS[convention]))})")
        return dataclasses.replace(self, activation_convention=convention)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def parameter_count(self) -> int:
        """Parameters of the encoder with pooler (no pretraining heads)."""
        h, i = self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h
        layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
        return embeddings + self.num_hidden_layers * layer + h * h + h

    def to_json_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_INT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "type_vocab_size")
_PROBABILITY_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def parse_bert_config(data: Any, source: str) -> BertConfig:
    """Validates a decoded config JSON; `source` names the file in error messages."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(data).__name__}")
    missing = [f for f in _INT_FIELDS if f not in data]
    if missing:
        raise InputError(f"{source}: missing field(s) {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name in _INT_FIELDS:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{source}: {name} must be an integer, got {value!r}")
        if value <= 0:
            raise InputError(f"{source}: {name} must be positive, got {value}")
        if value > MAX_DIMENSION:
            raise InputError(f"{source}: {name}={value} is larger than the supported {MAX_DIMENSION}")
        values[name] = value
    if values["hidden_size"] % values["num_attention_heads"]:
        raise InputError(
            f"{source}: hidden_size={values['hidden_size']} is not divisible by "
            f"num_attention_heads={values['num_attention_heads']}")
    act = data.get("hidden_act", "gelu")
    known = set().union(*ACTIVATIONS.values())
    if act not in known:
        raise InputError(f"{source}: unknown hidden_act {act!r} (supported: {', '.join(sorted(known))})")
    values["hidden_act"] = act
    convention = data.get("activation_convention", HUGGING_FACE if "model_type" in data else GOOGLE)
    if convention not in ACTIVATIONS:
        raise InputError(f"{source}: unknown activation_convention {convention!r}")
    values["activation_convention"] = convention
    for name in _PROBABILITY_FIELDS + ("initializer_range",):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{source}: {name} must be a number, got {value!r}")
            if name in _PROBABILITY_FIELDS and not 0.0 <= value < 1.0:
                raise InputError(f"{source}: {name} must be in [0, 1), got {value}")
            values[name] = float(value)
    eps = data.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise InputError(f"{source}: layer_norm_eps must be a small positive number, got {eps!r}")
    values["layer_norm_eps"] = float(eps)
    embedding_size = data.get("embedding_size")
    if embedding_size is not None and embedding_size != values["hidden_size"]:
        raise InputError(
            f"{source}: embedding_size={embedding_size} differs from hidden_size={values['hidden_size']}; "
            "factorized (ALBERT-style) embeddings are not supported")
    if data.get("model_type", "bert") != "bert":
        raise InputError(f"{source}: model_type {data['model_type']!r} is not a BERT")
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise InputError(f"{source}: position_embedding_type {data['position_embedding_type']!r} is not "
                         "supported (only absolute)")
    config = BertConfig(**values)
    config.with_convention(config.activation_convention, source)
    if config.parameter_count() > MAX_PARAMETERS:
        raise InputError(f"{source}: the config describes {config.parameter_count():,} parameters, "
                         f"more than the supported {MAX_PARAMETERS:,}")
    return config


# The published TF Hub BERT family, usable as --config=<name>. The checkout keeps them in the
# top-level configs/ (scripts/make_configs.py writes it); setup.cfg's package_dir ships that
# directory in the wheel as export/configs/, which importlib.resources finds wherever the package
# is installed. An editable install or a run from the checkout has no export/configs/, so the
# checkout's own configs/ beside the package is used (setuptools' editable finder cannot map a
# data directory without __init__.py into the package).
CARDS_FILE = "cards.json"


def _configs_dir() -> str:
    package = importlib.resources.files("export")
    packaged = package.joinpath("configs")
    if packaged.is_dir():
        return str(packaged)
    return os.path.join(os.path.dirname(str(package).rstrip(os.sep)), "configs")


CONFIGS_DIR: str = _configs_dir()


def known_config_names() -> list[str]:
    if not os.path.isdir(CONFIGS_DIR):
        return []
    return sorted(name[:-5] for name in os.listdir(CONFIGS_DIR) if name.endswith(".json") and name != CARDS_FILE)


def cards_json_path() -> str:
    """configs/cards.json: the card facts of each published model (bert-package --config)."""
    return os.path.join(CONFIGS_DIR, CARDS_FILE)


def close_config_names(name: str, names: list[str], n: int = 3) -> list[str]:
    """The known names most like `name`, best first; case-insensitive, empty when none is close."""
    by_lower = {known.lower(): known for known in names}
    # A TF Hub handle or a file name still finds its model: compare the last path part, without .json.
    wanted = name.strip().rstrip("/").lower()
    wanted = wanted.rsplit("/", 2)[-2] if re.search(r"/\d+$", wanted) else wanted.rsplit("/", 1)[-1]
    wanted = wanted.removesuffix(".json")
    return [by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=n, cutoff=0.6)]


def config_path_for(name: str) -> str:
    """The shipped bert_config.json of a published model, by name (e.g. bert_en_cased_L-24_H-1024_A-16)."""
    names = known_config_names()
    if not names:  # a broken install, not a bad name: say where they were looked for
        raise InputError(f"--config: no shipped configs found in {CONFIGS_DIR}; reinstall bert-export")
    if name not in names:
        close = close_config_names(name, names)
        hint = f"did you mean {', '.join(close)}?" if close else "no known name is close"
        raise InputError(f"--config: no shipped config named {name!r} ({hint}); "
                         f"bert-export --list_configs lists all {len(names)}")
    return os.path.join(CONFIGS_DIR, name + ".json")


def describe_configs() -> list[str]:
    """One line per shipped config, for --list_configs: its name, then L/H/A and the vocab size."""
    names = known_config_names()
    width = max(map(len, names), default=0)
    lines = []
    for name in names:
        c = load_bert_config(os.path.join(CONFIGS_DIR, name + ".json"))
        lines.append(f"{name:<{width}}  L={c.num_hidden_layers:<2} H={c.hidden_size:<4} "
                     f"A={c.num_attention_heads:<2} vocab={c.vocab_size}")
    return lines


def read_config_json(path: str) -> Any:
    """The decoded JSON of a config file; an unreadable or invalid file is an InputError naming it."""
    name = os.path.basename(path) or path
    text = read_input_text(path, "--bert_config_file")
    if not text.strip():
        raise InputError(f"{name}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e


def load_bert_config(path: str) -> BertConfig:
    """Reads and validates `bert_config.json`; every problem is an InputError naming the file."""
    return parse_bert_config(read_config_json(path), os.path.basename(path) or path)
