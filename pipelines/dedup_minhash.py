"""Stage `dedup_minhash`: MinHash-LSH near-duplicate removal, distributed from end to end.

MinHash: Broder 1997, "On the resemblance and containment of documents"; LSH banding and its
S-curve: Leskovec, Rajaraman and Ullman, Mining of Massive Datasets, ch. 3.

1. **Signatures** inside `mapInArrow`, one pass per Arrow batch: `minhash_numba` (compiled, the
   default) or `minhash_kernel` (numpy, the reference), bit-identical.
2. **Bands**: the K values are cut into `bands` x `rows`; each (band, values) pair is a bucket,
   keyed by one 64-bit hash of the band's index and values (`minhash_kernel.band_keys`, computed
   with the signature), so the bucket shuffle and sort move 16 bytes a row.
   Unless given, `bands` and `rows` minimize ``fp_weight * FP area + (1 - fp_weight) * FN area``
   of the S-curve at `threshold` (the text-dedup / datasketch criterion). With ``probes`` = p > 1
   the same K values are also regrouped p - 1 more times (a seeded permutation of the value
   positions, then cut into the same `bands` x `rows`): a pair whose agreeing values miss every
   band of one grouping often fills a band of another. At K = 256, 28 x 9, one regrouping cuts
   the chance that a pair at J = 0.8 is never a candidate from 1.8% to 0.10% (0.59% to 0.023%
   at 0.82; simulated, 200k pairs each), for about twice the buckets. The check keeps precision.
3. **Candidates**: in every bucket with more than one document, each member is paired with the
   bucket's first document (a star) and with the member before it in input order (a chain): at
   most 2(n - 1) pairs per bucket of n, never n^2. The chain matters once pairs are checked: a
   member may fail the check against the first document and pass it against its neighbour.
4. **Check** (``check``):
   - ``signature`` (default): a candidate whose signatures agree on at least
     ``threshold + margin`` of the K values is accepted, one below ``threshold - margin`` is
     rejected, and the ambiguous ones in between get their exact shingle Jaccard. The margin is
     three standard errors of the estimate, ``3 * sqrt(t (1 - t) / K)``.
   - ``exact`` (``winnow dedup --verify``): every candidate gets its exact Jaccard.
   - ``none``: every candidate is an edge (plain LSH, as datasketch and datatrove do).
5. **Components** of the accepted edges, large-star / small-star in Spark (`components`).
6. **Survivor**: per component the first document in input order, or with ``score_column`` the
   highest score (nulls lowest, ties to input order). The others are removed with
   ``reason = "near-duplicate of <survivor id>"``; kept and removed rows get ``cluster_id``, the
   id of the component's first document (null for documents with no near-duplicate).

Because the candidate curve is backed by a check, the default ``fp_weight`` is 0.02, not 0.5: a
false candidate costs one signature comparison, a missed one is a duplicate nothing recovers. At
threshold 0.8 and K = 256 that gives 28 x 9 bands (P = 0.98 at J = 0.8) where 0.5 gives 17 x 15
(P = 0.46).
Nodes are ``_file << 40 | _row``, so the smallest node of a component is its first occurrence and
the result does not depend on partitioning.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import minhash_kernel as mk
from .components import LOCAL_EDGES, connected_components
from .minhash_lsh import (  # noqa: F401 - re-exported: the stage's parameters and kernels
    CHECKS, MAX_NUM_PERM, MAX_PROBES, NAME, VERSION, NODE_ROW_BITS, PROBE_STREAM, DedupMinhashParams, band_keys,
    band_rows, bucket_pairs_kernel, explain, kernel_name, local_components, shingle_sets, signatures, verify_bin,
)
from .against import EARLIER_NEAR, earlier_documents
from .stage import Columns, StageContext, StageResult, series_udf

# Documents (in ambiguous pairs; in components) up to which the joins that pick them out of the
# corpus broadcast their ids (2M longs, about 16 MB on every executor; with ids and tags, about
# 100 bytes a document); above it, Spark's own joins (shuffles).
BROADCAST_IDS = 2_000_000
# The check on few candidate pairs (at most components.LOCAL_EDGES) runs per group of documents:
# the driver finds the candidate graph's components, packs them into bins of about BIN_DOCS
# documents, and each bin's texts and pairs meet in one task (cogroup), which checks the pairs and
# labels the bin's components. A candidate component above MAX_GROUP_DOCS documents would make one
# task hold too much text: then the check runs as distributed joins (`_check`) instead.
BIN_DOCS = 2_000
MAX_GROUP_DOCS = 20_000



def columns(params: DedupMinhashParams) -> Columns:
    extra = (("source",) if params.per_source else ()) + ((params.score_column,) if params.score_column else ())
    return Columns(requires=("id", "text", "_file", "_row") + extra, adds=("cluster_id",))



# --- kernels (run on executors) ----------------------------------------------------------------


def _bucket_kernel(num_perm: int, ngram: int, seed: int, extra: list[str], positions: np.ndarray):
    """(node, text, extra...) batches -> (key, extra..., node): one row per document and band,
    `key` being the band's key (`band_keys`). The signatures stay in the task: the binned check
    recomputes those it needs from the texts, and the joined check asks `_signature_kernel`."""
    out_schema = pa.schema([pa.field("key", pa.int64())] + [pa.field(c, pa.string()) for c in extra]
                           + [pa.field("node", pa.int64())])
    n_bands = positions.shape[0]

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            texts = [t or "" for t in batch.column("text").to_pylist()]
            keys = band_keys(signatures(texts, num_perm, ngram, seed), positions)
            rows = pa.array(np.repeat(np.arange(len(texts), dtype=np.int64), n_bands))
            cols = [pa.array(keys.ravel())] + [batch.column(c).take(rows) for c in extra] + [batch.column("node").take(rows)]
            yield pa.RecordBatch.from_arrays(cols, schema=out_schema)

    return kernel


def _signature_kernel(num_perm: int, ngram: int, seed: int):
    """(node, text) batches -> (node, sig): each document's signature, K uint32 values as bytes."""
    out_schema = pa.schema([pa.field("node", pa.int64()), pa.field("sig", pa.binary())])

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            texts = [t or "" for t in batch.column("text").to_pylist()]
            sigs = signatures(texts, num_perm, ngram, seed)
            width = num_perm * 4
            offsets = pa.array(np.arange(0, (len(texts) + 1) * width, width, dtype=np.int32))
            sig_col = pa.BinaryArray.from_buffers(
                pa.binary(), len(texts), [None, offsets.buffers()[1], pa.py_buffer(sigs.tobytes())]
            )
            yield pa.RecordBatch.from_arrays([batch.column("node"), sig_col], schema=out_schema)

    return kernel


