"""MinHash signatures, LSH banding and exact shingle Jaccard, in numpy (runs inside Spark tasks).

No Spark objects here, so each step can be tested on plain strings.

Hash widths and the permutation family
--------------------------------------
- Text is normalized as datatrove's MinHash deduplication does it (huggingface/datatrove,
  `utils/text.py`: lowercase, digits to 0, punctuation to spaces, diacritics stripped;
  `filters.text.normalize(mode="aggressive")`) and split
  on spaces into tokens. Characters of scripts written without spaces (Han, kana, Thai, Lao,
  Khmer, Myanmar, Tibetan) are each a token of their own, so such text shingles on characters.
- Each token is hashed to 64 bits with xxh3-64. A shingle is `n` consecutive tokens; its 64-bit
  hash is ``fmix64(sum_k token_hash[i+k] * C_k + len)`` with fixed odd constants `C_k`
  (arithmetic mod 2^64), so the order of the tokens matters and no shingle string is built.
  A document with fewer than `n` tokens is one shingle of all its tokens; one with no tokens at
  all (empty, whitespace or punctuation only) is one empty shingle, so all such documents are
  duplicates of each other.
- Permutation `i` is multiply-add-shift: ``h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32`` with `a_i`
  odd. numpy's uint64 arithmetic wraps, and the wrap *is* the ``mod 2^64``: there is no overflow
  to mind because nothing is reduced modulo a prime (datatrove's ``(a*x+b) % (2^61-1)`` silently
  wraps before the modulo). The top 32 bits are the well-mixed ones, and since ``>> 32`` is
  monotone the minimum is taken on the 64-bit values and shifted once. Signatures are uint32;
  `a_i`, `b_i` come from ``numpy.random.default_rng(seed)``, so every worker draws the same ones.
- Permutations run on blocks of at most `BLOCK` shingles (a K x BLOCK uint64 array, 16 MiB at
  K = 256), over the shingles of many documents at once, so a batch of short documents costs a
  few numpy calls and a 10 MB document never needs a K x N array.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import xxhash

from filters.text import normalize

BLOCK = 8192  # shingles per permutation block

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Characters of scripts written without spaces between words: each becomes its own token.
_NO_SPACE = re.compile(
    "(["
    "\u0e00-\u0eff"          # Thai, Lao
    "\u0f00-\u0fff"          # Tibetan
    "\u1000-\u109f"          # Myanmar
    "\u1780-\u17ff"          # Khmer
    "\u3040-\u30ff"          # Hiragana, Katakana
    "\u3400-\u4dbf"          # CJK extension A
    "\u4e00-\u9fff"          # CJK unified ideographs
    "\uf900-\ufaff"          # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B-G
    "])"
)
# Order constants for combining token hashes into a shingle hash (odd, fixed forever: changing
# them changes every signature).
_ORDER_SEED = 0x5EED_5417_61E5


def tokens(text: str) -> list[str]:
    """The normalized tokens of `text` that shingles are made of."""
    norm = normalize(text, "aggressive")
    if not norm.isascii():
        norm = _NO_SPACE.sub(r" \1 ", norm)
    return norm.split()


@lru_cache(maxsize=None)
def _order_constants(n: int) -> np.ndarray:
    rng = np.random.default_rng(_ORDER_SEED)
    return rng.integers(0, 1 << 63, size=n, dtype=np.uint64) * _U64(2) + _U64(1)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, elementwise (wrapping uint64 arithmetic)."""
    x = x ^ (x >> _U64(33))
    x = x * _U64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> _U64(33))
    x = x * _U64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> _U64(33))


def token_hashes(toks: Sequence[str]) -> np.ndarray:
    joined = " ".join(toks).encode("utf-8", "surrogatepass")
    if not joined:
        return np.zeros(0, dtype=np.uint64)
    parts = joined.split(b" ")
    return np.fromiter(map(xxhash.xxh3_64_intdigest, parts), dtype=np.uint64, count=len(parts))


def shingle_hashes(text: str, ngram: int = 5) -> np.ndarray:
    """The 64-bit hashes of the word `ngram`-shingles of `text` (at least one, see module doc)."""
    return _shingles_of(token_hashes(tokens(text)), ngram)


def _shingles_of(th: np.ndarray, ngram: int) -> np.ndarray:
    m = len(th)
    width = min(ngram, m)
    count = max(m - ngram + 1, 1)
    consts = _order_constants(ngram)
    with np.errstate(over="ignore"):
        acc = np.full(count, _U64(width), dtype=np.uint64)
        for k in range(width):
            acc += th[k:k + count] * consts[k]
        return _fmix64(acc)


def shingle_set(text: str, ngram: int = 5) -> np.ndarray:
    """The distinct shingle hashes of `text`, sorted (a uint64 array), for exact Jaccard."""
    return np.unique(shingle_hashes(text, ngram))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two shingle sets (sorted arrays of distinct values); 1 for two empty sets."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


@dataclass(frozen=True)
class Permutations:
    a: np.ndarray  # (K, 1) uint64, odd
    b: np.ndarray  # (K, 1) uint64

    @property
    def num_perm(self) -> int:
        return int(self.a.shape[0])


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> Permutations:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
    return Permutations(a.reshape(-1, 1), b.reshape(-1, 1))


