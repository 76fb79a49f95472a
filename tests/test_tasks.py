"""Fine-tuned task heads: each format's head exports its task without --export_type, verifies, and
computes what an independent model computes; detection errors are one line; planted bugs bite.

The fixtures spell each format's head as its own code does: google-research run_classifier.py
(`output_weights` [labels, H]) and run_squad.py (`cls/squad/...`), transformers' BertFor* heads
([out, in] Linear weights, config.json `architectures` / `id2label`), and tf-models' own
BertClassifier / BertTokenClassifier / BertSpanLabeler written with tf-models itself. The
independent expectation is tf-models' encoder on the same weights plus the head applied by the
test from the arrays as stored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops of the text signatures

from conftest import TINY, make_tf1_model, random_batch, tf_models_encoder_v2, write_google_checkpoint
from export.build import heads as heads_module
from export.build import preprocessing as preprocessing_module
from export.build import task_model as task_model_module
from export.errors import InputError, VerificationError
from export.pipeline import ExportOptions, run_export
from export.verify.numeric import TOLERANCE
from test_cli import assert_one_line_error, run_cli
from test_huggingface import write_hf_model

SEQ, TOKEN, QA = "sequence_classification", "token_classification", "question_answering"
H = TINY.hidden_size
NLI_LABELS = ("neutral", "entailment", "contradiction")  # deliberately not sorted
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def _head(rng, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """A head stored [outputs, H] (google-research and torch layout), weights large enough that
    a mix-up (transpose, wrong input, swapped columns) changes the outputs visibly."""
    return rng.normal(0, 0.5, (outputs, H)).astype(np.float32), rng.normal(0, 0.5, outputs).astype(np.float32)


class TaskCheckpoint:
    """A fine-tuned model directory, and what its head computes from the encoder's outputs."""

    def __init__(self, directory, task, kernel, bias, erf_gelu, labels=(), tf_models_model=None, flags=()):
        self.directory, self.task, self.kernel, self.bias = str(directory), task, kernel, bias
        self.erf_gelu, self.labels, self.tf_models_model, self.flags = erf_gelu, tuple(labels), tf_models_model, flags

    def expected(self, weights, ids, mask, types) -> dict[str, np.ndarray]:
        """The head's outputs, independently: tf-models (its own task model, or its encoder with
        the head applied from the stored arrays)."""
        inputs = dict(input_word_ids=ids, input_mask=mask, input_type_ids=types)
        if self.tf_models_model is not None:
            out = self.tf_models_model(inputs, training=False)
            if self.task == SEQ:
                return {"logits": out.numpy()}
            if self.task == TOKEN:
                return {"logits": out["logits"].numpy()}
            return {"start_logits": out[0].numpy(), "end_logits": out[1].numpy()}
        encoder = tf_models_encoder_v2(TINY, weights, approximate_gelu=not self.erf_gelu)
        out = encoder(inputs, training=False)
        pooled, sequence = out["pooled_output"].numpy().astype(np.float64), out["sequence_output"].numpy()
        if self.task == SEQ:
            return {"logits": pooled @ self.kernel.T.astype(np.float64) + self.bias}
        logits = sequence.astype(np.float64) @ self.kernel.T.astype(np.float64) + self.bias
        if self.task == TOKEN:
            return {"logits": logits}
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


def _tf1_with(directory, extra: dict[str, np.ndarray]):
    model = make_tf1_model(directory)
    reader = tf.train.load_checkpoint(model.checkpoint)
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()} | extra
    for suffix in (".index", ".data-00000-of-00001"):
        os.remove(model.checkpoint + suffix)
    write_google_checkpoint(model.checkpoint, arrays)
    return model


def make_run_classifier(directory, seed=11) -> TaskCheckpoint:
    kernel, bias = _head(np.random.default_rng(seed), 3)
    _tf1_with(directory, {"output_weights": kernel, "output_bias": bias,  # and Adam's slots, as saved
                          "output_weights/adam_m": np.zeros_like(kernel),
                          "output_weights/adam_v": np.ones_like(kernel)})
    return TaskCheckpoint(directory, SEQ, kernel, bias, erf_gelu=False, labels=NLI_LABELS,
                          flags=("--label_names=" + ",".join(NLI_LABELS),))


