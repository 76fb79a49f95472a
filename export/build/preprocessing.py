"""The TF Hub BERT preprocessor: raw strings in, the encoder's three int32 inputs out.

`build_preprocessor` returns a plain AutoTrackable (not a Keras model) with TF Hub's Preprocessor
API (https://www.tensorflow.org/hub/common_saved_model_apis/text): `obj(sentences)`,
`obj.tokenize(sentences)`, `obj.tokenize.get_special_tokens_dict()` and
`obj.bert_pack_inputs(segments, seq_length=...)`, plus a `serving_default` signature.

Tokenisation reproduces tf-models' reference tokenizers exactly rather than tensorflow_text's
own BertTokenizer, which differs from FullTokenizer (ICU NFKC case folding instead of
`str.lower()` + accent stripping, no removal of control/format characters, a 100-byte word limit):
  * WordPiece: FullTokenizer's BasicTokenizer rules spelled out with regex ops, then
    `text.WordpieceTokenizer` (greedy longest match) on the words it produces.
  * SentencePiece: tf-models' `SentencepieceTokenizer` layer as `create_preprocessing` uses it
    (NFD, strip Mn, optional NFKC case folding, then the SentencePiece op).
Packing is tf-models' `BertPackInputs` (round-robin trimming, [CLS] a [SEP] b [SEP], padding).

Consumers must `import tensorflow_text` before loading the SavedModel: the tokenizer ops are
tensorflow_text custom ops, registered only by that import (packing is plain TensorFlow).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
import tensorflow_text as text
from tensorflow_text.python.ops.regex_split_ops import gen_regex_split_ops

from export.errors import InputError
from export.build.encoder import INPUT_NAMES
from export.vocab import TokenizerFile, TokenizerSpec, read_tokenizer_file

KINDS = ("wordpiece", "sentencepiece")
MAX_CHARS_PER_WORD = 400  # FullTokenizer's WordpieceTokenizer: longer words become [UNK]
UNKNOWN_TOKEN = "[UNK]"

# FullTokenizer's character classes as RE2 classes (tokenization.py: _is_control, _is_whitespace,
# _is_punctuation, _is_chinese_char). Dropped: NUL, U+FFFD and categories Cc/Cf except \t\n\r.
DROPPED_CHARS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\x{FFFD}]"
# Whitespace: \t\n\r and Zs; Zl/Zp too, since Python's str.split() separates words at them.
WHITESPACE_CHARS = r"[\t\n\r\p{Z}]"
PUNCTUATION_CHARS = r"[!-/:-@\[-`{-~\p{P}]"  # every non-alphanumeric ASCII symbol, and category P
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
CJK_CHARS = "[" + "".join(rf"\x{{{lo:X}}}-\x{{{hi:X}}}" for lo, hi in CJK_RANGES) + "]"

_SENTENCES_SPEC = tf.TensorSpec([None], tf.string, name="sentences")
_AutoTrackable = tf.__internal__.tracking.AutoTrackable


# ----------------------------------------------------------------------------------------------
# Text normalisation and tokenisation (graph ops)

def wordpiece_normalize(sentences: tf.Tensor, do_lower_case: bool) -> tf.Tensor:
    """FullTokenizer's BasicTokenizer before it splits: cleaning, CJK isolation and, uncased,
    lowercasing and accent stripping."""
    s = tf.strings.regex_replace(sentences, DROPPED_CHARS, "")
    s = tf.strings.regex_replace(s, WHITESPACE_CHARS, " ")
    s = tf.strings.regex_replace(s, CJK_CHARS, r" \0 ")
    if do_lower_case:
        # ICU full lowercasing, as Python's str.lower() (final sigma, U+0130 -> i + U+0307);
        # then FullTokenizer's accent stripping: NFD, drop category Mn.
        s = tf.strings.lower(s, encoding="utf-8")
        s = text.normalize_utf8(s, "NFD")
        s = tf.strings.regex_replace(s, r"\p{Mn}", "")
    return s


def wordpiece_words(normalized: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor, tf.Tensor]:
    """FullTokenizer's BasicTokenizer split of normalized [batch] strings: [batch, (words)] words
    (a word over MAX_CHARS_PER_WORD becomes [UNK]), their byte offsets, and which were too long."""
    words, starts, ends = _regex_split_with_offsets(normalized, f" +|{PUNCTUATION_CHARS}", PUNCTUATION_CHARS)
    too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
    return words.with_flat_values(tf.where(too_long, UNKNOWN_TOKEN, words.flat_values)), starts, ends, too_long


def _regex_split_with_offsets(sentences: tf.Tensor, delim: str,
                              keep: str) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """`text.regex_split_with_offsets` on [batch] strings, without its row-split validation: the op
    makes well-formed splits, and each of its three validated RaggedTensors would put three
    assertion conditionals (six functions) into every graph that tokenizes: 18 of a classifier's 38
    functions, loaded and prepared for every text signature."""
    pieces, starts, ends, splits = gen_regex_split_ops.regex_split_with_offsets(sentences, f"({delim})", f"({keep})")
    return tuple(tf.RaggedTensor.from_row_splits(values, splits, validate=False) for values in (pieces, starts, ends))


def sentencepiece_input(sentences: tf.Tensor, do_lower_case: bool) -> tf.Tensor:
    """tf-models' SentencepieceTokenizer(strip_diacritics=True) normalisation, in its order."""
    s = text.normalize_utf8(sentences, "NFD")
    s = tf.strings.regex_replace(s, r"\p{Mn}", "")
    return text.case_fold_utf8(s) if do_lower_case else s


