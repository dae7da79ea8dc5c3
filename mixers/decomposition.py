"""Dataset Decomposition: binary length buckets, constant-token batches and the length curricula
of Pouransari et al. 2024, "Dataset Decomposition: Faster LLM Training with Variable Sequence
Length Curriculum" (arXiv:2405.13226), and its reference code ``apple/ml-dataset-decomposition``
(``scripts/make_dd_buckets.py``, ``get_dd_params.py``, ``open_lm.patch``). Pure Python and numpy.

The method
----------
Concat-and-chunk (the paper's baseline, `concat_and_chunk` here) glues every document into one
stream and cuts it into windows of one fixed length, so attention crosses documents and every step
pays for the full length. Dataset Decomposition instead splits each tokenized document (end-of-text
appended) into pieces whose lengths are powers of two and files each piece in the bucket ``D_i`` of
its length (`decompose`). A sequence in bucket ``i`` has exactly ``2**i + 1`` tokens: ``2**i``
inputs plus the shifted target of the last input (the paper's choice). Training draws every batch
from a single bucket, with a batch size that keeps the tokens per step constant
(`sequences_per_batch`, `batch_sizes`), and a curriculum picks the bucket of each step
(`curriculum_odds`, `bucket_odds`, `bucket_schedule`).

Splitting one document (the reference's ``get_binary`` in ``make_dd_buckets.py``)
-------------------------------------------------------------------------------
While at least two tokens (one input and its target) are left, let ``k = floor(log2(n - 1))``
where ``n`` is the number of tokens left, i.e. ``n - 1`` is the number of targets left.

- ``k < min_log2``: stop; what is left is the remainder (see *tails* below).
- ``k > max_log2`` (at least ``2**(max_log2+1)`` targets left): ``k`` is drawn at random from
  ``max_log2 .. min_log2`` with ``P(k) ∝ 2**(max_log2 - k)``; since ``P(k) * 2**k`` is the same
  for every ``k``, every bucket gets the same expected number of tokens from long documents.
  One draw costs one ``rng.random()`` (inverse CDF over the ``max..min`` table), so the result is
  a function of the document and the generator's state, and a document with fewer than
  ``2**(max_log2+1)`` targets consumes no randomness at all.
- otherwise ``k`` stays; emit the next ``2**k + 1`` tokens to bucket ``k``.

Largest chunk first, so for a document with ``n - 1 < 2**(max_log2+1)`` targets the buckets are
exactly the set bits of ``n - 1`` at or above ``min_log2``, in decreasing order (with the shared
boundary below), and the remainder holds ``(n - 1) mod 2**min_log2`` targets.

The boundary token
------------------
A chunk of ``2**k + 1`` tokens trains ``2**k`` predictions. The default, ``share_boundary=False``,
follows the reference code (see below). With ``share_boundary=True`` consecutive chunks of a
document overlap by exactly one token: the last token of chunk ``j`` (its final target) is the first
token of chunk ``j+1`` (its first input), so chunk ``j+1`` starts at
``chunk_j.start + len(chunk_j) - 1``. Precisely:

- ``chunk.tokens == doc[chunk.start : chunk.start + len(chunk)]`` for every chunk;
- ``chunks[0].tokens`` followed by ``c.tokens[1:]`` for each later chunk, in position order,
  equals ``doc[: len(doc) - dropped_tokens]``;
- hence the targets (``c.tokens[1:]``) of all chunks, concatenated, are exactly
  ``doc[1 : len(doc) - dropped_tokens]``: every token after the first is predicted exactly once,
  from inside its own document, and no token is lost at a chunk boundary.

With ``share_boundary=False`` (the default) the chunks tile the document without overlap (the next
chunk starts at ``chunk_j.start + len(chunk_j)``), as the reference's ``get_binary`` does (it emits
``seq[:2**k + 1]`` and goes on after it: the ``+1`` target is not shared). Then the first token of
every later chunk is an input only, and one prediction per boundary is never trained.

Tails
-----
The reference code silently drops the remainder (fewer than ``2**min_log2`` targets) and also a
lone final token. Here nothing is lost silently:

- ``tail="keep"``: the remainder becomes one last chunk with ``bucket=None`` (the *tail* bucket),
  of at most ``2**min_log2`` tokens (so always shorter than ``2**min_log2 + 1``). With the shared
  boundary it starts on the previous chunk's last token, so it has ``len - 1`` targets. A
  one-token document becomes a one-token tail (no target; kept only so that the document's tokens
  are all accounted for). ``dropped_tokens`` is 0.
- ``tail="drop"``: no tail chunk; ``Decomposition.dropped_tokens`` counts the tokens of the
  document that are in no chunk (always a suffix of the document), so the caller can record them
  as removed with a reason. A document with no chunk at all has ``dropped_tokens == len(doc)``.

Where this differs from the reference code (``apple/ml-dataset-decomposition``,
``scripts/make_dd_buckets.py``, ``get_dd_params.py``, ``open_lm.patch``)
-------------------------------------------------------------------------------------------
1. The default layout is the reference's (chunks tile the document, no shared token);
   ``share_boundary=True`` overlaps consecutive chunks by one token so that every target is
   trained. With sharing, the chunks are exactly the binary expansion of the length (of the ``n - 1``
   targets); without it, each chunk eats one extra token and e.g. a 41-token document with min 3
   gives 33 tokens to bucket 5 and an 8-token remainder, not 5 + 3.
2. Remainders and a lone final token are kept as a tail or counted (``dropped_tokens``), never
   dropped silently.
3. Randomness comes from an explicit ``numpy.random.Generator`` (one ``random()`` per draw), not the
   global ``np.random.choice``: same distribution, different stream.
4. The curriculum (`bucket_schedule`) takes the per-cycle batch counts as given; the reference's
   ``get_dd_params.py`` also rounds them to multiples of shards x GPUs x workers, which belongs to
   the sampler and the export, not here.
5. `concat_and_chunk` reports its final partial window (``remainder``) instead of dropping it
   unseen.
"""
from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import DTypeLike

