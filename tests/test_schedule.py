"""Tests for mixers.schedule: constant, domain-upsampling (Blakeney et al. 2024, arXiv:2406.03476) and
piecewise-linear schedules."""
from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixers.mixture import allocate
from mixers.schedule import (
    PAPER_BASE_MIX,
    PAPER_UPSAMPLED_MIX,
    ConstantSchedule,
    PiecewiseLinearSchedule,
    Schedule,
    UpsamplingSchedule,
)

BASE = {"web": 0.7, "code": 0.2, "math": 0.1}
UP = {"web": 0.3, "code": 0.3, "math": 0.4}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def upsampling(fraction: float = 0.2) -> UpsamplingSchedule:
    return UpsamplingSchedule(BASE, UP, fraction)


# --------------------------------------------------------------------------------------------------
# the switch


def test_switch_100_steps_f_02_first_upsampled_step_is_80():
    """100 steps, f = 0.2: steps 0..79 (tokens [0, 0.8T)) use the base mix; step 80, whose start
    token is exactly 0.8T, is the first upsampled step; steps 80..99 (20 steps) are upsampled."""
    s = upsampling(0.2)
    assert s.switch_step(100) == 80
    assert s.weights_at_step(79, 100) == pytest.approx(BASE)
    assert s.weights_at_step(80, 100) == pytest.approx(UP)
    assert s.weights_at_step(99, 100) == pytest.approx(UP)
    assert s.weights_at_step(0, 100) == pytest.approx(BASE)
    assert sum(s.weights_at_step(i, 100) == s.upsampled for i in range(100)) == 20


@pytest.mark.parametrize(
    ("fraction", "steps", "expected"),
    [
        (0.2, 100, 80),
        (0.2, 99, 80),  # 0.8 * 99 = 79.2: step 79 starts at 79/99 < 0.8, step 80 at 80/99 >= 0.8
        (0.2, 101, 81),  # 80.8 -> 81
        (0.2, 5, 4),
        (0.2, 1, 1),  # one step: it starts at 0, never upsampled
        (0.1, 10, 9),
        (0.3, 10, 7),  # float trap: Fraction(0.3) would give 1 - f slightly above 0.7 -> step 8
        (0.7, 10, 3),
        (0.15, 1000, 850),
        (0.0, 100, 100),  # f = 0: no step is upsampled
        (1.0, 100, 0),  # f = 1: every step is upsampled
    ],
)
def test_switch_step_boundaries(fraction, steps, expected):
    s = upsampling(fraction)
    k = s.switch_step(steps)
    assert k == expected
    for i in range(steps):
        assert s.weights_at_step(i, steps) == (s.upsampled if i >= k else s.base)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100), st.integers(1, 2000))
def test_switch_step_is_first_step_starting_at_or_after_1_minus_f(percent, steps):
    f = percent / 100
    s = upsampling(f)
    k = s.switch_step(steps)
    threshold = 1 - Fraction(percent, 100)
    # the first step whose start token k * T / steps is >= (1 - f) * T
    assert Fraction(k, steps) >= threshold or k == steps
    assert k == 0 or Fraction(k - 1, steps) < threshold
    assert s.weights_at_step(min(k, steps - 1), steps) == (s.upsampled if k < steps else s.base)
    if k > 0:
        assert s.weights_at_step(k - 1, steps) == s.base
    # the upsampled phase covers at most f of the tokens, short of it by less than one step
    assert 0 <= Fraction(percent, 100) * steps - (steps - k) < 1


def test_weights_at_progress_boundary():
    s = upsampling(0.2)
    assert s.weights_at(0.8) == s.upsampled  # right-continuous: the switch point is upsampled
    assert s.weights_at(math.nextafter(0.8, 0)) == s.base
    assert s.weights_at(0.0) == s.base and s.weights_at(1.0) == s.upsampled
    assert s.switch_progress == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.weights_at(1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.weights_at(-0.01)
    with pytest.raises(ValueError, match="step"):
        s.weights_at_step(101, 100)
    with pytest.raises(ValueError, match="total_steps"):
        s.weights_at_step(0, 0)


# --------------------------------------------------------------------------------------------------
# normalization and interpolation

mixes = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 9), min_size=1).filter(
    lambda m: any(m.values()))


@st.composite
def schedules(draw) -> Schedule:
    kind = draw(st.sampled_from(["constant", "upsampling", "piecewise"]))
    if kind == "constant":
        return ConstantSchedule(draw(mixes))
    if kind == "upsampling":
        return UpsamplingSchedule(draw(mixes), draw(mixes), draw(st.sampled_from([0, 0.05, 0.1, 0.2, 0.5, 1])))
    ps = sorted(draw(st.lists(st.integers(0, 20), min_size=1, max_size=5)))
    return PiecewiseLinearSchedule([(p / 20, draw(mixes)) for p in ps])


