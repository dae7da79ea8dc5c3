"""Stage `select`: keep documents by their scores.

Exactly one rule:
- ``threshold``: keep ``score >= threshold`` (``score <= threshold`` with ``order = "low"``);
- ``top_fraction``: keep the best ``ceil(f * N)`` documents;
- ``top_char_fraction``: keep the best documents until they hold ``f`` of all characters (the
  document that crosses the line is kept). Keeping the top of a quality classifier's score is
  DCLM's rule (Li et al. 2024);
- ``random_fraction``: keep ``ceil(f * N)`` documents chosen by a seeded hash of the id: the
  baseline every selector is compared against, of exactly the size a top fraction would keep;
- ``random_char_fraction``: documents in the same random order until they hold ``f`` of all
  characters (the crossing document kept): the baseline at a character budget;
- ``bucket``: CCNet's perplexity buckets (Wenzek et al. 2020): ``head`` keeps the scores below the
  30th percentile, ``middle`` those from the 30th up to the 60th, ``tail`` those at or above the
  60th (``bucket_percentiles`` moves the two cuts);
- ``perplexity``: Ankner et al. (2024)'s selection at rate ``r`` (``rate``): ``low`` keeps the
  lowest fraction r of the scores, ``high`` the highest fraction r, ``medium`` the percentile band
  [0.5 - r/2, 0.5 + r/2] around the median.

``order`` says which end of the score is best for ``threshold`` and the two top rules: ``high``
(the default; a quality classifier's probability) or ``low`` (a perplexity: the lowest scores
are taken first). The bucket and perplexity rules always rank the scores in ascending order.

A bucket or perplexity rule is a band [lo, hi) of ranks in ascending score order: with N scored
documents it holds the documents at ranks ceil(lo * N) + 1 to ceil(hi * N) (to N when hi = 1), so
head, middle and tail (or low and high at r = 0.5) split the scored documents with no overlap.
With ``unit = "characters"`` the percentiles are shares of the characters instead: each edge is
the document where the running character count, in ascending score order, reaches lo (or hi) of
the characters, and the document that crosses an edge belongs to the band below it. Percentiles
count only the documents that have a score; the top rules count every document, as N always has.

``by`` stratifies the rule by a column, usually ``domain``: each value keeps its own share (the
top f of its own documents or characters, its own percentile band), so a classifier trained on
prose does not remove all the code. A null value is a group of its own. A small distinct query
first refuses more than 10,000 groups; then every group's totals and cuts come from the same few
Spark jobs as one group's. ``by`` does not apply to ``threshold``, which is the same in every group.

Stats: the rule in words, the score column, and the cut (``threshold``: the score of the last
document kept) or, for a band, ``band`` (its [lo, hi)), ``unit``, ``lower_edge`` (the score of
the last document below the band), ``upper_edge`` (the score of the band's last document) and
``kept``; with ``by``, ``groups`` gives each group's documents, kept documents and cut or edges.

``score`` names one column, or several: then each is turned into its percentile rank (from 1,000
approximate quantiles computed in Spark) and the ranks are averaged (``weights`` to weigh them);
the combination is written as ``score_combined``.

Cuts are exact and deterministic: rows are ordered by (group, score, nulls last; then input
order ``_file``, ``_row``), a range-partitioned sort in Spark; per-partition totals (one row per
group and partition) locate the partition where the running total crosses each target, and a
running sum inside those partitions alone finds the cut rows. Nothing but those totals and the
cut rows comes to the driver. A null score is never selected and fails any threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

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
# Most values `by` may take: the groups' totals and cuts come to the driver.
MAX_GROUPS = 10_000

ORDERS = ("high", "low")
BUCKETS = ("head", "middle", "tail")
PERPLEXITY = ("low", "medium", "high")
UNITS = ("documents", "characters")
RULES = ("threshold", "top_fraction", "top_char_fraction", "random_fraction", "random_char_fraction",
         "bucket", "perplexity")
FRACTIONS = ("top_fraction", "top_char_fraction", "random_fraction", "random_char_fraction")


@dataclass(frozen=True)
class SelectParams:
    score: str | tuple[str, ...] = param(
        (), metavar="COL",
        help="score column to select on, e.g. score_dclm; several: their percentile ranks are "
        "averaged into score_combined")
    weights: tuple[float, ...] = param((), metavar="W",
                                       help="weights of the score columns' ranks, one per column "
                                       "(empty: equal weights)")
    threshold: float | None = param(None, metavar="T", help="keep documents with score >= T "
                                    "(score <= T with order = low)")
    top_fraction: float | None = param(None, metavar="F", help="keep the best fraction F of documents")
    top_char_fraction: float | None = param(None, metavar="F",
                                            help="keep the best documents until they hold fraction F of "
                                            "all characters")
    random_fraction: float | None = param(None, metavar="F",
                                          help="keep a random fraction F of documents (chosen by a seeded "
                                          "hash of the id): the baseline")
    random_char_fraction: float | None = param(None, metavar="F",
                                               help="keep random documents (the same seeded hash of the id) "
                                               "until they hold fraction F of all characters: the baseline "
                                               "at a character budget")
    bucket: str | None = param(None, metavar="NAME", choices=BUCKETS,
                               help="CCNet bucket to keep (Wenzek et al. 2020): head (score below the first "
                               "percentile of bucket_percentiles), middle (between the two) or tail (at or "
                               "above the second)")
    bucket_percentiles: tuple[float, float] = param((30.0, 60.0), metavar="P",
                                                    help="the two percentiles that cut the CCNet buckets")
    perplexity: str | None = param(None, metavar="NAME", choices=PERPLEXITY,
                                   help="Ankner et al. (2024) selection at `rate`: low (the lowest fraction "
                                   "rate of the scores), medium (the band [0.5 - rate/2, 0.5 + rate/2]) or "
                                   "high (the highest fraction rate)")
    rate: float = param(0.5, metavar="R", help="selection rate of the perplexity rule, in (0, 1]")
    unit: str = param("documents", metavar="UNIT", choices=UNITS,
                      help="what the percentiles of bucket and perplexity count: documents or characters")
    order: str = param("high", metavar="ORDER", choices=ORDERS,
                       help="which end of the score is best for threshold and the top rules: high, or low "
                       "(a perplexity: the lowest scores first)")
    by: str | None = param(None, metavar="COL",
                           help="stratify by this column (e.g. domain): each of its values keeps its own "
                           "fraction or band (not for threshold)")
    seed: int = param(0, metavar="N", help="seed of random_fraction's and random_char_fraction's hash")
    mark: bool = param(False, help="keep every row and add a boolean `selected` column instead of "
                       "removing the rows not selected")

    def __post_init__(self) -> None:
        rules = [n for n in RULES if getattr(self, n) is not None]
        if len(rules) != 1:
            raise WinnowError(f"select: give exactly one of {', '.join(RULES)} (got {', '.join(rules) or 'none'})")
        for n in FRACTIONS:
            v = getattr(self, n)
            if v is not None and not 0.0 < v <= 1.0:
                raise WinnowError(f"select.{n}: must be in (0, 1], got {v}")
        if self.order not in ORDERS:
            raise WinnowError(f"select.order: unknown order {self.order!r} (known: {', '.join(ORDERS)})")
        if self.unit not in UNITS:
            raise WinnowError(f"select.unit: unknown unit {self.unit!r} (known: {', '.join(UNITS)})")
        if self.bucket is not None and self.bucket not in BUCKETS:
            raise WinnowError(f"select.bucket: unknown bucket {self.bucket!r} (known: {', '.join(BUCKETS)})")
        if self.perplexity is not None and self.perplexity not in PERPLEXITY:
            raise WinnowError(f"select.perplexity: unknown rule {self.perplexity!r} (known: {', '.join(PERPLEXITY)})")
        pct = self.bucket_percentiles
        if (not isinstance(pct, (tuple, list)) or len(pct) != 2
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pct)
                or not 0.0 <= pct[0] < pct[1] <= 100.0):
            raise WinnowError(f"select.bucket_percentiles: need two percentiles a, b with 0 <= a < b <= 100, got {pct}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 < self.rate <= 1.0:
            raise WinnowError(f"select.rate: must be in (0, 1], got {self.rate}")
        band = self.bucket is not None or self.perplexity is not None
        if self.rate != 0.5 and self.perplexity is None:
            raise WinnowError("select.rate: applies to the perplexity rule only")
        if tuple(pct) != (30.0, 60.0) and self.bucket is None:
            raise WinnowError("select.bucket_percentiles: applies to the bucket rule only")
        if self.unit != "documents" and not band:
            raise WinnowError("select.unit: applies to bucket and perplexity only "
                              "(use top_char_fraction or random_char_fraction for a share of the characters)")
        if self.order != "high" and rules[0] not in ("threshold", "top_fraction", "top_char_fraction"):
            raise WinnowError(f"select.order: applies to threshold, top_fraction and top_char_fraction, not {rules[0]}"
                              + (" (its bands rank scores in ascending order)" if band else ""))
        if self.by is not None and (not isinstance(self.by, str) or not self.by):
            raise WinnowError(f"select.by: name a column, e.g. domain (got {self.by!r})")
        if self.by is not None and self.threshold is not None:
            raise WinnowError("select.by: stratifies the fraction, bucket and perplexity rules, not threshold "
                              "(a threshold is the same in every group)")
        cols = self.columns()
        if not self.random and not cols:
            raise WinnowError("select.score: name the score column(s) to select on, e.g. score_dclm")
        if self.weights and len(self.weights) != len(cols):
            raise WinnowError(f"select.weights: {len(self.weights)} weights for {len(cols)} score columns")

    def columns(self) -> tuple[str, ...]:
        return (self.score,) if isinstance(self.score, str) else tuple(self.score)

    @property
    def random(self) -> bool:
        return self.random_fraction is not None or self.random_char_fraction is not None

    @property
    def characters(self) -> bool:
        """Whether the rule counts characters (and so reads `text`)."""
        return (self.top_char_fraction is not None or self.random_char_fraction is not None
                or ((self.bucket is not None or self.perplexity is not None) and self.unit == "characters"))

    def band(self) -> tuple[Fraction, Fraction] | None:
        """The bucket or perplexity rule's band [lo, hi) of ranks in ascending score order, as exact
        fractions of the user's decimals (0.35 is 7/20, not the nearest double)."""
        def exact(x: float) -> Fraction:
            return Fraction(str(float(x)))
        if self.bucket is not None:
            a, b = (exact(p) / 100 for p in self.bucket_percentiles)
            return {"head": (Fraction(0), a), "middle": (a, b), "tail": (b, Fraction(1))}[self.bucket]
        if self.perplexity is not None:
            r = exact(self.rate)
            half = Fraction(1, 2)
            return {"low": (Fraction(0), r), "medium": (half - r / 2, half + r / 2),
                    "high": (1 - r, Fraction(1))}[self.perplexity]
        return None

    @property
    def rule(self) -> str:
        per = f" per {self.by}" if self.by else ""
        low = ", lower is better" if self.order == "low" else ""
        if self.threshold is not None:
            return f"threshold {self.threshold:g}{low}"
        if self.top_fraction is not None:
            return f"top {self.top_fraction:.4g} of documents{low}{per}"
        if self.top_char_fraction is not None:
            return f"top {self.top_char_fraction:.4g} of characters{low}{per}"
        if self.random_fraction is not None:
            return f"random {self.random_fraction:.4g} of documents{per}, seed {self.seed}"
        if self.random_char_fraction is not None:
            return f"random {self.random_char_fraction:.4g} of characters{per}, seed {self.seed}"
        if self.perplexity is not None:
            return f"Ankner {self.perplexity} {self.rate:.4g} of {self.unit}{per}"
        a, b = (_ordinal(p) for p in self.bucket_percentiles)
        of = " of characters" if self.unit == "characters" else ""
        where = {"head": f"below the {a} percentile{of}", "middle": f"from the {a} up to the {b} percentile{of}",
                 "tail": f"at or above the {b} percentile{of}"}[self.bucket]
        return f"CCNet {self.bucket} (score {where}){per}"


