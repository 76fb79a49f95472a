"""Verification of an exported preprocessor against the pure-Python reference, in a fresh process.

`verify_preprocessor` loads the SavedModel as a consumer does (`import tensorflow_text`, then
`tf.saved_model.load`) and checks, sentence by sentence:
  * `tokenize`: the flattened ids equal the reference tokenizer's (FullTokenizer, or the
    sentencepiece library after tf-models' normalisation); the special-tokens dict equals the
    reference's lookup;
  * packing: the root call, `serving_default`, and `bert_pack_inputs` with two segments (ragged
    rank as tokenised and merged to rank 1) at short lengths that force truncation, against the
    reference packer.
Agreement must be exact. (A unigram SentencePiece model can score two segmentations equally, e.g.
'::' + ':' versus ':' + '::'; tensorflow_text 2.20's SentencePiece op breaks such ties as the
sentencepiece library up to 0.2.1 does, and 0.2.2 changed it: requirements.lock pins 0.2.1.)
`verify_preprocessor_in_fresh_process` runs it as `python -m export.verify.preprocessing`, whose
last output line is the report as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from export.errors import InputError
from export.process import run_verifier_process, verifier_process_main
from export.vocab import TokenizerSpec

PAIR_SEQ_LENGTHS = (5, 12)  # two segments at these lengths: truncation of either or both

# Hard cases, one or more per rule of the reference tokenizers' normalisation.
BUILTIN_SENTENCES: tuple[str, ...] = (
    "",
    " ",
    "\t \u00a0\u3000 ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Crème brûlée, naïve café, résumé, Ångström, Øresund.",
    "Combining e\u0301 n\u0303 a\u030a versus precomposed é ñ å.",
    "\u0301 a standalone accent, and x\u0323\u0307 stacked marks",
    "Die Straße, GROSSE STRASSE, ẞ, Fußgänger.",
    "İstanbul, DİYARBAKIR, ıspanak, I\u0307.",
    "ΟΔΟΣ ΣΟΦΟΚΛΕΟΥΣ, ΑΣ., aΣb, Σ, ΟΔΥΣΣΕΥΣ's",
    "ǅ ǈ ǋ titlecase digraphs, Kelvin \u212a, Ohm \u2126, long s ſ",
    "Ligatures ﬁnance ﬂower ﬀ ﬃ ﬆ",
    "Full-width Ｈｅｌｌｏ，ｗｏｒｌｄ！ＡＢＣ１２３ and half-width ｶﾀｶﾅ",
    "Superscripts x² ³, fractions ½ ⅓, Roman Ⅻ ⅻ, circled ① Ⓐ, squared ㎏",
    "我爱北京天安门，天安门上太阳升。",
    "東京は日本の首都です。カタカナ「テスト」（括弧）",
    "𠮷野家 and CJK extension B 𪚥, compatibility ideographs 豈 更 車",
    "안녕하세요! 서울은 대한민국의 수도입니다.",
    "ภาษาไทยไม่มีการเว้นวรรค",
    "मराठी हिन्दी: नमस्ते, आप कैसे हैं?",
    "مرحبا بالعالم، اللُّغَةُ العَرَبِيَّةُ",
    "בְּרֵאשִׁית בָּרָא, שלום",
    "Москва, Київ, ЁЛКА и ёлка",
    "Persian ZWNJ: می\u200cشود",
    "Family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and thumbs \U0001f44d\U0001f3fd",
    "Flags \U0001f1e9\U0001f1ea \U0001f3f3\ufe0f\u200d\U0001f308 keycap 1\ufe0f\u20e3 heart \u2764\ufe0f",
    "Scotland \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f tag characters",
    "control \x01\x02 chars \x07 bell \x1b[31m ANSI \x7f DEL \x85 NEL \x9f",
    "NUL\x00inside and replacement \ufffd char",
    "form\x0cfeed vertical\x0btab \x1cfile\x1funit",
    "tab\tnewline\ncarriage\rreturn",
    "soft\u00adhyphen and hy\u00adphen\u00adated",
    "zero\u200bwidth space, zero\u200dwidth joiner, word\u2060joiner, \ufeffBOM",
    "bidi \u200e\u200f \u202aembedded\u202c \u2066isolated\u2069",
    "non\u00a0breaking space and ideographic\u3000space",
    "em\u2003space thin\u2009space narrow\u202fnbsp ogham\u1680mark",
    "line\u2028separator and paragraph\u2029separator",
    "private use \ue000 and variation selector 葛\U000e0100",
    "Punctuation runs!!! ??? ... --- *** ### $$$ ^^^ ``` ~~~ ||| @@@",
    "Unicode punctuation ‘a’ “b” «c» ‹d› — – ‐ … ‰ † • ※ ‼ ¿ ¡ 、。",
    "Symbols $ + < = > ^ ` | ~ © ® ™ ° ± € £ ¥ ₿",
    "[CLS] [SEP] [PAD] [MASK] [UNK] <pad> <s> </s> ##ing ##",
    "[CLS]packed[SEP]by hand[SEP]",
    "https://example.com/a/b?c=1&d=ü#frag first.last+tag@example.co.uk",
    "def f(x): return {'a': [1, 2]}[x]  # code",
    "3.14159 2,718 1e10 -42 0x1F 1_000_000 12:30 50% $1,234.56",
    "Don't can't won't y'all rock'n'roll",
    "Hyphen-ated under_score CamelCase",
    "x" * 101,
    "é" * 50 + "a",
    "ß" * 120,
    "a" * 201,
    "Supercalifragilisticexpialidocious" * 6,
    "ab" * 200,
    "ab" * 200 + "c",
    "word " + "Ä" * 401 + " end",
    "中" * 300,
    "One sentence that is long enough to need truncation at short sequence lengths, "
    "with many ordinary English words in it.",
    "Zalgo Z\u0335\u0321a\u0338\u031bl\u0334g\u0336o\u0337",
)


@dataclasses.dataclass
class PreprocessingReport:
    passed: bool
    sentences_checked: int
    tokenize_agree: int   # sentences whose exported ids equal the reference's
    tokenize_total: int
    pack_agree: int       # packed rows equal to the reference packer's
    pack_total: int
    first_mismatch: str | None

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self) | {"summary": self.summary()}

    def summary(self) -> str:
        text = (f"token ids equal the reference tokenizer's on {self.tokenize_agree}/{self.tokenize_total} "
                f"sentences, packed inputs on {self.pack_agree}/{self.pack_total} rows")
        return text if self.passed else f"{text}; first mismatch: {self.first_mismatch}"


def _shorten(values, limit: int = 24) -> str:
    values = list(values)
    return repr(values[:limit])[:-1] + (", ...]" if len(values) > limit else "]")


def check_special_tokens(tokenize, special: dict[str, int], mismatches: list[str]) -> None:
    """`tokenize.get_special_tokens_dict()` against the reference's lookup."""
    exported = {k: int(v) for k, v in tokenize.get_special_tokens_dict().items()}
    if exported != special:
        mismatches.append(f"get_special_tokens_dict: export {exported} vs reference {special}")