def _agreement_udf():
    def agreement(a, b):
        import pandas as pd

        if len(a) == 0:
            return pd.Series([], dtype=float)
        sa = np.frombuffer(b"".join(a), dtype=np.uint32).reshape(len(a), -1)
        sb = np.frombuffer(b"".join(b), dtype=np.uint32).reshape(len(b), -1)
        return pd.Series(mk.estimated_jaccard(sa, sb))

    return series_udf(T.DoubleType(), agreement)


def _shingle_set_kernel(ngram: int):
    """(n, text) batches -> (n, set): each document's distinct shingle hashes, sorted, as the bytes
    of a uint64 array; computed once per document however many pairs it is in."""
    out_schema = pa.schema([pa.field("n", pa.int64()), pa.field("set", pa.binary())])

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            sets = [x.tobytes() for x in shingle_sets([t or "" for t in batch.column("t").to_pylist()], ngram)]
            yield pa.RecordBatch.from_arrays([batch.column("n"), pa.array(sets, type=pa.binary())], schema=out_schema)

    return kernel


def _set_jaccard_udf():
    def exact_jaccard(a, b):
        import pandas as pd

        return pd.Series([mk.jaccard(np.frombuffer(x, dtype=np.uint64), np.frombuffer(y, dtype=np.uint64))
                          for x, y in zip(a, b)], dtype=float)

    return series_udf(T.DoubleType(), exact_jaccard)