def _ordinal(p: float) -> str:
    text = f"{p:g}"
    if not text.isdigit():
        return text + "th"
    n = int(text)
    return text + ("th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th"))


def columns(params: SelectParams) -> Columns:
    cols = params.columns()
    requires = (cols + ("id", "_file", "_row") + (("text",) if params.characters else ())
                + ((params.by,) if params.by and params.by not in cols else ()))
    adds = ("score_combined",) if not params.random and len(cols) > 1 else ()
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


Cut = tuple[Any, Any, Any, int]  # (score, _file, _row, position in its group's order from 1)
# A cut as columns: whether there is one, its row (score, _file, _row), and its score as text.
CUT_FIELDS = ("on", "t", "f", "r", "text")


@dataclass(frozen=True)
class Totals:
    """One group's documents and weight (1 or characters per document), all and scored only."""

    n: int = 0
    scored: int = 0
    weight: float = 0.0
    scored_weight: float = 0.0


def _cuts(df: DataFrame, key: str, weight: Column, ascending: bool, by: str | None,
          targets_of: Callable[[Totals], dict[int, float]]) -> tuple[dict[Any, Totals], dict[tuple[Any, int], Cut]]:
    """Each group's totals (a value of `by`; 0 without `by`), and for each target j of a group
    (``targets_of(totals)``: j -> target) the row of that group where the running weight, in
    order, first reaches the target. Order: `key` ascending or descending, nulls last, then
    _file, _row. A target above its group's total has no cut."""
    first = F.col("_k").asc_nulls_last() if ascending else F.col("_k").desc_nulls_last()
    order = [first, F.col("_file").asc(), F.col("_row").asc()]
    group = F.col(by) if by else F.lit(0)
    slim = (df.select(group.alias("_g"), F.col(key).alias("_k"), "_file", "_row", weight.alias("_w"))
            .orderBy(F.col("_g").asc_nulls_first(), *order))
    slim = slim.withColumn("_part", F.spark_partition_id()).persist()
    try:
        # One row per group and partition: documents and weight, all and scored.
        sums = slim.groupBy("_g", "_part").agg(
            F.count(F.lit(1)), F.count("_k"), F.sum("_w"), F.sum(F.when(F.col("_k").isNotNull(), F.col("_w"))))
        parts: dict[Any, list[tuple[int, float, int]]] = {}
        totals: dict[Any, Totals] = {}
        for g, part, n, scored, w, scored_w in sums.collect():
            parts.setdefault(g, []).append((part, float(w or 0.0), int(n)))
            t = totals.get(g, Totals())
            totals[g] = Totals(t.n + n, t.scored + scored, t.weight + float(w or 0.0),
                               t.scored_weight + float(scored_w or 0.0))
        need = []
        for g, t in totals.items():
            for j, target in targets_of(t).items():
                before, before_n = 0.0, 0
                for part, total, count in sorted(parts[g]):
                    if before + total >= target:
                        need.append((g, j, part, before, before_n, float(target)))
                        break
                    before, before_n = before + total, before_n + count
        if not need:
            return totals, {}
        schema = StructType([StructField("_ng", slim.schema["_g"].dataType), StructField("_j", IntegerType()),
                             StructField("_np", IntegerType()), StructField("_before", DoubleType()),
                             StructField("_before_n", LongType()), StructField("_target", DoubleType())])
        table = df.sparkSession.createDataFrame(need, schema)
        inside = Window.partitionBy("_g", "_j", "_part").orderBy(*order)
        running = inside.rowsBetween(Window.unboundedPreceding, 0)
        hits = (slim.join(F.broadcast(table), F.col("_g").eqNullSafe(F.col("_ng")) & (F.col("_part") == F.col("_np")))
                .withColumn("_run", F.sum("_w").over(running) + F.col("_before"))
                .withColumn("_pos", F.row_number().over(inside) + F.col("_before_n"))
                .where(F.col("_run") >= F.col("_target"))
                .groupBy("_g", "_j").agg(F.min(F.struct("_pos", "_k", "_file", "_row")).alias("_c")))
        cuts = {(r["_g"], r["_j"]): (r["_c"]["_k"], r["_c"]["_file"], r["_c"]["_row"], int(r["_c"]["_pos"]))
                for r in hits.collect()}
        return totals, cuts
    finally:
        slim.unpersist()


