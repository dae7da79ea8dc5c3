"""Stage `select`: keep documents by their scores.

One of four rules:
- ``threshold``: keep ``score >= threshold``;
- ``top_fraction``: keep the best ``ceil(f * N)`` documents;
- ``top_char_fraction``: keep the best documents until they hold ``f`` of all characters (the
  document that crosses the line is kept);
- ``random_fraction``: keep ``ceil(f * N)`` documents chosen by a seeded hash of the id: the
  baseline every selector is compared against, of exactly the size a top fraction would keep.

``score`` names one column, or several: then each is turned into its percentile rank (from 1,000
approximate quantiles computed in Spark) and the ranks are averaged (``weights`` to weigh them);
the combination is written as ``score_combined``.

Top fractions are exact and deterministic: rows are ordered by (score descending, nulls last;
then input order), a range-partitioned sort in Spark; per-partition totals (one row per
partition) locate the partition where the running total crosses the target, and a running sum
inside that partition alone finds the cut row. Nothing but those totals and the cut comes to the
driver. A null score is never selected by a top rule and fails any threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.errors import WinnowError
from core.params import param

from .stage import Columns, StageContext, StageResult

NAME = "select"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
RANK_POINTS = 1000
# percentile_approx's accuracy: its rank error is at most 1 / accuracy of the rows, here 1e-5,
# a hundredth of the 1e-3 spacing of the RANK_POINTS quantiles it places.
PERCENTILE_ACCURACY = 100_000
# A double holds every integer below 2**53 exactly: the random key is the id's seeded 64-bit hash
# cut to 53 bits and divided by 2**53, uniform in [0, 1) with no two hashes rounded together.
RANDOM_BITS = 53


@dataclass(frozen=True)
class SelectParams:
    score: str | tuple[str, ...] = param(
        (), metavar="COL",
        help="score column to select on, e.g. score_dclm; several: their percentile ranks are "
        "averaged into score_combined")
    weights: tuple[float, ...] = param((), metavar="W",
                                       help="weights of the score columns' ranks, one per column "
                                       "(empty: equal weights)")
    threshold: float | None = param(None, metavar="T", help="keep documents with score >= T")
    top_fraction: float | None = param(None, metavar="F", help="keep the best fraction F of documents")
    top_char_fraction: float | None = param(None, metavar="F",
                                            help="keep the best documents until they hold fraction F of "
                                            "all characters")
    random_fraction: float | None = param(None, metavar="F",
                                          help="keep a random fraction F of documents (chosen by a seeded "
                                          "hash of the id): the baseline")
    seed: int = param(0, metavar="N", help="seed of random_fraction's hash")
    mark: bool = param(False, help="keep every row and add a boolean `selected` column instead of "
                       "removing the rows not selected")

    def __post_init__(self) -> None:
        rules = [n for n in ("threshold", "top_fraction", "top_char_fraction", "random_fraction")
                 if getattr(self, n) is not None]
        if len(rules) != 1:
            raise WinnowError("select: give exactly one of threshold, top_fraction, top_char_fraction, "
                              f"random_fraction (got {', '.join(rules) or 'none'})")
        for n in ("top_fraction", "top_char_fraction", "random_fraction"):
            v = getattr(self, n)
            if v is not None and not 0.0 < v <= 1.0:
                raise WinnowError(f"select.{n}: must be in (0, 1], got {v}")
        cols = self.columns()
        if self.random_fraction is None and not cols:
            raise WinnowError("select.score: name the score column(s) to select on, e.g. score_dclm")
        if self.weights and len(self.weights) != len(cols):
            raise WinnowError(f"select.weights: {len(self.weights)} weights for {len(cols)} score columns")

    def columns(self) -> tuple[str, ...]:
        return (self.score,) if isinstance(self.score, str) else tuple(self.score)

    @property
    def rule(self) -> str:
        if self.threshold is not None:
            return f"threshold {self.threshold:g}"
        if self.top_fraction is not None:
            return f"top {self.top_fraction:.4g} of documents"
        if self.top_char_fraction is not None:
            return f"top {self.top_char_fraction:.4g} of characters"
        return f"random {self.random_fraction:.4g} of documents, seed {self.seed}"


def columns(params: SelectParams) -> Columns:
    cols = params.columns()
    requires = cols + ("id", "_file", "_row") + (("text",) if params.top_char_fraction is not None else ())
    adds = ("score_combined",) if params.random_fraction is None and len(cols) > 1 else ()
    return Columns(requires=requires, adds=adds + (("selected",) if params.mark else ()))


def _rank_of(df: DataFrame, column: str) -> Column:
    """Approximate percentile rank in [0, 1] of `column`, by interpolation between quantiles."""
    probs = [i / RANK_POINTS for i in range(RANK_POINTS + 1)]
    edges = df.agg(F.percentile_approx(column, probs, PERCENTILE_ACCURACY)).first()[0]
    if edges is None:
        return F.lit(None).cast("double")
    # Position of x among the edges: the number of edges below x plus half of those equal to it.
    below = F.aggregate(F.array(*[F.lit(float(e)) for e in edges]), F.lit(0.0),
                        lambda acc, e: acc + F.when(e < F.col(column), 1.0)
                        .when(e == F.col(column), 0.5).otherwise(0.0))
    return F.when(F.col(column).isNull(), None).otherwise(below / F.lit(float(len(edges))))


def _cut(df: DataFrame, key: str, weight: Column, target: float) -> tuple[Any, int, int] | None:
    """(key, _file, _row) of the row where the running weight, best first, reaches `target`."""
    order = [F.col(key).desc_nulls_last(), F.col("_file").asc(), F.col("_row").asc()]
    slim = df.select(key, "_file", "_row", weight.alias("_w")).orderBy(*order)
    slim = slim.withColumn("_part", F.spark_partition_id()).persist()
    try:
        totals = sorted(tuple(r) for r in slim.groupBy("_part").agg(F.sum("_w")).collect())
        before = 0.0
        for part, total in totals:
            total = float(total or 0.0)
            if before + total >= target:
                inside = Window.partitionBy("_part").orderBy(*order).rowsBetween(Window.unboundedPreceding, 0)
                row = (slim.where(F.col("_part") == part)
                       .withColumn("_run", F.sum("_w").over(inside) + F.lit(before))
                       .where(F.col("_run") >= F.lit(target))
                       .orderBy(*order).select(key, "_file", "_row").first())
                return tuple(row)
            before += total
        return None  # target above the total: keep everything
    finally:
        slim.unpersist()


def apply(df: DataFrame, params: SelectParams, ctx: StageContext) -> StageResult:
    cols = params.columns()
    data = df
    if params.random_fraction is not None:
        key = "_random"
        bits = F.xxhash64(F.col("id"), F.lit(params.seed)).bitwiseAND(F.lit((1 << RANDOM_BITS) - 1).cast("long"))
        data = data.withColumn(key, bits.cast("double") / F.lit(float(1 << RANDOM_BITS)))
        shown = None
    elif len(cols) == 1:
        key = cols[0]
        shown = key
    else:
        weights = params.weights or tuple(1.0 for _ in cols)
        ranks = [_rank_of(df, c) * F.lit(w) for c, w in zip(cols, weights)]
        combined = sum(ranks[1:], ranks[0]) / F.lit(float(sum(weights)))
        key = shown = "score_combined"
        data = data.withColumn(key, combined.cast("float"))
    data = ctx.persist(data)
    stats: dict[str, Any] = {"rule": params.rule, "score": shown or "random"}

    value = F.col(key)
    if params.threshold is not None:
        keep = value.isNotNull() & (value >= F.lit(params.threshold))
        stats["threshold"] = params.threshold
        why = F.when(value.isNull(), F.concat(F.lit(f"{key} is null")))
        why = why.otherwise(F.format_string(f"{key} below the threshold: %.4g < {params.threshold:.4g}", value))
    else:
        n = data.count()
        if params.top_char_fraction is not None:
            weight = F.coalesce(F.length("text"), F.lit(0)).cast("double")
            total = float(data.agg(F.sum(weight)).first()[0] or 0.0)
            target = params.top_char_fraction * total
        else:
            weight = F.lit(1.0)
            target = float(math.ceil((params.top_fraction or params.random_fraction) * n))
        cut = _cut(data, key, weight, target) if n else None
        if cut is None or cut[0] is None:
            keep = F.lit(True) if cut is None else value.isNotNull()
            stats["threshold"] = None
        else:
            t, f, r = cut
            stats["threshold"] = float(t)
            after = (F.col("_file") < F.lit(f)) | ((F.col("_file") == F.lit(f)) & (F.col("_row") <= F.lit(r)))
            keep = value.isNotNull() & ((value > F.lit(t)) | ((value == F.lit(t)) & after))
        if params.random_fraction is not None:
            why = F.lit(f"not in the {params.rule}")
        else:
            cut_text = "none" if stats["threshold"] is None else f"{stats['threshold']:.4g}"
            below = F.format_string(f"{key} below the cut: %.4g < {cut_text} ({params.rule})", value)
            tie = F.lit(f"{key} equal to the cut: after it in input order ({params.rule})")
            why = F.when(value.isNull(), F.lit(f"{key} is null")).when(value == F.lit(stats["threshold"]), tie).otherwise(below)
    flagged = data.withColumn("_keep", F.coalesce(keep, F.lit(False)))
    keep_cols = [c for c in data.columns if c != "_random"]
    if params.mark:
        marked = flagged.select(*keep_cols, F.col("_keep").alias("selected"))
        return StageResult(marked, ctx.spark.createDataFrame([], "id string, removed_by string, reason string"), stats)
    kept = flagged.where("_keep").select(*keep_cols)
    removed = flagged.where(~F.col("_keep")).select(
        *keep_cols, F.lit(NAME).alias("removed_by"), why.alias("reason"))
    return StageResult(kept, removed, stats)