def make_run_squad(directory, seed=12) -> TaskCheckpoint:
    kernel, bias = _head(np.random.default_rng(seed), 2)
    _tf1_with(directory, {"cls/squad/output_weights": kernel, "cls/squad/output_bias": bias})
    return TaskCheckpoint(directory, QA, kernel, bias, erf_gelu=False, flags=("--default_seq_length=64",))


def make_hf_head(directory, weights, vocab_file, architecture, head, outputs, labels=None, seed=13,
                 **config_extra) -> TaskCheckpoint:
    from safetensors.numpy import load_file, save_file

    kernel, bias = _head(np.random.default_rng(seed), outputs)
    pooler = architecture == "BertForSequenceClassification"  # the other two have no pooler
    write_hf_model(directory, weights, prefix="bert.", pooler=pooler, vocab_from=vocab_file)
    path = os.path.join(str(directory), "model.safetensors")
    save_file(load_file(path) | {f"{head}.weight": kernel, f"{head}.bias": bias}, path)
    with open(os.path.join(str(directory), "config.json")) as f:
        config = json.load(f)
    config["architectures"] = [architecture]
    if labels:
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
    with open(os.path.join(str(directory), "config.json"), "w") as f:
        json.dump(config | config_extra, f)
    task = {"BertForSequenceClassification": SEQ, "BertForTokenClassification": TOKEN,
            "BertForQuestionAnswering": QA}[architecture]
    return TaskCheckpoint(directory, task, kernel, bias, erf_gelu=True, labels=labels or (),
                          flags=("--default_seq_length=64",) if task == QA else ())


def make_tf_models_task(directory, tf1, kind) -> TaskCheckpoint:
    """tf-models' own task model on the encoder weights, saved as its trainer saves it."""
    from official.nlp.modeling import models

    os.makedirs(directory, exist_ok=True)
    for name in ("bert_config.json", "vocab.txt"):
        shutil.copy(os.path.join(tf1.directory, name), directory)
    encoder = tf_models_encoder_v2(TINY, tf1.weights)
    model = {"classifier": lambda: models.BertClassifier(encoder, num_classes=3),
             "tagger": lambda: models.BertTokenClassifier(encoder, num_classes=5),
             "span": lambda: models.BertSpanLabeler(encoder)}[kind]()
    dummy = tf.zeros([1, 4], tf.int32)
    model(dict(input_word_ids=dummy, input_mask=dummy + 1, input_type_ids=dummy))
    head_variables = [v for v in model.trainable_variables if not any(v is w for w in encoder.trainable_variables)]
    rng = np.random.default_rng(14)
    for variable in head_variables:  # away from tf-models' initialisation (zero biases)
        variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
    tf.train.Checkpoint(model=model).write(os.path.join(str(directory), "ckpt"))
    task = {"classifier": SEQ, "tagger": TOKEN, "span": QA}[kind]
    return TaskCheckpoint(directory, task, None, None, erf_gelu=False, tf_models_model=model,
                          flags=("--default_seq_length=64",) if task == QA else ())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tf1_model):
    base = tmp_path_factory.mktemp("tasks")
    return {
        "run_classifier": make_run_classifier(base / "run_classifier"),
        "run_squad": make_run_squad(base / "run_squad"),
        "hf_sequence": make_hf_head(base / "hf_seq", tf1_model.weights, tf1_model.vocab_file,
                                    "BertForSequenceClassification", "classifier", 3, NLI_LABELS),
        "hf_token": make_hf_head(base / "hf_token", tf1_model.weights, tf1_model.vocab_file,
                                 "BertForTokenClassification", "classifier", 5, NER_LABELS),
        "hf_qa": make_hf_head(base / "hf_qa", tf1_model.weights, tf1_model.vocab_file,
                              "BertForQuestionAnswering", "qa_outputs", 2),
        "tf_models_classifier": make_tf_models_task(base / "tfm_cls", tf1_model, "classifier"),
        "tf_models_tagger": make_tf_models_task(base / "tfm_tag", tf1_model, "tagger"),
        "tf_models_span": make_tf_models_task(base / "tfm_span", tf1_model, "span"),
    }


