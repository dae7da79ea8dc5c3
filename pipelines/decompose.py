"""Stage `decompose`: each document's tokens split into power-of-two chunks (Dataset
Decomposition, Pouransari et al. 2024, arXiv:2405.13226, and its reference code
apple/ml-dataset-decomposition; `mixers.decomposition.decompose`).

- A chunk in bucket i has 2**i + 1 tokens (2**i inputs plus the shifted target); buckets
  ``min_log2..max_log2`` (the paper's 8..13 by default). Documents longer than the largest
  bucket are split at random with the paper's odds; the random generator of each document is
  seeded by (``seed``, xxh3-64 of its id), so the result does not depend on partitioning.
- Remainders shorter than the smallest bucket are kept as a ``tail`` chunk (``tail = "keep"``,
  the default, bucket null) or dropped and counted (``tail = "drop"``): never lost silently.
  A document left with no chunk at all is a removed row with the reason.
- Accounting stays in documents: a kept document carries its chunks in a ``chunks`` column
  (`array<struct<bucket, position, start, tokens>>`) and ``dropped_tokens``; `export` explodes
  the chunks into training shards.
- Stats (from the written output): sequences and tokens per bucket, tail and dropped tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param

from .stage import Columns, StageContext, StageResult

NAME = "decompose"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
TAILS = ("keep", "drop")

CHUNK_ARROW = pa.struct([("bucket", pa.int32()), ("position", pa.int32()), ("start", pa.int32()),
                         ("tokens", pa.list_(pa.int32()))])
CHUNK_SPARK = T.StructType([T.StructField("bucket", T.IntegerType()), T.StructField("position", T.IntegerType()),
                            T.StructField("start", T.IntegerType()),
                            T.StructField("tokens", T.ArrayType(T.IntegerType(), containsNull=False))])


@dataclass(frozen=True)
class DecomposeParams:
    min_log2: int = param(8, metavar="LO", help="smallest bucket exponent: chunks of 2**LO + 1 tokens")
    max_log2: int = param(13, metavar="HI", help="largest bucket exponent: chunks of 2**HI + 1 tokens")
    tail: str = param("keep", choices=TAILS, metavar="HOW",
                      help="remainders shorter than the smallest bucket: keep in bucket_tail, or drop and count")
    share_boundary: bool = param(False, help="consecutive chunks of a document share their boundary token "
                                 "(the last target of one is the first input of the next)")
    seed: int = param(0, metavar="N", help="seed of the random splits of long documents")

    def __post_init__(self) -> None:
        if not 1 <= self.min_log2 <= self.max_log2 <= 30:
            raise WinnowError(f"decompose: need 1 <= min_log2 <= max_log2 <= 30, got {self.min_log2}..{self.max_log2}")
        if self.tail not in TAILS:
            raise WinnowError(f"decompose.tail: {self.tail!r} is not one of {', '.join(TAILS)}")


def columns(_params: DecomposeParams) -> Columns:
    return Columns(requires=("id", "tokens"), adds=("chunks", "dropped_tokens"))


def document_rng(seed: int, doc_id: str) -> np.random.Generator:
    """The generator a document's random splits use: a function of the seed and its id only."""
    import xxhash

    return np.random.default_rng([seed, xxhash.xxh3_64_intdigest(doc_id.encode("utf-8", "surrogatepass"))])


def _kernel(params: DecomposeParams):
    from mixers.decomposition import decompose

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            names = batch.schema.names
            ids = batch.column(names.index("id")).to_pylist()
            tokens = batch.column(names.index("tokens"))
            chunks, dropped = [], []
            for i, doc_id in enumerate(ids):
                toks = tokens[i].values.to_numpy(zero_copy_only=False) if tokens[i].is_valid else np.zeros(0, np.int32)
                dec = decompose(toks, params.min_log2, params.max_log2, document_rng(params.seed, doc_id),
                                params.tail, share_boundary=params.share_boundary)
                chunks.append([{"bucket": c.bucket, "position": c.position, "start": c.start,
                                "tokens": c.tokens} for c in dec.chunks])
                dropped.append(dec.dropped_tokens)
            yield pa.RecordBatch.from_arrays(
                list(batch.columns) + [pa.array(chunks, type=pa.list_(CHUNK_ARROW)), pa.array(dropped, type=pa.int32())],
                names=names + ["chunks", "dropped_tokens"])

    return kernel


def bucket_table(kept: DataFrame) -> dict[str, Any]:
    """Sequences, stored tokens and trained tokens per bucket ("tail" for tails), from the chunks."""
    c = F.explode("chunks").alias("c")
    per = (kept.select(c).select(F.coalesce(F.col("c.bucket").cast("string"), F.lit("tail")).alias("bucket"),
                                 F.size("c.tokens").alias("n"))
           .groupBy("bucket").agg(F.count(F.lit(1)).alias("sequences"), F.sum("n").alias("tokens"),
                                  F.sum(F.col("n") - 1).alias("train_tokens")))
    rows = per.collect()  # one row per bucket
    order = sorted(rows, key=lambda r: (r["bucket"] == "tail", int(r["bucket"]) if r["bucket"] != "tail" else 0))
    return {"buckets": {r["bucket"]: {"sequences": int(r["sequences"]), "tokens": int(r["tokens"]),
                                      "train_tokens": int(r["train_tokens"])} for r in order},
            "dropped_tokens": int(kept.agg(F.sum("dropped_tokens")).first()[0] or 0)}


def apply(df: DataFrame, params: DecomposeParams, ctx: StageContext) -> StageResult:
    schema = T.StructType(list(df.schema.fields) + [T.StructField("chunks", T.ArrayType(CHUNK_SPARK, containsNull=False)),
                                                    T.StructField("dropped_tokens", T.IntegerType())])
    split = ctx.persist(df.mapInArrow(_kernel(params), schema))
    empty = F.size("chunks") == 0
    kept = split.where(~empty)
    smallest = 2 ** params.min_log2 + 1
    removed = split.where(empty).select(
        *df.columns, F.lit(NAME).alias("removed_by"),
        F.format_string(f"no chunk: %d tokens, fewer than the smallest bucket's {smallest} (tail = {params.tail})",
                        F.greatest(F.size("tokens"), F.lit(0))).alias("reason"))
    stats = {"buckets": f"{params.min_log2}..{params.max_log2}", "tail": params.tail}
    return StageResult(kept, removed, stats, stats_after_write=_stats_after_write)


def _stats_after_write(kept: DataFrame, removed: DataFrame) -> dict[str, Any]:
    """The bucket table, and ``tokens_removed``: every token in no chunk, whether its document was
    kept (``dropped_tokens``) or removed for having no chunk at all."""
    out = bucket_table(kept)
    gone = int(removed.agg(F.sum("n_tokens")).first()[0] or 0) if "n_tokens" in removed.columns else 0
    out["tokens_removed"] = out["dropped_tokens"] + gone
    return out
