"""Domain mixtures: domain weights -> per-domain token targets for a token budget.

The mixture half of domain upsampling at the end of training (Blakeney et al. 2024, "Does your
data spark joy? Performance gains from domain upsampling at the end of training",
arXiv:2406.03476). Upsampling small domains repeats them many times over: that is why every target
here carries its repetition count (epochs of the domain's tokens), and why a cap on repetitions per
domain is part of the arithmetic, not an afterthought.

The allocation
--------------
Given normalized weights ``w_d``, a budget ``B`` and per-domain caps
``cap_d = floor(available_d * max_repeats_d)`` (no cap where ``max_repeats_d`` is None):

1. **Water-filling, exactly.** Every domain gets ``w_d / sum(w_free) * (B - sum(capped))``. Domains
   whose share exceeds their cap are fixed at the cap, and their shortfall goes to the remaining
   domains in proportion to their weights; repeat until no share exceeds its cap (at most one round
   per domain). All of this is done in ``fractions.Fraction``, so it is exact and deterministic.
   If ``sum(cap_d) < B`` over the domains with a positive weight, the budget cannot be met and a
   ``ValueError`` says how many tokens are possible.
2. **Largest remainder.** Each domain takes ``floor(share_d)``; the ``B - sum(floor)`` tokens left
   go one each to the domains with the largest fractional remainders, ties broken by domain name
   (ascending). The targets therefore add up to ``B`` exactly.

Why this cannot spill a domain into an extra epoch (OLMo-core PR #316)
---------------------------------------------------------------------
In OLMo-core's ``SourceMixtureDataset`` (PR #316, "fix rounding error with mixing datasets"),
per-source targets were rounded independently: flooring made the mix shorter than the training run,
which then ran several steps into a second epoch of the data; padding every source up instead can
ask a small source for more than it has — one more partial pass than its cap allows. Here:

- the targets add up to the budget exactly (step 2), so the trainer never runs out of mix;
- the exact share of a domain never exceeds its *integer* cap (step 1), and a domain is only
  rounded up when its share has a positive fractional part, i.e. ``floor(share) < share <= cap``,
  so ``floor(share) + 1 <= cap``. Rounding up can never cross the cap. (Step 2 never needs to round
  up a domain without a remainder: the remainders add up to the number of tokens handed out, and
  each is below 1.)

Whole sequences
---------------
With ``seq_len`` the same arithmetic runs in units of whole sequences: the caps become
``cap_d // seq_len`` sequences and the budget becomes ``ceil(B / seq_len)`` sequences. Every target
is then a multiple of ``seq_len`` and the targets add up to the **smallest multiple of seq_len that
is >= B** (so the sum is in ``[B, B + seq_len)``): a run that trains for ``B`` tokens never runs out
of data, which is exactly the OLMo-core #316 failure. A domain never gets a sequence it cannot fill
within its cap.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real
from typing import Any, Iterable, Mapping

from rich.table import Table

from core.values import check_int

__all__ = [
    "DomainPlan",
    "Mixture",
    "MixturePlan",
    "allocate",
    "exact",
    "exact_weights",
    "repeat_cap",
]


# --------------------------------------------------------------------------------------------------
# small exact-arithmetic helpers


def exact(x: float | int | Fraction) -> Fraction:
    """The exact rational a user meant by ``x``.

    Floats are read through their shortest ``repr`` (``0.7`` is 7/10, not the binary
    0.6999999999999999555910790149937...), so that ``floor(10 * 0.7) == 7`` as a person expects.
    """
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number here")
    if isinstance(x, Integral):
        return Fraction(int(x))
    if isinstance(x, Real):
        xf = float(x)
        if not math.isfinite(xf):
            raise ValueError(f"expected a finite number, got {x!r}")
        return Fraction(repr(xf))
    raise TypeError(f"expected a number, got {type(x).__name__}: {x!r}")


def repeat_cap(name: str, value: Any) -> float | None:
    """A repetition cap (the most epochs of a domain's tokens) as a float, or None for no cap
    (None or infinity); a ValueError naming ``name`` unless it is a number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not float(value) >= 0:
        raise ValueError(f"{name}: expected a number >= 0 (inf: no cap), got {value!r}")
    return None if math.isinf(float(value)) else float(value)


def exact_weights(weights: Mapping[str, float]) -> dict[str, Fraction]:
    """Validate weights and return them, normalized, as exact fractions (in the given order).

    A ValueError for an empty mapping, a non-string or empty domain name, a negative or
    non-finite weight, or weights that are all zero."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping domain -> weight, got {type(weights).__name__}")
    if not weights:
        raise ValueError("weights are empty: give at least one domain with a positive weight")
    raw: dict[str, Fraction] = {}
    for domain, w in weights.items():
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"domain names must be non-empty strings, got {domain!r}")
        try:
            value = exact(w)
        except (TypeError, ValueError):
            raise ValueError(f"weight of domain {domain!r} must be a finite number, got {w!r}") from None
        if value < 0:
            raise ValueError(f"weight of domain {domain!r} is negative ({w!r}); weights must be >= 0")
        raw[domain] = value
    total = sum(raw.values(), Fraction(0))
    if total == 0:
        raise ValueError(f"all weights are zero ({', '.join(raw)}): at least one must be positive")
    return {d: v / total for d, v in raw.items()}


# --------------------------------------------------------------------------------------------------
# the allocation


@dataclass(frozen=True)
class _Allocation:
    units: dict[str, int]
    capped: frozenset[str]  # domains whose proportional share hit their cap


def _allocate(
    weights: Mapping[str, Fraction],
    total: int,
    caps: Mapping[str, int | None],
) -> _Allocation:
    """Core of :func:`allocate`: ``weights`` already exact and normalized, ``caps`` in units."""
    positive = [d for d, w in weights.items() if w > 0]
    possible: int | None = 0
    for d in positive:
        c = caps.get(d)
        if c is None:
            possible = None
            break
        possible += c
    if possible is not None and possible < total:
        raise _Infeasible(possible)

    # 1. water-filling in exact arithmetic
    fixed: dict[str, Fraction] = {}
    while True:
        free = [d for d in positive if d not in fixed]
        remaining = total - sum(fixed.values(), Fraction(0))
        if not free:
            break
        level = remaining / sum((weights[d] for d in free), Fraction(0))
        over = [d for d in free if caps.get(d) is not None and level * weights[d] > caps[d]]
        if not over:
            break
        for d in over:
            fixed[d] = Fraction(caps[d])  # type: ignore[arg-type]
    shares: dict[str, Fraction] = {d: Fraction(0) for d in weights}
    shares.update(fixed)
    if free:
        for d in free:
            shares[d] = level * weights[d]

    # 2. largest remainder, ties by domain name
    units = {d: math.floor(s) for d, s in shares.items()}
    left = total - sum(units.values())
    order = sorted((d for d in shares if shares[d] != units[d]), key=lambda d: (-(shares[d] - units[d]), d))
    if left < 0 or left > len(order):  # impossible by construction; guard the invariant anyway
        raise AssertionError(f"largest-remainder invariant broken: {left} left for {len(order)} domains")
    for d in order[:left]:
        units[d] += 1
    for d, u in units.items():
        c = caps.get(d)
        if c is not None and u > c:  # impossible: floor(share) < share <= cap => floor + 1 <= cap
            raise AssertionError(f"domain {d!r} rounded past its cap ({u} > {c})")
    return _Allocation(units=units, capped=frozenset(fixed))


class _Infeasible(Exception):
    def __init__(self, possible: int) -> None:
        super().__init__(possible)
        self.possible = possible


def allocate(
    weights: Mapping[str, float],
    total: int,
    caps: Mapping[str, int | None] | None = None,
) -> dict[str, int]:
    """Split the integer ``total`` over domains in proportion to ``weights``, respecting ``caps``.

    ``caps[d]`` is the most domain ``d`` may receive (``None`` or absent: no cap). A capped domain's
    shortfall goes to the others in proportion to their weights. The result adds up to ``total``
    exactly (largest remainder, ties by domain name) and never exceeds a cap. Raises ``ValueError``
    when the caps of the positively weighted domains add up to less than ``total``.
    """
    total = check_int("total", total, 0, whole_floats=True)
    w = exact_weights(weights)
    c: dict[str, int | None] = {}
    for d in w:
        cap = None if caps is None else caps.get(d)
        c[d] = None if cap is None else check_int(f"cap of domain {d!r}", cap, 0, whole_floats=True)
    try:
        return _allocate(w, total, c).units
    except _Infeasible as e:
        raise ValueError(
            f"cannot allocate {total} over the domains: their caps allow at most {e.possible}"
        ) from None


# --------------------------------------------------------------------------------------------------
# plans


@dataclass(frozen=True)
class DomainPlan:
    """One domain's row of a :class:`MixturePlan`."""

    domain: str
    weight_asked: float  # normalized weight the mixture asks for
    weight_realized: float  # target / sum of targets
    target_tokens: int
    available_tokens: int
    max_repeats: float | None  # None: no cap
    cap_tokens: int | None  # floor(available * max_repeats); None: no cap
    repetitions: float  # target / available, in epochs (0.0 where nothing is available)
    capped: bool  # its proportional share hit the cap and was redistributed

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "weight_asked": self.weight_asked,
            "weight_realized": self.weight_realized,
            "target_tokens": self.target_tokens,
            "available_tokens": self.available_tokens,
            "max_repeats": self.max_repeats,
            "cap_tokens": self.cap_tokens,
            "repetitions": self.repetitions,
            "capped": self.capped,
        }