from core.values import check_int

__all__ = [
    "Chunk",
    "ChunkedStream",
    "Decomposition",
    "CURRICULA",
    "TAIL_MODES",
    "batch_sizes",
    "bucket_odds",
    "bucket_schedule",
    "concat_and_chunk",
    "curriculum_odds",
    "decompose",
    "sequences_per_batch",
]

TAIL_MODES = ("keep", "drop")
CURRICULA = ("uniform", "grow_p2")


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Chunk:
    """One piece of one document.

    ``bucket`` is ``i`` for a sequence of exactly ``2**i + 1`` tokens, or ``None`` for the tail
    (a remainder shorter than the smallest bucket, kept with ``tail="keep"``). ``start`` is the
    offset of the first token in the document; ``tokens`` is ``doc[start:start + len(tokens)]``
    (a view when the document was given as a numpy integer array); ``position`` is the chunk's
    index within its document (0, 1, ...; the tail, if any, is last).
    """

    bucket: int | None
    start: int
    tokens: np.ndarray
    position: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def end(self) -> int:
        """Offset one past the chunk's last token in the document."""
        return self.start + len(self)

    @property
    def is_tail(self) -> bool:
        return self.bucket is None


@dataclass(frozen=True, eq=False)
class Decomposition:
    """The chunks of one document, in position order, and what the configuration removed.

    ``n_tokens`` is the document's length; ``dropped_tokens`` the number of its tokens that are in
    no chunk (non-zero only with ``tail="drop"``; always a suffix of the document);
    ``share_boundary`` whether consecutive chunks overlap by one token. Iterating, ``len()`` and
    indexing go over ``chunks``.
    """

    chunks: list[Chunk]
    dropped_tokens: int
    n_tokens: int
    share_boundary: bool = False

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> Chunk:
        return self.chunks[index]

    @property
    def tail(self) -> Chunk | None:
        """The tail chunk, or None."""
        return self.chunks[-1] if self.chunks and self.chunks[-1].bucket is None else None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_log2(min_log2: object, max_log2: object) -> tuple[int, int]:
    lo = check_int("min_log2", min_log2)
    hi = check_int("max_log2", max_log2)
    if lo < 1:
        raise ValueError(f"min_log2 must be >= 1 (a bucket holds 2**min_log2 + 1 tokens), got {lo}")
    if lo > hi:
        raise ValueError(f"min_log2 ({lo}) must be <= max_log2 ({hi})")
    return lo, hi


