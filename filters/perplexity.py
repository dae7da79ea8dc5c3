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

**KenLM models** (CCNet's own, `filters/kenlm_lm.py`, the ``kenlm`` extra): ``model`` names a
file KenLM reads (an ARPA file, gzipped or not, or a KenLM binary: told apart from a
`winnow train-lm` model by its content, `kenlm_lm.is_kenlm`), ``sp_model`` its SentencePiece
model (without one the model is over whitespace words). The text is normalized as CCNet
normalizes it and scored as one sentence; ``unit`` byte and char divide the summed
-log2 P (``</s>`` included) by the *original* text's UTF-8 bytes or characters, and ``unit =
"ccnet"`` is CCNet's perplexity per piece, ``10 ** (-sum log10 P / (pieces + 1))``, not rounded
to 0.1 as CCNet rounds it (a float32 keeps more, and rounding only makes ties).
``stride``, ``batch_tokens`` and ``folds`` are for `winnow train-lm` models only.

Every unit: a text that is empty or only whitespace (for KenLM: empty once normalized) has no
perplexity, NaN, which the `score` stage writes as null.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import xxhash

from core.errors import ScorerError

from . import registry
from .base import ScorerSpec, no_options
from .kenlm_lm import KenlmModel, is_kenlm
from .lm import BATCH_TOKENS, ReferenceLM, bits_per, document_nats, lm_file, load_lm

UNITS = ("byte", "char")          # a `winnow train-lm` model's
KENLM_UNITS = UNITS + ("ccnet",)  # a KenLM model's: CCNet's perplexity per piece too
OPTIONS = ("unit", "stride", "batch_tokens", "folds", "sp_model")
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
        out = bits_per(texts, self.nats(texts), self.unit)
        out[[not (t or "").strip() for t in texts]] = np.nan   # whitespace only: no perplexity
        return out.astype(np.float32)

    def save(self, path) -> None:  # the LM is saved by `winnow train-lm`
        raise ScorerError("perplexity: the scorer is its reference LM; save it with `winnow train-lm`")


class KenlmPerplexityScorer:
    """Perplexity under a KenLM model (`filters/kenlm_lm.py`): bits per byte or character of the
    original text, or CCNet's perplexity per piece (``unit = "ccnet"``)."""

    name = "perplexity"

    def __init__(self, model: KenlmModel, unit: str = "byte"):
        if unit not in KENLM_UNITS:
            raise ScorerError(f"perplexity: unit must be one of {', '.join(KENLM_UNITS)}, got {unit!r}")
        self.model, self.unit = model, unit

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        log10, pieces = self.model.log10(texts)      # NaN where nothing is left to score
        if self.unit == "ccnet":
            out = np.power(10.0, -log10 / (pieces + 1))
        else:
            out = bits_per(texts, -log10 * math.log(10), self.unit)
        return out.astype(np.float32)

    def save(self, path) -> None:
        raise ScorerError("perplexity: the scorer is its KenLM model; there is nothing to save")


def build(spec: ScorerSpec) -> PerplexityScorer | KenlmPerplexityScorer:
    no_options(spec, OPTIONS)
    unit = spec.options.get("unit", "byte")
    if unit not in KENLM_UNITS:
        raise ScorerError(f"perplexity.unit: one of {', '.join(KENLM_UNITS)} (ccnet: KenLM models only), got {unit!r}")
    sp_model = spec.options.get("sp_model")
    if sp_model is not None and not (isinstance(sp_model, str) and sp_model):
        raise ScorerError(f"perplexity.sp_model: the path of a SentencePiece model, got {sp_model!r}")
    folds = spec.options.get("folds")
    if folds is not None:
        if not (isinstance(folds, (list, tuple)) and len(folds) == 2 and all(isinstance(f, str) for f in folds)):
            raise ScorerError("perplexity.folds: two reference LM paths, the models trained on fold 0 and fold 1")
        if any(is_kenlm(f) for f in folds):
            raise ScorerError("perplexity.folds: two reference LMs from `winnow train-lm --fold`; a KenLM "
                              "model is scored with `model` (and `sp_model`), without folds")
        lms = [load_lm(f) for f in folds]
    elif spec.model and is_kenlm(spec.model):
        for option in ("stride", "batch_tokens"):
            if option in spec.options:
                raise ScorerError(f"perplexity.{option}: only for a reference LM from `winnow train-lm`; "
                                  f"{spec.model} is a KenLM model, which scores each document whole")
        return KenlmPerplexityScorer(KenlmModel(spec.model, sp_model), unit)
    elif spec.model:
        if not Path(spec.model).exists():
            raise ScorerError(f"perplexity: model not found: {spec.model} (a `winnow train-lm` directory, or "
                              "a KenLM model: an ARPA file or a KenLM binary)")
        lms = [load_lm(spec.model)]
    else:
        raise ScorerError("perplexity: needs a reference LM (--scorer perplexity=DIR; train one with "
                          "`winnow train-lm`) or a KenLM model (model = \"en.arpa.bin\", sp_model = ...)")
    # a `winnow train-lm` model from here on
    if sp_model is not None:
        raise ScorerError("perplexity.sp_model: only with a KenLM model (an ARPA file or a KenLM binary); "
                          f"{folds or spec.model} is a reference LM from `winnow train-lm`, which has its own tokenizer")
    if unit == "ccnet":
        raise ScorerError("perplexity.unit: \"ccnet\" (CCNet's perplexity per SentencePiece piece) is for a "
                          "KenLM model; a reference LM from `winnow train-lm` scores in byte or char")
    stride = spec.options.get("stride")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ScorerError(f"perplexity.stride: a positive number of tokens, got {stride!r}")
    batch = spec.options.get("batch_tokens", BATCH_TOKENS)
    if not isinstance(batch, int) or batch < 1:
        raise ScorerError(f"perplexity.batch_tokens: a positive number, got {batch!r}")
    return PerplexityScorer(lms, unit, stride, batch)


def model_files(spec: ScorerSpec) -> dict[str, str]:
    """The files the score stage ships, keyed by the path the spec gives: each LM's lm.pt, or
    the KenLM model file, and the SentencePiece model (`sp_model`); the stage swaps every option
    value so keyed for the worker's copy."""
    folds = spec.options.get("folds")
    paths = list(folds) if folds else ([spec.model] if spec.model else [])
    files = {p: str(lm_file(p)) for p in paths}
    sp_model = spec.options.get("sp_model")
    if isinstance(sp_model, str) and sp_model:
        files[sp_model] = sp_model
    return files


registry.register(registry.ScorerKind(
    kind="perplexity",
    summary="bits per byte under a reference LM from `winnow train-lm` or a KenLM model (with "
    "sp_model, CCNet's; unit = \"ccnet\": CCNet's perplexity) (lower: more like its training text; "
    "CCNet / Ankner et al. selection)",
    build=build,
    model_files=model_files,
))