def _candidates(buckets: DataFrame, extra: list[str]) -> DataFrame:
    """Distinct (src, dst) candidate pairs, src > dst, from the `(key, extra..., node)` rows.

    Each bucket member is paired with the bucket's smallest node (a star) and with the member
    just before it (a chain). With a check, a star alone loses a duplicate whose only link to the
    bucket is a member other than the anchor (A~B and B~C pass, A~C fails): the chain keeps such
    pairs for at most twice the star's pairs. The buckets are a shuffle by key and a sort within
    partitions; the pairs come from a kernel over the sorted rows (a window function did the same
    at several times the cost)."""
    parts = int(buckets.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    pair_type = T.StructType([T.StructField("src", T.LongType()), T.StructField("dst", T.LongType())])
    return (
        buckets.repartition(parts, "key", *extra)
        .sortWithinPartitions("key", *extra, "node")
        .mapInArrow(bucket_pairs_kernel(extra), pair_type)
        .distinct()
    )



def _bin_kernel(params: DedupMinhashParams):
    out_schema = pa.schema([pa.field("node", pa.int64()), pa.field("component", pa.int64()),
                            pa.field("ambiguous", pa.int64())])

    def kernel(docs: pa.Table, pairs: pa.Table) -> pa.Table:
        if docs.num_rows == 0 or pairs.num_rows == 0:
            return out_schema.empty_table()
        nodes = docs.column("node").to_numpy()
        label_nodes, label_comps, n_ambiguous = verify_bin(
            nodes, [t or "" for t in docs.column("text").to_pylist()], pairs.column("src").to_numpy(), pairs.column("dst").to_numpy(), params)
        # one row with no node carries the bin's count of ambiguous pairs
        tail = pa.nulls(1, pa.int64())
        ambiguous = np.zeros(len(label_nodes) + 1, dtype=np.int64)
        ambiguous[-1] = n_ambiguous
        return pa.Table.from_arrays(
            [pa.concat_arrays([pa.array(label_nodes, pa.int64()), tail]),
             pa.concat_arrays([pa.array(label_comps, pa.int64()), tail]), pa.array(ambiguous)],
            schema=out_schema)

    return kernel


def _grouped_check(candidates: DataFrame, docs: DataFrame, params: DedupMinhashParams, stats: dict,
                   ctx: StageContext) -> DataFrame | None:
    """The labels of the checked candidate graph, with the check run per bin of candidate
    components (see BIN_DOCS); None when a candidate component is larger than MAX_GROUP_DOCS."""
    spark = candidates.sparkSession
    table = candidates.toArrow()
    src = table.column("src").to_numpy().astype(np.int64, copy=False)
    dst = table.column("dst").to_numpy().astype(np.int64, copy=False)
    nodes, groups = local_components(src, dst)
    if len(nodes) == 0:
        stats["ambiguous_pairs"] = 0
        return spark.createDataFrame([], "node long, component long")
    group_ids, group_of_node, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if sizes.max() > MAX_GROUP_DOCS:
        return None
    n_bins = max(1, -(-len(nodes) // BIN_DOCS))
    bin_of_group = np.arange(len(group_ids)) % n_bins
    bin_of_node = bin_of_group[group_of_node].astype(np.int32)
    bin_of_pair = bin_of_node[np.searchsorted(nodes, src)]  # local_components gives the nodes sorted
    members = spark.createDataFrame(pa.table({"node": nodes, "bin": bin_of_node}), "node long, bin int")
    pairs = spark.createDataFrame(pa.table({"src": src, "dst": dst, "bin": bin_of_pair}), "src long, dst long, bin int")
    texts = docs.select(F.col("_node").alias("node"), "text").join(F.broadcast(members), "node")
    out = ctx.persist(
        texts.groupBy("bin").cogroup(pairs.groupBy("bin"))
        .applyInArrow(_bin_kernel(params), "node long, component long, ambiguous long")
    )
    stats["ambiguous_pairs"] = int(out.where(F.col("node").isNull()).agg(F.sum("ambiguous")).first()[0] or 0)
    return out.where(F.col("node").isNotNull()).select("node", "component")


# --- the stage ---------------------------------------------------------------------------------

def node_column():
    return F.shiftleft(F.col("_file").cast("long"), NODE_ROW_BITS).bitwiseOR(F.col("_row").cast("long"))


def apply(df: DataFrame, params: DedupMinhashParams, ctx: StageContext) -> StageResult:
    b, r = params.banding()
    extra = ["source"] if params.per_source else []
    docs = df.withColumn("_node", node_column())  # re-read from Parquet where used: one corpus copy in memory, not two
    # with `against`, the earlier outputs' documents join the pool with nodes below every new one:
    # each survives its component, and only the new documents are tagged and emitted
    pool = _with_earlier(docs, params, ctx, extra) if params.against else docs

    kernel_in = pool.select(F.col("_node").alias("node"), "text", *extra)
    positions = np.array([list(rows) for rows in band_rows(params)], dtype=np.int64)
    kernel = _bucket_kernel(params.num_perm, params.ngram, params.seed, extra, positions)
    bucket_type = T.StructType(
        [T.StructField("key", T.LongType())] + [T.StructField(c, T.StringType()) for c in extra]
        + [T.StructField("node", T.LongType())]
    )
    candidates = ctx.persist(_candidates(kernel_in.mapInArrow(kernel, bucket_type), extra))

    stats: dict = {"bands": b, "rows": r, "probes": params.probes, "kernel": kernel_name(),
                   "candidate_pairs": candidates.count()}
    labels = None
    if params.check != "none" and stats["candidate_pairs"] <= LOCAL_EDGES:
        labels = _grouped_check(candidates, pool, params, stats, ctx)
    if labels is None:
        edges = _check(candidates, pool, params, stats, ctx)
        labels, rounds = connected_components(edges)
        stats["cc_rounds"] = rounds
    else:
        stats["cc_rounds"] = 0
    labels = ctx.persist(labels)

    sizes = labels.groupBy("component").count().groupBy("count").agg(F.count(F.lit(1)).alias("n"))
    dist = {int(row["count"]): int(row["n"]) for row in sizes.collect()}  # one row per distinct size
    stats["components"] = sum(dist.values())
    stats["largest_component"] = max(dist, default=0)
    stats["component_sizes"] = dict(sorted(dist.items()))
    # Only documents in a component get a cluster: while they are few, their ids and tags go to
    # every task (broadcast) and the corpus is read past them twice (kept, removed), never
    # shuffled or copied into memory; beyond BROADCAST_IDS it is one sort-merge join, persisted.
    small = sum(size * n for size, n in dist.items()) <= BROADCAST_IDS

    def spread(frame: DataFrame) -> DataFrame:
        return F.broadcast(frame) if small else frame

    survivors = _survivors(labels, pool, params)
    ids = ctx.persist(
        pool.select(F.col("_node").alias("node"), F.col("id").alias("_nid")).join(spread(labels.select("node")), "node", "left_semi")
    )
    info = (
        survivors.join(spread(ids.withColumnRenamed("node", "component").withColumnRenamed("_nid", "cluster_id")), "component")
        .join(spread(ids.withColumnRenamed("node", "survivor").withColumnRenamed("_nid", "_survivor_id")), "survivor")
        .select(F.col("node").alias("_node"), "cluster_id", "_survivor_id", "survivor")
    )
    tagged = docs.join(spread(info), "_node", "left")
    if not small:
        tagged = ctx.persist(tagged)
    is_removed = F.col("survivor").isNotNull() & (F.col("survivor") != F.col("_node"))
    kept = tagged.where(~is_removed).drop("_node", "_survivor_id", "survivor")
    removed = tagged.where(is_removed).select(
        *df.columns,
        "cluster_id",
        F.lit(NAME).alias("removed_by"),
        F.when(F.col("survivor") < 0, F.concat(F.lit(EARLIER_NEAR), F.col("_survivor_id")))
        .otherwise(F.concat(F.lit("near-duplicate of "), F.col("_survivor_id"))).alias("reason"),
        F.col("_survivor_id").alias("duplicate_of"),
    )
    if params.against:
        stats["earlier_duplicates"] = tagged.where(is_removed & (F.col("survivor") < 0)).count()
    return StageResult(kept, removed, stats)


def _with_earlier(docs: DataFrame, params: DedupMinhashParams, ctx: StageContext, extra: list[str]) -> DataFrame:
    """The new documents and those of `params.against` (negative `_file`, so negative nodes) in
    one frame of the columns the dedup reads."""
    earlier = earlier_documents(ctx, params.against, NAME, params.per_source).withColumn("_node", node_column())
    cols = ["_node", "id", "text", *extra]
    if params.score_column:  # earlier documents come first whatever the score (see _survivors)
        earlier = earlier.withColumn(params.score_column, F.lit(None).cast(docs.schema[params.score_column].dataType))
        cols.append(params.score_column)
    return docs.select(*cols).unionByName(earlier.select(*cols))


def _check(candidates: DataFrame, docs: DataFrame, params: DedupMinhashParams, stats: dict,
           ctx: StageContext) -> DataFrame:
    if params.check == "none":
        return candidates
    if params.check == "exact":
        ambiguous, accepted, n_ambiguous = candidates, None, stats["candidate_pairs"]
        stats["ambiguous_pairs"] = n_ambiguous  # every pair is checked exactly
    else:
        # the signatures of the documents in pairs, recomputed from their texts (the bucket
        # kernel keeps none): a semi-join on their nodes, then the signature kernel
        ends = candidates.select(F.col("src").alias("node")).union(candidates.select(F.col("dst").alias("node"))).distinct()
        if stats["candidate_pairs"] * 2 <= BROADCAST_IDS:
            ends = F.broadcast(ends)
        sig_type = T.StructType([T.StructField("node", T.LongType()), T.StructField("sig", T.BinaryType())])
        sigs = ctx.persist(
            docs.select(F.col("_node").alias("node"), "text").join(ends, "node", "left_semi")
            .mapInArrow(_signature_kernel(params.num_perm, params.ngram, params.seed), sig_type)
        )
        s = sigs.select(F.col("node").alias("n"), F.col("sig").alias("s"))
        scored = ctx.persist(  # read twice below: accepted and ambiguous
            candidates.join(s.withColumnRenamed("n", "src").withColumnRenamed("s", "s1"), "src")
            .join(s.withColumnRenamed("n", "dst").withColumnRenamed("s", "s2"), "dst")
            .select("src", "dst", _agreement_udf()(F.col("s1"), F.col("s2")).alias("agree"))
        )
        lo, hi = params.threshold - params.margin(), params.threshold + params.margin()
        accepted = scored.where(F.col("agree") >= hi).select("src", "dst")
        ambiguous = ctx.persist(scored.where((F.col("agree") >= lo) & (F.col("agree") < hi)).select("src", "dst"))
        n_ambiguous = stats["ambiguous_pairs"] = ambiguous.count()
    # Exact Jaccard: the shingle sets of the documents in ambiguous pairs, each computed once;
    # only those documents' texts are read into the kernel (a semi-join on their ids, broadcast
    # when the ids are few), and pairs join the sets, never the texts.
    need = ambiguous.select(F.col("src").alias("n")).union(ambiguous.select(F.col("dst").alias("n"))).distinct()
    if n_ambiguous * 2 <= BROADCAST_IDS:
        need = F.broadcast(need)
    texts = docs.select(F.col("_node").alias("n"), F.col("text").alias("t")).join(need, "n", "left_semi")
    set_type = T.StructType([T.StructField("n", T.LongType()), T.StructField("set", T.BinaryType())])
    sets = ctx.persist(texts.mapInArrow(_shingle_set_kernel(params.ngram), set_type))
    verified = (
        ambiguous.join(sets.withColumnRenamed("n", "src").withColumnRenamed("set", "a"), "src")
        .join(sets.withColumnRenamed("n", "dst").withColumnRenamed("set", "b"), "dst")
        .select("src", "dst", _set_jaccard_udf()(F.col("a"), F.col("b")).alias("j"))
        .where(F.col("j") >= params.threshold)
        .select("src", "dst")
    )
    return verified if accepted is None else accepted.unionByName(verified)


def _survivors(labels: DataFrame, docs: DataFrame, params: DedupMinhashParams) -> DataFrame:
    """``(node, component, survivor)`` for every node in a component."""
    if params.score_column is None:
        return labels.withColumn("survivor", F.col("component"))
    scores = docs.select(F.col("_node").alias("node"), F.col(params.score_column).cast("double").alias("_score"))
    # an earlier output's document (node < 0, `against`) survives before any score
    order = Window.partitionBy("component").orderBy((F.col("node") < 0).desc(), F.col("_score").desc_nulls_last(),
                                                    F.col("node"))
    return (
        labels.join(scores, "node")
        .withColumn("survivor", F.first("node").over(order.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)))
        .select("node", "component", "survivor")
    )
