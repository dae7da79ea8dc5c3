"""PreSelect (Shum et al. 2025, "Predictive Data Selection", METHODS §2): a fastText classifier of
documents whose losses predict the models' abilities.

- A family of N reference LMs is ordered by ability, S_1 < ... < S_N. Each seed document d has a
  normalized loss C_i(d) (bits per character) under every model.
- Predictive strength (their Eq. 1): Score(d) = (1/Z) * sum over i < j of 1[C_i(d) > C_j(d)],
  Z = N(N-1)/2: the share of model pairs where the weaker model has the higher loss. Ties are not
  counted (the reference code counts concordant pairs as integers, 0..Z). Score 1: the document's
  loss ranks the models exactly as their abilities do.
- Labels: positives are the documents of Score 1 (integer Z); negatives are taken from Score 0
  upwards, in equal number (ties at the edge broken by a seeded hash of the id).
- fastText with the paper's settings (Table 5): lr 0.1, dim 100, epoch 5, wordNgrams 2,
  minn = maxn = 0, newlines as spaces, labels `__label__1` / `__label__0`. The released script
  trains 3 epochs; the paper says 5, used here. Score = P(__label__1).
- The paper zeroes the weight of fastText's end-of-sentence token `</s>` (App. A.2), which
  every line carries and which otherwise adds a length bias: done here (`zero_eos`), by setting
  its input-matrix row to 0 after training, before the model is saved. (fastText still counts the
  token in the average of a line's vectors; only its vector is zero.)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ScorerError
from core.params import param

from . import registry
from .base import FastTextClassifier, ScorerSpec, fasttext_quiet, no_options
from .dclm import bucket_for_file

POS = "__label__1"
NEG = "__label__0"
EOS = "</s>"


def to_line(text: str) -> str:
    """Newlines as spaces (PreSelect's training and, through datatrove with
    newline_replacement=" ", its scoring)."""
    return (text or "").replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


def concordant_pairs(losses: np.ndarray) -> np.ndarray:
    """Per document (column), the number of model pairs i < j with losses[i] > losses[j], the
    rows ordered from the least to the most able model. Ties count for nothing."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] < 2:
        raise ValueError("losses: one row per model (at least 2), one column per document")
    out = np.zeros(losses.shape[1], dtype=np.int64)
    for i, j in itertools.combinations(range(losses.shape[0]), 2):
        out += losses[i] > losses[j]
    return out


def pairs(n_models: int) -> int:
    return n_models * (n_models - 1) // 2


def predictive_strength(losses: np.ndarray) -> np.ndarray:
    """Score(d) in [0, 1] of PreSelect's Eq. 1 (see `concordant_pairs`)."""
    return concordant_pairs(losses) / pairs(np.asarray(losses).shape[0])


def pick_labels(counts: np.ndarray, n_models: int, tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positive indices, negative indices): every document with all pairs concordant, and as
    many from the lowest counts upwards (ties at the edge in `tiebreak` order, else index order)."""
    counts = np.asarray(counts)
    z = pairs(n_models)
    pos = np.flatnonzero(counts == z)
    rest = np.flatnonzero(counts < z)
    key = np.asarray(tiebreak)[rest] if tiebreak is not None else rest
    order = rest[np.lexsort((key, counts[rest]))]
    return pos, order[: len(pos)]


@dataclass(frozen=True)
class PreselectTrainParams:
    """fastText's settings for PreSelect (Shum et al. 2025, Table 5); `bucket`, `threads`, `seed`
    and `zero_eos` are Winnow's (module doc)."""

    lr: float = param(0.1, help="learning rate")
    dim: int = param(100, help="size of the word vectors")
    epoch: int = param(5, help="passes over the training file (the paper's 5; its script has 3)")
    word_ngrams: int = param(2, metavar="N", help="word n-grams")
    minn: int = param(0, metavar="N", help="shortest character n-gram (0: none)")
    maxn: int = param(0, metavar="N", help="longest character n-gram (0: none)")
    min_count: int = param(1, metavar="N", help="words seen fewer times are dropped")
    bucket: int | None = param(None, metavar="ROWS", help="hash rows for word n-grams; none: sized from the "
                               "training set's distinct bigrams, as for dclm")
    threads: int = param(1, help="fastText threads (1 trains the same model twice)")
    seed: int = param(0, help="fastText's seed")
    zero_eos: bool = param(True, help="zero the vector of fastText's </s> token (the paper's length-bias fix)")

    def __post_init__(self) -> None:
        for name in ("dim", "epoch", "word_ngrams", "min_count", "threads"):
            if getattr(self, name) < 1:
                raise ScorerError(f"preselect training: {name} must be >= 1, got {getattr(self, name)}")
        if self.minn < 0 or self.maxn < self.minn:
            raise ScorerError("preselect training: need 0 <= minn <= maxn")
        if not self.lr > 0:
            raise ScorerError(f"preselect training: lr must be > 0, got {self.lr}")