@settings(max_examples=200, deadline=None)
@given(schedules(), st.floats(0, 1))
def test_weights_normalized_at_every_p(schedule, p):
    w = schedule.weights_at(p)
    assert tuple(w) == schedule.domains
    assert all(x >= 0 for x in w.values())
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(schedules(), st.integers(1, 300), st.integers(0, 10**9))
def test_tokens_per_domain_add_up(schedule, steps, total):
    tokens = schedule.tokens_per_domain(total, steps)
    assert tuple(tokens) == schedule.domains
    assert sum(tokens.values()) == total
    # each domain within one token (plus float slack for the piecewise sum) of the exact integral
    for d, t in tokens.items():
        exact = sum(Fraction(schedule.weights_at_step(i, steps)[d]) for i in range(steps)) * total / steps
        assert abs(t - exact) < 1 + total * 1e-12


def test_piecewise_midpoints():
    s = PiecewiseLinearSchedule([(0.0, {"a": 1, "b": 0}), (1.0, {"a": 0, "b": 1})])
    assert s.weights_at(0.5) == {"a": 0.5, "b": 0.5}
    assert s.weights_at(0.25) == {"a": 0.75, "b": 0.25}
    # each point is normalized before interpolating: (a .5 b .5) -> (a 1): midpoint a .75 b .25
    s = PiecewiseLinearSchedule([(0.0, {"a": 2, "b": 2}), (1.0, {"a": 7})])
    assert s.weights_at(0.5) == {"a": 0.75, "b": 0.25}
    assert s.points == [(0.0, {"a": 0.5, "b": 0.5}), (1.0, {"a": 1.0, "b": 0.0})]
    # three points, midpoint of the second segment
    s = PiecewiseLinearSchedule([(0.0, {"x": 1}), (0.5, {"y": 1}), (1.0, {"z": 1})])
    assert s.weights_at(0.75) == {"x": 0.0, "y": 0.5, "z": 0.5}
    assert s.weights_at(0.5) == {"x": 0.0, "y": 1.0, "z": 0.0}
    assert s.weights_at_step(1, 4) == {"x": 0.5, "y": 0.5, "z": 0.0}


def test_piecewise_holds_outside_and_jumps():
    s = PiecewiseLinearSchedule([(0.2, {"a": 1}), (0.6, {"b": 1})])
    assert s.weights_at(0.0) == {"a": 1.0, "b": 0.0}
    assert s.weights_at(0.9) == {"a": 0.0, "b": 1.0}
    # a jump reproduces the upsampling schedule, right-continuous at the jump
    jump = PiecewiseLinearSchedule([(0.0, BASE), (0.8, BASE), (0.8, UP), (1.0, UP)])
    up = upsampling(0.2)
    for p in [0.0, 0.5, math.nextafter(0.8, 0), 0.8, 0.9, 1.0]:
        assert jump.weights_at(p) == pytest.approx(up.weights_at(p))
    assert jump.tokens_per_domain(10**6, 100) == up.tokens_per_domain(10**6, 100)


def test_piecewise_validation():
    with pytest.raises(ValueError, match="non-empty"):
        PiecewiseLinearSchedule([])
    with pytest.raises(ValueError, match="non-decreasing"):
        PiecewiseLinearSchedule([(0.5, {"a": 1}), (0.2, {"a": 1})])
    with pytest.raises(ValueError, match=r"point 1: progress must be in \[0, 1\]"):
        PiecewiseLinearSchedule([(0.0, {"a": 1}), (1.2, {"a": 1})])
    with pytest.raises(ValueError, match="point 0.*all weights are zero"):
        PiecewiseLinearSchedule([(0.0, {"a": 0})])


def test_upsampling_validation():
    with pytest.raises(ValueError, match="fraction"):
        UpsamplingSchedule(BASE, UP, 1.5)
    with pytest.raises(ValueError, match="base mix: .*negative"):
        UpsamplingSchedule({"a": -1}, UP)
    with pytest.raises(ValueError, match="upsampled mix: .*all weights are zero"):
        UpsamplingSchedule(BASE, {"a": 0})
    assert UpsamplingSchedule(BASE, UP).fraction == 0.2  # the paper's headline run


# --------------------------------------------------------------------------------------------------
# tokens


