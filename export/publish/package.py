"""The publishable artifact of one exported version.

`package_export` writes, into an output directory:
- `<name>.tar.gz`: the version directory's files at the archive's top level (TF Hub / Kaggle
  Models layout), byte-for-byte reproducible: sorted entries, fixed mtime/uid/gid/modes, and a
  gzip header without file name or time;
- `SHA256SUMS`: the tarball and every file inside it (`sha256sum -c` format);
- `README.md`: the model card, in the form of the TF Hub BERT pages, with every model fact
  (L/H/A, casing, API, verification figure; for a task export the task, its labels in id order,
  its signatures and their requests) derived from the export itself;
- `model-instance-metadata.json`: what `kaggle models instances create -p DIR` reads.
Facts that cannot be derived (dataset, language, license, owner) come from `CardMetadata`.
The cards name the version by its complete Kaggle handle, <owner>/<model>/tensorFlow2/<instance
slug>/<version>: as a URL for tensorflow_hub, and in a `kagglehub.model_download` call where the
code needs a local directory (Keras 3's `TFSMLayer`).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
import re
import tarfile

from collections import Counter
from typing import Any

from export.errors import InputError
from export.report import REPORT_RELATIVE_PATH, sha256_of
from export.tasks import MULTI_LABEL, QUESTION_ANSWERING, REGRESSION, SEQUENCE_CLASSIFICATION, SINGLE_LABEL, \
    TOKEN_CLASSIFICATION, TaskSpec

FIXED_MTIME = 0
ID_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")  # serving_default's, in this order
_LAYER_WEIGHTS, _OTHER_WEIGHTS = 16, 7  # per transformer layer; embeddings (5) + pooler (2)
# The metadata block's `task:`, from TF Hub's vocabulary (tfhub.dev tags/task.yaml) where it has
# one; it has no token-level task, so tagging takes the name Hugging Face and Kaggle use.
HUB_TASKS = {SEQUENCE_CLASSIFICATION: "text-classification", TOKEN_CLASSIFICATION: "token-classification",
             QUESTION_ANSWERING: "text-question-answering"}
# Checked by bert-verify's `tflite_convertible` (export/verify/tflite.py).
TFLITE_NOTE = ("On device: `serving_default` converts to TFLite with builtin ops only, "
               '`tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"])`; the '
               "converted model matches the SavedModel within 1e-5 (checked by `bert-verify`).")
# The card's example requests (no apostrophes: they sit inside a single-quoted shell argument).
EXAMPLE_TEXT = "This movie was wonderful, I would watch it again!"
EXAMPLE_TAGGING_TEXT = "Ada Lovelace was born in London."
EXAMPLE_QUESTION, EXAMPLE_CONTEXT = "Where was Ada Lovelace born?", "Ada Lovelace was born in London in 1815."
# Kaggle Models: a version's handle is <owner>/<model>/<framework>/<variation>/<version> (the variation
# is the instance slug); kagglehub.model_download takes the handle, tensorflow_hub the URL.
KAGGLE_MODELS_URL = "https://www.kaggle.com/models/"
KAGGLE_FRAMEWORK = "tensorFlow2"


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
    instance_version: int = 1  # the Kaggle version of the instance the cards' handles name

    @classmethod
    def for_published_model(cls, name: str) -> "CardMetadata":
        """The card facts of a published TF Hub BERT (configs/cards.json)."""
        from export.config import cards_json_path, config_path_for

        config_path_for(name)  # a clear error for an unknown name
        with open(cards_json_path(), encoding="utf-8") as f:
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
    export_type: str  # model, model_with_mlm, preprocessing, or a task (export.tasks.TASKS)
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
    dtype: str = "float32"  # bfloat16: bf16 weights and matmuls, not fine-tunable
    # Preprocessors, and the text signatures of task exports (0: exported without them):
    default_seq_length: int = 0
    # Task exports:
    task: TaskSpec | None = None
    fine_tunable: bool = False  # trainable variables (tasks: and `__call__` traced for training=True and False)
    text_signatures: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # name -> inputs
    # The examples' `serving_default` inputs (ID_INPUTS -> ids): EXAMPLE_* as the artifact's own
    # `tokenize` maps them (which bert-verify checks against the reference tokenizer); without
    # text signatures, which carry the tokenizer, [CLS] [SEP] only.
    example_inputs: dict[str, list[int]] | None = None

    @property
    def is_encoder(self) -> bool:
        return self.export_type != "preprocessing"

    @property
    def is_task(self) -> bool:
        return self.task is not None


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
    facts.dtype = report.get("dtype") or "float32"  # reports before --dtype are float32
    if report.get("task") is not None:
        return _read_task_facts(version_dir, report, reader, facts)
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
    graph, _ = _saved_object_graph(version_dir)
    facts.fine_tunable = any(n.WhichOneof("kind") == "variable" and n.variable.trainable for n in graph.nodes)
    return facts


def _saved_object_graph(version_dir: str):
    """The SavedModel's object graph and its signatures' input names (TF's own
    `__saved_model_init_op` left out), read from saved_model.pb without loading it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph = saved_model.meta_graphs[0]
    return graph.object_graph_def, {name: set(signature.inputs) for name, signature in graph.signature_def.items()
                                    if not name.startswith("__")}