def compare_token_ids(what: str, tokens, sentences: list[str], tokenize_reference, mismatches: list[str]
                      ) -> tuple[int, list[list[int]]]:
    """Exported token ids (ragged [batch, ...], words merged) against the reference tokenizer's,
    sentence by sentence; appends each mismatch; returns how many agree and the reference's ids."""
    flat = tokens.merge_dims(1, -1) if tokens.ragged_rank > 1 else tokens
    exported_ids = flat.to_list()
    if len(exported_ids) != len(sentences):
        mismatches.append(f"{what}: {len(exported_ids)} rows for {len(sentences)} sentences")
    accepted: list[list[int]] = []
    agree = 0
    for i, (sentence, got) in enumerate(zip(sentences, exported_ids)):
        want = tokenize_reference(sentence)
        if got == want:
            agree += 1
        else:
            mismatches.append(f"{what}: sentence {i} {sentence[:60]!r}: export {_shorten(got)} "
                              f"vs reference {_shorten(want)}")
        accepted.append(want)
    return agree, accepted


def offsets_problem(sentence: str, starts: list[int], ends: list[int]) -> str | None:
    """What is wrong with one sentence's token offsets: [start, end) code points inside it, in order."""
    if len(starts) != len(ends):
        return f"{len(starts)} starts for {len(ends)} ends"
    if any(not 0 <= s < e <= len(sentence) for s, e in zip(starts, ends)):
        return f"offsets outside [0, {len(sentence)}]: {list(zip(starts, ends))[:6]}"
    if starts != sorted(starts):
        return "start offsets are not in order"
    return None


def check_tokenize_object(tokenize, sentences: list[str], tokenize_reference, special: dict[str, int],
                          mismatches: list[str]) -> list[str]:
    """An exported `tokenize` object against the reference: its special tokens, the ids of
    `tokenize(sentences)` and, where it has it (tagging and QA exports), of
    `tokenize.with_char_offsets`, with every sentence's offsets inside it and in order. Appends each
    mismatch; returns the agreement counts, in words."""
    import tensorflow as tf

    check_special_tokens(tokenize, special, mismatches)
    batch = tf.constant(sentences)
    agree, _ = compare_token_ids("tokenize", tokenize(batch), sentences, tokenize_reference, mismatches)
    counts = [f"{agree}/{len(sentences)} (tokenize)"]
    if hasattr(tokenize, "with_char_offsets"):
        offsets = tokenize.with_char_offsets(batch)
        with_offsets, _ = compare_token_ids("tokenize.with_char_offsets", offsets["ids"], sentences,
                                            tokenize_reference, mismatches)
        counts.append(f"{with_offsets}/{len(sentences)} (with_char_offsets)")
        for i, (sentence, starts, ends) in enumerate(zip(sentences, offsets["start"].to_list(),
                                                         offsets["end"].to_list())):
            problem = offsets_problem(sentence, starts, ends)
            if problem:
                mismatches.append(f"tokenize.with_char_offsets: sentence {i} {sentence[:40]!r}: {problem}")
    return counts


