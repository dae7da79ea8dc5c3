"""flows.validate's verdict rule on constructed numbers (no Spark, no training).

The rule (flows/validate.py): b's mean minus a's mean is "within noise" when its absolute value is
at most twice the standard error sqrt(s_a^2/n_a + s_b^2/n_b) (s: the sample standard deviation of
the seeds), otherwise "lower" (b below a) or "higher".
"""
from __future__ import annotations

import math

import pytest

from flows.validate import _compare, _verdict

# Seeds built so their mean and sample standard deviation are exact: deviations -3, 1, 1, 1 sum to
# 0 and their squares to 12, so the sample variance is 12 / 3 = 4 (std 2) and s^2 / n = 4 / 4 = 1.
SPREAD = (-3.0, 1.0, 1.0, 1.0)


def seeds(mean: float) -> list[float]:
    return [mean + d for d in SPREAD]


def test_the_constructed_seeds_have_the_intended_mean_and_spread():
    xs = seeds(10.0)
    mean = sum(xs) / len(xs)
    assert mean == 10.0
    assert sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) == 4.0


def se_of(a: list[float], b: list[float]) -> float:
    """The standard error, written out here rather than taken from the code under test."""
    def var(xs):
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return math.sqrt(var(a) / len(a) + var(b) / len(b))


def test_clearly_lower_and_clearly_higher():
    a = seeds(10.0)
    lower = _verdict(a, seeds(5.0))      # 5 below, SE sqrt(2): about 3.5 SE
    assert lower["verdict"] == "lower"
    assert lower["difference"] == pytest.approx(-5.0)
    assert lower["standard_error"] == pytest.approx(math.sqrt(2.0))
    higher = _verdict(a, seeds(15.0))
    assert higher["verdict"] == "higher"
    assert higher["difference"] == pytest.approx(5.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_boundary_is_two_standard_errors(sign):
    a = seeds(10.0)
    se = se_of(a, seeds(0.0))  # the spread does not depend on the mean: sqrt(1 + 1)
    assert se == pytest.approx(math.sqrt(2.0))
    real = "higher" if sign > 0 else "lower"
    for multiple, expected in [(0.5, "within noise"), (1.01, "within noise"), (1.99, "within noise"),
                               (2.01, real), (2.99, real), (3.01, real)]:
        b = seeds(10.0 + sign * multiple * se)
        v = _verdict(a, b)
        assert v["difference"] == pytest.approx(sign * multiple * se)
        assert v["standard_error"] == pytest.approx(se)
        assert v["verdict"] == expected, (multiple, v)


def test_exactly_two_standard_errors_is_still_noise():
    # a: s^2/n = 1; b: one seed, no spread; so the SE is exactly 1 and a difference of exactly 2
    # sits on the boundary, which the rule ("no larger than 2 SE") calls noise
    a = seeds(10.0)
    for b, inside in [([12.0], "within noise"), ([8.0], "within noise"), ([12.01], "higher"), ([7.99], "lower")]:
        v = _verdict(a, b)
        assert v["standard_error"] == 1.0
        assert v["verdict"] == inside, (b, v)


def test_equal_means_are_within_noise():
    v = _verdict(seeds(3.0), [2.0, 3.0, 4.0])
    assert v["difference"] == 0.0 and v["verdict"] == "within noise"
    v = _verdict([3.0, 3.0], [3.0, 3.0])  # no spread at all: SE 0, difference 0 is still noise
    assert v["standard_error"] == 0.0 and v["verdict"] == "within noise"


def test_single_seeds_have_no_spread_so_any_difference_is_real():
    assert _verdict([2.5], [2.5])["verdict"] == "within noise"
    v = _verdict([2.5], [2.5 + 1e-6])
    assert v["standard_error"] == 0.0 and v["verdict"] == "higher"
    assert _verdict([2.5], [2.5 - 1e-6])["verdict"] == "lower"
    assert _verdict([2.5], [2.5, 2.5, 2.5])["verdict"] == "within noise"
    assert _verdict([2.5], [2.4, 2.4])["verdict"] == "lower"


def result(loss_seeds: list[float], per_domain: dict[str, list[float]]) -> dict:
    """The part of a variant's summary that `_compare` reads, plus a marker to see it is kept."""
    return {
        "heldout_loss": sum(loss_seeds) / len(loss_seeds), "seeds_loss": loss_seeds, "marker": id(loss_seeds),
        "per_domain": {d: {"loss": sum(x) / len(x), "seeds_loss": x} for d, x in per_domain.items()},
    }


def test_compare_puts_a_comparison_on_every_variant_after_the_first():
    base = result(seeds(10.0), {"code": seeds(4.0), "docs": seeds(6.0)})
    better = result(seeds(5.0), {"code": seeds(4.5), "docs": seeds(1.0)})    # code: 0.35 SE
    worse = result(seeds(15.0), {"code": seeds(9.0), "docs": seeds(6.0)})
    partial = result(seeds(10.5), {"docs": seeds(12.0), "fiction": [1.0]})   # code missing, fiction new
    results = {"base": base, "better": better, "worse": worse, "partial": partial}
    out = _compare(results, ["base", "better", "worse", "partial"])

    assert list(out) == ["base", "better", "worse", "partial"]
    assert "compared_with" not in out["base"] and "comparison" not in out["base"]
    assert out["base"] == base
    for name in ("better", "worse", "partial"):
        assert out[name]["compared_with"] == "base"
        assert set(out[name]["comparison"]) == {"heldout_loss", "per_domain"}
        assert out[name]["marker"] == results[name]["marker"]  # the summary itself is kept
        assert "comparison" not in results[name]                 # and the input is not changed

    def verdicts(name):
        c = out[name]["comparison"]
        return c["heldout_loss"]["verdict"], {d: v["verdict"] for d, v in c["per_domain"].items()}

    assert verdicts("better") == ("lower", {"code": "within noise", "docs": "lower"})
    assert verdicts("worse") == ("higher", {"code": "higher", "docs": "within noise"})
    # only the domains both variants have are compared
    assert verdicts("partial") == ("within noise", {"docs": "higher"})
    c = out["better"]["comparison"]
    assert c["heldout_loss"]["difference"] == pytest.approx(-5.0)
    assert c["per_domain"]["docs"]["difference"] == pytest.approx(-5.0)
    assert c["per_domain"]["code"]["difference"] == pytest.approx(0.5)
    assert c["per_domain"]["code"]["standard_error"] == pytest.approx(math.sqrt(2.0))


def test_compare_with_one_variant_adds_nothing():
    only = result(seeds(1.0), {"code": seeds(1.0)})
    assert _compare({"only": only}, ["only"]) == {"only": only}