def test_tokens_per_domain_upsampling_and_constant():
    s = upsampling(0.2)
    tokens = s.tokens_per_domain(1_000_000, 100)
    # 80 steps of base + 20 steps of upsampled, exactly
    assert tokens == {"web": 620_000, "code": 220_000, "math": 160_000}
    c = ConstantSchedule({"a": 1, "b": 1, "c": 1})
    assert c.tokens_per_domain(10, 7) == allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    # a switch that does not fall on a step: 99 steps, switch at 80, 19 upsampled steps
    tokens = s.tokens_per_domain(99_000, 99)
    assert tokens["math"] == 80 * 100 + 19 * 400
    assert sum(tokens.values()) == 99_000


def test_repetitions_flags_small_domains():
    s = UpsamplingSchedule.paper()
    reps = s.repetitions(10**6, 100, {"cc_large": 10**6, "cc_small": 10**6, "domain_specific": 20_000,
                                      "code": 10**6})
    assert reps["domain_specific"] == pytest.approx(127_360 / 20_000)  # 6.4 epochs: the pitfall
    assert reps["cc_large"] == pytest.approx(0.2748)
    with pytest.raises(ValueError, match="available tokens not given"):
        s.repetitions(100, 10, {"code": 1})


# --------------------------------------------------------------------------------------------------
# the paper preset


def test_paper_preset_matches_methods():
    """The paper's mixes (a secondary excerpt of its tables): base 34.35 / 36.70 / 7.17 / 21.78 %,
    DU 0 / 30 / 35 / 35 %, DU for the last 20%."""
    s = UpsamplingSchedule.paper()
    assert PAPER_BASE_MIX == {"cc_large": 0.3435, "cc_small": 0.3670, "domain_specific": 0.0717, "code": 0.2178}
    assert PAPER_UPSAMPLED_MIX == {"cc_large": 0.0, "cc_small": 0.30, "domain_specific": 0.35, "code": 0.35}
    assert s.base == pytest.approx(PAPER_BASE_MIX, abs=1e-15)
    assert s.upsampled == pytest.approx(PAPER_UPSAMPLED_MIX, abs=1e-15)
    assert sum(PAPER_BASE_MIX.values()) == pytest.approx(1.0, abs=1e-12)  # the table adds up to 100%
    assert s.fraction == 0.2
    assert s.switch_step(1000) == 800  # 0.8T of the paper's 1T tokens
    assert s.weights_at(0.5) == pytest.approx(PAPER_BASE_MIX)
    assert s.weights_at(0.9) == pytest.approx(PAPER_UPSAMPLED_MIX)
    ten = UpsamplingSchedule.paper(fraction=0.1)
    assert ten.switch_step(1000) == 900
    renamed = UpsamplingSchedule.paper(rename={"domain_specific": "math", "cc_small": "web"})
    assert renamed.domains == ("cc_large", "web", "math", "code")
    assert renamed.upsampled["math"] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="unknown paper groups"):
        UpsamplingSchedule.paper(rename={"books": "x"})
    with pytest.raises(ValueError, match="same domain"):
        UpsamplingSchedule.paper(rename={"cc_large": "cc", "cc_small": "cc"})


# --------------------------------------------------------------------------------------------------
# JSON and plot


@settings(max_examples=50, deadline=None)
@given(schedules())
def test_json_round_trip(schedule):
    text = schedule.to_json()
    data = json.loads(text)
    assert data["type"] == schedule.kind
    back = Schedule.from_json(text)
    assert type(back) is type(schedule)
    assert back == schedule
    assert type(schedule).from_json(data) == schedule
    for p in [0.0, 0.1, 0.5, 0.8, 0.95, 1.0]:
        assert back.weights_at(p) == schedule.weights_at(p)
    assert back.tokens_per_domain(12_345, 17) == schedule.tokens_per_domain(12_345, 17)


def test_json_errors():
    with pytest.raises(ValueError, match="unknown schedule type 'nope'"):
        Schedule.from_json('{"type": "nope"}')
    with pytest.raises(ValueError, match="expected a schedule of type 'constant'"):
        ConstantSchedule.from_json(upsampling().to_json())


def test_plot_writes_png(tmp_path):
    for i, schedule in enumerate([
        UpsamplingSchedule.paper(),
        ConstantSchedule(BASE),
        PiecewiseLinearSchedule([(0.0, BASE), (0.5, UP), (0.5, BASE), (1.0, UP)]),
    ]):
        out = schedule.plot(tmp_path / f"sub/schedule{i}.png", title="test")
        assert out.exists() and out.stat().st_size > 1000
        assert out.read_bytes()[:8] == PNG_MAGIC
    out = UpsamplingSchedule.paper().plot(tmp_path / "steps.png", total_steps=50)
    assert out.read_bytes()[:8] == PNG_MAGIC