def _checkpoint_flag(ckpt: TaskCheckpoint) -> str:
    if ckpt.tf_models_model is not None:
        return os.path.join(ckpt.directory, "ckpt")
    if os.path.isfile(os.path.join(ckpt.directory, "model.safetensors")):
        return ckpt.directory
    return os.path.join(ckpt.directory, "bert_model.ckpt")


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """Each checkpoint exported through the CLI without --export_type: name -> (version dir, stdout)."""
    made = {}

    def get(name):
        if name not in made:
            ckpt = checkpoints[name]
            out = tmp_path_factory.mktemp(f"export-{name}")
            proc = run_cli(f"--model_checkpoint_path={_checkpoint_flag(ckpt)}", f"--export_path={out}", *ckpt.flags)
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[name] = (proc.stdout.strip().splitlines()[-1], proc.stdout)
        return made[name]
    return get


EXPECTED_SIGNATURES = {
    SEQ: {"serving_default", "serve_int64", "serve_text", "serve_text_pair"},
    TOKEN: {"serving_default", "serve_int64", "serve_text"},
    QA: {"serving_default", "serve_int64", "serve_text"},
}


@pytest.mark.parametrize("name", ["run_classifier", "run_squad", "hf_sequence", "hf_token", "hf_qa",
                                  "tf_models_classifier", "tf_models_tagger", "tf_models_span"])
def test_each_head_exports_its_task_by_default_and_matches_an_independent_model(name, checkpoints, exported,
                                                                                tf1_model):
    ckpt = checkpoints[name]
    path, stdout = exported(name)
    report = json.loads(open(os.path.join(path, "assets.extra", "export_report.json")).read())
    assert report["export_type"] == ckpt.task
    assert "task head: " + ckpt.task in stdout and "--export_type=model exports the bare encoder" in stdout
    verification = report["verification"]
    assert verification["passed"] and verification["worst"] <= TOLERANCE
    assert set(verification["figures"]) >= {"__call__", "serve", "serving_default", "serve_int64", "serve_text"}
    print(f"{name}: worst relative error {verification['worst']:.3g}; {verification['summary']}")

    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == EXPECTED_SIGNATURES[ckpt.task]
    ids, mask, types = random_batch(3, 20, lengths=[20, 11, 4], seed=7)
    served = loaded.signatures["serving_default"](input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
                                                  input_type_ids=tf.constant(types))
    expected = ckpt.expected(tf1_model.weights, ids, mask, types)
    real = mask.astype(bool)
    for output, want in expected.items():
        got = served[output].numpy()
        if ckpt.task != SEQ:
            got, want = got[real], want[real]
        np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()), rtol=0)
    if ckpt.labels:
        assert [n.decode() for n in loaded.label_names.numpy()] == list(ckpt.labels)
    wide = loaded.signatures["serve_int64"](**{n: tf.constant(a, tf.int64) for n, a in
                                               zip(("input_word_ids", "input_mask", "input_type_ids"),
                                                   (ids, mask, types))})
    for output in served:
        np.testing.assert_array_equal(wide[output].numpy(), served[output].numpy())


def test_sequence_classifier_text_signatures(exported):
    loaded = tf.saved_model.load(exported("hf_sequence")[0])
    texts = ["A man is playing a guitar.", "Nobody plays.", ""]
    out = loaded.signatures["serve_text"](text=tf.constant(texts))
    assert set(out) == {"logits", "probabilities", "label"}
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=-1), 1.0, rtol=1e-6)
    labels = [NLI_LABELS[i] for i in out["logits"].numpy().argmax(-1)]
    assert [x.decode() for x in out["label"].numpy()] == labels
    pair = loaded.signatures["serve_text_pair"](text=tf.constant(texts), text_pair=tf.constant(texts[::-1]))
    assert pair["logits"].shape == (3, 3)
    assert not np.allclose(pair["logits"].numpy(), out["logits"].numpy())  # the second segment counts


