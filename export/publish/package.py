"""The publishable artifact of one exported version.

`package_export` writes, into an output directory:
- `<name>.tar.gz`: the version directory's files at the archive's top level (TF Hub / Kaggle
  Models layout), byte-for-byte reproducible: sorted entries, fixed mtime/uid/gid/modes, and a
  gzip header without file name or time;
- `SHA256SUMS`: the tarball and every file inside it (`sha256sum -c` format);
- `README.md`: the model card, in the form of the TF Hub BERT pages, with every model fact
  (L/H/A, casing, API, verification figure) derived from the export itself;
- `model-instance-metadata.json`: what `kaggle models instances create -p DIR` reads.
Facts that cannot be derived (dataset, language, license, owner) come from `CardMetadata`.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
import tarfile

from export.errors import InputError
from export.report import REPORT_RELATIVE_PATH, sha256_of

FIXED_MTIME = 0
_LAYER_WEIGHTS, _OTHER_WEIGHTS = 16, 7  # per transformer layer; embeddings (5) + pooler (2)


@dataclasses.dataclass
class CardMetadata:
    """What the card and the Kaggle metadata say that the export cannot tell."""
    model_name: str = ""
    dataset: str = "unknown"
    language: str = "en"
    license_name: str = "Apache 2.0"
    owner_slug: str = ""
    model_slug: str = ""
    instance_slug: str = ""
    description: str = ""
    companion: str = ""  # the matching preprocessor's handle (for an encoder), or encoder's (for a preprocessor)

    @classmethod
    def for_published_model(cls, name: str) -> "CardMetadata":
        """The card facts of a published TF Hub BERT (configs/cards.json)."""
        from export.config import CONFIGS_DIR, config_path_for

        config_path_for(name)  # a clear error for an unknown name
        with open(os.path.join(CONFIGS_DIR, "cards.json"), encoding="utf-8") as f:
            return cls(**json.load(f)[name])

    @classmethod
    def from_json_file(cls, path: str) -> "CardMetadata":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"--card_metadata_file: cannot read {path}: {e}") from e
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"{os.path.basename(path)}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


@dataclasses.dataclass
class ExportFacts:
    """What the card states about the model, read from the export."""
    export_type: str  # model, model_with_mlm or preprocessing
    tokenizer_kind: str  # wordpiece or sentencepiece
    vocab_size: int
    do_lower_case: bool
    verification: str | None  # the export-time verification, in words
    # Encoders:
    layers: int = 0
    hidden_size: int = 0
    heads: int = 0
    export_format: str = ""
    parameter_count: int = 0
    # Preprocessors:
    default_seq_length: int = 0

    @property
    def is_encoder(self) -> bool:
        return self.export_type != "preprocessing"


def read_export_facts(version_dir: str) -> ExportFacts:
    """Reads the facts from the export report, cross-checked against the saved variables."""
    import tensorflow as tf

    report_path = os.path.join(version_dir, REPORT_RELATIVE_PATH)
    if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")) or not os.path.isfile(report_path):
        raise InputError(f"--saved_model_dir: {version_dir} is not a bert-export version directory "
                         f"(needs saved_model.pb and {REPORT_RELATIVE_PATH})")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    reader = tf.train.load_checkpoint(os.path.join(version_dir, "variables", "variables"))
    do_lower_case = bool(reader.get_tensor("do_lower_case/.ATTRIBUTES/VARIABLE_VALUE"))
    if do_lower_case != report["do_lower_case"]:
        raise InputError(f"{version_dir}: the export report says do_lower_case={report['do_lower_case']} but the "
                         f"saved variable holds {do_lower_case}")
    tokenizer = report["tokenizer"]
    verification = report.get("verification")
    facts = ExportFacts(report["export_type"], tokenizer["kind"], tokenizer["vocab_size"], do_lower_case,
                        verification["summary"] if verification else None)
    if not facts.is_encoder:
        facts.default_seq_length = report["default_seq_length"]
        return facts
    shapes = reader.get_variable_to_shape_map()
    weights = sorted((n for n in shapes if n.startswith("variables/") and n.split("/")[1].isdigit()),
                     key=lambda n: int(n.split("/")[1]))
    layers = (len(weights) - _OTHER_WEIGHTS) // _LAYER_WEIGHTS
    vocab_size, hidden = shapes[weights[0]]
    config = report["config"]
    stated = (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"])
    if stated != (layers, hidden, vocab_size):
        raise InputError(f"{version_dir}: the export report says (L, H, V) = {stated} but the saved "
                         f"variables hold {(layers, hidden, vocab_size)}")
    facts.layers, facts.hidden_size, facts.heads = layers, hidden, config["num_attention_heads"]
    facts.export_format, facts.parameter_count = report["export_format"], report["parameter_count"]
    return facts


def _archive_members(version_dir: str) -> list[str]:
    members = []
    for root, dirs, files in os.walk(version_dir):
        dirs.sort()
        for name in sorted(files):
            members.append(os.path.relpath(os.path.join(root, name), version_dir))
    return sorted(members)


def write_deterministic_tarball(version_dir: str, path: str) -> list[str]:
    """Writes the version directory's files (top level = its contents); returns their names."""
    members = _archive_members(version_dir)
    directories = sorted({os.path.dirname(m) for m in members if os.path.dirname(m)})
    with open(path + ".partial", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(directories + members):
                    info = tarfile.TarInfo(name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = FIXED_MTIME, 0, 0, "", ""
                    full = os.path.join(version_dir, name)
                    if name in directories:
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    else:
                        info.size, info.mode = os.path.getsize(full), 0o644
                        with open(full, "rb") as f:
                            tar.addfile(info, f)
    os.replace(path + ".partial", path)
    return members


def usage_markdown(facts: ExportFacts, handle: str) -> str:
    if facts.export_format == "legacy":
        call = ('pooled_output, sequence_output = bert_layer([input_word_ids, input_mask, segment_ids])')
        inputs = ('input_word_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_word_ids")\n'
                  'input_mask = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_mask")\n'
                  'segment_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="segment_ids")')
    else:
        call = ('outputs = bert_layer(dict(input_word_ids=input_word_ids, input_mask=input_mask,\n'
                '                          input_type_ids=input_type_ids))\n'
                'pooled_output, sequence_output = outputs["pooled_output"], outputs["sequence_output"]\n'
                '# also: outputs["encoder_outputs"] (one per layer), outputs["default"] (= pooled_output)')
        inputs = ('input_word_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_word_ids")\n'
                  'input_mask = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_mask")\n'
                  'input_type_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_type_ids")')
    return f"""With tf_keras (`pip install tf_keras tensorflow_hub`, and `TF_USE_LEGACY_KERAS=1` before TensorFlow
is imported), the model is a fine-tunable Keras layer called on int32 token ids, an input mask
and segment ids:

```python
import tensorflow as tf
import tensorflow_hub as hub

{inputs}
bert_layer = hub.KerasLayer("{handle}", trainable=True)
{call}
```

`pooled_output` has shape `[batch_size, {facts.hidden_size}]`; `sequence_output` has shape
`[batch_size, seq_length, {facts.hidden_size}]`. Both batch and sequence length are dynamic.

{_tokenizer_markdown(facts)}{_mlm_markdown(facts)}
With Keras 3, load it as a layer whose default endpoint takes the dict of the three inputs:

```python
import keras
bert_layer = keras.layers.TFSMLayer("{handle}")
outputs = bert_layer({{"input_word_ids": ids, "input_mask": mask, "input_type_ids": type_ids}})
```

TF Serving: the `serving_default` signature takes `input_word_ids`, `input_mask` and
`input_type_ids` (int32, `[batch, seq]`) and returns `pooled_output` and `sequence_output`.
"""


def _tokenizer_markdown(facts: ExportFacts) -> str:
    if facts.tokenizer_kind == "sentencepiece":
        return f"""The SentencePiece model is stored as a `tf.saved_model.Asset` and the casing as a `tf.Variable`:

```python
import sentencepiece
sp_model_file = bert_layer.resolved_object.sp_model_file.asset_path.numpy()
do_lower_case = bert_layer.resolved_object.do_lower_case.numpy()  # {facts.do_lower_case}
tokenizer = sentencepiece.SentencePieceProcessor(model_file=sp_model_file.decode())
```
"""
    return f"""The vocabulary is stored as a `tf.saved_model.Asset` and the casing as a `tf.Variable`; tokenize
with `FullTokenizer` from tf-models-official (`official.nlp.tools.tokenization`):

```python
vocab_file = bert_layer.resolved_object.vocab_file.asset_path.numpy()
do_lower_case = bert_layer.resolved_object.do_lower_case.numpy()  # {facts.do_lower_case}
tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
```
"""


def _mlm_markdown(facts: ExportFacts) -> str:
    if facts.export_type != "model_with_mlm":
        return ""
    return f"""
The masked-language-model head (for running or continuing pretraining) is the `.mlm` subobject:

```python
encoder = hub.load(handle)
mlm_outputs = encoder.mlm(dict(input_word_ids=..., input_mask=..., input_type_ids=...,
                               masked_lm_positions=...))  # int32 [batch, num_predictions]
mlm_logits = mlm_outputs["mlm_logits"]  # [batch, num_predictions, {facts.vocab_size}]
```

`hub.KerasLayer(encoder.mlm, trainable=True)` makes it a Keras layer; TF Serving has it as the
`mlm` signature.
"""


def _companion_line(words: str, meta: CardMetadata) -> str:
    return f"\n{words} `{meta.companion}`.\n" if meta.companion else ""


def _casing_words(facts: ExportFacts) -> str:
    return ("uncased: inputs are lowercased and accents stripped before tokenization" if facts.do_lower_case else
            "cased: the distinction between lower and upper case and accent markers are preserved")


def model_card(facts: ExportFacts, meta: CardMetadata, handle: str) -> str:
    if not facts.is_encoder:
        return preprocessing_card(facts, meta, handle)
    casing = _casing_words(facts)
    figure = ("was not verified at export time" if facts.verification is None else
              f"was verified at export time against an independent float64 reference computed from the "
              f"checkpoint: {facts.verification}")
    name = meta.model_name or f"bert_L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}"
    return f"""# Module {name}
Bidirectional Encoder Representations from Transformers (BERT).

<!-- dataset: {meta.dataset} -->
<!-- asset-path: {'legacy' if facts.export_format == 'legacy' else handle} -->
<!-- fine-tunable: true -->
<!-- format: saved_model_2 -->
<!-- language: {meta.language} -->
<!-- task: text-embedding -->
<!-- network-architecture: transformer -->

## TF2 SavedModel

This is a [SavedModel in TensorFlow 2 format](https://www.tensorflow.org/hub/tf2_saved_model).

## Overview

{meta.description or 'BERT (Bidirectional Encoder Representations from Transformers) provides dense vector representations for natural language by using a deep, pre-trained neural network with the Transformer architecture.'}

It uses L={facts.layers} hidden layers (i.e., Transformer blocks), a hidden size of H={facts.hidden_size},
and A={facts.heads} attention heads ({facts.parameter_count:,} parameters). Inputs are {casing}.
The export {figure}.
{_companion_line("Raw text is mapped to its inputs by the matching preprocessing model", meta)}
All parameters in the module are trainable, and fine-tuning all parameters is the recommended
practice.

## Usage

{usage_markdown(facts, handle)}"""


def preprocessing_usage_markdown(facts: ExportFacts, handle: str) -> str:
    return f"""This SavedModel uses TensorFlow Text ops: `import tensorflow_text` before loading it (TF Serving
needs a build with the TensorFlow Text ops).

With tf_keras (`TF_USE_LEGACY_KERAS=1`), single segments map to the encoder inputs in one call:

```python
import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text  # registers the ops

preprocessor = hub.KerasLayer("{handle}")
text_input = tf.keras.layers.Input(shape=(), dtype=tf.string)
encoder_inputs = preprocessor(text_input)  # seq_length={facts.default_seq_length}
```

For pairs of segments, or another `seq_length`, tokenize and pack in two steps:

```python
preprocessor = hub.load("{handle}")
tokenize = hub.KerasLayer(preprocessor.tokenize)
bert_pack_inputs = hub.KerasLayer(preprocessor.bert_pack_inputs, arguments=dict(seq_length=64))
encoder_inputs = bert_pack_inputs([tokenize(first_segments), tokenize(second_segments)])
```

With Keras 3: `keras.layers.TFSMLayer("{handle}", call_endpoint="serving_default")` maps a batch of
strings (`sentences`) to the three int32 inputs. TF Serving: the `serving_default` signature.
"""


def preprocessing_card(facts: ExportFacts, meta: CardMetadata, handle: str) -> str:
    vocab = ("SentencePiece model" if facts.tokenizer_kind == "sentencepiece" else "WordPiece vocabulary")
    figure = ("was not verified at export time" if facts.verification is None else
              f"was verified at export time against an independent Python tokenizer: {facts.verification}")
    return f"""# Module {meta.model_name or 'bert_preprocess'}
Text preprocessing for BERT.

<!-- asset-path: {handle} -->
<!-- fine-tunable: false -->
<!-- format: saved_model_2 -->
<!-- language: {meta.language} -->
<!-- task: text-embedding -->

## TF2 SavedModel

This is a [SavedModel in TensorFlow 2 format](https://www.tensorflow.org/hub/tf2_saved_model).

## Overview

This SavedModel is the companion of a BERT encoder: it turns plain text into the encoder's inputs
(`input_word_ids`, `input_mask`, `input_type_ids`). It uses a {vocab} of {facts.vocab_size:,}
entries; text inputs are {_casing_words(facts)}. It has no trainable parameters and can run in an
input pipeline outside the training loop. The export {figure}.
{_companion_line("It is the preprocessing model of the encoder", meta)}
## Usage

{preprocessing_usage_markdown(facts, handle)}"""


def kaggle_metadata(facts: ExportFacts, meta: CardMetadata, handle: str) -> dict:
    if not facts.is_encoder:
        return {
            "ownerSlug": meta.owner_slug, "modelSlug": meta.model_slug,
            "instanceSlug": meta.instance_slug or "preprocess", "framework": "tensorFlow2",
            "overview": meta.description, "usage": preprocessing_usage_markdown(facts, handle),
            "licenseName": meta.license_name, "fineTunable": False, "trainingData": [],
            "modelInstanceType": "Unspecified", "baseModelInstance": "", "externalBaseModelUrl": "",
        }
    return {
        "ownerSlug": meta.owner_slug, "modelSlug": meta.model_slug,
        "instanceSlug": meta.instance_slug or f"L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}",
        "framework": "tensorFlow2", "overview": meta.description, "usage": usage_markdown(facts, handle),
        "licenseName": meta.license_name, "fineTunable": True,
        "trainingData": [meta.dataset] if meta.dataset and meta.dataset != "unknown" else [],
        "modelInstanceType": "Unspecified", "baseModelInstance": "", "externalBaseModelUrl": "",
    }


def _file_stem(model_name: str) -> str:
    """A file name from a model name or TF Hub handle ('tensorflow/small_bert/x/1' -> 'x')."""
    parts = [part for part in model_name.split("/") if part and not part.isdigit()]
    return re.sub(r"[^A-Za-z0-9._-]", "_", parts[-1]) if parts else ""


@dataclasses.dataclass
class PackageResult:
    tarball: str
    files: list[str]


def package_export(version_dir: str, output_dir: str, meta: CardMetadata) -> PackageResult:
    """Writes the tarball, SHA256SUMS, the model card and the Kaggle metadata into `output_dir`."""
    facts = read_export_facts(version_dir)
    name = _file_stem(meta.model_name) or (f"bert_L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}"
                                           if facts.is_encoder else "bert_preprocess")
    os.makedirs(output_dir, exist_ok=True)
    tarball = os.path.join(output_dir, f"{name}.tar.gz")
    members = write_deterministic_tarball(version_dir, tarball)
    sums = [f"{sha256_of(tarball)}  {os.path.basename(tarball)}"]
    sums += [f"{sha256_of(os.path.join(version_dir, m))}  {m}" for m in members]
    handle = f"https://www.kaggle.com/models/{meta.owner_slug or '<owner>'}/{meta.model_slug or name}"
    outputs = {
        "SHA256SUMS": "\n".join(sums) + "\n",
        "README.md": model_card(facts, meta, handle),
        "model-instance-metadata.json": json.dumps(kaggle_metadata(facts, meta, handle), indent=2) + "\n",
    }
    for filename, text in outputs.items():
        with io.open(os.path.join(output_dir, filename), "w", encoding="utf-8") as f:
            f.write(text)
    return PackageResult(tarball, [tarball] + [os.path.join(output_dir, f) for f in outputs])
