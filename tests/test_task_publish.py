"""Task exports through bert-package and bert-verify: the card states the task, its labels in id
order, the signatures and their requests, and its Python snippets run against the artifact; the
task checks of bert-verify pass on good tarballs and fail on a planted bug of each kind."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401 - registers the ops of the text signatures

from conftest import TINY, make_tf1_model, write_google_checkpoint
from export import synthetic
from export.build import preprocessing as preprocessing_module
from export.errors import InputError
from export.pipeline import ExportOptions, run_export
from export.publish.package import CardMetadata, package_export, read_export_facts
from export.report import REPORT_RELATIVE_PATH
from export.verify import tokenization_reference as reference
from test_cards import run_card_code
from test_verify_cli import verify

LABELS = ("neutral", "entailment", "contradiction")  # deliberately not sorted
TASK_CHECKS = {"task", "signature", "call_convention", "labels", "text_signatures", "text_ids", "vocab_asset",
               "do_lower_case", "hub_keraslayer_tf_keras", "keras3_tfsmlayer", "checksums", "no_host_paths",
               "export_report"}


def _fine_tuned(directory, head_prefix: str, outputs: int):
    """make_tf1_model's checkpoint plus a google-research head (`output_weights` [outputs, H])."""
    model = make_tf1_model(directory)
    reader = tf.train.load_checkpoint(model.checkpoint)
    arrays = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    rng = np.random.default_rng(7)
    arrays[head_prefix + "output_weights"] = rng.normal(0, 0.5, (outputs, TINY.hidden_size)).astype(np.float32)
    arrays[head_prefix + "output_bias"] = rng.normal(0, 0.5, outputs).astype(np.float32)
    write_google_checkpoint(model.checkpoint, arrays)
    return model


class Published:
    """A task export and its bert-package output."""

    def __init__(self, model, version_dir: str, dist: str, name: str):
        self.model, self.version_dir, self.dist, self.name = model, version_dir, dist, name
        self.tarball = os.path.join(dist, f"{name}.tar.gz")
        with open(os.path.join(dist, "README.md"), encoding="utf-8") as f:
            self.card = f.read()
        with open(os.path.join(dist, "model-instance-metadata.json"), encoding="utf-8") as f:
            self.kaggle = json.load(f)

    def source_flags(self) -> list[str]:
        return [f"--bert_config_file={self.model.bert_config_file}",
                f"--model_checkpoint_path={self.model.checkpoint}"]


def _publish(tmp_path_factory, kind: str, head_prefix: str, outputs: int, **options) -> Published:
    model = _fine_tuned(tmp_path_factory.mktemp(f"{kind}-model"), head_prefix, outputs)
    result = run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file,
                                      str(tmp_path_factory.mktemp(f"{kind}-export")), **options))
    dist = str(tmp_path_factory.mktemp(f"{kind}-dist"))
    package_export(result.path, dist, CardMetadata(model_name=f"tiny_{kind}", owner_slug="me",
                                                   model_slug=f"tiny-{kind}"))
    return Published(model, result.path, dist, f"tiny_{kind}")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Published:
    return _publish(tmp_path_factory, "classifier", "", len(LABELS), label_names=",".join(LABELS))


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Published:
    return _publish(tmp_path_factory, "qa", "cls/squad/", 2, default_seq_length=64)


def _rest_requests(card: str) -> list[dict]:
    return [json.loads(body) for body in re.findall(r"^  -d '(.*)'$", card, re.MULTILINE)]


def _reference_tokens(version_dir: str, *texts: str) -> list[int]:
    """The texts as the Python reference tokenizer on the artifact's vocab packs them, unpadded."""
    vocab = os.path.join(version_dir, "assets", "vocab.txt")
    tokenize = reference.reference_tokenizer("wordpiece", vocab, do_lower_case=False)
    special = reference.special_token_ids("wordpiece", vocab)
    segments = [tokenize(text) for text in texts]
    ids, _, _ = reference.pack(segments, sum(len(s) + 1 for s in segments) + 1, special["start_of_sequence_id"],
                               special["end_of_segment_id"], special["padding_id"])
    return ids


