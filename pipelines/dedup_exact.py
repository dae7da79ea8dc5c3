"""Stage `dedup_exact`: keep one document per normalized text.

The hash is xxh3-128 of the normalized text (`filters.text`). Of each group of equal hashes the
survivor is the first occurrence in input order (file order, then line or row); the others are
removed with ``reason = "exact duplicate of <survivor id>"``. The survivor of each group is found
with an aggregation (partial aggregates per partition, so one huge group does not land on one
task) and joined back; nothing is collected to the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from filters.text import NORMALIZATIONS, content_hashes

from .stage import StageContext, StageResult, WinnowError

NAME = "dedup_exact"


@dataclass(frozen=True)
class DedupExactParams:
    normalize: str = "whitespace"   # none | whitespace | aggressive (see filters/text.py)
    per_source: bool = False        # dedup within each `source` only

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise WinnowError(
                f"dedup_exact.normalize: {self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}"
            )


def _hash_column(mode: str):
    @F.pandas_udf(T.BinaryType())
    def content_hash(texts: pd.Series) -> pd.Series:
        return pd.Series(content_hashes(texts.tolist(), mode))  # type: ignore[arg-type]

    return content_hash


def apply(df: DataFrame, params: DedupExactParams, ctx: StageContext) -> StageResult:
    keys = ["_hash", "source"] if params.per_source else ["_hash"]
    hashed = df.withColumn("_hash", _hash_column(params.normalize)(F.col("text")))
    survivors = hashed.groupBy(*keys).agg(
        F.min(F.struct("_file", "_row", "id")).alias("_first"), F.count(F.lit(1)).alias("_copies")
    )
    joined = ctx.persist(hashed.join(survivors, on=keys, how="inner"))
    is_first = (F.col("_file") == F.col("_first._file")) & (F.col("_row") == F.col("_first._row"))
    kept = joined.where(is_first).drop("_hash", "_first", "_copies")
    removed = joined.where(~is_first).select(
        *[c for c in df.columns],
        F.lit(NAME).alias("removed_by"),
        F.concat(F.lit("exact duplicate of "), F.col("_first.id")).alias("reason"),
        F.col("_first.id").alias("duplicate_of"),
    )
    groups = joined.where(is_first & (F.col("_copies") > 1)).agg(
        F.count(F.lit(1)).alias("groups"), F.max("_copies").alias("largest")
    ).first()
    stats = {"duplicate_groups": int(groups["groups"] or 0), "largest_group": int(groups["largest"] or 0)}
    return StageResult(kept, removed, stats)
