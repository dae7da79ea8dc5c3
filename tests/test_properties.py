"""Property tests (Hypothesis) for the pure functions the per-module tests leave open.

Each block states the property of one module: the MinHash kernel, the heuristics measures and line
modifiers, dataset decomposition, mixture arithmetic and schedules, and directory names made from
untrusted names. Examples are derandomized, so a run is reproducible; the read kernel's fuzz test
is in test_read_fuzz.py.
"""
from __future__ import annotations

import math
import os
import re
import string
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from filters.heuristics import RULES, HeuristicsConfig, check
from filters.line_modifiers import c4_lines, refinedweb_lines
from filters.text_measures import BULLETS, Doc
from mixers import dirnames
from mixers.decomposition import bucket_odds, bucket_schedule, concat_and_chunk, decompose
from mixers.mixture import Mixture
from mixers.schedule import ConstantSchedule, PiecewiseLinearSchedule, UpsamplingSchedule
from pipelines import minhash_kernel as mk


def split_words(text: str) -> list[str]:
    """The words the heuristics rules count."""
    return Doc(text).words


def fast(n: int):
    """Settings for one property: `n` derandomized examples, no deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


# Any Unicode string Spark can hold: every code point but the surrogates.
any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
# Text that exercises the interesting characters more often than uniform draws would.
_SPECIAL = list("\x00\x01\x1b\x7f\t\r\n\x0b\x0c\x1c\x1d\u0085\u00a0\u2028\u2029\u200b\ufeff"
                ".,;:!?…#•-*_{}'\"«»“”") + ["...", ". . .", "\r\n", "\n\n", "Sign in", "Read more...",
                                             "items in cart", "lorem ipsum", "3 likes", "12:30"]
_WORDS = ["the", "and", "of", "to", "with", "a", "I", "LOUD", "word", "end.", "中文", "данные",
          "١٢٣", "x²", "café", "e\u0301", "ǅ", "ﬁ", "™", "①", "42", "3.14", "$", "|", "©", "—"]
mixed_text = st.lists(st.one_of(st.sampled_from(_SPECIAL), st.sampled_from(_WORDS),
                                st.sampled_from([" ", "  ", "\n"]), any_text.map(lambda s: s[:8])),
                      max_size=80).map("".join)
texts = st.one_of(any_text, mixed_text)


# ================================================================================================
# 1. MinHash kernel (pipelines/minhash_kernel.py)
# ================================================================================================

_EMPTY_SHINGLE = mk.shingle_hashes("")
_vocab = st.sampled_from(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota",
                          "kappa", "lam", "mu", "数", "据", "ไทย"])


@fast(60)
@given(st.lists(texts, max_size=6), st.sampled_from([1, 2, 3, 5, 64, mk.BLOCK]),
       st.randoms(use_true_random=False))
def test_minhash_signature_of_a_document_does_not_depend_on_its_batch(batch, block, rnd):
    """A document's signature is the same alone, in any batch, in any order, for any block size."""
    sigs = mk.signatures(batch, num_perm=32, block=block)
    assert sigs.shape == (len(batch), 32) and sigs.dtype == np.uint32
    order = list(range(len(batch)))
    rnd.shuffle(order)
    shuffled = mk.signatures([batch[i] for i in order], num_perm=32, block=max(1, block // 2))
    for pos, i in enumerate(order):
        assert np.array_equal(shuffled[pos], sigs[i])
    for i, text in enumerate(batch):
        assert np.array_equal(mk.signatures([text], num_perm=32)[0], sigs[i])


@fast(60)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40), st.randoms(use_true_random=False),
       st.integers(0, 3))
def test_minhash_signature_depends_only_on_the_shingle_set(shingles, rnd, extra):
    """Reordering and repeating shingles (the same set) gives the same signature."""
    perms = mk.permutations(64, 3)
    a = np.array(shingles, dtype=np.uint64)
    b = list(shingles) + [rnd.choice(shingles) for _ in range(extra)]
    rnd.shuffle(b)
    sig = mk.signatures_of_shingles([a, np.array(b, dtype=np.uint64)], perms, block=rnd.randint(1, 50))
    assert np.array_equal(sig[0], sig[1])


