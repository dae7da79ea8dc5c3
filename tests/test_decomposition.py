"""Tests for mixers.decomposition: Dataset Decomposition (Pouransari et al. 2024, arXiv:2405.13226):
splitting, the concat-and-chunk baseline, constant-token batches and the curricula."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixers.decomposition import (
    Decomposition,
    batch_sizes,
    bucket_odds,
    bucket_schedule,
    concat_and_chunk,
    curriculum_odds,
    decompose,
    sequences_per_batch,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def make_doc(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**31 - 1, size=length, dtype=np.int64)


@st.composite
def cases(draw):
    lo = draw(st.integers(1, 13))
    hi = draw(st.integers(lo, 13))
    length = draw(st.one_of(st.integers(0, 20_000), st.integers(0, 70)))
    return {
        "doc": make_doc(length, draw(st.integers(0, 2**32 - 1))),
        "lo": lo,
        "hi": hi,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "tail": draw(st.sampled_from(["keep", "drop"])),
        "share": draw(st.booleans()),
    }


def run(case, seed=None) -> Decomposition:
    rng = np.random.default_rng(case["seed"] if seed is None else seed)
    return decompose(case["doc"], case["lo"], case["hi"], rng, case["tail"],
                     share_boundary=case["share"])


def rebuild(dec: Decomposition) -> np.ndarray:
    """The document from its chunks, in position order, skipping the shared boundary tokens."""
    back = 1 if dec.share_boundary else 0
    parts = [c.tokens if j == 0 else c.tokens[back:] for j, c in enumerate(dec.chunks)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


# --- properties of decompose -------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_chunks_rebuild_document_minus_dropped(case):
    doc, dec = case["doc"], run(case)
    assert dec.n_tokens == len(doc)
    if case["tail"] == "keep":
        assert dec.dropped_tokens == 0
    assert 0 <= dec.dropped_tokens <= len(doc)
    np.testing.assert_array_equal(rebuild(dec), doc[: len(doc) - dec.dropped_tokens])
    for c in dec:  # each chunk is the document's slice at its start: nothing crosses documents
        np.testing.assert_array_equal(c.tokens, doc[c.start:c.end])
    if case["share"]:
        # the targets of all chunks together are every token after the first, each once
        targets = [c.tokens[1:] for c in dec]
        got = np.concatenate(targets) if targets else np.empty(0, dtype=doc.dtype)
        np.testing.assert_array_equal(got, doc[1: max(len(doc) - dec.dropped_tokens, 1)])


@SETTINGS
@given(cases())
def test_chunk_lengths_positions_and_bounds(case):
    doc, dec = case["doc"], run(case)
    back = 1 if case["share"] else 0
    for j, c in enumerate(dec):
        assert c.position == j
        if c.bucket is None:
            assert j == len(dec) - 1, "the tail is the last chunk"
            assert case["tail"] == "keep"
            assert 0 < len(c) < 2 ** case["lo"] + 1
        else:
            assert case["lo"] <= c.bucket <= case["hi"]
            assert len(c) == 2 ** c.bucket + 1
        assert 0 <= c.start and c.end <= len(doc)
        if j:
            prev = dec[j - 1]
            assert c.start == prev.end - back > prev.start
    if len(dec):
        assert dec[0].start == 0
    if case["tail"] == "drop":
        # what is dropped is shorter than the smallest bucket (fewer targets than 2**lo)
        assert dec.dropped_tokens <= 2 ** case["lo"]
        assert all(c.bucket is not None for c in dec)


@SETTINGS
@given(cases(), st.integers(0, 2**32 - 1))
def test_deterministic_and_seed_matters_only_for_long_documents(case, other_seed):
    a, b = run(case), run(case)
    assert [(c.bucket, c.start, len(c)) for c in a] == [(c.bucket, c.start, len(c)) for c in b]
    targets = len(case["doc"]) - 1
    if targets < 2 ** (case["hi"] + 1):  # k = floor(log2(targets)) <= max: no random draw
        rng = np.random.default_rng(other_seed)
        state = rng.bit_generator.state
        c = decompose(case["doc"], case["lo"], case["hi"], rng, case["tail"],
                      share_boundary=case["share"])
        assert rng.bit_generator.state == state, "a short document consumes no randomness"
        assert [(x.bucket, x.start) for x in c] == [(x.bucket, x.start) for x in a]


@SETTINGS
@given(st.integers(1, 13), st.integers(0, 13), st.integers(0, 2**14), st.booleans())
def test_binary_expansion_for_documents_up_to_twice_the_largest_bucket(lo, extra, n, keep):
    # Exact binary expansion of the target count holds with the shared boundary token.
    hi = min(lo + extra, 13)
    targets = n % (2 ** (hi + 1))  # fewer than 2**(hi+1) targets: the deterministic regime
    doc = np.arange(targets + 1, dtype=np.int64)
    dec = decompose(doc, lo, hi, np.random.default_rng(0), "keep" if keep else "drop", share_boundary=True)
    expected = [k for k in range(hi, lo - 1, -1) if targets >> k & 1]
    assert [c.bucket for c in dec if c.bucket is not None] == expected
    rest = targets % (2 ** lo)  # targets left to the tail
    if keep:
        assert (dec.tail is not None) == (rest > 0 or targets == 0)
        if rest:
            assert len(dec.tail) == rest + 1
    else:
        assert dec.dropped_tokens == (rest if expected else targets + 1)


# --- worked examples (the reference's get_binary, by hand) -------------------------------------


def layout(dec):
    return [(c.bucket, c.start, len(c), c.position) for c in dec]


def test_empty_and_one_token_documents():
    rng = np.random.default_rng(0)
    empty = decompose([], 3, 10, rng)
    assert len(empty) == 0 and empty.dropped_tokens == 0 and empty.n_tokens == 0
    assert len(decompose(np.empty(0, np.int64), 3, 10, rng, "drop")) == 0
    one = decompose([7], 3, 10, rng)
    assert layout(one) == [(None, 0, 1, 0)] and one.dropped_tokens == 0
    assert one.tail is one[0] and one[0].tokens.tolist() == [7]
    dropped = decompose([7], 3, 10, rng, "drop")
    assert len(dropped) == 0 and dropped.dropped_tokens == 1
    for share in (True, False):
        two = decompose([7, 8], 1, 3, rng, share_boundary=share)
        assert layout(two) == [(None, 0, 2, 0)]  # 1 target < 2**1
        three = decompose([7, 8, 9], 1, 3, rng, share_boundary=share)
        assert layout(three) == [(1, 0, 3, 0)]


def test_worked_example_2p5_plus_2p3_plus_1():
    doc = np.arange(2**5 + 2**3 + 1)  # 41 tokens, 40 targets = 32 + 8
    dec = decompose(doc, 3, 10, np.random.default_rng(0), share_boundary=True)
    assert layout(dec) == [(5, 0, 33, 0), (3, 32, 9, 1)]
    assert dec[1].tokens[0] == dec[0].tokens[-1] == 32  # the shared boundary token
    assert dec.dropped_tokens == 0 and dec.tail is None
    assert np.shares_memory(dec[0].tokens, doc)  # views, no copy
    # the reference's layout: each chunk eats its target, 8 tokens (7 targets) remain
    ref = decompose(doc, 3, 10, np.random.default_rng(0), share_boundary=False)
    assert layout(ref) == [(5, 0, 33, 0), (None, 33, 8, 1)]
    ref_drop = decompose(doc, 3, 10, np.random.default_rng(0), "drop", share_boundary=False)
    assert layout(ref_drop) == [(5, 0, 33, 0)] and ref_drop.dropped_tokens == 8


def test_worked_example_with_tail():
    doc = list(range(2**5 + 2**3 + 2 + 1))  # 43 tokens, 42 targets = 32 + 8 + 2
    keep = decompose(doc, 3, 10, np.random.default_rng(0), share_boundary=True)
    assert layout(keep) == [(5, 0, 33, 0), (3, 32, 9, 1), (None, 40, 3, 2)]
    assert keep.tail.tokens.tolist() == [40, 41, 42] and keep[0].tokens.dtype == np.int32
    drop = decompose(doc, 3, 10, np.random.default_rng(0), "drop", share_boundary=True)
    assert layout(drop) == [(5, 0, 33, 0), (3, 32, 9, 1)] and drop.dropped_tokens == 2
    short = decompose(doc[:6], 3, 10, np.random.default_rng(0), "drop")  # 5 targets < 8
    assert len(short) == 0 and short.dropped_tokens == 6


def test_longer_than_twice_max_draws_with_the_paper_odds():
    # min 3, max 4: 99 targets >= 2**5, so k is drawn from {4, 3} with P(4)=1/3, P(3)=2/3
    # (P(k) ∝ 2**(max-k)), one rng.random() per draw, until fewer than 32 targets are left.
    doc = np.arange(100)
    dec = decompose(doc, 3, 4, np.random.default_rng(123), share_boundary=True)
    mirror = np.random.default_rng(123)
    left, expected = 99, []
    while left >= 8:
        k = left.bit_length() - 1
        if k > 4:
            k = 4 if mirror.random() * 3 < 1 else 3
        expected.append(k)
        left -= 2**k
    assert [c.bucket for c in dec if c.bucket is not None] == expected
    assert len(dec.tail) == left + 1
    # between 2**max and 2**(max+1) targets the first chunk is the largest bucket, no draw
    mid = decompose(np.arange(30), 3, 4, np.random.default_rng(0), share_boundary=True)  # 29 targets = 16 + 8 + 5
    assert [c.bucket for c in mid] == [4, 3, None]


def test_random_split_gives_equal_expected_tokens_per_bucket():
    doc = np.zeros(400_001, dtype=np.int32)
    dec = decompose(doc, 3, 6, np.random.default_rng(7))
    seqs = np.array([sum(c.bucket == k for c in dec) for k in range(3, 7)], dtype=float)
    tokens = seqs * 2.0 ** np.arange(3, 7)  # predictions per bucket
    assert np.all(np.abs(tokens / tokens.mean() - 1) < 0.06), tokens
    # sequences follow P(k) ∝ 2**(max-k): 8 : 4 : 2 : 1 from bucket 3 to 6
    np.testing.assert_allclose(seqs / seqs[-1], [8, 4, 2, 1], rtol=0.12)


def test_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="min_log2 .* <= max_log2"):
        decompose([1, 2, 3], 5, 4, rng)
    with pytest.raises(ValueError, match="min_log2 must be >= 1"):
        decompose([1, 2, 3], 0, 4, rng)
    with pytest.raises(ValueError, match="tail must be one of"):
        decompose([1, 2, 3], 1, 4, rng, tail="pad")
    with pytest.raises(ValueError, match="must be an integer"):
        decompose([1, 2, 3], 1.5, 4, rng)
    with pytest.raises(ValueError, match="Generator"):
        decompose([1, 2, 3], 1, 4, 42)
    with pytest.raises(ValueError, match="1-D"):
        decompose(np.zeros((2, 2), dtype=np.int32), 1, 4, rng)
    with pytest.raises(ValueError, match="integers"):
        decompose([0.5, 1.5], 1, 4, rng)
    with pytest.raises(ValueError, match="do not fit"):
        decompose([2**40], 1, 4, rng)


# --- concat-and-chunk --------------------------------------------------------------------------


def test_concat_and_chunk_windows_and_remainder():
    stream = concat_and_chunk([[1, 2, 3], [4, 5, 0], [], [6, 7, 8, 9]], 3, eot=0, share_boundary=True)
    assert stream.remainder is None
    windows = [w.tolist() for w in stream]
    # stream: 1 2 3 0 | 4 5 0 | 6 7 8 9 0 (eot added unless present; the empty doc adds nothing)
    assert windows == [[1, 2, 3, 0], [0, 4, 5, 0], [0, 6, 7, 8]]
    assert stream.remainder.tolist() == [9, 0] and stream.dropped_tokens == 2
    assert stream.windows == 3 and stream.stream_tokens == 12 and stream.added_eot == 2
    assert list(stream) == []

    tiled = concat_and_chunk([[1, 2, 3], [4, 5, 0], [6, 7, 8, 9]], 3, eot=0, share_boundary=False)
    assert [w.tolist() for w in tiled] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert tiled.remainder.tolist() == []

    plain = concat_and_chunk([np.arange(5, dtype=np.int64)], 4, share_boundary=True)
    assert [w.tolist() for w in plain] == [[0, 1, 2, 3, 4]] and plain.remainder.tolist() == []
    short = concat_and_chunk([[1, 2]], 4, eot=9)
    assert list(short) == [] and short.remainder.tolist() == [1, 2, 9]
    assert list(concat_and_chunk([], 4)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=12), st.integers(1, 64), st.booleans(),
       st.booleans())
def test_concat_and_chunk_covers_the_stream(lengths, seq_len, share, with_eot):
    docs = [make_doc(n, i) % 1000 + 1 for i, n in enumerate(lengths)]
    eot = 0 if with_eot else None
    stream = concat_and_chunk(docs, seq_len, eot, share_boundary=share)
    windows = list(stream)
    full = np.concatenate([np.append(d, 0) if with_eot else d for d in docs if len(d)]
                          or [np.empty(0, np.int64)])
    assert stream.stream_tokens == len(full)
    assert all(len(w) == seq_len + 1 and w.dtype == np.int32 for w in windows)
    back = 1 if share else 0
    parts = [w if j == 0 else w[back:] for j, w in enumerate(windows)] + [stream.remainder]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    assert stream.dropped_tokens < seq_len + 1


def test_concat_and_chunk_errors():
    with pytest.raises(ValueError, match="seq_len"):
        concat_and_chunk([[1]], 0)
    with pytest.raises(ValueError, match="eot"):
        concat_and_chunk([[1]], 4, eot=2**40)
    with pytest.raises(ValueError, match="do not fit"):
        list(concat_and_chunk([[2**40]], 4))


# --- batching ----------------------------------------------------------------------------------


def test_constant_tokens_per_batch():
    t = 64 * 8192
    sizes = batch_sizes(t, range(8, 14))
    assert sizes == {8: 2048, 9: 1024, 10: 512, 11: 256, 12: 128, 13: 64}
    assert all(n * 2**i == t for i, n in sizes.items())
    # the reference's --dataset-batch-mult 32 16 8 4 2 1: bucket i's batch is 2**(13 - i) times bucket 13's
    assert [sizes[i] // sizes[13] for i in range(8, 14)] == [32, 16, 8, 4, 2, 1]
    assert sequences_per_batch(1024, 5) == 32
    with pytest.raises(ValueError, match="multiple of 2\\*\\*13"):
        batch_sizes(4096, range(8, 14))
    with pytest.raises(ValueError, match="multiple"):
        sequences_per_batch(100, 3)
    with pytest.raises(ValueError, match="multiple"):
        sequences_per_batch(0, 3)
    with pytest.raises(ValueError, match="empty"):
        batch_sizes(1024, [])


# --- curriculum --------------------------------------------------------------------------------


def test_curriculum_odds_values():
    assert curriculum_odds("uniform", range(8, 14)).tolist() == [1.0] * 6
    assert curriculum_odds("grow_p2", list(range(8, 14))).tolist() == [32, 16, 8, 4, 2, 1]
    with pytest.raises(ValueError, match="unknown curriculum"):
        curriculum_odds("shrink", [8, 9])


def test_bucket_odds_uniform_and_grow_p2():
    buckets = [8, 9, 10]
    tokens = [600.0, 300.0, 100.0]
    uni = bucket_odds("uniform", buckets, tokens, 0, 100, 4)
    np.testing.assert_allclose(uni, [0.6, 0.3, 0.1])  # the token shares: drain together
    grow = bucket_odds("grow_p2", buckets, tokens, 0, 100, 4)
    np.testing.assert_allclose(grow, np.array([0.6 * 4, 0.3 * 2, 0.1 * 1]) / 3.1)
    assert grow[0] > uni[0] and grow[-1] < uni[-1]  # grow_p2 favours the short bucket
    for odds in (uni, grow):
        assert odds.sum() == pytest.approx(1.0)
    # an exhausted bucket is removed until the cycle ends
    later = bucket_odds("grow_p2", buckets, tokens, 10, 100, 4, remaining=[0, 5, 5])
    np.testing.assert_allclose(later, [0.0, 0.6 / 0.7, 0.1 / 0.7])
    # the odds do not change with the step: every cycle starts alike
    np.testing.assert_allclose(bucket_odds("grow_p2", buckets, tokens, 25, 100, 4), grow)
    with pytest.raises(ValueError, match="step"):
        bucket_odds("uniform", buckets, tokens, 100, 100, 4)
    with pytest.raises(ValueError, match="counts"):
        bucket_odds("uniform", buckets, [1.0], 0, 100)
    with pytest.raises(ValueError, match="no bucket"):
        bucket_odds("uniform", buckets, tokens, 0, 100, remaining=[0, 0, 0])


def test_bucket_schedule_grow_p2_goes_short_to_long_every_cycle():
    # equal tokens per bucket: batches per cycle are equal as every batch has the same tokens
    per_cycle = {8: 40, 9: 40, 10: 40, 11: 40}
    cycles = 3
    sched = bucket_schedule("grow_p2", per_cycle, cycles, seed=5)
    assert len(sched) == cycles * 160
    for c in range(cycles):  # cycles repeat: each holds exactly its batches
        part = sched[c * 160:(c + 1) * 160]
        assert {b: int((part == b).sum()) for b in per_cycle} == per_cycle
        assert part[:40].mean() < 9.3 and part[-40:].mean() > 10.2  # 9.5 if no trend
    np.testing.assert_array_equal(sched, bucket_schedule("grow_p2", per_cycle, cycles, seed=5))
    assert not np.array_equal(sched, bucket_schedule("grow_p2", per_cycle, cycles, seed=6))
    uni = bucket_schedule("uniform", per_cycle, 1, seed=5)
    assert abs(uni[:80].mean() - uni[80:].mean()) < 0.7  # drains together, no trend
    assert bucket_schedule("uniform", {8: 3, 9: 0}, 2, seed=0).tolist() == [8] * 6
    with pytest.raises(ValueError, match="cycles"):
        bucket_schedule("uniform", per_cycle, 0, seed=0)