def _with_batch_rows(tokens: tf.RaggedTensor, sentences: tf.Tensor) -> tf.RaggedTensor:
    """Pins the outer row count to the batch size (the ops lose it in shape inference)."""
    splits = tf.reshape(tokens.row_splits, [tf.shape(sentences)[0] + 1])
    return tf.RaggedTensor.from_row_splits(tokens.values, splits, validate=False)


def _row_ids(splits: tf.Tensor) -> tf.Tensor:
    """The row of each value, from the rows' `splits` (RaggedTensor.value_rowids, in a few ops
    instead of its ~70)."""
    return tf.searchsorted(splits[1:], tf.range(splits[-1]), side="right", out_type=splits.dtype)


def _flat_row_splits(ragged: tf.RaggedTensor) -> tf.Tensor:
    """Each outer row's bounds in `ragged`'s flat values: the row splits of merge_dims(1, -1),
    without its validation's assertion conditionals."""
    splits = ragged.row_splits
    for inner in ragged.nested_row_splits[1:]:  # a row's tokens: from its first word's first piece
        splits = tf.gather(inner, splits)
    return splits


def char_offsets(sentences: tf.Tensor, normalize: Callable[[tf.Tensor], tf.Tensor], starts: tf.RaggedTensor,
                 ends: tf.RaggedTensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Maps token [start, end) byte offsets in `normalize(sentences)` ([batch, (tokens)]) back to
    code-point offsets in `sentences` (Python's `sentence[start:end]`).

    Each code point is normalized alone: a sentence's normalized bytes are the concatenation of
    its code points' (lowercasing a final sigma keeps its length; NFD reorders only combining
    marks, which stay inside their cluster), so a running sum of those lengths says which code
    point produced each normalized byte. One running sum over the whole batch: a token's byte
    offset plus its sentence's bytes before it is searched there, and its sentence's first code
    point subtracted. Flat, without padding to a tensor and back. The token ids are not computed
    here.
    """
    chars = tf.strings.unicode_split(sentences, "UTF-8")
    produced = tf.cast(tf.strings.length(normalize(chars.flat_values)), tf.int64)  # bytes, per code point
    running = tf.cumsum(produced)  # the batch's normalized bytes up to the end of each code point
    sentence_of_token = _row_ids(starts.row_splits)
    first_char = tf.gather(chars.row_splits, sentence_of_token)
    before = tf.gather(tf.concat([[0], running], 0), first_char)  # the batch's bytes before the sentence
    chars_in = tf.gather(chars.row_lengths(), sentence_of_token)

    def code_point(byte_offsets):  # the code point that produced each byte, within its sentence
        found = tf.searchsorted(running, before + byte_offsets, side="right", out_type=tf.int64) - first_char
        # Clipped to the sentence, as a search of its own row would be: an empty token's end - 1
        # (SentencePiece's lone "▁" at [0, 0)) lies before it.
        return tf.cast(tf.clip_by_value(found, 0, chars_in), tf.int32)
    return (starts.with_flat_values(code_point(starts.flat_values)),
            ends.with_flat_values(code_point(ends.flat_values - 1) + 1))


class SpecialTokens(_AutoTrackable):
    """`tokenize.get_special_tokens_dict`: a callable sub-object, as in tf-models' exports."""

    def __init__(self, ids: dict[str, int]):
        self._ids = dict(ids)

    @tf.function(input_signature=[], autograph=False)
    def __call__(self):
        return {name: tf.constant(value, tf.int32) for name, value in self._ids.items()}


class _Tokenize(_AutoTrackable):
    """What both tokenizers share: `with_char_offsets` (see `_ids_and_char_offsets`) when asked for,
    as an instance function, so that exports that do not use it do not carry it."""

    def __init__(self, special_ids: dict[str, int], with_offsets: bool):
        self.get_special_tokens_dict = SpecialTokens(special_ids)
        if with_offsets:
            self.with_char_offsets = tf.function(self._ids_and_char_offsets, input_signature=[_SENTENCES_SPEC],
                                                 autograph=False)

    def trace(self) -> None:
        """Traces the entry points from eager code: a first trace from inside another function's
        graph is keyed to that graph, and saving would trace them again."""
        self.__call__.get_concrete_function()
        self.get_special_tokens_dict.__call__.get_concrete_function()
        if hasattr(self, "with_char_offsets"):
            self.with_char_offsets.get_concrete_function()

    def _ids_and_char_offsets(self, sentences):
        raise NotImplementedError


class WordpieceTokenize(_Tokenize):
    """`obj.tokenize` for a WordPiece vocab: [batch] -> int32 [batch, (words), (wordpieces)]."""

    def __init__(self, vocab_file: tf.saved_model.Asset, do_lower_case: bool, special_ids: dict[str, int],
                 with_offsets: bool = False):
        # The table reads the asset when the SavedModel is loaded. Anonymous: a shared table
        # would be named after the file's host path, which would then be saved in the graph.
        initializer = tf.lookup.TextFileInitializer(
            vocab_file, key_dtype=tf.string, key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64, value_index=tf.lookup.TextFileIndex.LINE_NUMBER)
        self.vocab_table = tf.lookup.StaticHashTable(initializer, default_value=-1,
                                                     experimental_is_anonymous=True)
        self._do_lower_case = do_lower_case
        # Words longer than MAX_CHARS_PER_WORD are [UNK] already; no byte limit below that.
        self._wordpiece = text.WordpieceTokenizer(
            self.vocab_table, suffix_indicator="##", max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int64, unknown_token=UNKNOWN_TOKEN)
        super().__init__(special_ids, with_offsets)

    def _normalize(self, sentences: tf.Tensor) -> tf.Tensor:
        return wordpiece_normalize(sentences, self._do_lower_case)

    @tf.function(input_signature=[_SENTENCES_SPEC], autograph=False)
    def __call__(self, sentences):
        words, _, _, _ = wordpiece_words(self._normalize(sentences))
        pieces = self._wordpiece.tokenize(words)
        return _with_batch_rows(tf.cast(pieces, tf.int32), sentences)

    def _ids_and_char_offsets(self, sentences):
        """int32 [batch, (wordpieces)] ids, as `__call__` gives them with the words merged, and
        each piece's [start, end) code-point offsets in its sentence (a too-long word's [UNK]
        spans the word)."""
        words, word_starts, word_ends, too_long = wordpiece_words(self._normalize(sentences))
        pieces, piece_starts, piece_ends = self._wordpiece.tokenize_with_offsets(words)
        word_of_piece = _row_ids(pieces.values.row_splits)  # pieces: [batch, (words), (pieces)]
        sentence_splits = _flat_row_splits(pieces)

        def merged(flat_values):  # [batch, (pieces)]
            return tf.RaggedTensor.from_row_splits(flat_values, sentence_splits, validate=False)

        def in_sentence(piece_offsets, word_bound):  # -> byte offsets in the normalized sentence
            inside = tf.gather(word_starts.flat_values, word_of_piece) + piece_offsets.flat_values
            whole = tf.gather(word_bound.flat_values, word_of_piece)
            return merged(tf.where(tf.gather(too_long, word_of_piece), whole, inside))
        starts, ends = char_offsets(sentences, self._normalize, in_sentence(piece_starts, word_starts),
                                    in_sentence(piece_ends, word_ends))
        ids = _with_batch_rows(merged(tf.cast(pieces.flat_values, tf.int32)), sentences)
        return {"ids": ids, "start": _with_batch_rows(starts, sentences), "end": _with_batch_rows(ends, sentences)}


class SentencepieceTokenize(_Tokenize):
    """`obj.tokenize` for a SentencePiece model: [batch] -> int32 [batch, (pieces)].

    tensorflow_text's SentencePiece kernel takes the model proto as a string *attribute* of the
    op that creates its resource (SentencepieceOp), not as a tensor, so it cannot be read from
    the asset file at load time: the proto is embedded in the graph (as tf-models does), and
    the same file is attached as the `sp_model_file` asset for consumers.
    """

    def __init__(self, model_proto: bytes, do_lower_case: bool, special_ids: dict[str, int],
                 with_offsets: bool = False):
        self._do_lower_case = do_lower_case
        self._sentencepiece = text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)
        super().__init__(special_ids, with_offsets)

    def _normalize(self, sentences: tf.Tensor) -> tf.Tensor:
        return sentencepiece_input(sentences, self._do_lower_case)

    @tf.function(input_signature=[_SENTENCES_SPEC], autograph=False)
    def __call__(self, sentences):
        pieces = self._sentencepiece.tokenize(self._normalize(sentences))
        return _with_batch_rows(pieces, sentences)

    def _ids_and_char_offsets(self, sentences):
        """int32 [batch, (pieces)] ids and each piece's [start, end) code-point offsets in its sentence."""
        pieces, starts, ends = self._sentencepiece.tokenize_with_offsets(self._normalize(sentences))
        starts, ends = char_offsets(sentences, self._normalize, starts, ends)
        return {"ids": _with_batch_rows(pieces, sentences), "start": _with_batch_rows(starts, sentences),
                "end": _with_batch_rows(ends, sentences)}