def verify_preprocessor(saved_model_dir: str, spec: TokenizerSpec,
                        sentences: list[str] | None = None) -> PreprocessingReport:
    """Compares the preprocessor at `saved_model_dir` with the Python reference for `spec`."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the custom ops before loading)

    from export.verify import tokenization_reference as reference

    sentences = list(BUILTIN_SENTENCES if sentences is None else sentences)
    if not sentences:
        raise InputError("verify_preprocessor: no sentences to check")
    loaded = tf.saved_model.load(saved_model_dir)
    tokenize_reference = reference.reference_tokenizer(spec.kind, spec.path, spec.do_lower_case)
    special = reference.special_token_ids(spec.kind, spec.path)
    pack_ids = (special["start_of_sequence_id"], special["end_of_segment_id"], special["padding_id"])
    mismatches: list[str] = []

    check_special_tokens(loaded.tokenize, special, mismatches)
    batch = tf.constant(sentences)
    tokens = loaded.tokenize(batch)
    expected_rank = 2 if spec.kind == "wordpiece" else 1
    if tokens.dtype != tf.int32 or tokens.ragged_rank != expected_rank:
        mismatches.append(f"tokenize: {tokens.dtype.name} ragged rank {tokens.ragged_rank}, "
                          f"expected int32 ragged rank {expected_rank}")
    # per sentence: the reference's ids, which packing must use
    agree, accepted = compare_token_ids("tokenize", tokens, sentences, tokenize_reference, mismatches)

    # packing
    pack_agree = pack_total = 0

    def compare(what: str, outputs: dict, segments: list[list[list[int]]], seq_length: int) -> None:
        nonlocal pack_agree, pack_total
        arrays = [np.asarray(outputs[name]) for name in ("input_word_ids", "input_mask", "input_type_ids")]
        rows = len(segments[0])
        well_formed = all(a.dtype == np.int32 and a.shape == (rows, seq_length) for a in arrays)
        for row in range(rows):
            pack_total += 1
            want = reference.pack([s[row] for s in segments], seq_length, *pack_ids)
            got = tuple(a[row].tolist() if well_formed else None for a in arrays)
            if got == tuple(want):
                pack_agree += 1
            else:
                mismatches.append(f"{what}: row {row} ({sentences[row][:40]!r}): export {_shorten(got[0] or [])} "
                                  f"vs reference {_shorten(want[0])}")

    root = loaded(batch)
    seq_length = int(np.asarray(root["input_word_ids"]).shape[-1])
    compare(f"root call (seq_length {seq_length})", root, [accepted], seq_length)
    served = loaded.signatures["serving_default"](sentences=batch)
    compare("serving_default", served, [accepted], seq_length)
    rolled = tf.concat([tokens[1:], tokens[:1]], axis=0)  # pairs (sentence i, sentence i + 1)
    second = accepted[1:] + accepted[:1]
    variants = [("as tokenized", tokens, rolled)]
    if tokens.ragged_rank > 1:
        variants.append(("merged to rank 1", tokens.merge_dims(1, -1), rolled.merge_dims(1, -1)))
    for name, first_segment, second_segment in variants:
        for length in PAIR_SEQ_LENGTHS:
            packed = loaded.bert_pack_inputs([first_segment, second_segment], seq_length=tf.constant(length))
            compare(f"bert_pack_inputs 2 segments {name}, seq_length {length}", packed, [accepted, second], length)

    passed = not mismatches and agree == len(sentences) and pack_agree == pack_total
    return PreprocessingReport(passed, len(sentences), agree, len(sentences), pack_agree, pack_total,
                               mismatches[0] if mismatches else None)


def verify_preprocessor_in_fresh_process(saved_model_dir: str, spec: TokenizerSpec,
                                         sentences: list[str] | None = None) -> PreprocessingReport:
    """`verify_preprocessor` in a new Python process; raises VerificationError if that fails to run."""
    # Sentences travel on stdin as JSON: any text, of any size, survives unchanged.
    data = run_verifier_process("export.verify.preprocessing",
                                [saved_model_dir, spec.kind, spec.path, str(spec.do_lower_case)],
                                stdin=json.dumps(sentences))
    data.pop("summary")
    return PreprocessingReport(**data)


def _main(argv: list[str]) -> int:
    saved_model_dir, kind, path, do_lower_case = argv
    spec = TokenizerSpec(kind, path, do_lower_case == "True")
    sentences = json.loads(sys.stdin.read() or "null")
    return verifier_process_main(lambda: verify_preprocessor(saved_model_dir, spec, sentences))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
