"""The DCLM quality classifier: a fastText binary classifier, high-quality reference text against
the raw pool (Li et al. 2024, DataComp-LM, arXiv:2406.11794, App. J.1).

- Labels `__label__hq` (positives) and `__label__cc` (negatives), one example per line.
- Text to line, at training and at scoring alike: `" ".join(text.strip().splitlines())`; no
  lowercasing, nothing else (DCLM's `quality_prediction_enrichers_calc_fasttext.py`).
- fastText defaults except `wordNgrams=2`: lr 0.1, dim 100, ws 5, epoch 5, minCount 1, softmax.
- Score = P(hq): the top-1 prediction's probability when it is `hq`, else 1 minus it.

The one setting chosen here is fastText's `bucket`, the number of hash rows shared by the word
bigrams (unigrams get rows of their own). The library default of 2,000,000 rows x dim 100 x 4
bytes is 800 MB of bigram rows, whatever the training set; DCLM keeps it for 400k documents. With
`bucket=None` Winnow counts the distinct bigrams of the training set and takes the smallest power
of two at least a quarter of that count (at most 2,000,000, at least 262,144: below it fastText
diverged at random on small sets, see MIN_BUCKET): about four
distinct bigrams per row. Most bigrams are seen once and carry little weight, so sharing rows
among them costs little, and the model shrinks with the training set (the measurement is in the
README). An explicit `bucket` wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ScorerError
from core.params import param

from . import registry
from .base import FastTextClassifier, ScorerSpec, fasttext_quiet, no_options

HQ = "__label__hq"
CC = "__label__cc"
MAX_BUCKET = 2_000_000
# Below this floor fastText 0.9.2 diverged ("Encountered NaN") at random on small sets: with
# 200 + 200 reference documents, 2 of 8 DCLM and 7 of 12 PreSelect trainings at 32,768 rows,
# none of 8 + 12 at 262,144 (and none at 2,000,000). The failures vary between identical runs
# with one thread, so they are not the data's; the floor avoids them.
MIN_BUCKET = 1 << 18
BIGRAMS_PER_ROW = 4


def to_line(text: str) -> str:
    """DCLM's text-to-line rule, used for training lines and for scoring alike."""
    return " ".join(text.strip().splitlines())


