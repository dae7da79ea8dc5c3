"""Perplexity under a reference LM: bits per byte (or per character) of each document.

The score is the document's summed next-token loss under a model from `winnow train-lm`
(`filters/lm.py`: each document on its own, long documents in strided windows), divided by ln 2
and by the document's UTF-8 bytes (``unit = "byte"``, the default) or characters
(``unit = "char"``). Unlike the other scorers, **lower is more like the reference text**, so
select with ``order = "low"``, a CCNet bucket or an Ankner rule (`pipelines/select.py`).

Two ways to pick the reference text (README, "Perplexity"):

- CCNet (Wenzek et al. 2020): a model of high-quality text (their Wikipedia; here the reference
  set), keep the low-perplexity head (below the 30th percentile) or head and middle;
- Ankner et al. 2024: a model trained on one half of the pool scores the other half, in two
  folds (`winnow train-lm --fold K/2`, and this scorer's `folds` option), then keep low, medium
  or high perplexity at a rate.

Options: ``unit`` (byte | char), ``stride`` (window step, default half the context),
``batch_tokens``, and ``folds`` (two model paths: the document's fold, a seeded hash of its
text, picks the model trained on the other fold; `model` is then not used).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xxhash

from core.errors import ScorerError

from . import registry
from .base import ScorerSpec, no_options
from .lm import BATCH_TOKENS, ReferenceLM, bits_per, document_nats, lm_file, load_lm

UNITS = ("byte", "char")
FOLD_SEED = 42   # Spark's xxhash64 seed: F.xxhash64(text) is this hash, as a signed long


def fold_of(text: str, folds: int = 2) -> int:
    """The fold of a document, from xxh64 of its UTF-8 text (its id is not in the scorer's
    reach): the same split `winnow train-lm --fold` makes in Spark, pmod(xxhash64(text), 2)."""
    h = xxhash.xxh64_intdigest((text or "").encode("utf-8"), seed=FOLD_SEED)
    return (h - (1 << 64) if h >= 1 << 63 else h) % folds


class PerplexityScorer:
    name = "perplexity"

    def __init__(self, lms: list[ReferenceLM], unit: str = "byte", stride: int | None = None,
                 batch_tokens: int = BATCH_TOKENS):
        if unit not in UNITS:
            raise ScorerError(f"perplexity: unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.lms, self.unit, self.stride, self.batch_tokens = lms, unit, stride, batch_tokens

    def nats(self, texts: Sequence[str]) -> np.ndarray:
        if len(self.lms) == 1:
            return document_nats(self.lms[0], texts, self.stride, self.batch_tokens)[0]
        # two folds: a document of fold k is scored by the model trained on the other fold
        fold = np.array([fold_of(t) for t in texts])
        out = np.zeros(len(texts), dtype=np.float64)
        for k in range(2):
            idx = np.flatnonzero(fold == k)
            if len(idx):
                out[idx] = document_nats(self.lms[1 - k], [texts[i] for i in idx], self.stride,
                                         self.batch_tokens)[0]
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        return bits_per(texts, self.nats(texts), self.unit).astype(np.float32)

    def save(self, path) -> None:  # the LM is saved by `winnow train-lm`
        raise ScorerError("perplexity: the scorer is its reference LM; save it with `winnow train-lm`")


def build(spec: ScorerSpec) -> PerplexityScorer:
    no_options(spec, ("unit", "stride", "batch_tokens", "folds"))
    folds = spec.options.get("folds")
    if folds is not None:
        if not (isinstance(folds, (list, tuple)) and len(folds) == 2 and all(isinstance(f, str) for f in folds)):
            raise ScorerError("perplexity.folds: two reference LM paths, the models trained on fold 0 and fold 1")
        lms = [load_lm(f) for f in folds]
    elif spec.model:
        lms = [load_lm(spec.model)]
    else:
        raise ScorerError("perplexity: needs a reference LM (--scorer perplexity=DIR; train one with "
                          "`winnow train-lm`)")
    stride = spec.options.get("stride")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ScorerError(f"perplexity.stride: a positive number of tokens, got {stride!r}")
    batch = spec.options.get("batch_tokens", BATCH_TOKENS)
    if not isinstance(batch, int) or batch < 1:
        raise ScorerError(f"perplexity.batch_tokens: a positive number, got {batch!r}")
    return PerplexityScorer(lms, spec.options.get("unit", "byte"), stride, batch)


def model_files(spec: ScorerSpec) -> dict[str, str]:
    """The files the score stage ships: each LM's lm.pt, keyed by the path the spec gives."""
    folds = spec.options.get("folds")
    paths = list(folds) if folds else ([spec.model] if spec.model else [])
    return {p: str(lm_file(p)) for p in paths}


registry.register(registry.ScorerKind(
    kind="perplexity",
    summary="bits per byte under a reference LM from `winnow train-lm` (lower: more like its "
    "training text; CCNet / Ankner et al. selection)",
    build=build,
    model_files=model_files,
))
