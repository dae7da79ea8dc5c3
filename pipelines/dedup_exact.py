"""Stage `dedup_exact`: keep one document per normalized text.

The hash is xxh3-128 of the normalized text (`filters.text`). Of each group of equal hashes the
survivor is the first occurrence in input order (file order, then line or row); the others are
removed with ``reason = "exact duplicate of <survivor id>"``. With `against` (earlier runs' kept/
directories, `pipelines/against.py`), a document whose hash an earlier document has is removed
with ``"earlier exact duplicate of <earlier id>"``; the earlier documents are not emitted. Rows are ranked within
their hash group by a window ordered by input order: one shuffle, the Python hash runs once per
row, nothing is collected to the driver. (An aggregate-then-join plan ran the hash UDF twice and
shuffled the rows twice; it was 2x slower in bench/bench_dedup_exact.py.) One very large group
is sorted by a single task, which spills to disk rather than failing.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param
from filters.text import NORMALIZATIONS, content_hashes

from .against import EARLIER_EXACT, earlier_documents
from .stage import Columns, StageContext, StageResult, series_udf

NAME = "dedup_exact"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1


@dataclass(frozen=True)
class DedupExactParams:
    normalize: str = param("whitespace", choices=tuple(NORMALIZATIONS), metavar="MODE",
                           help="text normalization before hashing: none (the text as given), whitespace "
                           "(NFC, runs of whitespace collapsed), aggressive (also lowercased, diacritics "
                           "stripped, digits as 0, punctuation as spaces)")
    per_source: bool = param(False, help="remove duplicates only within each source, not across sources")
    against: tuple[str, ...] = param((), metavar="DIR",
                                     help="earlier runs' kept/ directories: a document that duplicates one there "
                                     "is removed (reason: earlier exact duplicate of <its id>); theirs are "
                                     "not emitted again")

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise WinnowError(
                f"dedup_exact.normalize: {self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}"
            )


def columns(params: DedupExactParams) -> Columns:
    return Columns(requires=("id", "text", "_file", "_row") + (("source",) if params.per_source else ()))


def _hash_column(mode: str):
    def content_hash(texts):
        import pandas as pd

        return pd.Series(content_hashes(texts.tolist(), mode))

    return series_udf(T.BinaryType(), content_hash)


def apply(df: DataFrame, params: DedupExactParams, ctx: StageContext) -> StageResult:
    keys = ["_hash", "source"] if params.per_source else ["_hash"]
    hash_of = _hash_column(params.normalize)
    hashed = df.withColumn("_hash", hash_of(F.col("text")))
    if params.against:  # each hash of the earlier outputs with its first document's id
        earlier = (earlier_documents(ctx, params.against, NAME, params.per_source)
                   .withColumn("_hash", hash_of(F.col("text")))
                   .groupBy(*keys).agg(F.min(F.struct("_file", "_row", "id"))["id"].alias("_earlier")))
        hashed = hashed.join(earlier, keys, "left")
    else:
        hashed = hashed.withColumn("_earlier", F.lit(None).cast("string"))
    group = Window.partitionBy(*keys).orderBy("_file", "_row")
    ranked = ctx.persist(
        hashed.withColumn("_rank", F.row_number().over(group))
        .withColumn("_first", F.first("id").over(group))
    )
    earlier_copy = F.col("_earlier").isNotNull()
    kept = ranked.where((F.col("_rank") == 1) & ~earlier_copy).drop("_hash", "_rank", "_first", "_earlier")
    removed = ranked.where((F.col("_rank") > 1) | earlier_copy).select(
        *df.columns,
        F.lit(NAME).alias("removed_by"),
        F.when(earlier_copy, F.concat(F.lit(EARLIER_EXACT), F.col("_earlier")))
        .otherwise(F.concat(F.lit("exact duplicate of "), F.col("_first"))).alias("reason"),
        F.coalesce(F.col("_earlier"), F.col("_first")).alias("duplicate_of"),
    )
    sizes = ranked.where(F.col("_rank") > 1).groupBy(*keys).agg(F.max("_rank").alias("n"))
    groups = sizes.agg(F.count(F.lit(1)).alias("groups"), F.max("n").alias("largest")).first()
    stats = {"duplicate_groups": int(groups["groups"] or 0), "largest_group": int(groups["largest"] or 0)}
    if params.against:
        stats["earlier_duplicates"] = ranked.where(earlier_copy).count()
    return StageResult(kept, removed, stats)