def _at_or_before(value: Column, ascending: bool, t: Column, f: Column, r: Column) -> Column:
    """Whether a scored row is at or before the cut row (t, f, r) in the order; a cut on a null
    score (past the last scored row) has every scored row before it."""
    ahead = value < t if ascending else value > t
    tie = (value == t) & ((F.col("_file") < f) | ((F.col("_file") == f) & (F.col("_row") <= r)))
    return F.when(t.isNull(), F.lit(True)).otherwise(ahead | tie)


def _edge_text(cut: Cut | None) -> str:
    return "none" if cut is None or cut[0] is None else f"{float(cut[0]):.4g}"


def _text(s: str) -> str:
    return s.replace("%", "%%")


def apply(df: DataFrame, params: SelectParams, ctx: StageContext) -> StageResult:
    cols = params.columns()
    data = df
    if params.random:
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
    rule = params.rule
    stats: dict[str, Any] = {"rule": rule, "score": shown or "random"}
    value = F.col(key)
    null_why = F.lit(f"{key} is null")
    keep_cols = [c for c in data.columns if c != "_random"]

    if params.threshold is not None:
        t = params.threshold
        stats["threshold"] = t
        stats["order"] = params.order
        if params.order == "low":
            keep = value.isNotNull() & (value <= F.lit(t))
            failed = F.format_string(f"{_text(key)} above the threshold: %.4g > {t:.4g}", value)
        else:
            keep = value.isNotNull() & (value >= F.lit(t))
            failed = F.format_string(f"{_text(key)} below the threshold: %.4g < {t:.4g}", value)
        why = F.when(value.isNull(), null_why).otherwise(failed)
        return _result(data, keep, why, keep_cols, params, ctx, stats)

    band = params.band()
    ascending = band is not None or params.order == "low"
    weight = (F.coalesce(F.length("text"), F.lit(0)).cast("double") if params.characters else F.lit(1.0))
    by = params.by
    if by:  # a small distinct query first: the groups' totals and cuts come to the driver
        if data.select(by).distinct().limit(MAX_GROUPS + 1).count() > MAX_GROUPS:
            raise WinnowError(f"select.by: column {by} has more than {MAX_GROUPS:,} distinct values; stratify by a "
                              "column with fewer, e.g. domain")

    def targets_of(t: Totals) -> dict[int, float]:
        """j = 0: the band's lower cut, j = 1: its upper cut (a top rule has only the upper)."""
        if band is None:  # a top or random rule: every document counts, as N always has
            f = next(getattr(params, n) for n in FRACTIONS if getattr(params, n) is not None)
            if not t.n:
                return {}
            return {1: f * t.weight if params.characters else float(math.ceil(f * t.n))}
        if not t.scored:  # a band: percentiles of the scored documents (or of their characters)
            return {}
        lo, hi = band
        total = int(t.scored_weight) if params.characters else t.scored
        # A target of 0 has nothing before it: no lower cut, or (upper) an empty band.
        lower, upper = math.ceil(lo * total), math.ceil(hi * total)
        return {**({0: float(lower)} if lower > 0 else {}), **({1: float(upper)} if hi < 1 and upper > 0 else {})}

    def is_empty(t: Totals) -> bool:
        """A band whose upper edge has nothing before it (e.g. head at percentiles (0, b))."""
        return band is not None and band[1] < 1 and (not t.scored or 1 not in targets_of(t))

    groups, cuts = _cuts(data, key, weight, ascending, by, targets_of)
    if not by:
        groups.setdefault(0, Totals())

    empty = {g: is_empty(t) for g, t in groups.items()}

    def kept_of(g: Any) -> int:
        lo, hi = cuts.get((g, 0)), cuts.get((g, 1))
        if empty[g]:
            return 0
        upper = groups[g].scored if hi is None or hi[0] is None else hi[3]
        return upper - (lo[3] if lo is not None else 0)

    if band is not None:
        stats["band"] = [float(band[0]), float(band[1])]
        stats["unit"] = params.unit
    elif not params.random:
        stats["order"] = params.order
    if by:
        stats["by"] = by
        per_group: dict[str, dict[str, Any]] = {}
        # The null group is "null", unless a value is spelled so: then "(null)".
        null_name = "(null)" if any(str(g) == "null" for g in groups if g is not None) else "null"
        for g in groups:
            name = null_name if g is None else str(g)
            entry: dict[str, Any] = {"documents": groups[g].n, "kept": kept_of(g)}
            if band is not None:
                entry["lower_edge"] = _edge(cuts.get((g, 0)))
                entry["upper_edge"] = _edge(cuts.get((g, 1)))
            elif not params.random:
                entry["cut"] = _edge(cuts.get((g, 1)))
            per_group[name] = entry
        stats["groups"] = per_group
    elif band is not None:
        stats["lower_edge"] = _edge(cuts.get((0, 0)))
        stats["upper_edge"] = _edge(cuts.get((0, 1)))
        stats["kept"] = kept_of(0)
    else:
        stats["threshold"] = _edge(cuts.get((0, 1)))

    # The cuts as columns: literals without `by`, a broadcast table of one row per group with it.
    def values(g: Any, j: int) -> tuple[Any, ...]:  # on, t, f, r, text
        c = cuts.get((g, j))
        return (c is not None, *(c[:3] if c is not None else (None, None, None)), _edge_text(c))

    if by:
        types = (BooleanType(), data.schema[key].dataType, data.schema["_file"].dataType,
                 data.schema["_row"].dataType, StringType())
        fields = [StructField("_c_g", data.schema[by].dataType), StructField("_c_empty", BooleanType())]
        fields += [StructField(f"_c_{side}_{name}", t) for side in ("lo", "hi") for name, t in zip(CUT_FIELDS, types)]
        rows = [(g, empty[g], *values(g, 0), *values(g, 1)) for g in groups]
        table = ctx.spark.createDataFrame(rows, StructType(fields))
        data = data.join(F.broadcast(table), F.col(by).eqNullSafe(F.col("_c_g")), "left")

        def cut(side: str, name: str) -> Column:
            return F.col(f"_c_{side}_{name}")
        band_empty = F.col("_c_empty")
    else:
        literal = {side: dict(zip(CUT_FIELDS, values(0, j))) for side, j in (("lo", 0), ("hi", 1))}

        def cut(side: str, name: str) -> Column:
            return F.lit(literal[side][name])
        band_empty = F.lit(empty[0])

    below = cut("lo", "on") & _at_or_before(value, ascending, cut("lo", "t"), cut("lo", "f"), cut("lo", "r"))
    within = ~cut("hi", "on") | _at_or_before(value, ascending, cut("hi", "t"), cut("hi", "f"), cut("hi", "r"))
    keep = value.isNotNull() & ~below & within & ~band_empty
    if params.random:
        why = F.lit(f"not in the {rule}")
    elif band is None:
        word, sign = ("above", ">") if ascending else ("below", "<")
        past = F.format_string(f"{_text(key)} {word} the cut: %.4g {sign} %s ({_text(rule)})", value, cut("hi", "text"))
        tie = F.lit(f"{key} equal to the cut: after it in input order ({rule})")
        why = F.when(value.isNull(), null_why).when(value == cut("hi", "t"), tie).otherwise(past)
    else:
        why = (F.when(value.isNull(), null_why)
               .when(below & (value == cut("lo", "t")),
                     F.lit(f"{key} equal to the band's lower edge: at or before it in input order ({rule})"))
               .when(below, F.format_string(f"{_text(key)} below the band: %.4g < %s ({_text(rule)})",
                                            value, cut("lo", "text")))
               .when(band_empty, F.lit(f"{key} above the band: the band is empty ({rule})"))
               .when(value == cut("hi", "t"),
                     F.lit(f"{key} equal to the band's upper edge: after it in input order ({rule})"))
               .otherwise(F.format_string(f"{_text(key)} above the band: %.4g > %s ({_text(rule)})",
                                          value, cut("hi", "text"))))
    return _result(data, keep, why, keep_cols, params, ctx, stats)


def _edge(c: Cut | None) -> float | None:
    return None if c is None or c[0] is None else float(c[0])


def _result(data: DataFrame, keep: Column, why: Column, keep_cols: list[str], params: SelectParams,
            ctx: StageContext, stats: dict[str, Any]) -> StageResult:
    flagged = data.withColumn("_keep", F.coalesce(keep, F.lit(False)))
    if params.mark:
        marked = flagged.select(*keep_cols, F.col("_keep").alias("selected"))
        return StageResult(marked, ctx.spark.createDataFrame([], "id string, removed_by string, reason string"), stats)
    kept = flagged.where("_keep").select(*keep_cols)
    removed = flagged.where(~F.col("_keep")).select(
        *keep_cols, F.lit(NAME).alias("removed_by"), why.alias("reason"))
    return StageResult(kept, removed, stats)