@fast(40)
@given(st.lists(_vocab, min_size=1, max_size=30), st.lists(st.sampled_from([" ", "  ", ", ", "\n", " - ", "! "]),
                                                           min_size=1, max_size=5))
def test_minhash_texts_with_the_same_tokens_have_the_same_signature(words, seps):
    """Case, punctuation and spacing are normalized away: same tokens, same shingles, same signature."""
    plain = " ".join(words)
    noisy = "".join(w.upper() + seps[i % len(seps)] for i, w in enumerate(words))
    assert mk.tokens(noisy) == mk.tokens(plain)
    assert np.array_equal(mk.shingle_set(noisy), mk.shingle_set(plain))
    sig = mk.signatures([plain, noisy], num_perm=64)
    assert np.array_equal(sig[0], sig[1])


# characters that normalize to no token at all (separators after NFKD and lowercasing)
_no_token_char = st.characters(categories=("P", "Z", "S", "Cc", "Cf")).filter(lambda c: mk.tokens(c) == [])


@fast(60)
@given(st.one_of(st.text(alphabet=_no_token_char, max_size=50),
                 st.text(alphabet=st.sampled_from(list(" \t\r\n\x00\x0b\x0c\x1c\u2028.,;:!?-_*#…—«»()[]{}")),
                         max_size=50)))
def test_minhash_text_without_tokens_is_the_empty_shingle(text):
    assert mk.tokens(text) == []
    assert np.array_equal(mk.shingle_hashes(text), _EMPTY_SHINGLE)
    assert np.array_equal(mk.signatures([text], num_perm=16), mk.signatures([""], num_perm=16))


@fast(60)
@given(st.lists(_vocab, max_size=12), st.integers(1, 8))
def test_minhash_shingle_count(words, n):
    """m tokens give max(m - n + 1, 1) shingles: one shingle for a document shorter than n tokens."""
    text = " ".join(words)
    m = len(mk.tokens(text))
    hashes = mk.shingle_hashes(text, n)
    assert len(hashes) == max(m - n + 1, 1)
    if 0 < m < n:  # the one shingle of all tokens, not the empty one
        assert not np.array_equal(hashes, mk.shingle_hashes("", n))


@fast(40)
@given(st.lists(texts, min_size=1, max_size=4))
def test_minhash_any_text_never_raises(batch):
    sigs = mk.signatures(batch, num_perm=16)
    assert sigs.shape == (len(batch), 16)
    for text in batch:
        assert len(mk.shingle_hashes(text)) >= 1


@fast(40)
@given(st.integers(20, 400), st.integers(0, 400), st.integers(0, 2**32 - 1))
def test_minhash_agreement_estimates_jaccard(size, shared_of, seed):
    """Two documents built with a known shingle Jaccard J: the agreement of K = 256 signature values
    is within 5 standard deviations (sqrt(J(1-J)/K), at least 0.01) of J."""
    rng = np.random.default_rng(seed)
    shared = shared_of % (size + 1)
    pool = np.unique(rng.integers(0, 2**64 - 1, size=3 * size, dtype=np.uint64, endpoint=True))
    assume(len(pool) >= 2 * size - shared)
    a = pool[:size]
    b = np.concatenate([pool[:shared], pool[size:2 * size - shared]])
    truth = mk.jaccard(np.unique(a), np.unique(b))
    assert truth == pytest.approx(shared / (2 * size - shared))
    sig = mk.signatures_of_shingles([a, b], mk.permutations(256, seed % 1000))
    est = float(mk.estimated_jaccard(sig[0], sig[1]))
    assert abs(est - truth) <= 5 * max(math.sqrt(truth * (1 - truth) / 256), 0.01)


# ================================================================================================
# 2. Heuristics measures and line modifiers (filters/heuristics.py)
# ================================================================================================