def _traced_training_values(graph, function_name: str) -> set[bool]:
    """The `training` values the root's `function_name` was traced with (its second argument)."""
    root = graph.nodes[0]
    node_id = next((c.node_id for c in root.children if c.local_name == function_name), None)
    if node_id is None or graph.nodes[node_id].WhichOneof("kind") != "function":
        return set()
    values = set()
    for name in graph.nodes[node_id].function.concrete_functions:
        args, kwargs = graph.concrete_functions[name].canonicalized_input_signature.tuple_value.values
        positional = args.tuple_value.values
        if len(positional) > 1 and positional[1].WhichOneof("kind") == "bool_value":
            values.add(positional[1].bool_value)
        elif "training" in kwargs.dict_value.fields:
            values.add(kwargs.dict_value.fields["training"].bool_value)
    return values


def _read_task_facts(version_dir: str, report: dict[str, Any], reader, facts: ExportFacts) -> ExportFacts:
    """A task export's facts: its head and config from the report, cross-checked against the
    SavedModel's trainable variables (their shapes, whatever the object graph names them), its
    saved label names and its signatures."""
    from tensorflow.core.framework import types_pb2

    from export.config import parse_bert_config
    from export.tasks import head_shapes
    from export.weights import expected_shapes

    source = f"{version_dir}: {REPORT_RELATIVE_PATH}"
    try:
        spec = TaskSpec.from_json_dict(report["task"])
        config = parse_bert_config(report["config"], source + " config")
        text_length = report["default_seq_length"]
        stated_signatures = sorted(report["signatures"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{source}: malformed task report ({type(e).__name__}: {e})") from e
    if spec.task not in HUB_TASKS:
        raise InputError(f"{source}: unknown task {spec.task!r} (known: {', '.join(HUB_TASKS)})")
    graph, signatures = _saved_object_graph(version_dir)
    if sorted(signatures) != stated_signatures:
        raise InputError(f"{source} says signatures {stated_signatures} but saved_model.pb holds {sorted(signatures)}")
    # The model's weights: its float variables (bfloat16 ones included; not do_lower_case, label_names).
    variables = [n.variable for n in graph.nodes if n.WhichOneof("kind") == "variable"
                 and n.variable.dtype in (types_pb2.DT_FLOAT, types_pb2.DT_BFLOAT16)]
    weights = [tuple(d.size for d in v.shape.dim) for v in variables]
    trainable = [v for v in variables if v.trainable]
    expected = list(expected_shapes(config, spec.uses_pooler).values()) + list(head_shapes(config, spec).values())
    if Counter(weights) != Counter(expected):
        parameters = sum(math.prod(shape) for shape in weights)
        raise InputError(f"{source} says L={config.num_hidden_layers}, H={config.hidden_size}, "
                         f"V={config.vocab_size} and a {spec.num_outputs}-output {spec.task} head "
                         f"({len(expected)} weights) but saved_model.pb holds {len(weights)} weights "
                         f"of {parameters:,} parameters in other shapes")
    if spec.label_names:
        key = "label_names/.ATTRIBUTES/VARIABLE_VALUE"
        if not reader.has_tensor(key):
            raise InputError(f"{source} names {len(spec.label_names)} labels but the SavedModel has no label_names "
                             "variable")
        saved = [name.decode() for name in reader.get_tensor(key)]
        if saved != list(spec.label_names):
            raise InputError(f"{source} says label names {list(spec.label_names)[:8]} but the saved label_names "
                             f"variable holds {saved[:8]} (in id order)")
    facts.task = spec
    facts.layers, facts.hidden_size, facts.heads = (config.num_hidden_layers, config.hidden_size,
                                                    config.num_attention_heads)
    facts.parameter_count = sum(math.prod(shape) for shape in weights)
    facts.default_seq_length = text_length or 0
    facts.fine_tunable = bool(trainable) and _traced_training_values(graph, "__call__") == {True, False}
    order = list(_text_instance(spec.task))  # the card's requests name the inputs in this order
    facts.text_signatures = {name: tuple(sorted(inputs, key=lambda i: (order.index(i) if i in order else 9, i)))
                             for name, inputs in sorted(signatures.items()) if name.startswith("serve_text")}
    if bool(facts.text_signatures) != bool(text_length):
        raise InputError(f"{source} says default_seq_length={text_length} but saved_model.pb holds text "
                         f"signatures {sorted(facts.text_signatures) or 'none'}")
    if facts.text_signatures:
        facts.example_inputs = _example_inputs(version_dir, spec.task, config.max_position_embeddings)
    else:
        from export.vocab import TokenizerFile, read_tokenizer_file

        special = read_tokenizer_file(TokenizerFile(facts.tokenizer_kind, os.path.join(
            version_dir, "assets", report["tokenizer"]["file"]))).special_token_ids()
        facts.example_inputs = dict(zip(ID_INPUTS, ([special["start_of_sequence_id"], special["end_of_segment_id"]],
                                                    [1, 1], [0, 0])))
    return facts


def example_segments(task: str) -> tuple[str, ...]:
    """The texts of the card's requests, one per segment."""
    if task == QUESTION_ANSWERING:
        return EXAMPLE_QUESTION, EXAMPLE_CONTEXT
    return (EXAMPLE_TAGGING_TEXT if task == TOKEN_CLASSIFICATION else EXAMPLE_TEXT),


def _example_inputs(version_dir: str, task: str, max_length: int) -> dict[str, list[int]]:
    """The card's example texts as `serving_default` inputs, tokenized by the SavedModel's own
    `tokenize` and laid out as its text signatures pack them: [CLS] a [SEP] (b [SEP]), type ids
    0 then 1, no padding (the examples fit; `max_length` cuts off any excess)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 - registers the TF Text ops of the text signatures

    loaded = tf.saved_model.load(version_dir)
    special = {key: int(value) for key, value in loaded.tokenize.get_special_tokens_dict().items()}
    ids, types = [special["start_of_sequence_id"]], [0]
    for type_id, text in enumerate(example_segments(task)):
        tokens = loaded.tokenize(tf.constant([text]))
        segment = (tokens.merge_dims(1, -1) if tokens.ragged_rank > 1 else tokens).to_list()[0]
        ids += segment + [special["end_of_segment_id"]]
        types += [type_id] * (len(segment) + 1)
    return dict(zip(ID_INPUTS, (ids[:max_length], [1] * min(len(ids), max_length), types[:max_length])))


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


def kagglehub_handle(handle: str) -> str:
    """The kagglehub handle (owner/model/framework/variation/version) of a card's Kaggle URL."""
    return handle.removeprefix(KAGGLE_MODELS_URL)


def _download_line(handle: str) -> str:
    """The kagglehub lines that give a local directory of the version (Keras 3's TFSMLayer needs one)."""
    return ("import kagglehub\n"
            f'path = kagglehub.model_download("{kagglehub_handle(handle)}")  # the version\'s local directory')


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
is imported), the model is a {'fine-tunable ' if facts.fine_tunable else ''}Keras layer called on int32 token ids, an input mask
and segment ids (`hub.KerasLayer` downloads the version from its Kaggle URL):

```python
import tensorflow as tf
import tensorflow_hub as hub

{inputs}
bert_layer = hub.KerasLayer("{handle}"{', trainable=True' if facts.fine_tunable else ''})
{call}
```

`pooled_output` has shape `[batch_size, {facts.hidden_size}]`; `sequence_output` has shape
`[batch_size, seq_length, {facts.hidden_size}]`. Both batch and sequence length are dynamic.

{_tokenizer_markdown(facts, handle)}{_mlm_markdown(facts, handle)}
With Keras 3 (`pip install keras kagglehub`), `TFSMLayer` takes a local directory: download the
version with kagglehub, then load it as a layer whose default endpoint (`serve`) takes the dict of
the three inputs (`ids`, `mask`, `type_ids` below: int32 `[batch, seq]`):

```python
import keras
{_download_line(handle)}
bert_layer = keras.layers.TFSMLayer(path)
outputs = bert_layer({{"input_word_ids": ids, "input_mask": mask, "input_type_ids": type_ids}})
pooled_output, sequence_output = outputs["pooled_output"], outputs["sequence_output"]
```

TF Serving: the `serving_default` signature takes `input_word_ids`, `input_mask` and
`input_type_ids` (int32, `[batch, seq]`) and returns `pooled_output` and `sequence_output`.

{TFLITE_NOTE}"""


def _tokenizer_markdown(facts: ExportFacts, handle: str) -> str:
    if facts.tokenizer_kind == "sentencepiece":
        return f"""The SentencePiece model is stored as a `tf.saved_model.Asset` and the casing as a `tf.Variable`
(`pip install sentencepiece`):

```python
import sentencepiece
import tensorflow_hub as hub

bert_layer = hub.KerasLayer("{handle}")
sp_model_file = bert_layer.resolved_object.sp_model_file.asset_path.numpy().decode()
do_lower_case = bert_layer.resolved_object.do_lower_case.numpy()  # {facts.do_lower_case}
tokenizer = sentencepiece.SentencePieceProcessor(model_file=sp_model_file)
```
"""
    return f"""The vocabulary is stored as a `tf.saved_model.Asset` and the casing as a `tf.Variable`; tokenize
with `FullTokenizer` from tf-models-official (`official.nlp.tools.tokenization`):

```python
import tensorflow_hub as hub
from official.nlp.tools import tokenization

bert_layer = hub.KerasLayer("{handle}")
vocab_file = bert_layer.resolved_object.vocab_file.asset_path.numpy().decode()
do_lower_case = bert_layer.resolved_object.do_lower_case.numpy()  # {facts.do_lower_case}
tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
```
"""


def _mlm_markdown(facts: ExportFacts, handle: str) -> str:
    if facts.export_type != "model_with_mlm":
        return ""
    return f"""
The masked-language-model head (for running or continuing pretraining) is the `.mlm` subobject; it
takes the three inputs (`ids`, `mask`, `type_ids` below: int32 `[batch, seq]`) and
`masked_lm_positions` (`positions` below: int32 `[batch, num_predictions]`, the indices of the
masked tokens):

```python
import tensorflow_hub as hub

encoder = hub.load("{handle}")
mlm_outputs = encoder.mlm(dict(input_word_ids=ids, input_mask=mask, input_type_ids=type_ids,
                               masked_lm_positions=positions))
mlm_logits = mlm_outputs["mlm_logits"]  # [batch, num_predictions, {facts.vocab_size}]
```

`hub.KerasLayer(encoder.mlm, trainable=True)` makes it a Keras layer; TF Serving has it as the
`mlm` signature.
"""


def _companion_line(words: str, meta: CardMetadata) -> str:
    """The other member of an encoder/preprocessor pair; a complete Kaggle handle (or its URL) is
    named by both its URL (tensorflow_hub) and its handle (kagglehub)."""
    if not meta.companion:
        return ""
    companion = meta.companion.removeprefix(KAGGLE_MODELS_URL)
    if re.fullmatch(r"[^/\s]+/[^/\s]+/[^/\s]+/[^/\s]+/[0-9]+", companion):
        return f"\n{words} `{KAGGLE_MODELS_URL}{companion}` (kagglehub handle `{companion}`).\n"
    return f"\n{words} `{meta.companion}`.\n"


def _casing_words(facts: ExportFacts) -> str:
    return ("uncased: inputs are lowercased and accents stripped before tokenization" if facts.do_lower_case else
            "cased: the distinction between lower and upper case and accent markers are preserved")


def _tuning_words(facts: ExportFacts) -> str:
    """Whether the card's model can be fine-tuned, and for a bfloat16 export what it is for."""
    if facts.dtype == "bfloat16":
        return ("Weights and matmuls are bfloat16 (LayerNorm, softmax and residual sums float32; inputs and "
                "outputs as in float32): half the size, and faster on CPUs with AMX or AVX512-BF16 (the "
                "`amx_bf16` / `avx512_bf16` flags in /proc/cpuinfo), slower on CPUs without them. The variables "
                "are not trainable: fine-tune the float32 export.")
    return ("All parameters in the module are trainable, and fine-tuning all parameters is the recommended\n"
            "practice.")


def model_card(facts: ExportFacts, meta: CardMetadata, handle: str) -> str:
    if facts.is_task:
        return task_card(facts, meta, handle)
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
<!-- fine-tunable: {'true' if facts.fine_tunable else 'false'} -->
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
{_tuning_words(facts)}

## Usage

{usage_markdown(facts, handle)}"""


def preprocessing_usage_markdown(facts: ExportFacts, handle: str) -> str:
    return f"""This SavedModel uses TensorFlow Text ops: `import tensorflow_text` before loading it (TF Serving
needs a build with the TensorFlow Text ops).

With tf_keras (`TF_USE_LEGACY_KERAS=1`), single segments map to the encoder inputs in one call
(`hub.KerasLayer` downloads the version from its Kaggle URL):

```python
import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text  # registers the ops

preprocessor = hub.KerasLayer("{handle}")
text_input = tf.keras.layers.Input(shape=(), dtype=tf.string)
encoder_inputs = preprocessor(text_input)  # seq_length={facts.default_seq_length}
```

For pairs of segments, or another `seq_length`, tokenize and pack in two steps
(`first_segments`, `second_segments` below: string `[batch]`, the pairs' first and second texts):

```python
import tensorflow_hub as hub
import tensorflow_text  # registers the ops

preprocessor = hub.load("{handle}")
tokenize = hub.KerasLayer(preprocessor.tokenize)
bert_pack_inputs = hub.KerasLayer(preprocessor.bert_pack_inputs, arguments=dict(seq_length=64))
encoder_inputs = bert_pack_inputs([tokenize(first_segments), tokenize(second_segments)])
```

With Keras 3 (`pip install keras kagglehub tensorflow_text`), `TFSMLayer` takes a local directory:
download the version with kagglehub; its `serving_default` signature maps a batch of strings
(`sentences` below: string `[batch]`) to the three int32 inputs:

```python
import keras
import tensorflow_text  # registers the ops
{_download_line(handle)}
preprocessor = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
encoder_inputs = preprocessor(sentences)  # seq_length={facts.default_seq_length}
```

TF Serving: the `serving_default` signature.
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


# -- task exports -------------------------------------------------------------------------------
_TASK_TITLES = {SEQUENCE_CLASSIFICATION: "BERT fine-tuned for text classification.",
                TOKEN_CLASSIFICATION: "BERT fine-tuned for token classification (tagging).",
                QUESTION_ANSWERING: "BERT fine-tuned for extractive question answering."}
_TASK_OVERVIEWS = {
    SEQUENCE_CLASSIFICATION: "A BERT encoder with a classification head on its pooled output: one prediction per "
                             "text, or per pair of texts.",
    TOKEN_CLASSIFICATION: "A BERT encoder with a classification head on every token of its sequence output: one "
                          "prediction per token.",
    QUESTION_ANSWERING: "A BERT encoder with a span head on every token of its sequence output: it scores each "
                        "context token as the start and as the end of the answer to a question.",
}


def _py(text: str) -> str:
    """A Python string literal in double quotes, as the card's other code spells them."""
    return json.dumps(text, ensure_ascii=False)


def _rest_json(signature: str, instance: dict[str, Any]) -> str:
    return json.dumps({"signature_name": signature, "instances": [instance]}, ensure_ascii=False)


def _text_instance(task: str) -> dict[str, str]:
    """The text signature's inputs for the card's example (serve_text's input names)."""
    segments = example_segments(task)
    return dict(zip(("question", "context"), segments)) if task == QUESTION_ANSWERING else {"text": segments[0]}


def _output_shapes(spec: TaskSpec) -> dict[str, str]:
    """The tensor outputs' shapes, in words."""
    if spec.task == QUESTION_ANSWERING:
        return {name: "[batch, seq]" for name in spec.tensor_outputs()}
    shape = f"[batch, seq, {spec.num_outputs}]" if spec.task == TOKEN_CLASSIFICATION else f"[batch, {spec.num_outputs}]"
    return {name: shape for name in spec.tensor_outputs()}


def _text_outputs_words(spec: TaskSpec) -> str:
    if spec.task == QUESTION_ANSWERING:
        return (f"`answer` (string `[batch]`, the context's own text), `answer_start` / `answer_end` (int32 `[batch]`, "
                f"code-point offsets: `context[answer_start:answer_end]`; -1 when the packed context is empty) and "
                f"`answer_score` (its start + end logit), for the best span of at most {spec.max_answer_length} "
                "tokens")
    if spec.task == TOKEN_CLASSIFICATION:
        return ("`labels` (string `[batch, seq]`: the most probable label of each token, \"\" at [CLS], [SEP] and "
                "padding) and `token_start` / `token_end` (int32 `[batch, seq]`: each token's code-point offsets in "
                "`text`, -1 where no text token is)")
    if spec.has_label_output:
        return "`label` (string `[batch]`: the most probable label)"
    return ""


def _problem_words(spec: TaskSpec) -> str:
    if spec.task == QUESTION_ANSWERING:
        return ("`start_logits` and `end_logits` score every token as the first and the last token of the answer "
                "span (softmax over the sequence for probabilities).")
    if spec.task == TOKEN_CLASSIFICATION:
        return "Single-label per token: `probabilities` is the softmax of `logits` over the labels."
    return {SINGLE_LABEL: "`probabilities` is the softmax of `logits` over the labels; the labels exclude each other.",
            MULTI_LABEL: "`probabilities` is a sigmoid per label: each label is predicted on its own.",
            REGRESSION: "`logits` holds the raw predicted score" + ("s" if spec.num_outputs > 1 else "")
                        + "; there are no probabilities."}[spec.problem_type]


def _task_markdown(facts: ExportFacts) -> str:
    """What the head predicts: the task, its labels in id order, the head, the signatures."""
    spec = facts.task
    head_names, _, trained_by = spec.head.partition(" (")
    lines = [f"Task: `{spec.task}`" + (f", problem type `{spec.problem_type}`" if spec.problem_type else "")
             + f". {_problem_words(spec)}", ""]
    if spec.label_names:
        lines += [f"Labels ({len(spec.label_names)}, in id order; {spec.labels_from}):", "", "| id | label |",
                  "| --- | --- |"] + [f"| {i} | {name} |" for i, name in enumerate(spec.label_names)] + [""]
    lines += [f"The head was read from the checkpoint's `{head_names}`"
              + (f" ({trained_by.removesuffix(')')})" if trained_by else "") + ".", ""]
    shapes = _output_shapes(spec)
    tensor_outputs = ", ".join(f"`{name}` (float32 `{shape}`)" for name, shape in shapes.items())
    lines += ["| signature | inputs | outputs |", "| --- | --- | --- |",
              f"| `serving_default` | `input_word_ids`, `input_mask`, `input_type_ids` (int32 `[batch, seq]`) "
              f"| {tensor_outputs} |",
              "| `serve_int64` | the same, as int64 | the same |"]
    extra = _text_outputs_words(spec)
    for name, inputs in facts.text_signatures.items():
        lines.append(f"| `{name}` | {', '.join(f'`{i}`' for i in inputs)} (string `[batch]`) | the same"
                     + (f", and {extra}" if extra else "") + " |")
    lines.append("")
    if facts.text_signatures:
        per_token = ("" if spec.task == SEQUENCE_CLASSIFICATION else
                     " Their per-token outputs are as long as the batch's longest packed input (`seq`).")
        lines.append(f"The text signatures tokenize and pack raw text inside the SavedModel, at seq_length="
                     f"{facts.default_seq_length} tokens (longer inputs are truncated, round-robin between segments)."
                     f"{per_token} They use TensorFlow Text ops: `import tensorflow_text` before loading the "
                     "SavedModel, and a serving runtime needs the TF Text ops (TF Serving: a build that links them).")
    else:
        lines.append("This export has no text signatures (exported with `--notext_signatures`): it takes token ids "
                     "only, and needs no TensorFlow Text ops.")
    return "\n".join(lines) + "\n"


def _print_lines(spec: TaskSpec) -> str:
    if spec.task == QUESTION_ANSWERING:
        return ('print(outputs["answer"].numpy())  # the best span, the context\'s own text\n'
                'print(outputs["answer_start"].numpy(), outputs["answer_end"].numpy())  # context[start:end]\n'
                'print(outputs["answer_score"].numpy())  # start_logits + end_logits of the span')
    if spec.task == TOKEN_CLASSIFICATION:
        return ('print(outputs["labels"].numpy())  # [batch, seq]: a label per token, "" at [CLS], [SEP], padding\n'
                'print(outputs["token_start"].numpy(), outputs["token_end"].numpy())  # offsets into text')
    if spec.has_label_output:
        return ('print(outputs["label"].numpy())  # the most probable label per text\n'
                f'print(outputs["probabilities"].numpy())  # [batch, {spec.num_outputs}], labels in id order')
    if spec.has_probabilities:
        return f'print(outputs["probabilities"].numpy())  # [batch, {spec.num_outputs}], labels in id order'
    return f'print(outputs["logits"].numpy())  # [batch, {spec.num_outputs}]: the predicted scores'


def task_usage_markdown(facts: ExportFacts, handle: str, model_name: str) -> str:
    spec = facts.task
    text = bool(facts.text_signatures)
    ops = "import tensorflow_text  # registers the TF Text ops of the text signatures\n" if text else ""
    ids = facts.example_inputs
    texts = " and ".join(_py(t) for t in example_segments(spec.task))
    ids_call = ((f'# {texts}, tokenized with the SavedModel\'s vocabulary:\n' if text else
                 "# [CLS] [SEP]: your tokenizer's ids of a text go between them (see above)\n") +
                f'ids = dict(input_word_ids=tf.constant([{ids["input_word_ids"]}]),\n'
                f'           input_mask=tf.constant([{ids["input_mask"]}]),\n'
                f'           input_type_ids=tf.constant([{ids["input_type_ids"]}]))\n'
                'outputs = model.signatures["serving_default"](**ids)  # int32; serve_int64 takes int64\n'
                f'print({{name: value.shape for name, value in outputs.items()}})')
    instance = _text_instance(spec.task)
    # What a fine-tuning model's loss reads: the logits (start and end for a span head).
    trained = spec.tensor_outputs() if spec.task == QUESTION_ANSWERING else spec.tensor_outputs()[:1]
    trained_outputs = ", ".join(f'outputs["{name}"]' for name in trained)
    if len(trained) > 1:
        trained_outputs = f"[{trained_outputs}]"
    text_call = ",\n                                         ".join(f"{k}=tf.constant([{_py(v)}])"
                                                                    for k, v in instance.items())
    sections = []
    if text:
        pair = ""
        if spec.task == SEQUENCE_CLASSIFICATION:
            shown = "label" if spec.has_label_output else spec.tensor_outputs()[-1]
            pair = ('\n# Pairs of texts (premise and hypothesis, question and passage, ...):\n'
                    f'pair = model.signatures["serve_text_pair"](text=tf.constant([{_py(EXAMPLE_TEXT)}]),\n'
                    '                                           text_pair=tf.constant(["I liked it."]))\n'
                    f'print(pair["{shown}"].numpy())')
        sections.append(f"""Run it on raw text with `tf.saved_model.load` (`pip install tensorflow tensorflow_text
tensorflow_hub`; `hub.resolve` downloads the handle, and returns a local directory as it is):

```python
import tensorflow as tf
import tensorflow_hub as hub
{ops}
model = tf.saved_model.load(hub.resolve("{handle}"))
outputs = model.signatures["serve_text"]({text_call})
{_print_lines(spec)}{pair}
```

or on token ids (the same text):

```python
{ids_call}
```
""")
    else:
        tokenizer = ("the `sentencepiece` library on `model.sp_model_file`" if facts.tokenizer_kind == "sentencepiece"
                     else "tf-models' `FullTokenizer` (`official.nlp.tools.tokenization`) on `model.vocab_file`")
        sections.append(f"""Run it on token ids with `tf.saved_model.load` (`hub.resolve` downloads the handle, and
returns a local directory as it is); tokenize with {tokenizer}
(`.asset_path`) and `model.do_lower_case`, as the model was trained:

```python
import tensorflow as tf
import tensorflow_hub as hub

model = tf.saved_model.load(hub.resolve("{handle}"))
{ids_call}
```
""")
    head_dropout = "" if spec.task == QUESTION_ANSWERING else f", and {spec.dropout:g} before the head"
    keras_use = (f"""For continued fine-tuning with tf_keras (`pip install tf_keras tensorflow_hub`, and
`TF_USE_LEGACY_KERAS=1` before TensorFlow is imported), it is a Keras layer called on the dict of
the three int32 inputs, returning the dict of outputs; `trainable=True` trains the encoder and the
head, and the layer passes `training` to the model, so dropout (the encoder's{head_dropout}) is
active in training only:""" if facts.fine_tunable else """With tf_keras (`pip install tf_keras tensorflow_hub`, and
`TF_USE_LEGACY_KERAS=1` before TensorFlow is imported), it is a Keras layer called on the dict of
the three int32 inputs, returning the dict of outputs; its bfloat16 weights are for inference (fine-tune
the float32 export):""")
    sections.append(f"""{keras_use}

```python
import tensorflow as tf
import tensorflow_hub as hub
{ops}
input_word_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_word_ids")
input_mask = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_mask")
input_type_ids = tf.keras.layers.Input(shape=(None,), dtype=tf.int32, name="input_type_ids")
layer = hub.KerasLayer("{handle}"{', trainable=True' if facts.fine_tunable else ''})
outputs = layer(dict(input_word_ids=input_word_ids, input_mask=input_mask, input_type_ids=input_type_ids))
model = tf.keras.Model([input_word_ids, input_mask, input_type_ids], {trained_outputs})  # {_output_shapes(spec)[trained[0]]}
```

With Keras 3 (`pip install keras kagglehub`), `keras.layers.TFSMLayer` (endpoint `serve`) takes the
same dict of inputs, for inference; it takes a local directory, which kagglehub downloads:

```python
import keras
import numpy as np
{ops}{_download_line(handle)}
layer = keras.layers.TFSMLayer(path)
outputs = layer(dict(input_word_ids=np.array([{ids["input_word_ids"]}], np.int32),
                     input_mask=np.array([{ids["input_mask"]}], np.int32),
                     input_type_ids=np.array([{ids["input_type_ids"]}], np.int32)))  # as serving_default's
```
""")
    rest = [("serve_text", instance)] if text else []
    rest.append(("serving_default", ids))
    requests = "\n".join(f"curl -X POST http://localhost:8501/v1/models/{model_name}:predict \\\n"
                         f"  -d '{_rest_json(name, instance)}'" for name, instance in rest)
    runtime = " with a model server built with the TF Text ops" if text else ""
    inputs = "raw text to `serve_text`, or token ids" if text else "token ids"
    sections.append(f"""TF Serving: extract the tarball into `models/{model_name}/1/` and serve it{runtime}
(`tensorflow_model_server --rest_api_port=8501 --model_name={model_name} --model_base_path=$PWD/models/{model_name}`),
then send {inputs} to `serving_default` (int32; its twin `serve_int64` takes int64 ids):

```sh
{requests}
```

{TFLITE_NOTE}{" With text signatures, `import tensorflow_text` before converting: the converter loads the whole "
              "SavedModel; the text signatures themselves do not convert (TF Text ops)." if text else ""}
""")
    return "\n".join(sections)


def task_card(facts: ExportFacts, meta: CardMetadata, handle: str) -> str:
    spec = facts.task
    figure = ("was not verified at export time" if facts.verification is None else
              "was verified at export time against an independent float64 reference (the encoder and its head) "
              f"computed from the checkpoint: {facts.verification}")
    tuning = ("All parameters, the encoder's and the head's, are trainable: the model can be fine-tuned further."
              if facts.fine_tunable else _tuning_words(facts) if facts.dtype == "bfloat16"
              else "Its parameters are not trainable in this SavedModel.")
    return f"""# Module {meta.model_name or default_model_name(facts)}
{_TASK_TITLES[spec.task]}

<!-- dataset: {meta.dataset} -->
<!-- asset-path: {handle} -->
<!-- fine-tunable: {'true' if facts.fine_tunable else 'false'} -->
<!-- format: saved_model_2 -->
<!-- language: {meta.language} -->
<!-- task: {HUB_TASKS[spec.task]} -->
<!-- network-architecture: transformer -->

## TF2 SavedModel

This is a [SavedModel in TensorFlow 2 format](https://www.tensorflow.org/hub/tf2_saved_model).

## Overview

{meta.description or _TASK_OVERVIEWS[spec.task]}

It uses L={facts.layers} hidden layers (i.e., Transformer blocks), a hidden size of H={facts.hidden_size},
and A={facts.heads} attention heads ({facts.parameter_count:,} parameters, the head's included).
Inputs are {_casing_words(facts)}.
The export {figure}.
{tuning}

## Task

{_task_markdown(facts)}
## Usage

{task_usage_markdown(facts, handle, package_stem(facts, meta))}"""


def default_model_name(facts: ExportFacts) -> str:
    """The model's name when the card metadata gives none."""
    if facts.is_task:
        return f"bert_{facts.task.task}_L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}"
    return f"bert_L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}" if facts.is_encoder else "bert_preprocess"


def instance_slug(facts: ExportFacts, meta: CardMetadata) -> str:
    """The Kaggle instance (variation) slug: the card metadata's, or the export's own default."""
    if meta.instance_slug:
        return meta.instance_slug
    if facts.is_task:
        return f"{HUB_TASKS[facts.task.task]}_L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}"
    return f"L-{facts.layers}_H-{facts.hidden_size}_A-{facts.heads}" if facts.is_encoder else "preprocess"


def instance_version(meta: CardMetadata) -> int:
    """The Kaggle version the handles name: 1 for a new instance, N+1 for its next version."""
    version = meta.instance_version
    if isinstance(version, bool) or not str(version).isdigit() or int(version) < 1:
        raise InputError(f"instance_version must be a positive integer (the Kaggle version number), not {version!r}")
    return int(version)


def kaggle_handle(facts: ExportFacts, meta: CardMetadata) -> str:
    """The version's kagglehub handle, <owner>/<model>/<framework>/<variation>/<version> (placeholders
    `<owner>` and the package name for slugs the card metadata does not give)."""
    return "/".join((meta.owner_slug or "<owner>", meta.model_slug or package_stem(facts, meta), KAGGLE_FRAMEWORK,
                     instance_slug(facts, meta), str(instance_version(meta))))


def kaggle_metadata(facts: ExportFacts, meta: CardMetadata, handle: str) -> dict:
    """model-instance-metadata.json; `handle` is the card's Kaggle URL (its usage text names it)."""
    common = {"ownerSlug": meta.owner_slug, "modelSlug": meta.model_slug, "instanceSlug": instance_slug(facts, meta),
              "framework": KAGGLE_FRAMEWORK}
    trailer = {"modelInstanceType": "Unspecified", "baseModelInstance": "", "externalBaseModelUrl": ""}
    training_data = [meta.dataset] if meta.dataset and meta.dataset != "unknown" else []
    if facts.is_task:
        return common | {
            "overview": meta.description or _TASK_OVERVIEWS[facts.task.task],
            "usage": task_usage_markdown(facts, handle, package_stem(facts, meta)),
            "licenseName": meta.license_name, "fineTunable": facts.fine_tunable, "trainingData": training_data,
        } | trailer
    if not facts.is_encoder:
        return common | {
            "overview": meta.description, "usage": preprocessing_usage_markdown(facts, handle),
            "licenseName": meta.license_name, "fineTunable": False, "trainingData": [],
        } | trailer
    return common | {
        "overview": meta.description, "usage": usage_markdown(facts, handle),
        "licenseName": meta.license_name, "fineTunable": facts.fine_tunable, "trainingData": training_data,
    } | trailer


def package_stem(facts: ExportFacts, meta: CardMetadata) -> str:
    """The tarball's name (and TF Serving's model name in the card)."""
    return _file_stem(meta.model_name) or default_model_name(facts)


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
    name = package_stem(facts, meta)
    handle = KAGGLE_MODELS_URL + kaggle_handle(facts, meta)  # tensorflow_hub resolves it; the cards name it
    os.makedirs(output_dir, exist_ok=True)
    tarball = os.path.join(output_dir, f"{name}.tar.gz")
    members = write_deterministic_tarball(version_dir, tarball)
    sums = [f"{sha256_of(tarball)}  {os.path.basename(tarball)}"]
    sums += [f"{sha256_of(os.path.join(version_dir, m))}  {m}" for m in members]
    outputs = {
        "SHA256SUMS": "\n".join(sums) + "\n",
        "README.md": model_card(facts, meta, handle),
        "model-instance-metadata.json": json.dumps(kaggle_metadata(facts, meta, handle), indent=2) + "\n",
    }
    for filename, text in outputs.items():
        with io.open(os.path.join(output_dir, filename), "w", encoding="utf-8") as f:
            f.write(text)
    return PackageResult(tarball, [tarball] + [os.path.join(output_dir, f) for f in outputs])
