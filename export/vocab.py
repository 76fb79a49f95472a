"""The tokenizer's vocabulary (a WordPiece vocab.txt or a SentencePiece .model): read, checked,
and its casing inferred from its content."""

from __future__ import annotations

import dataclasses
import os
import re

from export.errors import InputError, read_input_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_RESERVED = re.compile(r"^(\[[^\]]*\]|<[^>]*>)$")  # [unused12], [CLS], <S>, ...


WORDPIECE, SENTENCEPIECE = "wordpiece", "sentencepiece"
SP_SPECIAL_TOKENS = ("[CLS]", "[SEP]")  # BERT packing needs these; SentencePiece supplies <unk>
SP_PAD_TOKENS = ("<pad>", "[PAD]")


@dataclasses.dataclass(frozen=True)
class TokenizerFile:
    """The file a tokenizer is built from, and its SavedModel attribute (as export_tfhub names it)."""
    kind: str  # WORDPIECE or SENTENCEPIECE
    path: str

    @property
    def attribute(self) -> str:
        return "vocab_file" if self.kind == WORDPIECE else "sp_model_file"

    @property
    def flag(self) -> str:
        return "--" + self.attribute


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer as the preprocessor, its builder and its verifier need it: file and casing."""
    kind: str            # WORDPIECE or SENTENCEPIECE
    path: str            # vocab.txt or SentencePiece .model
    do_lower_case: bool


@dataclasses.dataclass(frozen=True)
class Vocab:
    path: str
    tokens: tuple[str, ...]
    kind: str = WORDPIECE

    @property
    def file(self) -> TokenizerFile:
        return TokenizerFile(self.kind, self.path)

    def special_token_ids(self) -> dict[str, int]:
        """tf-models' `get_special_tokens_dict()`: vocab_size and the ids of [CLS], [SEP], the
        padding token and (when present) [MASK]. The readers below ensure the first three exist."""
        index = {token: i for i, token in enumerate(self.tokens)}
        pad = next(p for p in (("[PAD]",) if self.kind == WORDPIECE else SP_PAD_TOKENS) if p in index)
        ids = {"vocab_size": self.size, "start_of_sequence_id": index["[CLS]"],
               "end_of_segment_id": index["[SEP]"], "padding_id": index[pad]}
        if "[MASK]" in index:
            ids["mask_id"] = index["[MASK]"]
        return ids

    @property
    def size(self) -> int:
        return len(self.tokens)

    def content_is_uncased(self) -> bool:
        """True iff lowercasing changes no ordinary token (reserved ones like [CLS] aside).

        Lowercasing, not `isupper`: uncased vocabs hold symbols such as 'ℝ' that are uppercase
        letters without a lowercase form, which an uncased tokenizer keeps as they are.
        """
        return all(token == token.lower() for token in self.tokens if not _RESERVED.match(token))


def read_vocab(path: str) -> Vocab:
    """Reads a vocab.txt as tf-models' FullTokenizer does (one token a line, stripped)."""
    name = os.path.basename(path) or path
    text = read_input_text(path, "--vocab_file")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    tokens = tuple(line.strip() for line in lines)
    if not tokens:
        raise InputError(f"{name}: the vocabulary is empty")
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in seen:
            raise InputError(f"{name}: token {token!r} appears twice (lines {seen[token] + 1} and {index + 1})")
        seen[token] = index
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise InputError(f"{name}: special token(s) {', '.join(missing)} missing")
    return Vocab(path=path, tokens=tokens)


def require_unpadded_lines(vocab: Vocab) -> None:
    """FullTokenizer strips each vocab line; TF's text-file lookup table (the preprocessor's) does
    not, so a line with surrounding whitespace (CRLF endings...) would tokenise differently there."""
    lines = read_input_text(vocab.path, "--vocab_file").split("\n")
    for number, line in enumerate(lines[:vocab.size], 1):
        if line != line.strip():
            raise InputError(f"{os.path.basename(vocab.path)}: line {number} ({line!r}) has surrounding whitespace "
                             "(CRLF line endings?); TF's lookup table would not strip it")


def read_sp_model(path: str) -> Vocab:
    """Reads a SentencePiece model's pieces (with the `sentencepiece` library, as tf-models does)."""
    import sentencepiece

    name = os.path.basename(path) or path
    if not os.path.isfile(path):
        raise InputError(f"--sp_model_file: {path} does not exist" if not os.path.exists(path)
                         else f"--sp_model_file: {path} is not a file")
    processor = sentencepiece.SentencePieceProcessor()
    try:
        with open(path, "rb") as f:
            processor.LoadFromSerializedProto(f.read())
    except (OSError, RuntimeError) as e:
        raise InputError(f"{name}: not a SentencePiece model ({str(e).splitlines()[0] if str(e) else e})") from e
    tokens = tuple(processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    missing = [t for t in SP_SPECIAL_TOKENS if processor.piece_to_id(t) == processor.unk_id()]
    if not any(processor.piece_to_id(t) != processor.unk_id() for t in SP_PAD_TOKENS):
        missing.append(" or ".join(SP_PAD_TOKENS))
    if missing:
        raise InputError(f"{name}: special piece(s) {', '.join(missing)} missing (BERT inputs need them; train "
                         "with --user_defined_symbols=[CLS],[SEP],[MASK] and --pad_id)")
    return Vocab(path=path, tokens=tokens, kind=SENTENCEPIECE)


def read_tokenizer_file(file: TokenizerFile, for_lookup_table: bool = False) -> Vocab:
    """The WordPiece vocab or SentencePiece model `file` names, checked. `for_lookup_table` (the
    preprocessor's case) also refuses vocab lines TF's lookup table would read differently."""
    if file.kind == SENTENCEPIECE:
        return read_sp_model(file.path)
    vocab = read_vocab(file.path)
    if for_lookup_table:
        require_unpadded_lines(vocab)
    return vocab


@dataclasses.dataclass(frozen=True)
class CasingDecision:
    do_lower_case: bool
    how: str  # "flag", "flag (contradicts vocab content)" or "inferred from vocab content"


def decide_do_lower_case(vocab: Vocab, flag_value: bool | None,
                         tokenizer_config: tuple[str, bool] | None = None) -> tuple[CasingDecision, str | None]:
    """Decides casing: the flag, else the checkpoint's tokenizer_config.json ((file name, value)),
    else the vocab's content. Returns the decision and, when the source contradicts the vocab's
    content, a warning."""
    uncased = vocab.content_is_uncased()
    looks = "uncased" if uncased else "cased"
    if flag_value is not None:
        value, source, how = flag_value, f"--do_lower_case={flag_value}", "flag"
    elif tokenizer_config is not None:
        name, value = tokenizer_config
        source, how = f"{name} (do_lower_case={value})", f"from {name}"
    else:
        kind = "uncased (lowercasing changes no ordinary token)" if uncased else "cased (tokens with uppercase letters)"
        return CasingDecision(uncased, f"inferred from vocab content: {kind}"), None
    if value != uncased:
        warning = (f"{source} contradicts {os.path.basename(vocab.path)}, whose content looks {looks}; "
                   f"keeping {how}")
        return CasingDecision(value, f"{how} (contradicts vocab content)"), warning
    return CasingDecision(value, f"{how} (agrees with vocab content)"), None