def test_tagger_text_signature_labels_and_offsets(exported):
    loaded = tf.saved_model.load(exported("hf_token")[0])
    texts = ["Grüße aus Köln, sagte Anna.", "我爱北京"]
    out = loaded.signatures["serve_text"](text=tf.constant(texts))
    assert set(out) == {"logits", "probabilities", "labels", "token_start", "token_end"}
    starts, ends, labels = out["token_start"].numpy(), out["token_end"].numpy(), out["labels"].numpy()
    for row, text in enumerate(texts):
        real = starts[row] >= 0
        assert real[0] == False and real.sum() >= 4  # noqa: E712 - [CLS] has no text
        pieces = [text[s:e] for s, e in zip(starts[row][real], ends[row][real])]
        assert all(pieces) and "".join(pieces).replace(" ", "") in text.replace(" ", "")
        assert set(labels[row][real]) <= {n.encode() for n in NER_LABELS} and set(labels[row][~real]) == {b""}
    assert [texts[1][s:e] for s, e in zip(starts[1][starts[1] >= 0], ends[1][starts[1] >= 0])] == list("我爱北京")


def test_question_answering_text_signature_returns_a_span_of_the_context(exported):
    loaded = tf.saved_model.load(exported("hf_qa")[0])
    contexts = ["Paris is the capital of France, and London is the capital of England.", ""]
    out = loaded.signatures["serve_text"](question=tf.constant(["What is the capital of France?"] * 2),
                                          context=tf.constant(contexts))
    assert set(out) == {"start_logits", "end_logits", "answer", "answer_start", "answer_end", "answer_score"}
    start, end = int(out["answer_start"][0]), int(out["answer_end"][0])
    assert 0 <= start < end <= len(contexts[0])
    assert out["answer"][0].numpy().decode() == contexts[0][start:end]
    assert (int(out["answer_start"][1]), int(out["answer_end"][1]), out["answer"][1].numpy()) == (-1, -1, b"")


def test_offsets_equal_hugging_face_tokenizers_on_the_sentence_set(tmp_path):
    """tokenize.with_char_offsets against `tokenizers`' BertWordPieceTokenizer offsets (uncased
    MiniLM vocab, 230 varied sentences): an implementation that shares nothing with ours."""
    from tokenizers import BertWordPieceTokenizer

    from export import demo
    from export.build.preprocessing import build_tokenize
    from export.vocab import TokenizerSpec

    vocab = os.path.join(demo.model_directory(), "vocab.txt")
    tokenize, _, _ = build_tokenize(TokenizerSpec("wordpiece", vocab, True), with_offsets=True)
    with open(os.path.join(os.path.dirname(__file__), "data", "sentences.txt"), encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f]
    ours = tokenize.with_char_offsets(tf.constant(sentences))
    theirs = BertWordPieceTokenizer(vocab, lowercase=True)
    mismatches = []
    for i, sentence in enumerate(sentences):
        encoding = theirs.encode(sentence, add_special_tokens=False)
        got = (ours["ids"][i].numpy().tolist(),
               list(zip(ours["start"][i].numpy().tolist(), ours["end"][i].numpy().tolist())))
        want = (encoding.ids, [tuple(o) for o in encoding.offsets])
        if got != want:
            mismatches.append((sentence, got, want))
    assert mismatches == [], f"{len(mismatches)} of {len(sentences)} differ; first: {mismatches[0]}"


