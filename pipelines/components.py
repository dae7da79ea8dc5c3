"""Connected components of an edge list in Spark: large-star / small-star (Kiveris et al., 2014).

Nodes are longs; each undirected edge is stored once as ``(a, b)`` with ``a > b``. Two operations
alternate until the graph is a set of stars:

- **large-star**: every node `u` links each *larger* neighbour to the smallest node of its
  neighbourhood ``m(u) = min(N(u) + {u})``;
- **small-star**: every node `u` links itself and each *smaller* neighbour to the smallest of
  them.

Both keep the connectivity and only ever move edges toward smaller nodes, so the result is one
star per component whose centre is the component's smallest node. The rounds are O(log^2 n) in
theory and a handful in practice; each round is a few shuffles of the edge list, and nothing is
collected to the driver except one count per round. Each round's edges are checkpointed (reliable
`checkpoint()` when the SparkContext has a checkpoint directory, `localCheckpoint()` otherwise),
so the lineage does not grow with the number of rounds.

An edge list of at most `LOCAL_EDGES` edges (16 bytes each: 32 MB at the default) is solved on
the driver instead, with scipy's connected components, and the labels go back to Spark as Arrow:
the rounds' small shuffles and jobs cost more than the edges do until the graph is large. The
labels are the same either way (tests/test_components.py runs both on the same graphs).
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.errors import WinnowError

from .minhash_lsh import local_components  # noqa: F401 - solved in memory; re-exported

log = logging.getLogger("winnow.components")

MAX_ROUNDS = 100
LOCAL_EDGES = 2_000_000
LABELS_SCHEMA = "node long, component long"


def normalize_edges(edges: DataFrame, src: str = "src", dst: str = "dst") -> DataFrame:
    """Undirected edges as distinct ``(a, b)`` with ``a > b``; self-loops dropped."""
    return (
        edges.where(F.col(src) != F.col(dst))
        .select(F.greatest(src, dst).alias("a"), F.least(src, dst).alias("b"))
        .distinct()
    )


def large_star(e: DataFrame) -> DataFrame:
    both = e.select(F.col("a").alias("u"), F.col("b").alias("v")).unionByName(
        e.select(F.col("b").alias("u"), F.col("a").alias("v"))
    )
    m = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    return (
        both.where(F.col("v") > F.col("u"))
        .join(m, "u")
        .select(F.col("v").alias("a"), F.col("m").alias("b"))
        .distinct()
    )


def small_star(e: DataFrame) -> DataFrame:
    m = e.groupBy("a").agg(F.min("b").alias("m"))
    joined = e.join(m, "a")
    to_centre = joined.select(F.col("a"), F.col("m").alias("b"))
    neighbours = joined.where(F.col("b") != F.col("m")).select(F.col("b").alias("a"), F.col("m").alias("b"))
    return to_centre.unionByName(neighbours).distinct()


def not_stars(e: DataFrame) -> int:
    """How many nodes still break the star shape: a node that both points and is pointed to, or
    that points to more than one node. Zero means every component is a star."""
    ends = e.select(F.col("a").alias("n"), F.lit(1).alias("out"), F.lit(0).alias("in")).unionByName(
        e.select(F.col("b").alias("n"), F.lit(0).alias("out"), F.lit(1).alias("in"))
    )
    per_node = ends.groupBy("n").agg(F.sum("out").alias("out"), F.max("in").alias("in"))
    return per_node.where((F.col("out") > 1) | ((F.col("out") > 0) & (F.col("in") > 0))).count()


def _cut(df: DataFrame) -> DataFrame:
    sc = df.sparkSession.sparkContext
    if sc.getCheckpointDir():
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def _local_labels(e: DataFrame) -> DataFrame:
    """The labels of a small normalized edge list, solved on the driver with scipy."""
    table = e.toArrow()
    nodes, components = local_components(table.column("a").to_numpy().astype(np.int64, copy=False),
                                         table.column("b").to_numpy().astype(np.int64, copy=False))
    labels = pa.table({"node": pa.array(nodes, pa.int64()), "component": pa.array(components, pa.int64())})
    return e.sparkSession.createDataFrame(labels, LABELS_SCHEMA)


def connected_components(
    edges: DataFrame, src: str = "src", dst: str = "dst", max_rounds: int = MAX_ROUNDS,
    local_edges: int = LOCAL_EDGES,
) -> tuple[DataFrame, int]:
    """``(labels, rounds)``: labels has one row ``(node, component)`` for every node that appears
    in `edges`, `component` being the smallest node of its component. `rounds` is the number of
    large-star / small-star rounds Spark ran: 0 when the edges were few enough (at most
    `local_edges`) to be solved on the driver."""
    e = _cut(normalize_edges(edges, src, dst))
    if e.count() <= local_edges:
        return _local_labels(e), 0
    rounds = 0
    while True:
        if not_stars(e) == 0:
            break
        if rounds >= max_rounds:
            raise WinnowError(f"connected components did not converge in {max_rounds} rounds")
        e = _cut(small_star(large_star(e)))
        rounds += 1
        log.info("connected components: round %d done", rounds)
    labels = e.select(F.col("a").alias("node"), F.col("b").alias("component")).unionByName(
        e.select(F.col("b").alias("node"), F.col("b").alias("component"))
    ).distinct()
    return labels, rounds
