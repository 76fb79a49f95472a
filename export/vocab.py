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
        """True iff no ordinary token (not a [reserved] one) holds an uppercase letter."""
        for token in self.tokens:
            if _RESERVED.match(token):
                continue
            if any(ch.isupper() for ch in token):
                return False
        return True


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


def decide_do_lower_case(vocab: Vocab, flag_value: bool | None) -> tuple[CasingDecision, str | None]:
    """Returns the decision and, when the explicit flag contradicts the vocab, a warning."""
    uncased = vocab.content_is_uncased()
    if flag_value is None:
        kind = "uncased (no uppercase letters in ordinary tokens)" if uncased else "cased (uppercase letters found)"
        return CasingDecision(uncased, f"inferred from vocab content: {kind}"), None
    if flag_value != uncased:
        warning = (f"--do_lower_case={flag_value} contradicts {os.path.basename(vocab.path)}, whose content looks "
                   f"{'uncased' if uncased else 'cased'}; keeping the flag")
        return CasingDecision(flag_value, "flag (contradicts vocab content)"), warning
    return CasingDecision(flag_value, "flag (agrees with vocab content)"), None