def test_problem_types_multi_label_and_regression(tmp_path, tf1_model):
    multi = make_hf_head(tmp_path / "multi", tf1_model.weights, tf1_model.vocab_file, "BertForSequenceClassification",
                         "classifier", 4, ("sports", "politics", "tech", "art"),
                         problem_type="multi_label_classification")
    result = run_export(ExportOptions(None, multi.directory, None, str(tmp_path / "multi-out")))
    assert result.report.task["problem_type"] == "multi_label_classification" and result.report.verification["passed"]
    loaded = tf.saved_model.load(result.path)
    out = loaded.signatures["serve_text"](text=tf.constant(["a b c", "d"]))
    assert set(out) == {"logits", "probabilities"}  # one label per example would be wrong here
    np.testing.assert_allclose(out["probabilities"].numpy(), 1 / (1 + np.exp(-out["logits"].numpy())), rtol=1e-5)

    regression = make_hf_head(tmp_path / "reg", tf1_model.weights, tf1_model.vocab_file,
                              "BertForSequenceClassification", "classifier", 1)
    result = run_export(ExportOptions(None, regression.directory, None, str(tmp_path / "reg-out")))
    assert result.report.task["problem_type"] == "regression" and result.report.verification["passed"]
    loaded = tf.saved_model.load(result.path)
    assert set(loaded.signatures["serve_text"](text=tf.constant(["x"]))) == {"logits"}
    assert set(loaded.signatures["serving_default"].structured_outputs) == {"logits"}