FRACTION_RULES = {"gopher_bullet_lines", "gopher_ellipsis_lines", "gopher_alpha_words", "gopher_dup_lines",
                  "gopher_dup_paragraphs", "gopher_dup_line_chars", "gopher_dup_paragraph_chars",
                  "refinedweb_line_removal", *[r for r in RULES if r.startswith(("gopher_top_", "gopher_dup_")) and
                                               r.endswith("gram")]}
COUNT_RULES = {"gopher_word_count", "gopher_stop_words", "c4_min_sentences", "c4_lorem_ipsum", "c4_curly_brace"}
RATIO_RULES = {"gopher_mean_word_length", "gopher_symbol_ratio"}
CONFIGS = [HeuristicsConfig(), HeuristicsConfig(line_modifiers=()), HeuristicsConfig(line_modifiers=("c4",)),
           HeuristicsConfig(line_modifiers=("c4", "refinedweb"), count_unique_stop_words=True)]


def test_rule_kinds_cover_every_rule():
    assert FRACTION_RULES | COUNT_RULES | RATIO_RULES == set(RULES)
    assert not (FRACTION_RULES & COUNT_RULES or FRACTION_RULES & RATIO_RULES or COUNT_RULES & RATIO_RULES)


def assert_measures_in_range(text, config):
    verdict = check(text, config)
    assert [r.name for r in verdict.results] == list(config.rules)
    for r in verdict.results:
        assert isinstance(r.value, float) and math.isfinite(r.value), r
        if r.name in FRACTION_RULES:
            assert 0.0 <= r.value <= 1.0, r
        elif r.name in COUNT_RULES:
            assert r.value >= 0 and r.value.is_integer(), r
        else:
            assert r.value >= 0, r
        if r.name == "gopher_mean_word_length" and r.passed:
            assert r.value >= 1  # words are non-empty
        assert r.passed == (r.reason == "")
    return verdict


@fast(150)
@given(texts, st.sampled_from(CONFIGS))
def test_heuristics_every_measure_is_finite_and_in_its_range(text, config):
    verdict = assert_measures_in_range(text, config)
    words = split_words(verdict.text)
    assert verdict.result("gopher_word_count").value == len(words)
    if words:
        mean = verdict.result("gopher_mean_word_length").value
        assert mean == pytest.approx(sum(map(len, words)) / len(words))


@pytest.mark.parametrize("unit", ["\x00", "a ", "ab\n", "... ", "{", "• x\n", "The cat. ", "\n\n", "中",
                                  "Sign in\n", "X" * 1000 + " ", "\r\n", "\u2028"])
