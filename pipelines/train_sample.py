"""The Spark side of training a scorer: labelled, capped, held-out samples of corpora, streamed to
the driver one row at a time (`flows/train.py` writes them to fastText's training file).

Each side is read with the `read` stage, texts with no non-space character are dropped, at most
`max_per_class` documents are kept in the order of a seeded hash of the id (deterministic, no
driver-side shuffle), and a second hash holds out `heldout_fraction` of them.
"""
from __future__ import annotations

from typing import Iterator

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import read
from .read import InputSpec, ReadParams
from .stage import StageContext


def _unit_hash(column: str, seed: int):
    """A uniform value in [0, 1) from a seeded hash of `column`."""
    bits = F.xxhash64(column, F.lit(seed)).bitwiseAND(F.lit((1 << 30) - 1).cast("long"))
    return bits / F.lit(float(1 << 30))


def read_texts(ctx: StageContext, paths: tuple[str, ...], source: str) -> tuple[DataFrame, DataFrame]:
    """(the read documents with a non-space character in their text, the bad records' rows):
    the `read` stage over `paths`, each named `<source>-<i>`. A missing path fails here, before
    Spark reads anything."""
    inputs = tuple(InputSpec(path=p, source=f"{source}-{i}") for i, p in enumerate(paths))
    read.expand_inputs(inputs)
    result = read.apply(None, ReadParams(inputs), ctx)
    return result.kept.where(F.length(F.trim(F.coalesce("text", F.lit("")))) > 0), result.removed


def in_fold(fold: int, folds: int = 2):
    """The documents of fold `fold`: pmod(xxhash64(text), folds), Spark's XXH64 of the UTF-8 text
    with seed 42, the split `filters.perplexity.fold_of` computes for one text."""
    return F.pmod(F.xxhash64("text"), F.lit(folds)) == F.lit(fold)


def labelled_sample(ctx: StageContext, paths: tuple[str, ...], label: str, max_docs: int,
                    heldout_fraction: float, seed: int) -> tuple[DataFrame, int, int]:
    """(rows id/text/label/heldout, documents read, bad records) for one side."""
    kept, removed = read_texts(ctx, paths, label)
    docs = ctx.persist(kept.select("id", "text", F.lit(label).alias("label")))
    n_bad = removed.count()
    n = docs.count()
    if n > max_docs:
        docs = docs.orderBy(F.xxhash64("id", F.lit(seed)), "id").limit(max_docs)
    return docs.withColumn("heldout", _unit_hash("id", seed + 1) < F.lit(heldout_fraction)), n, n_bad


def training_rows(both: DataFrame, seed: int) -> Iterator[tuple[str, str]]:
    """(label, text) of the training rows, labels interleaved by a seeded hash order."""
    rows = both.where(~F.col("heldout")).orderBy(F.xxhash64("id", "label", F.lit(seed)), "id", "label")
    for row in rows.select("label", "text").toLocalIterator():
        yield row["label"], row["text"]


def heldout_rows(both: DataFrame) -> Iterator[tuple[str, str]]:
    for row in both.where(F.col("heldout")).select("label", "text").toLocalIterator():
        yield row["label"], row["text"]