def test_label_names_flag_file_and_defaults(tmp_path, checkpoints):
    ckpt = checkpoints["run_classifier"]
    prefix = os.path.join(ckpt.directory, "bert_model.ckpt")
    names = tmp_path / "labels.txt"
    names.write_text("x\ny\nz\n")
    from_file = run_export(ExportOptions(None, prefix, None, str(tmp_path / "a"), label_names_file=str(names),
                                         verify=False))
    assert from_file.report.task["label_names"] == ["x", "y", "z"]
    default = run_export(ExportOptions(None, prefix, None, str(tmp_path / "b"), verify=False))
    assert default.report.task["label_names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert "default names" in default.report.task["labels_from"]


def test_encoder_export_of_a_fine_tuned_checkpoint_says_what_it_leaves_out(tmp_path, checkpoints):
    ckpt = checkpoints["hf_sequence"]
    proc = run_cli(f"--model_checkpoint_path={ckpt.directory}", f"--export_path={tmp_path}", "--export_type=model",
                   "--noverify", "--strict")
    assert proc.returncode == 0, proc.stderr
    assert "note: task head classifier.weight, classifier.bias" in proc.stdout and "not exported" in proc.stdout
    loaded = tf.saved_model.load(proc.stdout.strip().splitlines()[-1])
    assert set(loaded.signatures["serving_default"].structured_outputs) == {"pooled_output", "sequence_output"}


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def _refused(tmp_path, *args, fragments=()):
    out = tmp_path / "refused"
    proc = run_cli(*args, f"--export_path={out}")
    assert_one_line_error(proc, *fragments)
    assert not out.exists()


def test_requested_task_without_its_head(tmp_path, checkpoints, tf1_model):
    _refused(tmp_path, f"--model_checkpoint_path={checkpoints['run_classifier'].directory}/bert_model.ckpt",
             "--export_type=question_answering",
             fragments=("--export_type=question_answering", "holds no question_answering head", "output_weights"))
    _refused(tmp_path, f"--model_checkpoint_path={tf1_model.checkpoint}", "--export_type=sequence_classification",
             fragments=("holds no sequence_classification head", "only the encoder"))


def test_two_heads_are_refused_unless_one_is_chosen(tmp_path):
    rng = np.random.default_rng(3)
    kernel, bias = _head(rng, 3)
    span_kernel, span_bias = _head(rng, 2)
    model = _tf1_with(tmp_path / "two", {"output_weights": kernel, "output_bias": bias,
                                         "cls/squad/output_weights": span_kernel, "cls/squad/output_bias": span_bias})
    _refused(tmp_path, f"--model_checkpoint_path={model.checkpoint}",
             fragments=("holds 2 task heads", "output_weights", "cls/squad/output_weights", "--export_type="))
    proc = run_cli(f"--model_checkpoint_path={model.checkpoint}", f"--export_path={tmp_path / 'qa'}",
                   "--export_type=question_answering", "--default_seq_length=64", "--noverify")
    assert proc.returncode == 0, proc.stderr
    assert "output_weights, output_bias not exported (another task head)" in proc.stdout


@pytest.mark.parametrize("case", ["id2label_count", "squad_width", "label_flag_count", "incomplete",
                                  "unknown_architecture", "export_format", "labels_for_encoder",
                                  "problem_type_for_tagger", "one_output_single_label"])
def test_head_mismatches_are_one_line_errors(case, tmp_path, checkpoints, tf1_model):
    rng = np.random.default_rng(4)
    if case == "id2label_count":
        ckpt = make_hf_head(tmp_path / "m", tf1_model.weights, tf1_model.vocab_file, "BertForSequenceClassification",
                            "classifier", 3, ("a", "b"))
        args, fragments = [f"--model_checkpoint_path={ckpt.directory}"], ("classifier.weight has 3 outputs",
                                                                           "id2label names 2 labels")
    elif case == "squad_width":
        kernel, bias = _head(rng, 3)
        model = _tf1_with(tmp_path / "m", {"cls/squad/output_weights": kernel, "cls/squad/output_bias": bias})
        args, fragments = [f"--model_checkpoint_path={model.checkpoint}"], ("cls/squad/output_weights is [3, 64]",
                                                                              "expected [2, 64]")
    elif case == "label_flag_count":
        args = [f"--model_checkpoint_path={checkpoints['run_classifier'].directory}/bert_model.ckpt",
                "--label_names=a,b"]
        fragments = ("--label_names names 2 labels", "output_weights has 3 outputs")
    elif case == "incomplete":
        kernel, _ = _head(rng, 3)
        model = _tf1_with(tmp_path / "m", {"output_weights": kernel})
        args, fragments = [f"--model_checkpoint_path={model.checkpoint}"], ("has output_weights but lacks output_bias",)
    elif case == "unknown_architecture":  # BertForMultipleChoice's head is `classifier` [1, H] too
        directory = tmp_path / "m"
        make_hf_head(directory, tf1_model.weights, tf1_model.vocab_file, "BertForSequenceClassification",
                     "classifier", 1)
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMultipleChoice"]}))
        args, fragments = [f"--model_checkpoint_path={directory}"], ("architectures ['BertForMultipleChoice']",
                                                                     "not a task this tool exports")
    elif case == "export_format":
        args = [f"--model_checkpoint_path={checkpoints['hf_sequence'].directory}", "--export_format=legacy"]
        fragments = ("--export_format applies to encoder exports", "--export_type=model")
    elif case == "labels_for_encoder":
        args = [f"--model_checkpoint_path={checkpoints['hf_sequence'].directory}", "--export_type=model",
                "--label_names=a,b,c"]
        fragments = ("--label_names applies to task exports",)
    elif case == "problem_type_for_tagger":
        args = [f"--model_checkpoint_path={checkpoints['hf_token'].directory}", "--problem_type=regression"]
        fragments = ("--problem_type applies to sequence_classification",)
    else:
        ckpt = make_hf_head(tmp_path / "m", tf1_model.weights, tf1_model.vocab_file, "BertForSequenceClassification",
                            "classifier", 1)
        args = [f"--model_checkpoint_path={ckpt.directory}", "--problem_type=single_label_classification"]
        fragments = ("classifier.weight has 1 output, too few for single_label_classification", "regression")
    _refused(tmp_path, *args, fragments=fragments)


# --- planted bugs: each must fail export-time verification --------------------------------------

def _plant_head(monkeypatch, cls, outputs):
    monkeypatch.setattr(cls, "outputs", outputs)


def _plant_sorted_labels(monkeypatch):
    """The builder stores the label names sorted instead of in id order."""
    original = task_model_module.TaskModel.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.label_names = tf.Variable(sorted(self._spec.label_names), trainable=False, name="label_names")
    monkeypatch.setattr(task_model_module.TaskModel, "__init__", init)


PLANTS = {
    "head_on_sequence_not_pooled": ("hf_sequence", lambda mp: _plant_head(
        mp, heads_module.SequenceClassifierHead,
        lambda self, pooled, sequence, training: {"logits": (l := self._dense(sequence[:, 0])),
                                                  "probabilities": tf.nn.softmax(l, axis=-1)})),
    "softmax_over_batch": ("hf_sequence", lambda mp: _plant_head(
        mp, heads_module.SequenceClassifierHead,
        lambda self, pooled, sequence, training: {"logits": (l := self._dense(pooled)),
                                                  "probabilities": tf.nn.softmax(l, axis=0)})),
    "softmax_over_tokens": ("hf_token", lambda mp: _plant_head(
        mp, heads_module.TokenClassifierHead,
        lambda self, pooled, sequence, training: {"logits": (l := self._dense(sequence)),
                                                  "probabilities": tf.nn.softmax(l, axis=1)})),
    "start_end_swapped": ("hf_qa", lambda mp: _plant_head(
        mp, heads_module.SpanHead,
        lambda self, pooled, sequence, training: dict(zip(("end_logits", "start_logits"),
                                                          tf.unstack(self._dense(sequence), num=2, axis=-1))))),
    "labels_sorted": ("hf_sequence", _plant_sorted_labels),
    "offsets_shifted": ("hf_qa", lambda mp: mp.setattr(
        preprocessing_module, "char_offsets",
        (lambda original: lambda *a: tuple(t + 1 for t in original(*a)))(preprocessing_module.char_offsets))),
    # Round-robin truncation handing the odd slot to the second segment: only a pair that both
    # segments overflow (the long text paired with itself) shows it.
    "truncation_favours_the_second_segment": ("hf_sequence", lambda mp: mp.setattr(
        preprocessing_module, "round_robin_kept",
        (lambda original: lambda lengths, budget: original(lengths[:, ::-1], budget)[:, ::-1])(
            preprocessing_module.round_robin_kept))),
    "text_segments_swapped": ("hf_sequence", lambda mp: mp.setattr(
        task_model_module.SequenceClassificationModel, "_classify",
        (lambda original: lambda self, segments: original(self, segments[::-1]))(
            task_model_module.SequenceClassificationModel._classify))),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_planted_bug_fails_verification(plant, monkeypatch, checkpoints, tmp_path):
    name, apply = PLANTS[plant]
    apply(monkeypatch)
    ckpt = checkpoints[name]
    with pytest.raises(VerificationError, match="verification FAILED") as failed:
        run_export(ExportOptions(None, _checkpoint_flag(ckpt), None, str(tmp_path / "out"),
                                 default_seq_length=64 if ckpt.task == QA else None))
    print(f"{plant}: {failed.value}")
    assert os.listdir(tmp_path / "out") == []


def test_planted_untransposed_classifier_is_caught(monkeypatch, checkpoints, tmp_path):
    """The reader forgets that torch stores Linear weights [out, in]: the head's shape check
    refuses it before anything is written (for a square head, verification would)."""
    from export.checkpoints import hf
    from export.checkpoints.base import KEEP, HeadLayout

    monkeypatch.setattr(hf, "_HEADS", tuple(HeadLayout(h.kernel, h.bias, KEEP, h.tasks, h.trained_by)
                                            for h in hf._HEADS))
    with pytest.raises(InputError, match=r"classifier.weight is \[3, 64\]"):
        run_export(ExportOptions(None, checkpoints["hf_sequence"].directory, None, str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


# --- the reusable API ------------------------------------------------------------------------

def test_fine_tuning_continues_through_hub_keras_layer(exported):
    import tensorflow_hub as hub

    loaded = tf.saved_model.load(exported("run_classifier")[0])
    assert len(loaded.trainable_variables) == 5 + 16 * TINY.num_hidden_layers + 2 + 2  # encoder, pooler, head
    layer = hub.KerasLayer(exported("run_classifier")[0], trainable=True)
    ids, mask, types = random_batch(2, 9, seed=2)
    inputs = {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}
    with tf.GradientTape() as tape:
        logits = layer(inputs, training=True)["logits"]
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant([0, 2]), logits))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert len(grads) == len(loaded.trainable_variables) and all(g is not None for g in grads)
    inference = [layer(inputs, training=False)["logits"].numpy() for _ in range(2)]
    np.testing.assert_array_equal(*inference)
    assert not np.allclose(layer(inputs, training=True)["logits"].numpy(), inference[0])  # dropout in training only


KERAS3_PROGRAM = r"""
import json, sys
import keras, numpy as np
ids = np.array([[2, 5, 7, 3, 0]], np.int32)
out = keras.layers.TFSMLayer(sys.argv[1])({"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32),
                                          "input_type_ids": np.zeros_like(ids)})
print(json.dumps({k: list(np.asarray(v).shape) for k, v in out.items()}))
"""


def test_without_text_signatures_the_export_loads_without_tensorflow_text(tmp_path, checkpoints):
    result = run_export(ExportOptions(None, checkpoints["hf_token"].directory, None, str(tmp_path / "out"),
                                      text_signatures=False))
    assert result.report.verification["passed"] and result.report.default_seq_length is None
    assert result.report.signatures == ["serve_int64", "serving_default"]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", KERAS3_PROGRAM, result.path], capture_output=True, text=True,
                          env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"logits": [1, 5, 5], "probabilities": [1, 5, 5]}
    show = subprocess.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "run", "--dir",
                           result.path, "--tag_set", "serve", "--signature_def", "serving_default", "--input_exprs",
                           "input_word_ids=[[2,5,3]];input_mask=[[1,1,1]];input_type_ids=[[0,0,0]]"],
                          capture_output=True, text=True, env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert show.returncode == 0 and "probabilities" in show.stdout, show.stderr[-2000:]