def test_heuristics_huge_repeated_strings(unit):
    text = unit * (200_000 // len(unit))
    for config in CONFIGS[:2]:
        assert_measures_in_range(text, config)


def _subsequence_match(outputs, inputs, same):
    """Match each output to a later input (in order) with same(out, in); True if all match."""
    it = iter(inputs)
    return all(any(same(o, i) for i in it) for o in outputs)


def _is_char_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(c in it for c in small)


@fast(150)
@given(texts)
def test_refinedweb_lines_only_remove(text):
    """Output lines are input lines in order, each unchanged or with characters removed, and the word
    counts add up: words after = words before - words removed."""
    new, before, removed = refinedweb_lines(text)
    old_lines, new_lines = text.split("\n"), new.split("\n") if new else []
    assert len(new) <= len(text)
    assert _subsequence_match(new_lines, old_lines, _is_char_subsequence)
    assert 0 <= removed <= before == len(split_words(text))
    assert len(split_words(new)) == before - removed
    # a second pass starts from what the first kept and can only remove more
    again, before2, removed2 = refinedweb_lines(new)
    assert before2 == before - removed and 0 <= removed2 <= before2
    assert _subsequence_match(again.split("\n") if again else [], new_lines, _is_char_subsequence)


@fast(150)
@given(texts, st.integers(1, 8), st.integers(1, 50))
def test_c4_lines_keeps_whole_input_lines_and_is_idempotent(text, min_words, max_len):
    new = c4_lines(text, min_line_words=min_words, max_word_length=max_len)
    new_lines = new.split("\n") if new else []
    assert _subsequence_match(new_lines, text.split("\n"), str.__eq__)
    assert c4_lines(new, min_line_words=min_words, max_word_length=max_len) == new


def test_refinedweb_lines_is_not_idempotent():
    """An edit can leave a line that a second pass treats differently. The module does not promise
    a fixed point (and `check` applies the modifiers once), so this records the behaviour."""
    once = refinedweb_lines("Sign in Sign in now please go")[0]
    assert once == "Sign in now please go" and refinedweb_lines(once)[0] == "now please go"


@fast(60)
@given(st.lists(st.sampled_from(["", "• a b c", "- item one", "* two words", "plain line here", "...",
                                 "ends with ...", "a line…", "# heading", "   "]), max_size=30))
def test_heuristics_line_fractions_match_their_definition(lines):
    text = "\n".join(lines)
    verdict = check(text, HeuristicsConfig(line_modifiers=()))
    nonempty = [s.strip() for s in lines if s.strip()]
    bullets = sum(1 for s in nonempty if s[0] in BULLETS)
    ellipses = sum(1 for s in nonempty if s.endswith(("...", ". . .", "…")))
    assert verdict.result("gopher_bullet_lines").value == pytest.approx(bullets / len(nonempty) if nonempty else 0)
    assert verdict.result("gopher_ellipsis_lines").value == pytest.approx(
        ellipses / len(nonempty) if nonempty else 0)
    dups = len(nonempty) - len(set(nonempty))
    assert verdict.result("gopher_dup_lines").value == pytest.approx(dups / len(nonempty) if nonempty else 0)


# ================================================================================================
# 3. Dataset decomposition (mixers/decomposition.py); rebuild/bounds/determinism are in
#    test_decomposition.py, so here: input types, accounting of bucket_stats, the schedule
# ================================================================================================


@st.composite
def decomposition_cases(draw):
    lo = draw(st.integers(1, 8))
    hi = draw(st.integers(lo, 9))
    lengths = draw(st.lists(st.one_of(st.integers(0, 70), st.integers(0, 3000)), max_size=6))
    return lo, hi, lengths, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(["keep", "drop"])), draw(
        st.booleans())


@fast(80)
@given(decomposition_cases(), st.sampled_from([np.int64, np.int32, np.uint16, np.uint32]))
def test_decompose_is_the_same_for_a_list_and_any_integer_array(case, dtype):
    lo, hi, lengths, seed, tail, share = case
    for n in lengths:
        doc = np.random.default_rng(n).integers(0, 60_000, size=n)
        a = decompose(doc.tolist(), lo, hi, np.random.default_rng(seed), tail, share_boundary=share)
        b = decompose(doc.astype(dtype), lo, hi, np.random.default_rng(seed), tail, share_boundary=share)
        assert [(c.bucket, c.start, c.position) for c in a] == [(c.bucket, c.start, c.position) for c in b]
        assert a.dropped_tokens == b.dropped_tokens
        for x, y in zip(a, b):
            assert x.tokens.tolist() == y.tokens.tolist()


@fast(80)
@given(decomposition_cases())
def test_decompositions_account_for_every_token(case):
    lo, hi, lengths, seed, tail, share = case
    rng = np.random.default_rng(seed)
    decs = [decompose(np.arange(n), lo, hi, rng, tail, share_boundary=share) for n in lengths]
    for n, d in zip(lengths, decs):
        stored = sum(len(c.tokens) for c in d.chunks)
        boundaries = max(len(d.chunks) - 1, 0) if share else 0  # tokens stored twice
        assert d.n_tokens == n and stored - boundaries + d.dropped_tokens == n
        for c in d.chunks:
            if c.bucket is None:
                assert tail == "keep" and len(c.tokens) < 2 ** lo + 1
            else:
                assert lo <= c.bucket <= hi and len(c.tokens) == 2 ** c.bucket + 1
        if n and not d.chunks:
            assert d.dropped_tokens == n