# ----------------------------------------------------------------------------------------------
# Packing

def _flat_segment(segment: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A [batch, (tokens)] or [batch, (words), (pieces)] segment as its int32 flat values, each
    row's first index into them, and each row's token count."""
    splits = tf.cast(_flat_row_splits(segment), tf.int32)
    return tf.cast(segment.flat_values, tf.int32), splits[:-1], splits[1:] - splits[:-1]


def round_robin_kept(lengths: tf.Tensor, budget) -> tf.Tensor:
    """How many tokens of each segment (int32 `lengths` [batch, segments]) round-robin trimming
    keeps within `budget`, as text.RoundRobinTrimmer (tf-models' default) does: one slot at a
    time, segment after segment, skipping full segments.

    In closed form: after r whole rounds a segment holds min(length, r); r is the most rounds
    the budget pays for (at most the longest length), and the slots left over go one each to the
    first segments still longer than r.
    """
    budget = tf.maximum(tf.cast(budget, tf.int32), 0)
    rounds = tf.range(1, budget + 1)  # r <= budget, since r rounds fill at least r slots
    filled = tf.reduce_sum(tf.minimum(lengths[:, None, :], rounds[None, :, None]), axis=2)  # [batch, r]
    affordable = (filled <= budget) & (rounds[None, :] <= tf.reduce_max(lengths, axis=1, keepdims=True))
    whole = tf.reduce_sum(tf.cast(affordable, tf.int32), axis=1, keepdims=True)  # [batch, 1]
    kept = tf.minimum(lengths, whole)
    left = budget - tf.reduce_sum(kept, axis=1, keepdims=True)
    longer = tf.cast(lengths > whole, tf.int32)
    return kept + longer * tf.cast(tf.cumsum(longer, axis=1, exclusive=True) < left, tf.int32)


class Packing:
    """Where packing at `seq_length` puts segments' tokens: `start a end b end` then padding (tf-models'
    BertPackInputs with round-robin trimming), [batch, width] with width `seq_length` or, with
    `to_longest`, the longest packed row's length. `inputs` gives the encoder's three inputs;
    `values` lays out any per-token values of the same segments' shape (e.g. character offsets).

    Plain TensorFlow ops, without assertions: TF Text's trimmer, combiner and padder put about 300
    nodes and 30 assertion functions into a graph per call, which its trace, save, load and first
    call pay for (the classifier's serve_text_pair: 861 nodes with them, 244 without)."""

    def __init__(self, segments: list[tf.RaggedTensor], seq_length, to_longest: bool = False):
        seq_length = tf.cast(seq_length, tf.int32)
        flats = [_flat_segment(s) for s in segments]
        kept = round_robin_kept(tf.stack([length for _, _, length in flats], axis=1), seq_length - (len(segments) + 1))
        ends = tf.cumsum(kept + 1, axis=1) + 1  # [batch, segments]: one past each segment's end token
        self._firsts = ends - kept - 1  # each segment's first position
        total = tf.minimum(ends[:, -1], seq_length)
        width = tf.reduce_max(tf.concat([[0], total], axis=0)) if to_longest else seq_length
        self._positions = tf.range(width)[None, :]  # [1, width]
        self._kept, self._row_starts = kept, [first for _, first, _ in flats]
        self._ids = [values for values, _, _ in flats]
        self.mask = tf.cast(self._positions < total[:, None], tf.int32)
        type_ids = tf.zeros_like(self.mask)
        for i in range(1, len(segments)):  # segment i and its end token: type id i
            type_ids += i * tf.cast(self._positions >= self._firsts[:, i:i + 1], tf.int32) * self.mask
        self.type_ids = type_ids

    def values(self, segments: list[tf.RaggedTensor], start_value: int, end_value: int, pad_value: int) -> tf.Tensor:
        """int32 [batch, width]: per-token values of segments shaped as this Packing's, at their
        tokens' packed positions."""
        return self._lay_out([tf.cast(s.flat_values, tf.int32) for s in segments], start_value, end_value, pad_value)

    def inputs(self, start_of_sequence_id: int, end_of_segment_id: int, padding_id: int) -> dict[str, tf.Tensor]:
        """The encoder's three int32 inputs [batch, width] of this Packing's segments."""
        word_ids = self._lay_out(self._ids, start_of_sequence_id, end_of_segment_id, padding_id)
        return dict(zip(INPUT_NAMES, (word_ids, self.mask, self.type_ids)))

    def _lay_out(self, flat_values: list[tf.Tensor], start_value: int, end_value: int, pad_value: int) -> tf.Tensor:
        packed = tf.where(self._positions == 0, start_value, pad_value) + tf.zeros_like(self.mask)
        for i, values in enumerate(flat_values):
            flat = tf.concat([values, [pad_value]], axis=0)  # never an empty gather
            first, kept = self._firsts[:, i:i + 1], self._kept[:, i:i + 1]
            inside = (self._positions >= first) & (self._positions < first + kept)
            index = tf.where(inside, self._row_starts[i][:, None] + self._positions - first, tf.shape(flat)[0] - 1)
            packed = tf.where(inside, tf.gather(flat, index), packed)
            packed = tf.where(self._positions == first + kept, end_value, packed)
        return packed


def pack_inputs(segments: list[tf.RaggedTensor], seq_length, start_of_sequence_id: int, end_of_segment_id: int,
                padding_id: int, to_longest: bool = False) -> dict[str, tf.Tensor]:
    """tf-models' BertPackInputs.bert_pack_inputs with the round-robin trimmer: the encoder's three
    int32 inputs, [batch, seq_length] (with `to_longest`, cut to the longest packed row)."""
    return Packing(segments, seq_length, to_longest).inputs(start_of_sequence_id, end_of_segment_id, padding_id)


def packing_ids(special_ids: dict[str, int]) -> tuple[int, int, int]:
    """([CLS], [SEP], padding) ids, in pack_inputs' argument order."""
    return special_ids["start_of_sequence_id"], special_ids["end_of_segment_id"], special_ids["padding_id"]


class BertPackInputs(_AutoTrackable):
    """`obj.bert_pack_inputs(segments, seq_length=default)`: 1 or 2 int32 ragged segments of
    ragged rank 1 or 2 -> the encoder's three int32 [batch, seq_length] inputs."""

    def __init__(self, special_ids: dict[str, int], default_seq_length: int):
        ids = packing_ids(special_ids)

        # An instance function, so that seq_length's default is this export's (as tf-models'
        # BertPackInputsSavedModelWrapper); traced once per segment count and ragged rank.
        @tf.function(autograph=False)
        def call(inputs, seq_length=default_seq_length):
            return pack_inputs(list(inputs), seq_length, *ids)

        self.__call__ = call
        for ragged_rank in (1, 2):
            for num_segments in (1, 2):
                call.get_concrete_function(
                    [tf.RaggedTensorSpec([None] * (ragged_rank + 1), tf.int32)] * num_segments,
                    seq_length=tf.TensorSpec([], tf.int32))


# ----------------------------------------------------------------------------------------------
# The exported object

class BertPreprocessor(_AutoTrackable):
    """The SavedModel's root: `obj(sentences)` packs one segment at the default length."""

    def __init__(self, tokenize, special_ids: dict[str, int], default_seq_length: int):
        self.tokenize = tokenize
        self.bert_pack_inputs = BertPackInputs(special_ids, default_seq_length)
        self._pack_ids = packing_ids(special_ids)
        self._default_seq_length = default_seq_length

    @tf.function(input_signature=[_SENTENCES_SPEC], autograph=False)
    def __call__(self, sentences):
        return pack_inputs([self.tokenize(sentences)], self._default_seq_length, *self._pack_ids)


def build_tokenize(spec: TokenizerSpec, with_offsets: bool = False
                   ) -> tuple[WordpieceTokenize | SentencepieceTokenize, tf.saved_model.Asset, dict[str, int]]:
    """`spec`'s tokenize object (with `with_offsets`, also `tokenize.with_char_offsets`), the Asset an
    export carries it as (`vocab_file` or `sp_model_file`), and the special token ids; a vocab
    lacking a special token is an InputError naming the file."""
    if spec.kind not in KINDS:
        raise InputError(f"tokenizer kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    special_ids = read_tokenizer_file(TokenizerFile(spec.kind, spec.path), for_lookup_table=True).special_token_ids()
    asset = tf.saved_model.Asset(spec.path)
    if spec.kind == "wordpiece":
        return WordpieceTokenize(asset, spec.do_lower_case, special_ids, with_offsets), asset, special_ids
    with open(spec.path, "rb") as f:
        return SentencepieceTokenize(f.read(), spec.do_lower_case, special_ids, with_offsets), asset, special_ids


def build_preprocessor(spec: TokenizerSpec, default_seq_length: int = 128
                       ) -> tuple[BertPreprocessor, dict[str, tf.types.experimental.ConcreteFunction]]:
    """The object to `tf.saved_model.save(obj, dir, signatures=...)` and its signatures.

    `serving_default` maps `sentences` (string [batch]) to the three int32 inputs at
    `default_seq_length`, for TF Serving, `saved_model_cli` and Keras 3's TFSMLayer.
    """
    if default_seq_length < 3:
        raise InputError(f"default_seq_length {default_seq_length} leaves no room for [CLS] a [SEP]")
    tokenize, asset, special_ids = build_tokenize(spec)
    preprocessor = BertPreprocessor(tokenize, special_ids, default_seq_length)
    setattr(preprocessor, TokenizerFile(spec.kind, spec.path).attribute, asset)
    preprocessor.do_lower_case = tf.Variable(spec.do_lower_case, trainable=False, name="do_lower_case")
    return preprocessor, {"serving_default": preprocessor.__call__.get_concrete_function()}


def export_preprocessor(spec: TokenizerSpec, export_dir: str, default_seq_length: int = 128) -> str:
    """Builds and saves the preprocessor at `export_dir`; returns `export_dir`."""
    preprocessor, signatures = build_preprocessor(spec, default_seq_length)
    tf.saved_model.save(preprocessor, export_dir, signatures=signatures)
    return export_dir