@dataclass(frozen=True)
class DclmTrainParams:
    """fastText's settings for the DCLM classifier: DCLM's (Li et al. 2024, App. J.1), which are
    fastText's defaults except wordNgrams 2; `bucket` and `threads` are Winnow's (module doc)."""

    word_ngrams: int = param(2, metavar="N", help="word n-grams (DCLM: bigrams)")
    lr: float = param(0.1, help="learning rate")
    dim: int = param(100, help="size of the word vectors")
    ws: int = param(5, help="context window (fastText's; unused by a supervised model)")
    epoch: int = param(5, help="passes over the training file")
    min_count: int = param(1, metavar="N", help="words seen fewer times are dropped")
    bucket: int | None = param(None, metavar="ROWS", help="hash rows for word n-grams; none: sized from the "
                               "training set's distinct bigrams, four per row (see README)")
    threads: int = param(2, help="fastText threads: more is faster, but only 1 trains the same model "
                         "twice (fastText's own default is cpu_count() - 1)")
    seed: int = param(0, help="fastText's seed")

    def __post_init__(self) -> None:
        for name in ("word_ngrams", "dim", "ws", "epoch", "min_count", "threads"):
            if getattr(self, name) < 1:
                raise ScorerError(f"dclm training: {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ScorerError(f"dclm training: lr must be > 0, got {self.lr}")
        if self.bucket is not None and self.bucket < 1:
            raise ScorerError(f"dclm training: bucket must be >= 1, got {self.bucket}")


class BigramCounter:
    """Counts distinct word bigrams (as fastText splits words) until the count reaches `cap`."""

    def __init__(self, cap: int = MAX_BUCKET * BIGRAMS_PER_ROW):
        self.cap = cap
        self.seen: set[int] = set()

    @property
    def full(self) -> bool:
        return len(self.seen) >= self.cap

    def add(self, line: str) -> None:
        if self.full:
            return
        words = line.split()
        self.seen.update(hash(pair) for pair in zip(words, words[1:]))

    def bucket(self) -> int:
        want = max(len(self.seen) // BIGRAMS_PER_ROW, 1)
        return int(min(MAX_BUCKET, max(MIN_BUCKET, 1 << math.ceil(math.log2(want)))))


def bucket_for_file(path: str | Path) -> int:
    """The `bucket` for a training file of `label text` lines, from its distinct word bigrams."""
    counter = BigramCounter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counter.add(line.partition(" ")[2])
            if counter.full:
                break
    return counter.bucket()


class DclmScorer(FastTextClassifier):
    """A trained DCLM classifier. `score` gives P(hq) per text as float32."""

    name = "dclm"
    positive, negative = HQ, CC
    to_line = staticmethod(to_line)
    params_class = DclmTrainParams

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        labels, probs = self.model.predict([to_line(t or "") for t in texts], k=1)
        p = np.array([row[0] if len(row) else 0.0 for row in probs], dtype=np.float64)
        top_hq = np.array([bool(row) and row[0] == HQ for row in labels])
        # fastText reports probabilities clipped just above 1 (1.00001): keep P(hq) in [0, 1].
        return np.clip(np.where(top_hq, p, 1.0 - p), 0.0, 1.0).astype(np.float32)

    @classmethod
    def train_file(cls, path: str | Path, params: DclmTrainParams = DclmTrainParams()) -> "DclmScorer":
        """Train on a fastText training file of `__label__hq ...` / `__label__cc ...` lines; `bucket`
        is sized from the file's distinct bigrams unless `params.bucket` is set."""
        labels = _labels_in(path)
        if labels != {HQ, CC}:
            missing = sorted({HQ, CC} - labels)
            raise ScorerError(f"dclm training: {path} has no {' or '.join(missing)} examples; "
                              "both positives and negatives are needed")
        ft = fasttext_quiet()
        try:
            model = ft.train_supervised(
            input=str(path), lr=params.lr, dim=params.dim, ws=params.ws, epoch=params.epoch,
            minCount=params.min_count, wordNgrams=params.word_ngrams, loss="softmax",
            bucket=params.bucket or bucket_for_file(path), thread=params.threads, seed=params.seed,
            verbose=0,
            )
        except RuntimeError as exc:  # "Encountered NaN": a tiny, perfectly separable set
            raise ScorerError(f"dclm training diverged ({exc}); with very few or trivially separable "
                              "examples, lower lr or add data") from None
        return cls(model)

    def describe(self) -> dict:
        args = self.model.f.getArgs()
        return {"labels": sorted(self.model.get_labels()), "words": len(self.model.get_words()),
                "bucket": args.bucket, "dim": args.dim, "word_ngrams": args.wordNgrams,
                "epoch": args.epoch, "lr": args.lr}


def _labels_in(path: str | Path) -> set[str]:
    found: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            found.add(line.split(" ", 1)[0])
            if {HQ, CC} <= found:
                break
    return found


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half): the chance a random positive outranks a
    random negative. NaN when either class is empty."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def build(spec: ScorerSpec) -> DclmScorer:
    no_options(spec)
    if not spec.model:
        raise ScorerError("dclm: needs a model file (--scorer dclm=PATH; train one with `winnow train-scorer dclm`)")
    return DclmScorer.load(spec.model)


registry.register(registry.ScorerKind(
    kind="dclm",
    summary="DCLM's fastText quality classifier: P(high quality) per document",
    build=build,
    trainer=registry.LabelledTrainer(
        params=DclmTrainParams, positive=HQ, negative=CC, to_line=to_line,
        fit=DclmScorer.train_file,
        describe=lambda scorer: scorer.describe(),
        summary="Train the DCLM fastText classifier (Li et al. 2024, DataComp-LM, App. J.1): "
        f"{HQ} for positives, {CC} for negatives, wordNgrams 2, lr 0.1, dim 100, epoch 5; text lines "
        "are ' '.join(text.strip().splitlines()). A held-out fraction of each side measures ROC-AUC."),
))
