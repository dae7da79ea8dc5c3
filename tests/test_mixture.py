"""Tests for mixers.mixture: token targets, repetition caps, rounding (domain upsampling, Blakeney et al.
2024, arXiv:2406.03476; OLMo-core #316)."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from mixers.mixture import Mixture, MixturePlan, allocate, exact

DOMAINS = ["books", "code", "math", "web", "wiki"]
REPEATS = [None, 0, 0.5, 1, 1.5, 2, 2.5, 4]


@st.composite
def scenarios(draw, with_seq_len: bool = False):
    names = draw(st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=5, unique=True))
    weights = {d: draw(st.integers(0, 50)) for d in names}
    if not any(weights.values()):
        weights[names[0]] = 1
    available = {d: draw(st.integers(0, 20_000)) for d in names}
    max_repeats = draw(st.sampled_from(REPEATS))
    per_domain = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(REPEATS), max_size=2))
    seq_len = draw(st.sampled_from([None, 1, 7, 64, 512])) if with_seq_len else None
    budget = draw(st.integers(0, 60_000))
    return weights, available, max_repeats, per_domain, seq_len, budget


def caps_of(available, max_repeats, per_domain):
    """Independent computation of the token caps (None: no cap)."""
    caps = {}
    for d, a in available.items():
        r = per_domain[d] if d in per_domain else max_repeats
        caps[d] = 0 if a == 0 else (None if r is None else math.floor(Fraction(a) * Fraction(str(r))))
    return caps


def possible_tokens(weights, caps, seq_len):
    unit = seq_len or 1
    positive = [d for d, w in weights.items() if w > 0]
    if any(caps[d] is None for d in positive):
        return None
    return sum(caps[d] // unit * unit for d in positive)


# --------------------------------------------------------------------------------------------------
# properties


@settings(max_examples=300, deadline=None)
@given(scenarios(with_seq_len=True))
def test_targets_sum_caps_and_errors(sc):
    weights, available, max_repeats, per_domain, seq_len, budget = sc
    caps = caps_of(available, max_repeats, per_domain)
    unit = seq_len or 1
    needed = -(-budget // unit) * unit
    possible = possible_tokens(weights, caps, seq_len)
    mix = Mixture(weights)
    if possible is not None and possible < needed:
        with pytest.raises(ValueError, match=r"at most [\d,]+ tokens") as info:
            mix.plan(budget, available, max_repeats=max_repeats, max_repeats_per_domain=per_domain,
                     seq_len=seq_len)
        assert f"{possible:,}" in str(info.value)
        return
    plan = mix.plan(budget, available, max_repeats=max_repeats, max_repeats_per_domain=per_domain,
                    seq_len=seq_len)
    assert plan.possible_tokens == possible
    targets = plan.targets
    total = sum(targets.values())
    if seq_len is None:
        assert total == budget  # exactly
    else:
        assert budget <= total < budget + seq_len  # the smallest multiple of seq_len >= budget
        assert all(t % seq_len == 0 for t in targets.values())
    for d, t in targets.items():
        assert t >= 0
        if weights[d] == 0:
            assert t == 0
        if caps[d] is not None:
            assert t <= caps[d]  # never past the cap, even after rounding
            r = per_domain[d] if d in per_domain else max_repeats
            if r is not None and available[d]:
                assert Fraction(t, available[d]) <= Fraction(str(r))  # never an extra partial pass
        assert plan[d].repetitions == pytest.approx(t / available[d] if available[d] else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(DOMAINS), st.integers(0, 1000), min_size=1),
    st.integers(0, 10**12),
)
def test_uncapped_realizes_asked_weights(weights, budget):
    if not any(weights.values()):
        weights = {**weights, sorted(weights)[0]: 1}
    available = {d: 10**12 for d in weights}
    plan = Mixture(weights).plan(budget, available)  # no cap at all
    assert plan.total_tokens == budget
    wsum = sum(weights.values())
    for d, t in plan.targets.items():
        ideal = Fraction(weights[d], wsum) * budget
        assert abs(t - ideal) < 1  # within one token of the exact share
        if budget:
            assert abs(plan[d].weight_realized - plan[d].weight_asked) <= 1 / budget + 1e-12
        assert not plan[d].capped


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_redistribution_is_proportional(sc):
    """Capped domains sit at their cap; the others share the rest in proportion to their weights."""
    weights, available, max_repeats, per_domain, _, budget = sc
    caps = caps_of(available, max_repeats, per_domain)
    possible = possible_tokens(weights, caps, None)
    if possible is not None and possible < budget:
        return
    plan = Mixture(weights).plan(budget, available, max_repeats=max_repeats,
                                 max_repeats_per_domain=per_domain)
    capped = [d for d in weights if plan[d].capped]
    free = [d for d in weights if weights[d] > 0 and not plan[d].capped]
    for d in capped:
        assert plan[d].target_tokens == caps[d]
    rest = budget - sum(caps[d] for d in capped)
    wfree = sum(weights[d] for d in free)
    for d in free:
        share = Fraction(rest * weights[d], wfree)
        assert abs(plan[d].target_tokens - share) < 1
        assert caps[d] is None or share <= caps[d]  # water-filling: no free share is over its cap
    # nothing is capped needlessly: a capped domain's proportional share at the free level exceeds its cap
    if free and capped:
        level = Fraction(rest, wfree)
        for d in capped:
            assert level * weights[d] > caps[d]


@settings(max_examples=100, deadline=None)
@given(scenarios(with_seq_len=True), st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(sc, rnd):
    weights, available, max_repeats, per_domain, seq_len, budget = sc
    kwargs = dict(max_repeats=max_repeats, max_repeats_per_domain=per_domain, seq_len=seq_len)
    try:
        first = Mixture(weights).plan(budget, available, **kwargs)
    except ValueError:
        return
    again = Mixture(weights).plan(budget, available, **kwargs)
    items = list(weights.items())
    rnd.shuffle(items)
    shuffled = Mixture(dict(items)).plan(budget, available, **kwargs)
    assert first == again
    assert first.targets == shuffled.targets  # ties broken by name, not by the order given


# --------------------------------------------------------------------------------------------------
# the OLMo-core #316 scenario


def test_olmo_core_316_whole_sequences_do_not_spill():
    """OLMo-core PR #316: per-source instance counts were floored, so the mix came out shorter than
    the run, which went steps into a second epoch; padding every source up instead asks a small
    source for a sequence more than it holds. Here: a 5,000-token math set, one epoch at most,
    2,048-token sequences, and a weight that asks for 2.4 sequences of it."""
    seq_len, steps = 2048, 100
    budget = steps * seq_len
    weights = {"web": 0.976, "math": 0.024}
    available = {"web": 10**9, "math": 5_000}

    # the two naive roundings, to show the scenario really is the trap
    ideal = {d: Fraction(str(w)) * steps for d, w in weights.items()}  # in sequences: 97.6 and 2.4
    assert sum(math.floor(x) for x in ideal.values()) == steps - 1  # floor: short -> a 2nd epoch
    assert math.ceil(ideal["math"]) * seq_len > available["math"]  # ceil: math spills past 1 epoch

    plan = Mixture(weights).plan(budget, available, max_repeats=1, seq_len=seq_len)
    assert plan.total_tokens == budget  # exactly the run: it never runs out of mix
    assert plan["math"].target_tokens == 2 * seq_len <= available["math"]
    assert plan["math"].repetitions <= 1.0
    assert plan["math"].capped
    assert plan["web"].target_tokens == 98 * seq_len  # the shortfall went to web


def test_olmo_core_316_fractional_cap_does_not_round_up():
    """A small domain whose fractional share would round up past a fractional-epoch cap."""
    # math: 333 tokens x 1.5 epochs = 499.5 tokens allowed, i.e. 499 whole tokens
    available = {"web": 10**6, "math": 333}
    budget = 10_000
    weights = {"web": 0.95004, "math": 0.04996}  # shares 9500.4 and 499.6 tokens
    # the trap: hold math at its real-valued cap (499.5, web 9500.5) and round by largest
    # remainder; the two .5 remainders tie, "math" sorts first and gets the spare token: 500
    # tokens = 1.5015 epochs, one more partial pass than the cap allows
    assert math.floor(Fraction(333) * Fraction("1.5")) + 1 == 500
    plan = Mixture(weights).plan(budget, available, max_repeats=1.5)
    assert plan["math"].target_tokens == 499
    assert plan["math"].repetitions <= 1.5
    assert plan["math"].capped
    assert plan["web"].target_tokens == 9501
    assert plan.total_tokens == budget

    # below the integer cap, plain largest remainder: shares 9501.3 and 498.7 -> the spare token
    # to math, which may round up to its cap but not past it
    plan = Mixture({"web": 0.95013, "math": 0.04987}).plan(budget, available, max_repeats=1.5)
    assert plan.targets == {"web": 9501, "math": 499} and not plan["math"].capped
    # a share between the integer cap and the real cap (499.4 in (499, 499.5]): ceil/padding would
    # give 500; here it is held at 499
    plan = Mixture({"web": 0.95006, "math": 0.04994}).plan(budget, available, max_repeats=1.5)
    assert plan.targets == {"web": 9501, "math": 499} and plan["math"].capped


def test_tie_break_by_domain_name():
    # three equal shares of 10 tokens: 3.33.. each, one spare token goes to the first name
    plan = Mixture({"c": 1, "a": 1, "b": 1}).plan(10, {"a": 100, "b": 100, "c": 100})
    assert plan.targets == {"c": 3, "a": 4, "b": 3}
    assert allocate({"z": 1, "y": 1}, 3) == {"z": 1, "y": 2}


def test_capped_redistribution_example():
    mix = Mixture({"web": 0.5, "code": 0.3, "math": 0.2})
    available = {"web": 10_000, "code": 10_000, "math": 1_000}
    plan = mix.plan(10_000, available, max_repeats=1, max_repeats_per_domain={"math": 2})
    # math asks 2,000 and may take exactly 2,000; nothing capped
    assert plan.targets == {"web": 5000, "code": 3000, "math": 2000}
    plan = mix.plan(10_000, available, max_repeats=1)  # math may take only 1,000
    assert plan.targets == {"web": 5625, "code": 3375, "math": 1000}  # 9000 split 5:3
    assert plan["math"].capped and plan["math"].repetitions == 1.0
    assert plan["web"].weight_realized == pytest.approx(0.5625)
    # a cascade: capping math pushes code over its own cap
    available = {"web": 10_000, "code": 3_100, "math": 1_000}
    plan = mix.plan(10_000, available, max_repeats=1)
    assert plan.targets == {"web": 5900, "code": 3100, "math": 1000}
    assert plan["code"].capped and plan["math"].capped and not plan["web"].capped


def test_impossible_budget_says_what_is_possible():
    mix = Mixture({"web": 1, "math": 1})
    with pytest.raises(ValueError, match=r"at most 3,000 tokens"):
        mix.plan(5_000, {"web": 1_000, "math": 500}, max_repeats=2)
    with pytest.raises(ValueError, match=r"at most 2,048 tokens"):  # whole sequences: 1 + 1 of 1024
        mix.plan(2_049, {"web": 1_500, "math": 1_500}, max_repeats=1, seq_len=1024)
    # exactly at the limit works
    assert mix.plan(3_000, {"web": 1_000, "math": 500}, max_repeats=2).targets == {"web": 2000, "math": 1000}


def test_per_domain_override_and_unlimited():
    mix = Mixture({"web": 1, "math": 1})
    available = {"web": 10, "math": 10}
    plan = mix.plan(1000, available, max_repeats=1, max_repeats_per_domain={"math": None})
    assert plan.targets == {"web": 10, "math": 990}
    assert plan["math"].max_repeats is None and plan["math"].cap_tokens is None
    assert plan.possible_tokens is None
    with pytest.raises(ValueError, match="unknown domains: nope"):
        mix.plan(10, available, max_repeats_per_domain={"nope": 1})
    # zero repeats: the domain is not used and its share is redistributed
    plan = mix.plan(10, available, max_repeats_per_domain={"math": 0})
    assert plan.targets == {"web": 10, "math": 0}


def test_extra_available_domains_show_with_weight_zero():
    plan = Mixture({"web": 1}).plan(100, {"web": 1000, "books": 50})
    assert plan.targets == {"web": 100, "books": 0}
    assert plan["books"].weight_asked == 0.0


def test_seq_len_rounding_is_up_to_the_next_sequence():
    plan = Mixture({"a": 1, "b": 1}).plan(1000, {"a": 10**6, "b": 10**6}, seq_len=128)
    assert plan.total_tokens == 1024  # ceil(1000 / 128) = 8 sequences
    assert plan.targets == {"a": 512, "b": 512}
    plan = Mixture({"a": 1, "b": 1}).plan(1024, {"a": 10**6, "b": 10**6}, seq_len=128)
    assert plan.total_tokens == 1024


# --------------------------------------------------------------------------------------------------
# weights, validation, output


def test_weights_normalized_and_validated():
    assert Mixture({"a": 3, "b": 1}).weights == {"a": 0.75, "b": 0.25}
    assert Mixture({"a": 2, "b": 0}).weights == {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="negative"):
        Mixture({"a": 1, "b": -0.1})
    with pytest.raises(ValueError, match="all weights are zero"):
        Mixture({"a": 0, "b": 0})
    with pytest.raises(ValueError, match="empty"):
        Mixture({})
    with pytest.raises(ValueError, match="finite"):
        Mixture({"a": float("nan")})
    with pytest.raises(ValueError, match="finite"):
        Mixture({"a": float("inf")})
    with pytest.raises(ValueError, match="non-empty strings"):
        Mixture({"": 1})


def test_plan_argument_validation():
    mix = Mixture({"a": 1, "b": 1})
    with pytest.raises(ValueError, match="available tokens not given for domain"):
        mix.plan(10, {"a": 10})
    with pytest.raises(ValueError, match="budget"):
        mix.plan(-1, {"a": 10, "b": 10})
    with pytest.raises(ValueError, match="budget"):
        mix.plan(10.5, {"a": 10, "b": 10})
    with pytest.raises(ValueError, match="available tokens of domain 'b'"):
        mix.plan(10, {"a": 10, "b": -3})
    with pytest.raises(ValueError, match="seq_len"):
        mix.plan(10, {"a": 10, "b": 10}, seq_len=0)
    with pytest.raises(ValueError, match="max repeats"):
        mix.plan(10, {"a": 10, "b": 10}, max_repeats=-1)
    assert mix.plan(1e3, {"a": 10**4, "b": 10**4}).total_tokens == 1000  # integral floats are fine


def test_exact_reads_decimals():
    assert exact(0.7) == Fraction(7, 10)
    assert math.floor(10 * exact(0.7)) == 7  # Fraction(0.7) * 10 would floor to 6
    plan = Mixture({"a": 1}).plan(7, {"a": 10}, max_repeats=0.7)
    assert plan.targets == {"a": 7}


def test_table_text_and_json():
    plan = Mixture({"web": 0.5, "code": 0.3, "math": 0.2}).plan(
        10_000, {"web": 10_000, "code": 10_000, "math": 1_000}, max_repeats=1)
    table = plan.table()
    assert isinstance(table, Table)
    assert len(table.columns) == 8 and table.row_count == 3
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    rendered = console.export_text()
    assert "math" in rendered and "capped" in rendered and "1,000" in rendered

    text = plan.to_text()
    assert text.isascii()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["domain", "weight", "asked"]
    math_line = next(line for line in lines if line.startswith("math"))
    assert "1,000" in math_line and "1.00" in math_line and "capped" in math_line
    assert "budget 10,000 tokens" in text
    assert str(plan) == text

    data = json.loads(plan.to_json())
    assert data["total_tokens"] == 10_000 and data["budget"] == 10_000
    assert {row["domain"]: row["target_tokens"] for row in data["domains"]} == plan.targets
    assert MixturePlan.from_json(plan.to_json()) == plan

    mix = Mixture({"web": 3, "code": 1})
    assert Mixture.from_json(mix.to_json()) == mix
    assert json.loads(mix.to_json())["normalized"] == {"web": 0.75, "code": 0.25}


def test_zero_budget():
    plan = Mixture({"a": 1, "b": 2}).plan(0, {"a": 0, "b": 0}, max_repeats=1)
    assert plan.targets == {"a": 0, "b": 0}
    assert plan["a"].weight_realized == 0.0 and plan["a"].repetitions == 0.0


def test_with_synthetic_splits_each_domain_at_the_ratio():
    from mixers.mixture import with_synthetic

    w = {"web": 0.6, "code": 0.4}
    assert with_synthetic(w, ["web.synthetic"], 1.0) == {"web": 0.3, "web.synthetic": 0.3, "code": 0.4}
    assert with_synthetic(w, ["web.synthetic", "code.synthetic"], 3.0) == pytest.approx(
        {"web": 0.15, "web.synthetic": 0.45, "code": 0.1, "code.synthetic": 0.3})
    assert with_synthetic(w, ["web.synthetic"], 0.0) == {"web": 0.6, "web.synthetic": 0.0, "code": 0.4}
    named = {"web": 0.5, "web.synthetic": 0.1}  # the weights name the part: taken as given
    assert with_synthetic(named, ["web.synthetic"], 1.0) == named
    with pytest.raises(ValueError, match="synthetic_ratio"):
        with_synthetic(w, ["web.synthetic"], -1)