@dataclass(frozen=True)
class MixturePlan:
    """What a mixture really yields for a budget: targets, realized weights and epochs per domain."""

    budget: int
    seq_len: int | None
    domains: tuple[DomainPlan, ...]
    possible_tokens: int | None  # the most the caps allow (None: unbounded)

    @property
    def total_tokens(self) -> int:
        """Sum of the targets: the budget exactly, or with ``seq_len`` the next multiple of it."""
        return sum(d.target_tokens for d in self.domains)

    @property
    def targets(self) -> dict[str, int]:
        return {d.domain: d.target_tokens for d in self.domains}

    def __getitem__(self, domain: str) -> DomainPlan:
        for d in self.domains:
            if d.domain == domain:
                return d
        raise KeyError(domain)

    # ---- serialization

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "seq_len": self.seq_len,
            "total_tokens": self.total_tokens,
            "possible_tokens": self.possible_tokens,
            "domains": [d.to_dict() for d in self.domains],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON (for a manifest)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> "MixturePlan":
        d = json.loads(data) if isinstance(data, str) else data
        return cls(
            budget=int(d["budget"]),
            seq_len=d.get("seq_len"),
            possible_tokens=d.get("possible_tokens"),
            domains=tuple(DomainPlan(**row) for row in d["domains"]),
        )

    # ---- display

    def _rows(self) -> list[list[str]]:
        rows = []
        for d in self.domains:
            rows.append([
                d.domain,
                f"{d.weight_asked:.2%}",
                f"{d.weight_realized:.2%}",
                f"{d.target_tokens:,}",
                f"{d.available_tokens:,}",
                "-" if d.max_repeats is None else f"{d.max_repeats:g}",
                f"{d.repetitions:.2f}",
                "capped" if d.capped else "",
            ])
        return rows

    _HEADERS = ("domain", "weight asked", "weight realized", "target tokens", "available tokens",
                "max repeats", "epochs", "note")

    def _caption(self) -> str:
        parts = [f"budget {self.budget:,} tokens", f"total {self.total_tokens:,}"]
        if self.seq_len is not None:
            parts.append(f"whole sequences of {self.seq_len:,}")
        if self.possible_tokens is not None:
            parts.append(f"caps allow {self.possible_tokens:,}")
        return "; ".join(parts)

    def table(self) -> Table:
        """A ``rich`` table of what the mixture really yields."""
        table = Table(title="Mixture plan", caption=self._caption())
        for i, h in enumerate(self._HEADERS):
            table.add_column(h, justify="left" if i in (0, 7) else "right")
        for row in self._rows():
            table.add_row(*row)
        return table

    def to_text(self) -> str:
        """The same table as plain ASCII text."""
        rows = [list(self._HEADERS)] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADERS))]

        def fmt(r: list[str]) -> str:
            cells = [r[i].ljust(widths[i]) if i in (0, 7) else r[i].rjust(widths[i]) for i in range(len(r))]
            return "  ".join(cells).rstrip()

        lines = [fmt(rows[0]), "  ".join("-" * w for w in widths).rstrip()]
        lines += [fmt(r) for r in rows[1:]]
        lines.append(self._caption())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# --------------------------------------------------------------------------------------------------