def _run_card_snippets(published: Published, tmp_path, epilogue: str = "") -> str:
    """The card's Python blocks, in order, as one program, with the handle replaced by the extracted
    tarball (test_cards.run_card_code)."""
    return run_card_code(published.card, published.kaggle, published.tarball, tmp_path, separately=False,
                         epilogue=epilogue)[0]


def test_classifier_card_states_the_task_and_its_labels(classifier):
    card = classifier.card
    assert card.startswith("# Module tiny_classifier\nBERT fine-tuned for text classification.\n")
    for line in ("<!-- task: text-classification -->", "<!-- fine-tunable: true -->", "<!-- format: saved_model_2 -->",
                 "<!-- asset-path: https://www.kaggle.com/models/me/tiny-classifier/tensorFlow2/text-classification_"
                 f"L-{TINY.num_hidden_layers}_H-{TINY.hidden_size}_A-{TINY.num_attention_heads}/1 -->"):
        assert line in card
    assert "problem type `single_label_classification`" in card
    assert ("Labels (3, in id order; from --label_names):\n\n| id | label |\n| --- | --- |\n"
            "| 0 | neutral |\n| 1 | entailment |\n| 2 | contradiction |\n") in card
    assert "`output_weights, output_bias` (google-research run_classifier.py)" in card
    assert "at seq_length=128 tokens" in card and "`import tensorflow_text` before loading" in card
    assert "serving runtime needs the TF Text ops" in card and "`serve_int64`" in card
    assert f"L={TINY.num_hidden_layers} hidden layers" in card and "max relative error" in card
    assert "| `serve_text_pair` | `text`, `text_pair` (string `[batch]`) |" in card
    text, ids = _rest_requests(card)
    assert text == {"signature_name": "serve_text", "instances": [{"text": text["instances"][0]["text"]}]}
    assert ids["signature_name"] == "serving_default" and set(ids["instances"][0]) == {
        "input_word_ids", "input_mask", "input_type_ids"}
    # The token-id request is the same text, as the reference tokenizer maps it.
    assert ids["instances"][0]["input_word_ids"] == _reference_tokens(classifier.version_dir,
                                                                     text["instances"][0]["text"])
    assert set(ids["instances"][0]["input_mask"]) == {1} and set(ids["instances"][0]["input_type_ids"]) == {0}
    kaggle = classifier.kaggle
    assert kaggle["fineTunable"] is True and kaggle["usage"] in card
    assert kaggle["instanceSlug"] == (f"text-classification_L-{TINY.num_hidden_layers}_H-{TINY.hidden_size}"
                                      f"_A-{TINY.num_attention_heads}")


def test_classifier_card_snippets_run_against_the_artifact(classifier, tmp_path):
    out = _run_card_snippets(classifier, tmp_path, epilogue="\nprint('trainable', len(layer.trainable_weights))\n")
    lines = out.splitlines()
    label = re.fullmatch(r"\[b'(\w+)'\]", lines[0])
    assert label and label.group(1) in LABELS, out
    probabilities = [float(x) for x in re.findall(r"\d\.\d*(?:e[-+]\d+)?", lines[1])]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-5, out
    assert re.fullmatch(r"\[b'(\w+)'\]", lines[2]).group(1) in LABELS  # serve_text_pair
    assert "'logits': TensorShape([1, 3])" in lines[3] and "'probabilities': TensorShape([1, 3])" in lines[3]
    # hub.KerasLayer(trainable=True): the encoder's weights (5 + 16 L + 2 pooler) and the head's 2
    assert lines[-1] == f"trainable {5 + 16 * TINY.num_hidden_layers + 2 + 2}"


