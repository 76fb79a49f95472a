"""The WordPiece vocabulary: read, checked, and its casing inferred from its content."""

from __future__ import annotations

import dataclasses
import os
import re

from export.errors import InputError, read_input_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_RESERVED = re.compile(r"^(\[[^\]]*\]|<[^>]*>)$")  # [unused12], [CLS], <S>, ...


@dataclasses.dataclass(frozen=True)
class Vocab:
    path: str
    tokens: tuple[str, ...]

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