# the mixture


def _fmt_repeats(r: float | None) -> str:
    return "unlimited" if r is None else f"{r:g}"


class Mixture:
    """Domain weights; :meth:`plan` turns them into token targets for a budget.

    >>> m = Mixture({"web": 3, "code": 1})
    >>> m.weights
    {'web': 0.75, 'code': 0.25}
    >>> m.plan(1001, {"web": 10**6, "code": 10**6}).targets
    {'web': 751, 'code': 250}
    """

    __slots__ = ("_exact", "_raw")

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._exact = exact_weights(weights)
        self._raw = {d: float(w) for d, w in weights.items()}

    @property
    def raw(self) -> dict[str, float]:
        """The weights as given (not normalized)."""
        return dict(self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mixture) and self._exact == other._exact

    def __hash__(self) -> int:
        # A frozenset, like __eq__'s dict comparison, ignores the order the weights were given in;
        # a tuple of the items made equal mixtures hash differently.
        return hash(frozenset(self._exact.items()))

    @property
    def weights(self) -> dict[str, float]:
        """Normalized weights (sum to 1), in the order given."""
        return {d: float(w) for d, w in self._exact.items()}

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self._exact)

    def __repr__(self) -> str:
        inner = ", ".join(f"{d!r}: {w:.6g}" for d, w in self.weights.items())
        return f"Mixture({{{inner}}})"

    # ---- serialization

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.raw), "normalized": self.weights}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> "Mixture":
        d = json.loads(data) if isinstance(data, str) else data
        return cls(d["weights"])

    # ---- arithmetic

    def _caps(
        self,
        domains: list[str],
        available: Mapping[str, int],
        max_repeats: float | None,
        max_repeats_per_domain: Mapping[str, float | None] | None,
    ) -> tuple[dict[str, float | None], dict[str, int | None]]:
        per = dict(max_repeats_per_domain or {})
        unknown = sorted(set(per) - set(domains))
        if unknown:
            raise ValueError(f"max_repeats_per_domain names unknown domains: {', '.join(unknown)}")
        repeats: dict[str, float | None] = {}
        caps: dict[str, int | None] = {}
        for d in domains:
            r = repeat_cap(f"max repeats of domain {d!r}", per[d] if d in per else max_repeats)
            a = available[d]
            repeats[d] = r
            if a == 0:
                caps[d] = 0  # nothing to repeat
            elif r is None:
                caps[d] = None
            else:
                caps[d] = math.floor(Fraction(a) * exact(r))
        return repeats, caps

    def plan(
        self,
        budget: int,
        available: Mapping[str, int],
        *,
        max_repeats: float | None = None,
        max_repeats_per_domain: Mapping[str, float | None] | None = None,
        seq_len: int | None = None,
    ) -> MixturePlan:
        """Per-domain token targets for ``budget`` tokens.

        ``available``: tokens on hand per domain; every domain of the mixture must be there, and
        domains only in ``available`` appear in the plan with weight 0. ``max_repeats``: the most
        epochs any domain may be repeated (None: no cap); ``max_repeats_per_domain`` overrides it
        per domain (a value of None lifts the cap). A domain may take at most
        ``floor(available * max_repeats)`` tokens. ``seq_len``: make every target a multiple of it;
        the targets then sum to the smallest multiple of ``seq_len`` that is >= ``budget``.

        Raises ``ValueError`` when the caps cannot meet the budget, saying how many tokens are
        possible.
        """
        budget = check_int("budget", budget, 0, whole_floats=True)
        if seq_len is not None:
            seq_len = check_int("seq_len", seq_len, 1, whole_floats=True)
        if not isinstance(available, Mapping):
            raise ValueError("available must be a mapping domain -> tokens")
        missing = [d for d in self._exact if d not in available]
        if missing:
            raise ValueError(f"available tokens not given for domain(s): {', '.join(missing)}")
        avail = {d: check_int(f"available tokens of domain {d!r}", a, 0, whole_floats=True)
                 for d, a in available.items()}
        domains = list(self._exact) + [d for d in avail if d not in self._exact]
        weights = {d: self._exact.get(d, Fraction(0)) for d in domains}
        repeats, caps = self._caps(domains, avail, max_repeats, max_repeats_per_domain)

        unit = seq_len or 1
        units_total = -(-budget // unit)  # ceil
        unit_caps = {d: (None if c is None else c // unit) for d, c in caps.items()}
        try:
            alloc = _allocate(weights, units_total, unit_caps)
        except _Infeasible as e:
            possible = e.possible * unit
            detail = ", ".join(
                f"{d} {avail[d]:,} x {_fmt_repeats(repeats[d])} = {unit_caps[d] * unit:,}"
                for d in domains if weights[d] > 0
            )
            what = f"{budget:,} tokens" if seq_len is None else (
                f"{budget:,} tokens ({units_total:,} sequences of {seq_len:,})")
            raise ValueError(
                f"cannot meet a budget of {what}: the repetition caps allow at most {possible:,} "
                f"tokens ({detail}). Raise max_repeats, add data, or lower the budget."
            ) from None

        targets = {d: u * unit for d, u in alloc.units.items()}
        total = sum(targets.values())
        positive_caps = [unit_caps[d] for d in domains if weights[d] > 0]
        possible_tokens = None if any(c is None for c in positive_caps) else sum(positive_caps) * unit
        rows = tuple(
            DomainPlan(
                domain=d,
                weight_asked=float(weights[d]),
                weight_realized=(targets[d] / total) if total else 0.0,
                target_tokens=targets[d],
                available_tokens=avail[d],
                max_repeats=repeats[d],
                cap_tokens=caps[d],
                repetitions=(targets[d] / avail[d]) if avail[d] else 0.0,
                capped=d in alloc.capped,
            )
            for d in domains
        )
        return MixturePlan(budget=budget, seq_len=seq_len, domains=rows, possible_tokens=possible_tokens)


SYNTHETIC_SUFFIX = ".synthetic"  # the export's domain for a domain's synthetic (rephrased) documents


def with_synthetic(weights: Mapping[str, float], synthetic: Iterable[str], ratio: float) -> dict[str, float]:
    """Weights with each domain's synthetic part split off: a domain ``d`` of weight ``w`` whose
    synthetic documents are exported as ``d.synthetic`` becomes ``d`` at ``w / (1 + ratio)`` and
    ``d.synthetic`` at ``w * ratio / (1 + ratio)``, so synthetic and real tokens come in
    ``ratio : 1`` (WRAP trains 1:1, Maini et al. 2024). A domain whose synthetic part the weights
    name themselves, and a domain without synthetic documents, keep their weight.

    >>> with_synthetic({"web": 0.8, "code": 0.2}, ["web.synthetic"], 1.0)
    {'web': 0.4, 'web.synthetic': 0.4, 'code': 0.2}
    """
    if not (ratio >= 0 and ratio == ratio and ratio != float("inf")):
        raise ValueError(f"synthetic_ratio must be a finite number >= 0, got {ratio!r}")
    have = set(synthetic)
    out: dict[str, float] = {}
    for domain, w in weights.items():
        part = domain + SYNTHETIC_SUFFIX
        if part in have and part not in weights and not domain.endswith(SYNTHETIC_SUFFIX):
            out[domain] = w / (1 + ratio)
            out[part] = w * ratio / (1 + ratio)
        else:
            out[domain] = w
    return out