class PreselectScorer(FastTextClassifier):
    """A trained PreSelect classifier. `score` gives P(__label__1) per text as float32."""

    name = "preselect"
    positive, negative = POS, NEG
    to_line = staticmethod(to_line)
    params_class = PreselectTrainParams

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        labels, probs = self.model.predict([to_line(t) for t in texts], k=2)
        out = np.zeros(len(texts), dtype=np.float64)
        for i, (ls, ps) in enumerate(zip(labels, probs)):
            got = dict(zip(ls, ps))
            out[i] = got[POS] if POS in got else 1.0 - got.get(NEG, 1.0)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def eos_norm(self) -> float:
        """The norm of `</s>`'s input vector (0 once zeroed)."""
        wid = self.model.get_word_id(EOS)
        return float(np.linalg.norm(self.model.get_input_vector(wid))) if wid >= 0 else 0.0

    @classmethod
    def train_file(cls, path: str | Path, params: PreselectTrainParams = PreselectTrainParams()) -> "PreselectScorer":
        labels: set[str] = set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                labels.add(line.split(" ", 1)[0])
                if {POS, NEG} <= labels:
                    break
        if not {POS, NEG} <= labels:
            raise ScorerError(f"preselect training: {path} needs both {POS} and {NEG} examples")
        try:
            model = fasttext_quiet().train_supervised(
                input=str(path), lr=params.lr, dim=params.dim, epoch=params.epoch, wordNgrams=params.word_ngrams,
                minn=params.minn, maxn=params.maxn, minCount=params.min_count, loss="softmax",
                bucket=params.bucket or bucket_for_file(path), thread=params.threads, seed=params.seed, verbose=0)
        except RuntimeError as exc:
            raise ScorerError(f"preselect training diverged ({exc}); lower lr or add data") from None
        if params.zero_eos:
            wid = model.get_word_id(EOS)
            if wid >= 0:
                inp = np.array(model.get_input_matrix(), copy=True)
                inp[wid] = 0.0
                model.set_matrices(inp, np.array(model.get_output_matrix(), copy=True))
        return cls(model)

    def describe(self) -> dict:
        args = self.model.f.getArgs()
        return {"labels": sorted(self.model.get_labels()), "words": len(self.model.get_words()),
                "bucket": args.bucket, "dim": args.dim, "word_ngrams": args.wordNgrams, "epoch": args.epoch,
                "lr": args.lr, "minn": args.minn, "maxn": args.maxn, "eos_norm": round(self.eos_norm(), 6)}


def build(spec: ScorerSpec) -> PreselectScorer:
    no_options(spec)
    if not spec.model:
        raise ScorerError("preselect: needs a model file (--scorer preselect=PATH; train one with "
                          "`winnow train-scorer preselect`)")
    return PreselectScorer.load(spec.model)


registry.register(registry.ScorerKind(
    kind="preselect",
    summary="PreSelect's fastText classifier: P(the document's loss predicts ability) per document",
    build=build,
    trainer=registry.LabelledTrainer(
        params=PreselectTrainParams, positive=POS, negative=NEG, to_line=to_line,
        fit=PreselectScorer.train_file, describe=lambda scorer: scorer.describe(),
        summary="Train PreSelect's fastText classifier (Shum et al. 2025): from reference LMs and seed "
        "documents (--models DIR... or --train-models N, and --seed-docs), or from given positives and "
        "negatives. lr 0.1, dim 100, epoch 5, wordNgrams 2, minn = maxn = 0, </s> zeroed."),
))
