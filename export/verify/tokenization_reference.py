"""The independent pure-Python reference for the preprocessor: no TensorFlow op computes any of it.

* WordPiece: BERT's `FullTokenizer`, the tokenizer the checkpoints were trained with (google-research
  tokenization.py, as tf-models-official ships it), written here from its rules so that a plain
  install needs no tf-models; the test suite checks it against tf-models' own on the corpus.
* SentencePiece: the `sentencepiece` library on text normalised as tf-models' SentencepieceTokenizer
  layer does (NFD, drop Mn, then NFKC case folding), written here with `unicodedata`.
* Packing: BERT's input layout, written from tf-models' documented behaviour (round-robin
  truncation, [CLS] a [SEP] b [SEP], type ids 0/1, mask, padding), not by calling its code.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Sequence

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt): NFKC_Casefold deletes these.
DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)


def _is_default_ignorable(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in DEFAULT_IGNORABLE_RANGES)


def nfkc_casefold(text: str) -> str:
    """Unicode's toNFKC_Casefold: drop default ignorables, then NFKC and full case folding
    until stable (one round of casefold can expose new compatibility forms and vice versa)."""
    text = "".join(c for c in text if not _is_default_ignorable(c))
    while True:
        folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
        if folded == text:
            return folded
        text = folded


def sentencepiece_normalize(text: str, do_lower_case: bool) -> str:
    """tf-models' SentencepieceTokenizer(strip_diacritics=True, lower_case=do_lower_case) input."""
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return nfkc_casefold(text) if do_lower_case else text


def load_vocab(vocab_path: str) -> dict[str, int]:
    """FullTokenizer's vocab: one token a line, stripped, numbered in file order."""
    with open(vocab_path, encoding="utf-8") as f:
        return {line.strip(): index for index, line in enumerate(f)}


def _is_control(char: str) -> bool:  # \t \n \r count as whitespace instead
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_punctuation(char: str) -> bool:
    """Every ASCII symbol that is not a letter or digit, and Unicode category P."""
    code = ord(char)
    return (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
            or unicodedata.category(char).startswith("P"))


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in CJK_IDEOGRAPH_RANGES)


# The CJK Unified Ideographs blocks (and compatibility ideographs) FullTokenizer isolates.
CJK_IDEOGRAPH_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def basic_tokenize(text: str, do_lower_case: bool) -> list[str]:
    """FullTokenizer's BasicTokenizer: drop NUL, U+FFFD and control/format characters, map
    whitespace to spaces, isolate CJK ideographs, split on whitespace; per word, when uncased,
    lowercase and strip accents (NFD, drop Mn); then split off every punctuation character."""
    cleaned = "".join(" " if _is_whitespace(c) else c for c in text
                      if not (c in "\x00\ufffd" or _is_control(c)))
    spaced = "".join(f" {c} " if _is_cjk(c) else c for c in cleaned)
    words = []
    for word in spaced.split():  # str.split: also Zl, Zp, which FullTokenizer's whitespace_tokenize splits on
        if do_lower_case:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece = ""
        for char in word:
            if _is_punctuation(char):
                words += [piece, char] if piece else [char]
                piece = ""
            else:
                piece += char
        if piece:
            words.append(piece)
    return " ".join(words).split()


def wordpiece_split(word: str, vocab: dict[str, int], max_chars: int = 400, unknown: str = "[UNK]") -> list[str]:
    """Greedy longest-match-first WordPiece: each piece after the first is tried with "##"; a word
    with an unmatchable rest, or longer than `max_chars` (the installed FullTokenizer's limit), is
    `unknown`."""
    if len(word) > max_chars:
        return [unknown]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            candidate = word[start:end] if start == 0 else "##" + word[start:end]
            if candidate in vocab:
                pieces.append(candidate)
                start = end
                break
        else:
            return [unknown]
    return pieces


def wordpiece_tokenizer(vocab_path: str, do_lower_case: bool) -> Callable[[str], list[int]]:
    """sentence -> ids, as FullTokenizer(vocab_path, do_lower_case) gives them."""
    vocab = load_vocab(vocab_path)
    return lambda sentence: [vocab[piece] for word in basic_tokenize(sentence, do_lower_case)
                             for piece in wordpiece_split(word, vocab)]


def sentencepiece_tokenizer(model_path: str, do_lower_case: bool) -> Callable[[str], list[int]]:
    """sentence -> ids, by the sentencepiece library after tf-models' normalisation."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
    return lambda sentence: processor.encode(sentencepiece_normalize(sentence, do_lower_case), out_type=int)


def reference_tokenizer(kind: str, path: str, do_lower_case: bool) -> Callable[[str], list[int]]:
    if kind == "wordpiece":
        return wordpiece_tokenizer(path, do_lower_case)
    if kind == "sentencepiece":
        return sentencepiece_tokenizer(path, do_lower_case)
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def special_token_ids(kind: str, path: str) -> dict[str, int]:
    """tf-models' get_special_tokens_dict() for the vocab or model at `path`, looked up in Python."""
    if kind == "wordpiece":
        vocab = load_vocab(path)
        found = {"start_of_sequence_id": vocab.get("[CLS]"), "end_of_segment_id": vocab.get("[SEP]"),
                 "padding_id": vocab.get("[PAD]"), "mask_id": vocab.get("[MASK]")}
        size = len(vocab)
    else:
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=path)

        def find(*pieces: str) -> int | None:
            ids = [processor.piece_to_id(p) for p in pieces]
            return next((i for i, p in zip(ids, pieces) if processor.id_to_piece(i) == p), None)
        found = {"start_of_sequence_id": find("[CLS]"), "end_of_segment_id": find("[SEP]"),
                 "padding_id": find("<pad>", "[PAD]"), "mask_id": find("[MASK]")}
        size = processor.get_piece_size()
    return {"vocab_size": size} | {key: value for key, value in found.items() if value is not None}


def round_robin_lengths(lengths: Sequence[int], budget: int) -> list[int]:
    """Hands out `budget` slots one at a time, segment after segment, skipping full segments."""
    kept = [0] * len(lengths)
    budget = max(budget, 0)
    while budget > 0 and any(k < n for k, n in zip(kept, lengths)):
        for i, n in enumerate(lengths):
            if budget > 0 and kept[i] < n:
                kept[i] += 1
                budget -= 1
    return kept


def pack(segments: Sequence[Sequence[int]], seq_length: int, start_of_sequence_id: int,
         end_of_segment_id: int, padding_id: int) -> tuple[list[int], list[int], list[int]]:
    """One example's (input_word_ids, input_mask, input_type_ids), each of length seq_length.

    Segments are truncated round-robin to fit seq_length with one [CLS] and one [SEP] per segment;
    the i-th segment and its [SEP] get type id i.
    """
    kept = round_robin_lengths([len(s) for s in segments], seq_length - (len(segments) + 1))
    ids, types = [start_of_sequence_id], [0]
    for type_id, (segment, n) in enumerate(zip(segments, kept)):
        ids += list(segment[:n]) + [end_of_segment_id]
        types += [type_id] * (n + 1)
    ids, types = ids[:seq_length], types[:seq_length]
    padding = seq_length - len(ids)
    return ids + [padding_id] * padding, [1] * len(ids) + [0] * padding, types + [0] * padding