@fast(60)
@given(st.dictionaries(st.integers(1, 14), st.integers(0, 40), min_size=1, max_size=6), st.integers(1, 3),
       st.integers(0, 2**32 - 1), st.sampled_from(["uniform", "grow_p2"]))
def test_bucket_schedule_holds_each_cycles_batches_exactly(per_cycle, cycles, seed, name):
    sched = bucket_schedule(name, per_cycle, cycles, seed)
    n = sum(per_cycle.values())
    assert len(sched) == cycles * n
    for c in range(cycles):
        part = Counter(sched[c * n:(c + 1) * n].tolist())
        assert part == Counter({b: k for b, k in per_cycle.items() if k})
    assert np.array_equal(sched, bucket_schedule(name, dict(reversed(per_cycle.items())), cycles, seed))


@fast(60)
@given(st.lists(st.tuples(st.integers(0, 13), st.floats(0, 1e12), st.floats(-5, 5)), min_size=1, max_size=6,
                unique_by=lambda t: t[0]), st.sampled_from(["uniform", "grow_p2"]))
def test_bucket_odds_are_a_distribution_over_live_buckets(rows, name):
    buckets = [b for b, _, _ in rows]
    counts = [c for _, c, _ in rows]
    remaining = [r for _, _, r in rows]
    live = [c > 0 and r > 0 for c, r in zip(counts, remaining)]
    if not any(live):
        with pytest.raises(ValueError):
            bucket_odds(name, buckets, counts, 0, 10, remaining=remaining)
        return
    odds = bucket_odds(name, buckets, counts, 0, 10, remaining=remaining)
    assert np.all(odds >= 0) and odds.sum() == pytest.approx(1.0)
    assert all(p == 0 for p, alive in zip(odds, live) if not alive)


@fast(60)
@given(st.lists(st.lists(st.integers(0, 5), max_size=40), max_size=10), st.integers(1, 16), st.booleans())
def test_concat_and_chunk_adds_end_of_text_only_where_missing(docs, seq_len, share):
    """Documents that already end with the end-of-text token get none added; counters add up."""
    eot = 0
    stream = concat_and_chunk(iter(docs), seq_len, eot, share_boundary=share)
    windows = list(stream)
    full = [t for d in docs if d for t in (d if d[-1] == eot else d + [eot])]
    assert stream.added_eot == sum(1 for d in docs if d and d[-1] != eot)
    assert stream.stream_tokens == len(full) and stream.windows == len(windows)
    stride = seq_len if share else seq_len + 1
    covered = (len(windows) * stride + (1 if share and windows else 0))
    assert covered + stream.dropped_tokens == len(full)
    back = 1 if share else 0
    rebuilt = [t for j, w in enumerate(windows) for t in (w if j == 0 else w[back:]).tolist()]
    assert rebuilt + stream.remainder.tolist() == full


# ================================================================================================
# 4. Mixture arithmetic (mixers/mixture.py) with arbitrary float weights and repeats; integer
#    scenarios are in test_mixture.py
# ================================================================================================

_domain = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6)
_weight = st.one_of(st.just(0.0), st.floats(1e-300, 1e300), st.floats(0, 10), st.integers(0, 10**6),
                    st.sampled_from([5e-324, 1e-10, 0.1, 1 / 3, 0.7, -0.0]))
_repeats = st.one_of(st.none(), st.floats(0, 1e6), st.sampled_from([0, 0.1, 1, 2.5, math.inf, 1e-300]))


@st.composite
def mixture_cases(draw):
    names = draw(st.lists(_domain, min_size=1, max_size=5, unique=True))
    weights = {d: draw(_weight) for d in names}
    assume(any(weights.values()))
    available = {d: draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**18))) for d in names}
    extra = draw(st.lists(_domain.filter(lambda d: d not in names), max_size=2, unique=True))
    available.update({d: draw(st.integers(0, 1000)) for d in extra})
    per = draw(st.dictionaries(st.sampled_from(names + extra), _repeats, max_size=2))
    budget = draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**19)))
    seq_len = draw(st.one_of(st.none(), st.integers(1, 4096)))
    return weights, available, draw(_repeats), per, budget, seq_len