# What tf.saved_model.save traces of its own: the signatures' wrappers, the variables' save and
# restore functions, a lookup table's resource functions. Any other name is an entry point the
# exporter traced already, traced a second time (seconds per encoder graph on BERT-large).
SAVE_OWN_TRACES = {"signature_wrapper", "_traced_save", "_traced_restore", "_creator", "_initializer", "_destroyer"}


@pytest.mark.parametrize("name, export_type", [(None, "model"), (None, "model_with_mlm"), ("run_classifier", None),
                                               ("hf_token", None), ("run_squad", None)])
def test_saving_does_not_trace_the_entry_points_again(name, export_type, checkpoints, tf1_model, monkeypatch,
                                                      tmp_path):
    from tensorflow.python.eager.polymorphic_function import tracing_compilation

    from export.build import saving

    traced = {"build": [], "save": []}
    phase = ["build"]
    create = tracing_compilation._create_concrete_function

    def counting(function_type, type_context, func_graph, tracing_options):
        traced[phase[0]].append(tracing_options.name)
        return create(function_type, type_context, func_graph, tracing_options)

    def save(*args, **kwargs):
        phase[0] = "save"
        return real_save(*args, **kwargs)

    real_save = saving.save
    monkeypatch.setattr(tracing_compilation, "_create_concrete_function", counting)
    monkeypatch.setattr(saving, "save", save)
    if name is None:
        model = make_tf1_model(tmp_path / "tf1", mlm=True)
        opts = ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(tmp_path / "out"),
                             export_type=export_type, verify=False)
    else:
        opts = ExportOptions(None, _checkpoint_flag(checkpoints[name]), None, str(tmp_path / "out"), verify=False,
                             label_names=",".join(NLI_LABELS) if name == "run_classifier" else None,
                             default_seq_length=64 if name == "run_squad" else None)
    run_export(opts)
    assert traced["build"].count("__call__") >= 2 and "serve" in traced["build"]  # the hook sees traces
    assert set(traced["save"]) <= SAVE_OWN_TRACES, traced["save"]