def test_qa_card_and_its_snippet(qa, tmp_path):
    card = qa.card
    assert "<!-- task: text-question-answering -->" in card and "<!-- fine-tunable: true -->" in card
    assert "Labels (" not in card and "at seq_length=64 tokens" in card
    assert "`cls/squad/output_weights, cls/squad/output_bias` (google-research run_squad.py)" in card
    text, ids = _rest_requests(card)
    question, context = text["instances"][0]["question"], text["instances"][0]["context"]
    assert text == {"signature_name": "serve_text", "instances": [{"question": question, "context": context}]}
    assert ids["instances"][0]["input_word_ids"] == _reference_tokens(qa.version_dir, question, context)
    assert qa.kaggle["fineTunable"] is True and qa.kaggle["instanceSlug"].startswith("text-question-answering_")
    out = _run_card_snippets(qa, tmp_path).splitlines()
    answer = re.fullmatch(r"\[b'(.*)'\]", out[0]).group(1)
    start, end = (int(n) for n in re.fullmatch(r"\[(-?\d+)\] \[(-?\d+)\]", out[1]).groups())
    assert answer == context[start:end] and answer, out
    assert "'start_logits': TensorShape([1, " in out[3]


def _checks(proc, report_path) -> dict[str, dict]:
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return {c["name"]: c for c in json.loads(report_path.read_text())["checks"]}