def _cap(available, r):
    if available == 0:
        return 0
    if r is None or math.isinf(r):
        return None
    return math.floor(Fraction(available) * Fraction(repr(float(r))))


@fast(150)
@given(mixture_cases())
def test_mixture_plan_meets_the_budget_within_caps(case):
    weights, available, max_repeats, per, budget, seq_len = case
    caps = {d: _cap(a, per[d] if d in per else max_repeats) for d, a in available.items()}
    unit = seq_len or 1
    needed = -(-budget // unit)
    unit_caps = [None if caps[d] is None else caps[d] // unit for d in weights if weights[d] > 0]
    possible = None if None in unit_caps else sum(unit_caps)
    mix = Mixture(weights)
    kwargs = dict(max_repeats=max_repeats, max_repeats_per_domain=per, seq_len=seq_len)
    if possible is not None and possible < needed:
        with pytest.raises(ValueError, match=f"at most {possible * unit:,} tokens"):
            mix.plan(budget, available, **kwargs)
        return
    plan = mix.plan(budget, available, **kwargs)
    targets = plan.targets
    assert set(targets) == set(available)
    assert sum(targets.values()) == needed * unit
    for d, t in targets.items():
        assert t >= 0 and t % unit == 0
        if weights.get(d, 0) == 0:
            assert t == 0
        if caps[d] is not None:
            assert t <= caps[d]
    # independent of the order of every mapping, and deterministic
    shuffled = Mixture(dict(reversed(list(weights.items())))).plan(
        budget, dict(reversed(list(available.items()))), max_repeats=max_repeats,
        max_repeats_per_domain=dict(reversed(list(per.items()))), seq_len=seq_len)
    assert {r.domain: r for r in shuffled.domains} == {r.domain: r for r in plan.domains}
    assert mix.plan(budget, available, **kwargs) == plan


@fast(100)
@given(st.dictionaries(_domain, _weight, min_size=1, max_size=6).filter(lambda w: any(w.values())),
       st.randoms(use_true_random=False))
def test_mixture_equality_and_hash_agree(weights, rnd):
    """Equal mixtures (the same normalized weights in another order) hash equal: a Mixture is
    usable as a dict key or set member."""
    items = list(weights.items())
    rnd.shuffle(items)
    a, b = Mixture(weights), Mixture(dict(items))
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert sum(a.weights.values()) == pytest.approx(1.0)


# ================================================================================================
# Schedules (mixers/schedule.py) with float weights; integer weights are in test_schedule.py
# ================================================================================================

_mix = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), _weight, min_size=1).filter(
    lambda m: any(m.values()))


@st.composite
def float_schedules(draw):
    kind = draw(st.sampled_from(["constant", "upsampling", "piecewise"]))
    if kind == "constant":
        return ConstantSchedule(draw(_mix))
    if kind == "upsampling":
        return UpsamplingSchedule(draw(_mix), draw(_mix), draw(st.floats(0, 1)))
    ps = sorted(draw(st.lists(st.floats(0, 1), min_size=1, max_size=5)))
    return PiecewiseLinearSchedule([(p, draw(_mix)) for p in ps])


@fast(100)
@given(float_schedules(), st.floats(0, 1), st.integers(1, 500), st.integers(0, 499))
def test_schedule_weights_are_a_distribution_everywhere(schedule, p, steps, step):
    for w in (schedule.weights_at(p), schedule.weights_at_step(step % (steps + 1), steps)):
        assert tuple(w) == schedule.domains
        assert all(x >= 0 and math.isfinite(x) for x in w.values())
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-9)


@fast(100)
@given(float_schedules(), st.integers(1, 300), st.one_of(st.integers(0, 10**6), st.integers(0, 10**15)))
def test_schedule_tokens_add_up_and_unused_domains_get_none(schedule, steps, total):
    tokens = schedule.tokens_per_domain(total, steps)
    assert tuple(tokens) == schedule.domains and sum(tokens.values()) == total
    assert all(t >= 0 for t in tokens.values())
    for d in schedule.domains:
        if all(schedule.weights_at_step(s, steps)[d] == 0 for s in range(steps)):
            assert tokens[d] == 0, d


