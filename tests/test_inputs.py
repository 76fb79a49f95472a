"""Pre-flight validation and checkpoint readers, tested as library calls (fast, no export)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY, google_research_names, write_google_checkpoint
from export.checkpoints import open_checkpoint
from export.config import load_bert_config, parse_bert_config
from export.errors import InputError
from export.pipeline import ExportOptions, validate_inputs
from export.vocab import decide_do_lower_case, read_vocab
from export.checkpoints.check import check_checkpoint
from export.weights import expected_shapes

GOOD = {k: v for k, v in vars(TINY).items() if k not in ("layer_norm_eps", "activation_convention")}


@pytest.mark.parametrize("reader_fixture", ["tf1_model", "tf2_model", "converted_model"])
def test_readers_map_every_weight_exactly(reader_fixture, request):
    model = request.getfixturevalue(reader_fixture)
    reader = open_checkpoint(model.checkpoint)
    assert check_checkpoint(reader, TINY, "bert_config.json") == []
    # The TF1 fixture also holds cls/predictions/output_bias (a partial masked-LM head), mapped but unused.
    assert set(reader.tensors) - {"mlm/output_bias"} == set(expected_shapes(TINY))
    for name, array in model.weights.items():
        np.testing.assert_array_equal(reader.read(name), array, err_msg=name)


def test_tf2_reader_accepts_the_older_model_root(tmp_path, tf2_model):
    reader = tf.train.load_checkpoint(tf2_model.checkpoint)
    arrays = {n.replace("encoder/", "model/", 1): reader.get_tensor(n)
              for n in reader.get_variable_to_shape_map() if n.startswith("encoder/")}
    prefix = write_google_checkpoint(str(tmp_path / "old"), arrays)
    opened = open_checkpoint(prefix)
    assert opened.format_name == "tf2" and opened.num_layers == TINY.num_hidden_layers
    np.testing.assert_array_equal(opened.read("layer_1/attention/query/kernel"),
                                  tf2_model.weights["layer_1/attention/query/kernel"])


def test_unexpected_variables_are_listed_and_strict_refuses(tmp_path, tf1_model):
    reader = tf.train.load_checkpoint(tf1_model.checkpoint)
    arrays = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    arrays["bert/encoder/layer_0/attention/self/rotary/kernel"] = np.ones(3, np.float32)
    prefix = write_google_checkpoint(str(tmp_path / "extra"), arrays)
    warnings = check_checkpoint(open_checkpoint(prefix), TINY, "cfg")
    assert len(warnings) == 1 and "bert/encoder/layer_0/attention/self/rotary/kernel" in warnings[0]
    with pytest.raises(InputError, match="--strict"):
        check_checkpoint(open_checkpoint(prefix), TINY, "cfg", strict=True)


def test_nan_weight_is_refused_when_read(tmp_path, tf1_model):
    names = google_research_names(TINY.num_hidden_layers)
    arrays = {names[k]: v.copy() for k, v in tf1_model.weights.items()}
    arrays[names["layer_0/intermediate/bias"]][3] = np.nan
    reader = open_checkpoint(write_google_checkpoint(str(tmp_path / "nan"), arrays))
    with pytest.raises(InputError, match="intermediate/dense/bias contains NaN"):
        reader.read("layer_0/intermediate/bias")


def test_checkpoint_directory_is_resolved(tmp_path, tf1_model, converted_model):
    assert open_checkpoint(tf1_model.directory).checkpoint_path == tf1_model.checkpoint
    assert open_checkpoint(tf1_model.checkpoint + ".index").checkpoint_path == tf1_model.checkpoint
    assert open_checkpoint(converted_model.checkpoint).format_name == "tf2"  # via the `checkpoint` file
    for name in ("a", "b"):
        write_google_checkpoint(str(tmp_path / name), {"x": np.ones(1, np.float32)})
    with pytest.raises(InputError, match="several checkpoints"):
        open_checkpoint(str(tmp_path))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no checkpoint"):
        open_checkpoint(str(tmp_path / "empty_dir"))


def test_corrupt_index_is_a_clear_error(tmp_path):
    (tmp_path / "bad.index").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="bad.index: not a readable TensorFlow checkpoint"):
        open_checkpoint(str(tmp_path / "bad"))


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 0}, "hidden_size must be positive"),
    ({"hidden_size": "64"}, "hidden_size must be an integer"),
    ({"num_hidden_layers": True}, "num_hidden_layers must be an integer"),
    ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob must be in \[0, 1\)"),
    ({"vocab_size": 10 ** 9}, "larger than the supported"),
    ({"num_hidden_layers": 100000, "hidden_size": 65536, "num_attention_heads": 64}, "parameters"),
    ({"embedding_size": 32}, "factorized"),
])
def test_config_validation(change, message):
    with pytest.raises(InputError, match=message):
        parse_bert_config(GOOD | change, "bert_config.json")


def test_config_missing_fields_and_bad_json(tmp_path):
    with pytest.raises(InputError, match="missing field.*intermediate_size"):
        parse_bert_config({k: v for k, v in GOOD.items() if k != "intermediate_size"}, "c.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputError, match=r"c.json: not valid JSON .* line 1"):
        load_bert_config(str(tmp_path / "c.json"))
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="expected a JSON object"):
        load_bert_config(str(tmp_path / "list.json"))


def _vocab(tmp_path, tokens):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


SPECIALS = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_casing_is_inferred_from_content_not_name(tmp_path):
    uncased = read_vocab(_vocab(tmp_path, SPECIALS + ["the", "##ing", "été", "東京", "ℝ"]))  # ℝ has no lowercase
    decision, warning = decide_do_lower_case(uncased, None)
    assert decision.do_lower_case is True and warning is None and "inferred" in decision.how
    cased = read_vocab(_vocab(tmp_path, SPECIALS + ["the", "The", "##ing"]))
    decision, warning = decide_do_lower_case(cased, None)
    assert decision.do_lower_case is False
    decision, warning = decide_do_lower_case(cased, True)
    assert decision.do_lower_case is True and "contradicts" in warning
    decision, warning = decide_do_lower_case(cased, False)
    assert decision.do_lower_case is False and warning is None


def test_vocab_errors(tmp_path):
    with pytest.raises(InputError, match="appears twice"):
        read_vocab(_vocab(tmp_path, SPECIALS + ["a", "a"]))
    (tmp_path / "latin1.txt").write_bytes("[PAD]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_vocab(str(tmp_path / "latin1.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_vocab(str(tmp_path / "empty.txt"))


def test_export_path_inside_the_checkpoint_directory_is_refused(tf1_model):
    with pytest.raises(InputError, match="would hold the source file"):
        validate_inputs(ExportOptions(tf1_model.bert_config_file, tf1_model.checkpoint, tf1_model.vocab_file,
                                      tf1_model.directory))


def test_shipped_configs_parse_and_match_published_sizes():
    import glob
    import os

    paths = sorted(p for p in glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.json"))
                   if not p.endswith("cards.json"))
    assert len(paths) == 30  # en cased/uncased base+large, 2 wwm, multilingual, 24 small BERTs (1 is base)
    configs = {os.path.basename(p): load_bert_config(p) for p in paths}
    small = [c for n, c in configs.items() if n.startswith("bert_en_uncased") and c.hidden_size < 1024]
    assert len(small) == 24 and all(c.num_attention_heads == c.hidden_size // 64 for c in small)
    assert configs["bert_multi_cased_L-12_H-768_A-12.json"].vocab_size == 119547
    # The seed's model: "encoder without pretraining heads has 333,579,264 parameters" (formats.md).
    assert configs["bert_en_cased_L-24_H-1024_A-16.json"].parameter_count() == 333_579_264
    assert configs["bert_en_uncased_L-12_H-768_A-12.json"].parameter_count() == 109_482_240  # BERT-base's 110M
    for name, config in configs.items():
        if name.startswith("bert_en_"):
            assert config.vocab_size == (28996 if "_cased_" in name else 30522)
        assert config.activation == "gelu_tanh"


def test_default_seq_length_bounds_only_the_preprocessor(tmp_path):
    """An encoder with max_position_embeddings below 128 exports; its preprocessor at the default
    length 128 would not fit, and is refused."""
    import dataclasses

    from conftest import make_tf1_model

    model = make_tf1_model(tmp_path / "short", config=dataclasses.replace(TINY, max_position_embeddings=64))
    validate_inputs(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(tmp_path / "a")))
    with pytest.raises(InputError, match="--default_seq_length=128 exceeds bert_config.json's max_position_embeddings=64"):
        validate_inputs(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(tmp_path / "b"),
                                      export_type="preprocessing"))
    validate_inputs(ExportOptions(model.bert_config_file, model.checkpoint, model.vocab_file, str(tmp_path / "c"),
                                  export_type="preprocessing", default_seq_length=64))
