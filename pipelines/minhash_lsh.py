"""MinHash-LSH near-duplicate detection without Spark: the parameters of `dedup_minhash`, the
banding, the signature and band-key kernels, the candidate pairs of sorted buckets and the check of
a group of candidate pairs. `dedup_minhash` runs these inside Spark tasks; `local_engine` runs
them in a process pool. Nothing here imports pyspark or pandas, so a local run and a Python worker
import only numpy, pyarrow and the kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
import pyarrow as pa

from core.errors import WinnowError
from core.params import param

from . import minhash_kernel as mk


class _Numba:
    """`minhash_numba`, imported on first use (numba's import is about 0.25 s: a command that only
    parses its arguments, or a run that computes no signature, does without it)."""

    def __getattr__(self, name: str):
        from . import minhash_numba

        return getattr(minhash_numba, name)


mn = _Numba()


def kernel_name() -> str:
    """Which signature kernel runs: numba (compiled) where it is installed, else numpy."""
    return "numba" if mn.AVAILABLE else "numpy"

NAME = "dedup_minhash"  # the stage these parameters configure
# Bumped when the stage's output changes for the same input and parameters (both engines): saved
# state (flows/state.py) of an earlier version is then not reused.
VERSION = 1
CHECKS = ("signature", "exact", "none")
# 8192 values are 32 KiB of signature per document, and the estimate's standard error is already
# below 0.006 at any Jaccard; each probe grouping adds b buckets per document.
MAX_NUM_PERM = 8192
MAX_PROBES = 16
# The probe groupings' generator is seeded by (seed, PROBE_STREAM, g): the constant keeps it apart
# from the signature permutations, which `minhash_kernel.permutations` draws from `seed` alone.
# Fixed forever: changing it changes which pairs become candidates.
PROBE_STREAM = 0x5EED
# A node is `_file << NODE_ROW_BITS | _row`: rows below 2**40 per file, 2**23 files, in a long.
NODE_ROW_BITS = 40

@dataclass(frozen=True)
class DedupMinhashParams:
    threshold: float = param(0.8, metavar="J",
                             help="Jaccard similarity of word n-gram sets above which documents are "
                             "near-duplicates")
    num_perm: int = param(256, metavar="K", help="permutations per MinHash signature")
    ngram: int = param(5, metavar="N",
                       help="words per shingle (characters for scripts written without spaces)")
    bands: int | None = param(None, metavar="B",
                              help="LSH bands; with --rows, instead of the S-curve optimization")
    rows: int | None = param(None, metavar="R", help="rows (values) per band; with --bands")
    fp_weight: float = param(0.02, metavar="W",
                             help="weight of the false-positive area when choosing bands x rows")
    check: str = param("signature", choices=CHECKS, metavar="HOW",
                       help="how LSH candidate pairs are confirmed: signature (signature agreement, exact "
                       "Jaccard only for pairs near the threshold), exact (exact Jaccard for every pair), "
                       "none (every candidate pair is a duplicate: plain LSH, as datasketch)")
    probes: int = param(2, metavar="P", help="groupings of the signature values into bands (1 = plain LSH)")
    seed: int = param(1, metavar="N", help="permutation seed: the same seed gives the same signatures everywhere")
    per_source: bool = param(False, help="compare documents of the same source only")
    against: tuple[str, ...] = param((), metavar="DIR",
                                     help="earlier runs' kept/ directories: a document near-duplicating one there is "
                                     "removed (reason: earlier near-duplicate of <its id>); theirs are not "
                                     "emitted again")
    score_column: str | None = param(None, metavar="COL",
                                     help="keep the document with the highest COL in each component, "
                                     "not the first")

    def __post_init__(self) -> None:
        p = f"{NAME}."
        if not 0.0 < self.threshold < 1.0:
            raise WinnowError(f"{p}threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if not 2 <= self.num_perm <= MAX_NUM_PERM:
            raise WinnowError(f"{p}num_perm must be between 2 and {MAX_NUM_PERM}, got {self.num_perm}")
        if self.ngram < 1:
            raise WinnowError(f"{p}ngram must be at least 1, got {self.ngram}")
        if (self.bands is None) != (self.rows is None):
            raise WinnowError(f"{p}bands and rows go together: give both or neither")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise WinnowError(
                f"{p}bands x rows = {self.bands} x {self.rows} must be positive and at most num_perm = {self.num_perm}"
            )
        if not 0.0 < self.fp_weight < 1.0:
            raise WinnowError(f"{p}fp_weight must be between 0 and 1 (exclusive), got {self.fp_weight}")
        if not 1 <= self.probes <= MAX_PROBES:
            raise WinnowError(f"{p}probes must be between 1 and {MAX_PROBES}, got {self.probes}")
        if self.check not in CHECKS:
            raise WinnowError(f"{p}check: {self.check!r} is not one of {', '.join(CHECKS)}")

    def banding(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        return _optimal(self.threshold, self.num_perm, self.fp_weight)

    def margin(self) -> float:
        t = self.threshold
        return 3.0 * math.sqrt(t * (1.0 - t) / self.num_perm)


@lru_cache(maxsize=32)
def _optimal(threshold: float, num_perm: int, fp_weight: float) -> tuple[int, int]:
    return mk.optimal_bands(threshold, num_perm, fp_weight, 1.0 - fp_weight)


def band_rows(params: DedupMinhashParams) -> list[np.ndarray]:
    """The signature positions of every band: grouping 0 is positions 0..b*r-1 in order (plain
    LSH); grouping g > 0 is a permutation of all K positions seeded by (seed, g), cut the same way."""
    b, r = params.banding()
    out = [np.arange(j * r, (j + 1) * r) for j in range(b)]
    for g in range(1, params.probes):
        order = np.random.default_rng([params.seed, PROBE_STREAM, g]).permutation(params.num_perm)
        out += [order[j * r:(j + 1) * r] for j in range(b)]
    return out


def explain(params: DedupMinhashParams, similarities=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> str:
    """What `winnow dedup --explain` prints: the banding and its collision probabilities."""
    b, r = params.banding()
    how = "given" if params.bands is not None else (
        f"minimizing {params.fp_weight:g} x FP area + {1 - params.fp_weight:g} x FN area at threshold {params.threshold:g}"
    )
    lines = [
        f"threshold {params.threshold:g}, {params.num_perm} permutations, word {params.ngram}-gram shingles",
        f"bands x rows = {b} x {r} ({how}); uses {b * r} of {params.num_perm} values",
        f"probes = {params.probes}: the values grouped into bands {params.probes} way(s) "
        "(more groupings: fewer missed pairs, more candidates; the curve below is one grouping's)",
        f"S-curve midpoint (1/b)^(1/r) = {mk.midpoint(b, r):.3f}",
        "",
        "Jaccard   P(candidate) = 1 - (1 - s^r)^b",
    ]
    for s in similarities:
        lines.append(f"  {s:4.2f}    {float(mk.collision_probability(s, b, r)):.4f}")
    lines.append("")
    if params.check == "signature":
        m = params.margin()
        lines.append(
            f"check: signature agreement >= {params.threshold + m:.3f} accepts, < {params.threshold - m:.3f} "
            "rejects, in between exact Jaccard decides"
        )
    elif params.check == "exact":
        lines.append("check: every candidate pair is verified on exact shingle Jaccard")
    else:
        lines.append("check: none; every candidate pair is a duplicate edge")
    return "\n".join(lines)


def signatures(texts: list[str], num_perm: int, ngram: int, seed: int) -> np.ndarray:
    """MinHash signatures: the compiled kernel (`minhash_numba`) where numba is installed, else
    the numpy reference; the two are bit-identical (tests/test_minhash_numba.py)."""
    if mn.AVAILABLE:
        return mn.signatures(texts, num_perm, ngram, seed)
    return mk.signatures(texts, num_perm, ngram, seed)


def band_keys(sigs: np.ndarray, positions: np.ndarray) -> np.ndarray:
    if mn.AVAILABLE:
        return mn.band_keys(sigs, positions)
    return mk.band_keys(sigs, positions)


def shingle_sets(texts: list[str], ngram: int) -> list[np.ndarray]:
    if mn.AVAILABLE:
        return mn.shingle_sets(texts, ngram)
    return [mk.shingle_set(t, ngram) for t in texts]


def bucket_pairs_kernel(extra: list[str]):
    """Rows sorted by (key, extra..., node) within a partition, every row of a bucket in the same
    partition -> (src, dst) pairs: each member with the bucket's smallest node (a star) and with
    the member just before it (a chain). A bucket may run across batches: the last bucket's key,
    anchor and previous node carry over."""
    out_schema = pa.schema([pa.field("src", pa.int64()), pa.field("dst", pa.int64())])

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        carry = None  # (key, extra values, anchor, previous node) of the bucket the last batch ended in
        for batch in batches:
            n = len(batch)
            if n == 0:
                continue
            key = batch.column("key").to_numpy(zero_copy_only=False)
            node = batch.column("node").to_numpy(zero_copy_only=False)
            start = np.empty(n, dtype=bool)
            start[0] = True
            start[1:] = key[1:] != key[:-1]
            groups = [batch.column(c).to_pylist() for c in extra]
            for values in groups:  # a bucket is (key, extra...): a change in any starts one
                v = np.array(values, dtype=object)
                start[1:] |= v[1:] != v[:-1]
            head = np.flatnonzero(start)
            anchor = node[head][np.cumsum(start) - 1]
            prev = np.empty(n, dtype=np.int64)
            prev[1:] = node[:-1]
            has_prev = ~start
            if carry is not None and carry[0] == key[0] and carry[1] == tuple(g[0] for g in groups):
                first_end = head[1] if len(head) > 1 else n
                anchor[:first_end] = carry[2]
                prev[0], has_prev[0] = carry[3], True
            carry = (key[-1], tuple(g[-1] for g in groups), anchor[-1], node[-1])
            star = anchor != node
            chain = has_prev & (prev != anchor) & (prev != node)
            src = np.concatenate([node[star], node[chain]])
            dst = np.concatenate([anchor[star], prev[chain]])
            if len(src):
                yield pa.RecordBatch.from_arrays([pa.array(src), pa.array(dst)], schema=out_schema)

    return kernel


def verify_bin(nodes: np.ndarray, texts: list[str], src: np.ndarray, dst: np.ndarray,
               params: DedupMinhashParams) -> tuple[np.ndarray, np.ndarray, int]:
    """Check the candidate pairs (src, dst) among the documents `nodes` (with `texts`) as
    `_check` does, and label the components of the pairs that pass: ``(label nodes, their
    components, ambiguous pairs)``, a component being its smallest node. Pure numpy; runs in one
    task per bin."""
    order = np.argsort(nodes, kind="stable")
    a = order[np.searchsorted(nodes, src, sorter=order)]
    b = order[np.searchsorted(nodes, dst, sorter=order)]
    lo, hi = params.threshold - params.margin(), params.threshold + params.margin()
    hashed = mn.Hashed(texts, params.ngram) if mn.AVAILABLE else None  # each text hashed once
    if params.check == "exact":
        ok, ambiguous = np.zeros(len(a), dtype=bool), np.ones(len(a), dtype=bool)
    else:
        sigs = (hashed.signatures(params.num_perm, params.seed) if hashed
                else signatures(texts, params.num_perm, params.ngram, params.seed))
        agree = mk.estimated_jaccard(sigs[a], sigs[b])
        ok, ambiguous = agree >= hi, (agree >= lo) & (agree < hi)
    k = np.flatnonzero(ambiguous)
    need, slots = np.unique(np.concatenate([a[k], b[k]]), return_inverse=True)  # only these need a set
    sa, sb = slots[:len(k)], slots[len(k):]
    if hashed:
        ok[k] = mn.pair_jaccard(hashed.sets(need), sa, sb) >= params.threshold
    else:
        sets = shingle_sets([texts[i] for i in need], params.ngram)
        ok[k] = np.array([mk.jaccard(sets[x], sets[y]) >= params.threshold for x, y in zip(sa, sb)], dtype=bool)
    n_ambiguous = int(ambiguous.sum())
    label_nodes, label_comps = local_components(nodes[a[ok]], nodes[b[ok]])
    return label_nodes, label_comps, n_ambiguous


def local_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, components)`` of the undirected edges ``a[i] - b[i]`` (longs), solved in memory
    with scipy: every node that appears in an edge, sorted, with its component's smallest node."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components as scipy_components

    nodes, index = np.unique(np.concatenate([a, b]).astype(np.int64, copy=False), return_inverse=True)
    n, m = len(nodes), len(a)
    if n == 0:
        return nodes, nodes.copy()
    graph = sparse.coo_matrix((np.ones(m, dtype=np.int8), (index[:m], index[m:])), shape=(n, n))
    _, comp = scipy_components(graph, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, nodes)
    return nodes, smallest[comp]