def signatures(
    texts: Iterable[str], num_perm: int = 256, ngram: int = 5, seed: int = 1,
    block: int = BLOCK,
) -> np.ndarray:
    """MinHash signatures of `texts`: a (len(texts), num_perm) uint32 array."""
    perms = permutations(num_perm, seed)
    shingles = [shingle_hashes(t, ngram) for t in texts]
    return signatures_of_shingles(shingles, perms, block)


def signatures_of_shingles(
    shingles: list[np.ndarray], perms: Permutations, block: int = BLOCK,
) -> np.ndarray:
    """Signatures from per-document shingle hashes (each non-empty), permuted block by block."""
    n_docs = len(shingles)
    k = perms.num_perm
    mins = np.full((k, n_docs), np.iinfo(np.uint64).max, dtype=np.uint64)
    if n_docs == 0:
        return np.zeros((0, k), dtype=np.uint32)
    lengths = np.fromiter((len(s) for s in shingles), dtype=np.int64, count=n_docs)
    flat = np.concatenate(shingles)
    doc_of = np.repeat(np.arange(n_docs), lengths)
    buf = np.empty((k, min(block, len(flat))), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(flat), block):
            x = flat[lo:lo + block]
            docs = doc_of[lo:lo + block]
            out = buf[:, : len(x)]
            np.multiply(perms.a, x, out=out)
            np.add(out, perms.b, out=out)
            # Segments of one document each: reduce each to its minimum.
            starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
            seg_min = np.minimum.reduceat(out, starts, axis=1)
            seg_docs = docs[starts]
            np.minimum(mins[:, seg_docs], seg_min, out=seg_min)
            mins[:, seg_docs] = seg_min
    return np.ascontiguousarray((mins >> _U64(32)).astype(np.uint32).T)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature entries, row by row."""
    return np.mean(sig_a == sig_b, axis=-1)


# --- banding -------------------------------------------------------------------------------

# Band keys: a band's `r` values hashed to one 64-bit key with the band's index, so a bucket is
# one long (a shuffle and sort of 16 bytes a row) instead of the values' bytes. Two different
# bands share a key with probability 2^-64 per pair of buckets; such a pair is a false candidate
# that the check rejects (with check = none it would be an edge: about one per 10^9 buckets
# squared over 2^64, far below plain LSH's own false positives). Constants fixed forever.
_BAND_SEED = 0x9E3779B97F4A7C15
_BAND_MUL = 0xFF51AFD7ED558CCD


def band_keys(sigs: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n, bands) int64 keys of the (n, K) uint32 signatures' bands; band j is the values at
    positions[j] (a (bands, r) int array), hashed in order with j."""
    n, n_bands = sigs.shape[0], positions.shape[0]
    out = np.empty((n, n_bands), dtype=np.int64)
    with np.errstate(over="ignore"):
        for j in range(n_bands):
            h = np.full(n, _U64(j + 1) * _U64(_BAND_SEED), dtype=np.uint64)
            for i in positions[j]:
                h ^= sigs[:, i].astype(np.uint64)
                h *= _U64(_BAND_MUL)
                h ^= h >> _U64(33)
            out[:, j] = h.view(np.int64)
    return out


def collision_probability(s: float | np.ndarray, bands: int, rows: int):
    """P(two documents of Jaccard `s` share at least one band) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


# Trapezoids per area integral when choosing bands x rows: four times as many give the same (b, r)
# at thresholds 0.7, 0.8, 0.85 and 0.9 with K = 128 and 256 (checked), at four times the cost.
AREA_STEPS = 2000


def _area(f, lo: float, hi: float, steps: int = AREA_STEPS) -> float:
    if hi <= lo:
        return 0.0
    xs = np.linspace(lo, hi, steps + 1)
    ys = f(xs)
    return float(np.sum((ys[1:] + ys[:-1]) * 0.5) * (hi - lo) / steps)


def false_positive_area(threshold: float, bands: int, rows: int) -> float:
    return _area(lambda s: collision_probability(s, bands, rows), 0.0, threshold)


def false_negative_area(threshold: float, bands: int, rows: int) -> float:
    return _area(lambda s: 1.0 - collision_probability(s, bands, rows), threshold, 1.0)


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5,
) -> tuple[int, int]:
    """The (bands, rows) with bands * rows <= num_perm minimizing the weighted FP + FN area.

    This is the S-curve criterion of text-dedup and datasketch: the area under P(s) left of the
    threshold (pairs that collide but should not) plus the area above it right of the threshold
    (pairs that should collide but do not). Ties go to more bands.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best: tuple[float, int, int] | None = None
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = fp_weight * false_positive_area(threshold, b, r) + fn_weight * false_negative_area(
                threshold, b, r
            )
            if best is None or err < best[0] - 1e-12:
                best = (err, b, r)
    assert best is not None
    return best[1], best[2]


def midpoint(bands: int, rows: int) -> float:
    """The similarity at which the S-curve is steepest: about (1/b)^(1/r)."""
    return math.pow(1.0 / bands, 1.0 / rows)