def _as_tokens(tokens: Sequence[int] | np.ndarray, dtype: DTypeLike = np.int32) -> np.ndarray:
    """A 1-D integer array of the token ids.

    A numpy integer array is returned as it is (chunks are then views of it, in its dtype). Any
    other sequence is converted to ``dtype`` (int32 by default); ids outside that range raise.
    """
    if isinstance(tokens, np.ndarray):
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
        if tokens.size and tokens.dtype.kind not in "iu":
            raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
        if tokens.dtype.kind not in "iu":  # an empty float array
            return np.empty(0, dtype=dtype)
        return tokens
    arr = np.asarray(tokens)
    if arr.size == 0:
        return np.empty(0, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    return _cast_checked(arr, dtype)


def _cast_checked(arr: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    target = np.dtype(dtype)
    if arr.dtype == target:
        return arr
    if arr.size and not np.can_cast(arr.dtype, target, casting="safe"):
        info = np.iinfo(target)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise ValueError(f"token ids {lo}..{hi} do not fit in {target}")
    return arr.astype(target)


@functools.lru_cache(maxsize=256)
def _draw_table(min_log2: int, max_log2: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Buckets ``max..min`` with integer weights ``2**(max-k)`` (1, 2, 4, ...), cumulative."""
    ks = tuple(range(max_log2, min_log2 - 1, -1))
    cum: list[int] = []
    total = 0
    for k in ks:
        total += 1 << (max_log2 - k)
        cum.append(total)
    return ks, tuple(cum), total


def _draw_bucket(rng: np.random.Generator, min_log2: int, max_log2: int) -> int:
    """``k`` in ``max_log2..min_log2`` with ``P(k) ∝ 2**(max_log2 - k)``: one ``rng.random()``."""
    ks, cum, total = _draw_table(min_log2, max_log2)
    u = rng.random() * total
    return ks[min(bisect.bisect_right(cum, u), len(ks) - 1)]


# --------------------------------------------------------------------------------------------
# Decomposition
# --------------------------------------------------------------------------------------------


def decompose(
    tokens: Sequence[int] | np.ndarray,
    min_log2: int,
    max_log2: int,
    rng: np.random.Generator,
    tail: str = "keep",
    *,
    share_boundary: bool = False,
) -> Decomposition:
    """Split one tokenized document into bucket sequences of ``2**i + 1`` tokens (the
    reference's ``get_binary``).

    Largest chunk first; while more than ``2**(max_log2+1) - 1`` targets are left, the bucket is
    drawn from ``max_log2..min_log2`` with ``P(k) ∝ 2**(max_log2 - k)``. ``tail`` says what happens
    to a remainder shorter than the smallest bucket: ``"keep"`` (a last chunk with
    ``bucket=None``) or ``"drop"`` (counted in ``dropped_tokens``). ``share_boundary`` (default
    False) tiles without overlap as the reference code does; True makes consecutive chunks
    overlap by one token so their targets cover the document. See the module docstring.

    Deterministic given ``rng``'s state; ``rng`` is advanced only for documents with at least
    ``2**(max_log2+1)`` targets (``len(tokens) - 1``).
    """
    lo, hi = _check_log2(min_log2, max_log2)
    if tail not in TAIL_MODES:
        raise ValueError(f"tail must be one of {TAIL_MODES}, got {tail!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    arr = _as_tokens(tokens)
    n = int(arr.shape[0])
    back = 1 if share_boundary else 0

    chunks: list[Chunk] = []
    start = 0
    while n - start > 1:
        k = (n - start - 1).bit_length() - 1  # floor(log2(targets left)), exact for ints
        if k < lo:
            break
        if k > hi:
            k = _draw_bucket(rng, lo, hi)
        size = (1 << k) + 1
        chunks.append(Chunk(bucket=k, start=start, tokens=arr[start:start + size],
                            position=len(chunks)))
        start += size - back

    # Tokens from `start` on are not in a bucket chunk, except the shared boundary token.
    first_uncovered = start + back if chunks else start
    uncovered = n - first_uncovered
    dropped = 0
    if uncovered > 0:
        if tail == "keep":
            chunks.append(Chunk(bucket=None, start=start, tokens=arr[start:],
                                position=len(chunks)))
        else:
            dropped = uncovered
    return Decomposition(chunks=chunks, dropped_tokens=dropped, n_tokens=n,
                         share_boundary=share_boundary)


# --------------------------------------------------------------------------------------------
# Baseline: concat-and-chunk
# --------------------------------------------------------------------------------------------


class ChunkedStream(Iterator[np.ndarray]):
    """Iterator of concat-and-chunk windows; see `concat_and_chunk`.

    Counters, valid at any time and final once iteration has stopped:

    - ``windows``: windows yielded so far;
    - ``stream_tokens``: tokens read into the concatenated stream (documents plus added
      end-of-text tokens);
    - ``added_eot``: end-of-text tokens added.

    Once iteration has stopped (``None`` before):

    - ``remainder``: the stream's tokens that are in no window, in order: the final partial
      window, less the one token it shares with the last window when windows overlap;
    - ``dropped_tokens``: ``len(remainder)`` (0 before the end).
    """

    def __init__(self, source: Iterator[Sequence[int] | np.ndarray], seq_len: int,
                 eot: int | None, share_boundary: bool, dtype: np.dtype) -> None:
        self.seq_len = seq_len
        self.eot = eot
        self.share_boundary = share_boundary
        self.dtype = dtype
        self.windows = 0
        self.stream_tokens = 0
        self.added_eot = 0
        self.remainder: np.ndarray | None = None
        self._source = source
        self._pieces: list[np.ndarray] = []
        self._buffered = 0
        self._ready: list[np.ndarray] = []
        self._cut_windows = 0
        self._done = False

    @property
    def dropped_tokens(self) -> int:
        return 0 if self.remainder is None else int(self.remainder.shape[0])

    def __iter__(self) -> ChunkedStream:
        return self

    def __next__(self) -> np.ndarray:
        window = self.seq_len + 1
        while not self._ready:
            if self._done:
                raise StopIteration
            doc = next(self._source, None)
            if doc is None:
                self._finish()
                continue
            arr = _cast_checked(_as_tokens(doc, self.dtype), self.dtype)
            if arr.shape[0] == 0:
                continue  # an empty document adds nothing, not even an end-of-text
            self._pieces.append(arr)
            self._buffered += int(arr.shape[0])
            self.stream_tokens += int(arr.shape[0])
            if self.eot is not None and int(arr[-1]) != self.eot:
                self._pieces.append(np.array([self.eot], dtype=self.dtype))
                self._buffered += 1
                self.stream_tokens += 1
                self.added_eot += 1
            if self._buffered >= window:
                self._cut()
        self.windows += 1
        return self._ready.pop(0)

    def _cut(self) -> None:
        window = self.seq_len + 1
        stride = self.seq_len if self.share_boundary else window
        buf = np.concatenate(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
        pos = 0
        while buf.shape[0] - pos >= window:
            self._ready.append(buf[pos:pos + window])
            self._cut_windows += 1
            pos += stride
        rest = buf[pos:]
        self._pieces = [rest] if rest.shape[0] else []
        self._buffered = int(rest.shape[0])

    def _finish(self) -> None:
        self._done = True
        rest = np.concatenate(self._pieces) if self._pieces else np.empty(0, dtype=self.dtype)
        # With overlapping windows the first leftover token is the last window's last token.
        shared = 1 if (self.share_boundary and self._cut_windows and rest.shape[0]) else 0
        self.remainder = rest[shared:]
        self._pieces = []
        self._buffered = 0


def concat_and_chunk(
    documents: Iterable[Sequence[int] | np.ndarray],
    seq_len: int,
    eot: int | None = None,
    *,
    share_boundary: bool = False,
    dtype: DTypeLike = np.int32,
) -> ChunkedStream:
    """The concat-and-chunk baseline of the paper: one stream, fixed ``seq_len + 1`` windows.

    Documents are concatenated in order; with ``eot`` given, an end-of-text token follows every
    non-empty document that does not already end with it (empty documents add nothing). The
    stream is cut into windows of ``seq_len + 1`` tokens (``seq_len`` inputs plus the shifted
    target), which cross document boundaries. With ``share_boundary=True`` consecutive
    windows overlap by one token (stride ``seq_len``), so every stream token after the first is a
    target once; with False (default, as in `decompose`) they tile (stride ``seq_len + 1``).

    The final partial window is not yielded (it cannot fill a fixed-length batch row); its tokens
    are reported on the returned `ChunkedStream` as ``remainder`` / ``dropped_tokens`` once the
    iteration has ended. Windows are numpy arrays of ``dtype`` (ids that do not fit raise).
    """
    length = check_int("seq_len", seq_len)
    if length < 1:
        raise ValueError(f"seq_len must be >= 1, got {length}")
    target = np.dtype(dtype)
    if target.kind not in "iu":
        raise ValueError(f"dtype must be an integer dtype, got {target}")
    if eot is not None:
        eot = check_int("eot", eot)
        info = np.iinfo(target)
        if not info.min <= eot <= info.max:
            raise ValueError(f"eot {eot} does not fit in {target}")
    return ChunkedStream(iter(documents), length, eot, share_boundary, target)


# --------------------------------------------------------------------------------------------
# Batching: constant tokens per step
# --------------------------------------------------------------------------------------------


def sequences_per_batch(tokens_per_batch: int, bucket: int) -> int:
    """Sequences in one batch of bucket ``i`` for a constant ``tokens_per_batch``.

    Tokens are counted as the paper does, ``2**i`` per sequence (the inputs; the ``+1`` target
    is not counted): ``64 * 8192`` tokens give 64 sequences of bucket 13 and 2048 of bucket 8.
    ``tokens_per_batch`` must be a positive multiple of ``2**i``; there is no rounding.
    """
    total = check_int("tokens_per_batch", tokens_per_batch)
    i = check_int("bucket", bucket)
    if i < 0:
        raise ValueError(f"bucket must be >= 0, got {i}")
    if total <= 0 or total % (1 << i):
        raise ValueError(f"tokens_per_batch ({total}) must be a positive multiple of 2**{i} "
                         f"= {1 << i}")
    return total >> i


def batch_sizes(tokens_per_batch: int, buckets: Iterable[int]) -> dict[int, int]:
    """``{i: sequences per batch}`` for every bucket, constant tokens per step.

    ``tokens_per_batch`` must be a multiple of ``2**max(buckets)`` (so that the longest bucket
    gets a whole number of sequences, and then every shorter one does); equivalently the batch
    size of bucket ``i`` is the longest bucket's batch times ``2**(max - i)`` (the reference's
    ``--dataset-batch-mult``, 32 16 8 4 2 1 for buckets 8..13).
    """
    bs = sorted({check_int("bucket", b) for b in buckets})
    if not bs:
        raise ValueError("buckets is empty")
    top = bs[-1]
    total = check_int("tokens_per_batch", tokens_per_batch)
    if total <= 0 or total % (1 << top):
        raise ValueError(f"tokens_per_batch ({total}) must be a positive multiple of 2**{top} "
                         f"= {1 << top}, the longest bucket's length")
    return {i: sequences_per_batch(total, i) for i in bs}


# --------------------------------------------------------------------------------------------
# Curriculum
# --------------------------------------------------------------------------------------------


def curriculum_odds(name: str, buckets: Sequence[int]) -> np.ndarray:
    """The curriculum's odds per bucket, aligned with ``buckets`` (the reference's
    ``--train-data-mix-weights`` odds).

    - ``"uniform"``: 1 for every bucket (buckets drain together);
    - ``"grow_p2"``: ``2**(max(buckets) - i)``, i.e. 32 16 8 4 2 1 for buckets 8..13 (short
      buckets first, then long ones, within each cycle).
    """
    bs = [check_int("bucket", b) for b in buckets]
    if not bs:
        raise ValueError("buckets is empty")
    if len(set(bs)) != len(bs):
        raise ValueError(f"buckets has duplicates: {bs}")
    if name == "uniform":
        return np.ones(len(bs), dtype=np.float64)
    if name == "grow_p2":
        top = max(bs)
        return np.array([float(1 << (top - i)) for i in bs], dtype=np.float64)
    raise ValueError(f"unknown curriculum {name!r}; known: {', '.join(CURRICULA)}")


def bucket_odds(
    name: str,
    buckets: Sequence[int],
    counts: Sequence[float],
    step: int,
    total_steps: int,
    cycles: int = 1,
    remaining: Sequence[float] | None = None,
) -> np.ndarray:
    """Probability of drawing the batch of ``step`` from each bucket (the reference's ``MyRandomMix``).

    ``counts[j]`` is the number of tokens of ``buckets[j]`` in the whole run (only the shares
    matter); each of the ``cycles`` cycles (the reference's ``--epochs``) holds ``1/cycles`` of
    them. The weight of a bucket is its token share times the curriculum's odds
    (`curriculum_odds`), and a bucket that is exhausted in the current cycle is removed until the
    cycle ends: ``remaining[j]`` is what is left of ``buckets[j]`` in the current cycle (any unit;
    only ``<= 0`` matters), default: nothing exhausted. The result is aligned with ``buckets``
    and sums to 1.

    In the reference code the odds do not change with the step: with ``grow_p2`` the short buckets carry
    ``2**(max - i)`` times the weight, so they drain first and each cycle goes from short to long
    sequences; ``uniform`` drains all buckets together in expectation. ``step`` is checked
    against ``total_steps`` and locates the cycle (``step * cycles // total_steps``), but the
    probabilities depend on it only through ``remaining``. `bucket_schedule` runs the whole
    process.
    """
    odds = curriculum_odds(name, buckets)
    share = np.asarray(counts, dtype=np.float64)
    if share.shape != odds.shape:
        raise ValueError(f"counts has {share.size} values for {odds.size} buckets")
    if np.any(share < 0) or not np.all(np.isfinite(share)):
        raise ValueError("counts must be finite and >= 0")
    s = check_int("step", step)
    t = check_int("total_steps", total_steps)
    c = check_int("cycles", cycles)
    if t < 1 or c < 1:
        raise ValueError(f"total_steps ({t}) and cycles ({c}) must be >= 1")
    if not 0 <= s < t:
        raise ValueError(f"step must be in [0, {t}), got {s}")
    active = share > 0
    if remaining is not None:
        rem = np.asarray(remaining, dtype=np.float64)
        if rem.shape != odds.shape:
            raise ValueError(f"remaining has {rem.size} values for {odds.size} buckets")
        active &= rem > 0
    weight = np.where(active, share, 0.0) * odds  # token share x odds; the share's total cancels
    total = weight.sum()
    if total <= 0:
        raise ValueError("no bucket has tokens left in this cycle")
    return weight / total


def bucket_schedule(
    name: str,
    batches_per_cycle: Mapping[int, int],
    cycles: int,
    seed: int,
) -> np.ndarray:
    """The bucket of every training step, as the reference's sampler draws them
    (``MyRandomMix``), with the odds of `bucket_odds`.

    Each cycle holds ``batches_per_cycle[i]`` batches of bucket ``i``. Every batch has the same
    number of tokens, so a bucket's token share is its share of batches, and its weight is
    that share times the curriculum's odds. At each step one bucket is drawn with probability
    proportional to the weights of the buckets not yet exhausted in the cycle (one
    ``rng.random()`` per step from ``numpy.random.default_rng(seed)``); an exhausted bucket sits
    out until the next cycle, when all counts refill. The result has
    ``cycles * sum(batches_per_cycle.values())`` entries; every rank that uses the same seed gets
    the same order, and resuming at step ``s`` means reading from index ``s``.
    """
    if not batches_per_cycle:
        raise ValueError("batches_per_cycle is empty")
    bs = sorted(check_int("bucket", b) for b in batches_per_cycle)
    counts = [check_int(f"batches_per_cycle[{b}]", batches_per_cycle[b]) for b in bs]
    if any(n < 0 for n in counts):
        raise ValueError("batches_per_cycle must be >= 0")
    c = check_int("cycles", cycles, 1)
    curriculum_odds(name, bs)  # an unknown curriculum fails even when there is nothing to order
    per_cycle = sum(counts)
    if per_cycle == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(check_int("seed", seed))
    total_steps = c * per_cycle
    out = np.empty(total_steps, dtype=np.int64)
    step = 0
    for _ in range(c):
        left = list(counts)
        # the odds change only when a bucket runs out, so they are computed then, not every step
        weights = bucket_odds(name, bs, counts, step, total_steps, c, remaining=left).tolist()
        total = sum(weights)
        for _ in range(per_cycle):
            u = rng.random() * total
            acc = 0.0
            j = max(k for k, w in enumerate(weights) if w > 0.0)  # if float rounding overshoots
            for k, w in enumerate(weights):
                if w > 0.0:
                    acc += w
                    if u < acc:
                        j = k
                        break
            out[step] = bs[j]
            step += 1
            left[j] -= 1
            if left[j] == 0 and step % per_cycle:
                weights = bucket_odds(name, bs, counts, step, total_steps, c, remaining=left).tolist()
                total = sum(weights)
    return out