@pytest.mark.parametrize("which", ["classifier", "qa"])
def test_bert_verify_passes_task_tarballs_with_the_checkpoint(which, classifier, qa, tmp_path):
    published = {"classifier": classifier, "qa": qa}[which]
    proc = verify(f"--artifact={published.tarball}", *published.source_flags(), f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = _checks(proc, tmp_path / "r.json")
    assert TASK_CHECKS | {"parity"} <= set(checks)
    assert "pooled_output" not in proc.stdout  # the encoder's checks did not run
    if which == "classifier":
        assert checks["labels"]["detail"].startswith("3 labels in id order") and "neutral, entailment" in proc.stdout
        assert "serve_text, serve_text_pair equal serving_default" in checks["parity"]["detail"]
    else:
        assert "best span" in checks["parity"]["detail"] and checks["labels"]["detail"].startswith("none")
    assert "60/60 (tokenize)" in checks["text_ids"]["detail"]


def test_bert_verify_passes_a_task_tarball_without_the_checkpoint(qa, tmp_path):
    proc = verify(f"--artifact={qa.tarball}", f"--report_json={tmp_path / 'r.json'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = _checks(proc, tmp_path / "r.json")
    assert TASK_CHECKS <= set(checks) and "parity" not in checks
    assert "answer_start" in checks["text_signatures"]["detail"]


def _rewrite_variable(version_dir: str, key: str, value) -> None:
    """Rewrites one saved variable's value in place (every other tensor as it was)."""
    prefix = os.path.join(version_dir, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    tensors = [tf.constant(value if name == key else reader.get_tensor(name)) for name in names]
    del reader
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


def test_reordered_label_names_fail_labels_and_parity(classifier, tmp_path):
    """The saved label names no longer follow the head's ids: the card would name the wrong class."""
    copy = str(tmp_path / "1")
    shutil.copytree(classifier.version_dir, copy)
    _rewrite_variable(copy, "label_names/.ATTRIBUTES/VARIABLE_VALUE", [LABELS[1], LABELS[0], LABELS[2]])
    with pytest.raises(InputError, match="saved label_names variable holds"):
        read_export_facts(copy)  # bert-package refuses to write a card for it
    proc = verify(f"--artifact={copy}", *classifier.source_flags(), f"--report_json={tmp_path / 'r.json'}")
    checks = _checks(proc, tmp_path / "r.json")
    assert proc.returncode == 1
    failed = sorted(name for name, check in checks.items() if not check["passed"])
    assert failed == ["labels", "parity"], failed
    assert "['entailment', 'neutral', 'contradiction']" in checks["labels"]["detail"]
    assert "label_names" in checks["parity"]["detail"]


def test_swapped_vocab_asset_fails_text_ids(classifier, tmp_path):
    """Another vocabulary of the same size and special-token layout: the SavedModel's lookup table
    and the reference tokenizer both read it, so only the record of the exported one shows it."""
    copy = tmp_path / "1"
    shutil.copytree(classifier.version_dir, copy)
    synthetic.write_vocab(str(copy / "assets" / "vocab.txt"), TINY.vocab_size, cased=False)
    proc = verify(f"--artifact={copy}", f"--report_json={tmp_path / 'r.json'}")
    checks = _checks(proc, tmp_path / "r.json")
    failed = sorted(name for name, check in checks.items() if not check["passed"])
    assert proc.returncode == 1 and failed == ["text_ids", "vocab_asset"], failed
    assert "is not the vocab the model was exported with" in checks["text_ids"]["detail"]


def test_planted_tokenizer_bug_fails_text_ids(classifier, monkeypatch, tmp_path):
    """The graph forgets FullTokenizer's control-character removal (exported unverified, as a
    broken build would be): the artifact's tokenize disagrees with the reference tokenizer."""
    monkeypatch.setattr(preprocessing_module, "DROPPED_CHARS", "\x00")
    model = classifier.model
    result = run_export(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file,
                                      str(tmp_path / "export"), label_names=",".join(LABELS), verify=False))
    proc = verify(f"--artifact={result.path}", f"--report_json={tmp_path / 'r.json'}")
    checks = _checks(proc, tmp_path / "r.json")
    failed = sorted(name for name, check in checks.items() if not check["passed"])
    assert proc.returncode == 1 and failed == ["text_ids"], failed
    assert "tokenize: sentence" in checks["text_ids"]["detail"] and "vs reference" in checks["text_ids"]["detail"]


def test_package_refuses_a_report_that_disagrees_with_the_variables(classifier, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(classifier.version_dir, copy)
    report_path = copy / REPORT_RELATIVE_PATH
    report = json.loads(report_path.read_text())
    report["config"]["num_hidden_layers"] += 1
    report_path.write_text(json.dumps(report))
    with pytest.raises(InputError, match=f"says L={TINY.num_hidden_layers + 1}, H={TINY.hidden_size}"):
        read_export_facts(str(copy))


def test_text_signature_checks_catch_wrong_values():
    """The value checks of `text_signatures` on planted wrong outputs (no SavedModel needed)."""
    from export.tasks import TaskSpec
    from export.verify.conformance import _check_text_outputs, _outputs_problem

    qa_spec = TaskSpec("question_answering", 2)
    feeds = {"question": ("Who?",), "context": ("Ada was born in London.",)}
    answer = {"answer": np.array([b"London"]), "answer_start": np.array([16]), "answer_end": np.array([22])}
    _check_text_outputs(qa_spec, "serve_text", feeds, answer)
    with pytest.raises(AssertionError, match="is not the context's text there"):
        _check_text_outputs(qa_spec, "serve_text", feeds, answer | {"answer_start": np.array([15])})
    tagger = TaskSpec("token_classification", 2, ("O", "NAME"))
    tags = {"labels": np.array([[b"", b"NAME", b"O", b""]]), "token_start": np.array([[-1, 0, 4, -1]]),
            "token_end": np.array([[-1, 3, 12, -1]])}
    _check_text_outputs(tagger, "serve_text", {"text": ("Ada Lovelace",)}, tags)
    with pytest.raises(AssertionError, match="not .start, end. pairs inside the text"):
        _check_text_outputs(tagger, "serve_text", {"text": ("Ada Lovelace",)},
                            tags | {"token_end": np.array([[-1, 3, 13, -1]])})
    with pytest.raises(AssertionError, match="not among the label names"):
        _check_text_outputs(tagger, "serve_text", {"text": ("Ada Lovelace",)},
                            tags | {"labels": np.array([[b"", b"PER", b"O", b""]])})
    classifier_spec = TaskSpec("sequence_classification", 3, LABELS, problem_type="single_label_classification")
    with pytest.raises(AssertionError, match="not among the label names"):
        _check_text_outputs(classifier_spec, "serve_text", {"text": ("a",)}, {"label": np.array([b"other"])})
    outputs = {"logits": np.zeros((2, 3)), "probabilities": np.zeros((2, 3)), "label": np.array([b"x", b"y"])}
    expected = classifier_spec.tensor_outputs() + classifier_spec.text_extra_outputs()
    assert _outputs_problem(classifier_spec, "serve_text", outputs, expected, 2, 128) is None
    assert "expected (2, 3)" in _outputs_problem(classifier_spec, "serve_text",
                                                 outputs | {"logits": np.zeros((2, 4))}, expected, 2, 128)
    assert "returns" in _outputs_problem(classifier_spec, "serve_text", {"logits": np.zeros((2, 3))}, expected, 2, 128)