@fast(100)
@given(float_schedules(), st.randoms(use_true_random=False))
def test_schedule_equality_and_hash_agree(schedule, rnd):
    """A schedule rebuilt from its JSON, or with its mixes' keys in another order, is equal and
    hashes equal."""
    again = type(schedule).from_json(schedule.to_json())
    assert again == schedule and hash(again) == hash(schedule)

    def shuffled(m):  # another key order, and a zero weight may change its sign
        items = [(d, -w if w == 0 and rnd.random() < 0.5 else w) for d, w in m.items()]
        rnd.shuffle(items)
        return dict(items)

    params = schedule.to_dict()
    if isinstance(schedule, ConstantSchedule):
        other = ConstantSchedule(shuffled(params["weights"]))
    elif isinstance(schedule, UpsamplingSchedule):
        other = UpsamplingSchedule(shuffled(params["base"]), shuffled(params["upsampled"]), params["fraction"])
    else:
        other = PiecewiseLinearSchedule([(p, shuffled(w)) for p, w in params["points"]])
    if other == schedule:
        assert hash(other) == hash(schedule)


# ================================================================================================
# 5. Directory names from untrusted names (mixers/dirnames.py)
# ================================================================================================

_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
_nasty = st.sampled_from(["/", "..", ".", "\x00", "\\", "%", "~", "%2F", "bucket_", "concat_", "kept", " ", "\n",
                          "é", "中", "\U0001F600", "\ud83d\ude00", "A", "a", "-", "_"])
names = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(_nasty, _surrogate, st.characters()), max_size=30).map("".join),
    st.text(alphabet=string.ascii_letters + string.digits + "_.-", max_size=130),
    st.text(min_size=100, max_size=400),
    st.sampled_from(sorted(dirnames.RESERVED) + ["..", ".", "", "/", "/etc", "../../x", "a/b", "bucket_8",
                                                  "concat_2", "x" * 120, "x" * 121, "%" * 60]),
)
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_.%~-]+")


@fast(300)
@given(names)
def test_dir_name_is_one_safe_component_that_round_trips(name):
    d = dirnames.dir_name(name)
    assert _SAFE_COMPONENT.fullmatch(d), d
    assert "/" not in d and "\x00" not in d and d not in (".", "..", "")
    assert len(d) <= dirnames.MAX_LEN
    assert os.path.basename(d) == d and Path(d).name == d
    assert d not in dirnames.RESERVED and not d.startswith(dirnames.RESERVED_PREFIXES)
    assert (d == name) == dirnames.is_plain(name)
    back = dirnames.name_of(d)
    if back is None:  # cut: only encoded names longer than MAX_LEN, marked by "~"
        assert d.startswith("%") and "~" in d
    else:
        assert back == name


@fast(150)
@given(st.lists(names, min_size=2, max_size=8, unique=True),
       st.text(min_size=110, max_size=200), st.lists(st.characters(), min_size=1, max_size=3, unique=True))
def test_dir_name_never_shares_a_directory(batch, long_prefix, tails):
    """Different names get different directories, including long names that are cut alike."""
    batch = batch + [long_prefix + t for t in tails]
    assume(len(set(batch)) == len(batch))
    dirs = [dirnames.dir_name(n) for n in batch]
    assert len(set(dirs)) == len(dirs)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("dirnames")


@fast(150)
@given(name=names)
def test_inside_accepts_every_dir_name_as_a_direct_child(root, name):
    d = dirnames.dir_name(name)
    path = dirnames.inside(root, d)
    assert path.parent == root.resolve() and path.name == d


@fast(150)
@given(name=names)
def test_inside_never_lets_a_raw_name_escape(root, name):
    """Joined as it is, a name either stays under the root or is refused with a ValueError."""
    try:
        path = dirnames.inside(root, name)
    except ValueError:
        return
    assert path == root.resolve() or path.is_relative_to(root.resolve())
