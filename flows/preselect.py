"""`winnow train-scorer preselect`: PreSelect's classifier from a family of reference LMs.

1. The family: `models` (directories from `winnow train-lm`), or ``train_models = N`` trained
   here on ``lm_data`` with one size, one tokenizer and one export, at token budgets
   ``lm_tokens * lm_growth**k`` (k = 0..N-1), so their abilities are graded; model k trains with
   seed ``seed + k`` (its own initialization and batch order, as the paper's family are separate
   models: with one seed each model is the one before trained further, and nearly every document
   ranks the family the same way). When the seed documents are not given they are the other half
   of ``lm_data``: the models train on fold 0 (`winnow train-lm --fold 0/2`), the seed set is
   fold 1, so no seed document was trained on.
2. Ability: each model's bits per byte on the **ability split** (`data/eval/ability.jsonl.zst`,
   disjoint from the pool, the reference set and the held-out split `validate` judges on; lower
   bits per byte = more able), or the scores the user gives (``abilities``, higher = more able).
   The models are ordered from the least to the most able; two of equal ability are an error.
3. Each seed document's bits per character under every model, through the `score` stage (each
   document on its own, strided windows: `filters/lm.py`); its count of concordant pairs
   (`filters.preselect.concordant_pairs`, computed as a Spark expression).
4. Labels: count = Z positives, as many negatives from count 0 upwards (a seeded hash of the id
   breaks ties); when fewer documents fall short of Z than reach it, the positives are a seeded
   sample of that many; a seeded hash holds out ``heldout_fraction`` of them to measure accuracy.
5. fastText with the paper's settings (`filters/preselect.py`), saved to ``output``; beside it
   ``<output>.json``: the models, their abilities, the strength histogram, the label counts and
   the held-out accuracy and ROC-AUC.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError, WinnowError
from core.params import param

ABILITY_DATA = str(Path(__file__).resolve().parents[1] / "data" / "eval" / "ability.jsonl.zst")
# PreselectSpec fields a [[train]] entry gives among its `params` (the rest are fastText's)
FAMILY_FIELDS = ("lm_tokens", "lm_growth", "lm_size", "ability_data", "stride")
ABILITY_DOCS = 1000     # at most this many documents of the ability split are scored


@dataclass(frozen=True)
class PreselectSpec:
    output: str
    seed_docs: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    abilities: tuple[float, ...] = ()
    train_models: int = param(0, metavar="N", help="train a family of N reference LMs on --lm-data first "
                              "(token budgets lm_tokens * lm_growth**k)")
    lm_data: tuple[str, ...] = ()
    lm_tokens: int = param(100_000, metavar="N", help="training tokens of the smallest model of the family")
    lm_growth: float = param(2.0, metavar="G", help="each model of the family trains on G times the tokens "
                             "of the one before")
    lm_size: str = param("tiny", choices=("tiny", "small", "base"), help="model preset of the family")
    ability_data: str = param(ABILITY_DATA, metavar="PATH",
                              help="documents each model's ability (bits per byte) is measured on")
    stride: int | None = param(None, metavar="N", help="window step in tokens when a document is longer than "
                               "a model's context (default: half the context)")
    max_docs: int = param(200_000, metavar="N", help="seed documents at most, chosen by a seeded hash of the "
                          "id (the paper's seed set: 900k)")
    heldout_fraction: float = param(0.1, metavar="F", flag="--heldout",
                                    help="fraction of the labelled documents held out to measure accuracy")
    seed: int = param(0, help="seed of the samples, the held-out split, the family and fastText")
    params: Any = None

    kind = "preselect"   # a class attribute, not a field: what [[train]] reports call it

    def __post_init__(self) -> None:
        from filters.preselect import PreselectTrainParams

        if self.params is None:
            object.__setattr__(self, "params", PreselectTrainParams(seed=self.seed))
        n = self.train_models or len(self.models)
        if self.train_models and self.models:
            raise ConfigError("preselect: give --models or --train-models, not both")
        if self.train_models and not self.lm_data:
            raise ConfigError("preselect: --train-models needs --lm-data (the text the family trains on)")
        if n < 2:
            raise ConfigError("preselect: needs at least 2 reference models (the paper uses 6; give 5 or more)")
        if not self.seed_docs and not self.train_models:
            raise ConfigError("preselect: give --seed-docs (documents disjoint from what the models trained on)")
        if self.abilities and len(self.abilities) != n:
            raise ConfigError(f"preselect: {len(self.abilities)} abilities for {n} models")
        if self.train_models and not (self.lm_growth > 1.0 and self.lm_tokens >= 2048):
            raise ConfigError("preselect: lm_growth must be > 1 and lm_tokens >= 2048 (one batch)")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise ConfigError(f"preselect: stride must be a positive number of tokens, got {self.stride!r}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"preselect: heldout fraction must be in [0, 1), got {self.heldout_fraction}")


def _read_texts(spark, paths: tuple[str, ...], seed: int, limit: int, fold: int | None = None):
    from pyspark.sql import functions as F

    from pipelines.stage import StageContext
    from pipelines.train_sample import in_fold, read_texts

    kept, _ = read_texts(StageContext(spark=spark, seed=seed), paths, "in")
    docs = kept.select("id", "text")
    if fold is not None:  # the fold of `winnow train-lm --fold` (filters.perplexity.fold_of)
        docs = docs.where(in_fold(fold))
    # limit() leaves one partition: spread the sample again, or one task would score it all
    parts = max(2, spark.sparkContext.defaultParallelism)
    return docs.orderBy(F.xxhash64("id", F.lit(seed)), "id").limit(limit).repartition(parts, "id")


def measure_ability(spark, model: str, data: str, seed: int = 0, stride: int | None = None) -> dict[str, float]:
    """Bits per byte of a reference LM over the ability split (total bits / total bytes)."""
    from filters.lm import document_nats, load_lm

    lm = load_lm(model)
    texts = [r["text"] for r in _read_texts(spark, (data,), seed, ABILITY_DOCS).toLocalIterator()]
    if not texts:
        raise WinnowError(f"preselect: the ability split {data} has no documents")
    nats, _ = document_nats(lm, texts, stride)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"bpb": float(nats.sum() / math.log(2) / nbytes), "documents": len(texts), "bytes": nbytes}


def _seed_fold(models: list[str], seed_docs: tuple[str, ...]) -> int | None:
    """The fold of the seed documents to keep so none was trained on: a model trained on a seed
    input as a whole is refused; models trained on fold K of one (`winnow train-lm --fold K/2`)
    leave fold 1-K (models trained on different folds of it leave nothing: refused)."""
    seeds = {str(Path(p).resolve()) for p in seed_docs}
    folds: set[int] = set()
    for m in models:
        info_path = Path(m) / "lm.json"
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        overlap = seeds & {str(Path(p).resolve()) for p in info.get("inputs", [])}
        if not overlap:
            continue
        fold = info.get("settings", {}).get("fold")
        if fold is None:
            raise ConfigError(f"preselect: {m} was trained on {sorted(overlap)[0]}, also a seed-document input; "
                              "the seed set must be disjoint from what the models trained on")
        folds.add(int(str(fold).split("/")[0]))
    if len(folds) > 1:
        raise ConfigError("preselect: the models were trained on different folds of a seed-document input; "
                          "no fold of it is unseen by all of them")
    return 1 - folds.pop() if folds else None


def train_preselect(spark, spec: PreselectSpec, log=print) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from filters.dclm import roc_auc
    from filters.preselect import NEG, POS, PreselectScorer, pairs, to_line
    from pipelines import score
    from pipelines.score import ScoreParams
    from pipelines.stage import StageContext
    from pipelines.train_sample import _unit_hash, heldout_rows, training_rows

    from .train_lm import LmSpec, train_lm

    start = time.perf_counter()
    out = Path(spec.output)
    models = list(spec.models)
    seed_docs, seed_fold = spec.seed_docs, None
    if spec.train_models:
        fold = None if spec.seed_docs else "0/2"
        seed_docs, seed_fold = (spec.seed_docs, None) if spec.seed_docs else (spec.lm_data, 1)
        family = out.with_name(out.name + ".models")
        for k in range(spec.train_models):
            lm_dir = family / f"m{k}"
            tokens = int(round(spec.lm_tokens * spec.lm_growth ** k))
            log(f"training reference LM {k + 1}/{spec.train_models} ({spec.lm_size}, {tokens:,} tokens)")
            # model k: seed + k trains it (the split and tokenizer are model 0's, through data_from)
            train_lm(spark, LmSpec(inputs=spec.lm_data, output=str(lm_dir), size=spec.lm_size, tokens=tokens,
                                   seed=spec.seed + k, fold=fold, tokens_per_batch=2048, seq_len=256),
                     log=lambda *_: None, data_from=models[0] if models else None)
            models.append(str(lm_dir))
    if seed_fold is None:
        seed_fold = _seed_fold(models, seed_docs)

    if spec.abilities:
        measured = [{"ability": float(a), "given": True} for a in spec.abilities]
    else:
        measured = []
        for m in models:
            got = measure_ability(spark, m, spec.ability_data, spec.seed, spec.stride)
            measured.append({**got, "ability": -got["bpb"], "given": False})
    abilities = [x["ability"] for x in measured]
    if len(set(abilities)) != len(abilities):
        raise WinnowError("preselect: two models have the same ability; the family needs a strict order")
    order = sorted(range(len(models)), key=lambda i: abilities[i])   # least able first
    n = len(models)
    z = pairs(n)

    ctx = StageContext(spark=spark, seed=spec.seed)
    try:
        docs = _read_texts(spark, seed_docs, spec.seed, spec.max_docs, seed_fold)
        scorers = tuple({"kind": "perplexity", "name": f"m{r}", "model": models[i], "unit": "char",
                         **({"stride": spec.stride} if spec.stride else {})}
                        for r, i in enumerate(order))
        scored = ctx.persist(score.apply(docs, ScoreParams(scorers=scorers), ctx).kept)
        cols = [f"score_m{r}" for r in range(n)]
        concordant = sum((F.when(F.col(cols[i]) > F.col(cols[j]), 1).otherwise(0)
                          for i in range(n) for j in range(i + 1, n)), F.lit(0))
        valid = F.lit(True)
        for c in cols:
            valid = valid & F.col(c).isNotNull()
        counted = ctx.persist(scored.where(valid).withColumn("concordant", concordant))
        histogram = {int(r["concordant"]): int(r["count"]) for r in counted.groupBy("concordant").count().collect()}
        n_perfect = histogram.get(z, 0)
        n_rest = sum(v for k, v in histogram.items() if k < z)
        if n_perfect == 0 or n_rest == 0:
            raise WinnowError(f"preselect: {'no' if n_perfect == 0 else 'every'} seed document ranks the {n} "
                              "models by their ability; add seed documents, or models of "
                              f"{'more' if n_perfect == 0 else 'less'} distinct ability")
        # equal numbers: when fewer documents fall short of Z than reach it, the positives are
        # a seeded sample of that size (the paper has far more imperfect documents than perfect)
        n_pos = min(n_perfect, n_rest)
        positives = (counted.where(F.col("concordant") == z)
                     .orderBy(F.xxhash64("id", F.lit(spec.seed)), "id").limit(n_pos).withColumn("label", F.lit(POS)))
        negatives = (counted.where(F.col("concordant") < z)
                     .orderBy("concordant", F.xxhash64("id", F.lit(spec.seed)), "id").limit(n_pos)
                     .withColumn("label", F.lit(NEG)))
        both = ctx.persist(positives.unionByName(negatives).select("id", "text", "label")
                           .withColumn("heldout", _unit_hash("id", spec.seed + 1) < F.lit(spec.heldout_fraction)))
        counts = {POS: 0, NEG: 0}
        fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="winnow-preselect-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for label, text in training_rows(both, spec.seed):
                    line = to_line(text)
                    if line:
                        f.write(f"{label} {line}\n")
                        counts[label] += 1
            if not counts[POS] or not counts[NEG]:
                raise WinnowError("preselect: no training positives or negatives left after the held-out split")
            log(f"training preselect on {counts[POS]:,} positives and {counts[NEG]:,} negatives")
            scorer = PreselectScorer.train_file(tmp, spec.params)
        finally:
            os.unlink(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        scorer.save(out)
        held = list(heldout_rows(both))
        held_scores = scorer.score([t for _, t in held]) if held else np.zeros(0)
        truth = np.array([lab == POS for lab, _ in held], dtype=bool)
        accuracy = float(((held_scores >= 0.5) == truth).mean()) if held else None
        auc = roc_auc(held_scores, truth) if held else float("nan")
        n_seed = int(sum(histogram.values()))
    finally:
        ctx.release()
    report = {
        "kind": "preselect", "output": str(out),
        "models": [{"path": models[i], "rank": r, **measured[i]} for r, i in enumerate(order)],
        "seed_documents": n_seed, "seed_docs": list(seed_docs), "seed_fold": seed_fold,
        "strength_histogram": {f"{k}/{z}": histogram.get(k, 0) for k in range(z + 1)},
        "labels": {"positives": n_pos, "negatives": n_pos, "perfect": n_perfect, "trained": counts,
                   "heldout": {"positives": int(truth.sum()), "negatives": int((~truth).sum())}},
        "heldout_accuracy": None if accuracy is None else round(accuracy, 4),
        "heldout_roc_auc": None if np.isnan(auc) else round(float(auc), 4),
        "family": ({"trained": spec.train_models, "lm_tokens": spec.lm_tokens, "lm_growth": spec.lm_growth,
                    "lm_size": spec.lm_size} if spec.train_models else None), "stride": spec.stride,
        "model": scorer.describe(), "params": asdict(spec.params),
        "seconds": round(time.perf_counter() - start, 1),
    }
    Path(str(out) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return report
