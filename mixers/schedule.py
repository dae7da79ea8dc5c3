"""Mixture schedules: domain weights as a function of training progress.

Domain upsampling at the end of training (Blakeney et al. 2024, "Does your data spark joy?
Performance gains from domain upsampling at the end of training", arXiv:2406.03476): train on a base
mix, then at fraction ``1 - f`` of the run switch the sampler *abruptly* to a domain-upsampled (DU)
mix and keep it to the end, with ``f`` = 0.1-0.2.

Progress and steps
------------------
Progress ``p`` is the fraction of the run's tokens already consumed, in ``[0, 1]``. A run of
``total_steps`` equal steps (0-indexed) puts step ``s`` at progress ``s / total_steps``: its *start*
token is ``s * T / total_steps``, so a step's weights are the weights at the progress where it
begins. For :class:`UpsamplingSchedule` the switch is right-continuous: ``weights_at(1 - f)`` is
already the upsampled mix, and the first upsampled step is the first step whose start token is
``>= (1 - f) * T``, i.e. ``switch_step(total_steps) == ceil((1 - f) * total_steps)`` (100 steps,
f = 0.2: steps 0-79 use the base mix, steps 80-99 the upsampled one). The upsampled phase is thus
at most ``f`` of the tokens, shorter by less than one step when ``f * total_steps`` is not whole.
Fractions are read as the decimal the user wrote (``0.3`` is 3/10), so the boundary is exact.

Schedules
---------
- :class:`ConstantSchedule`: one mix throughout.
- :class:`UpsamplingSchedule`: base mix, then the upsampled mix for the last ``fraction`` of the
  tokens; :meth:`UpsamplingSchedule.paper` is the paper's example.
- :class:`PiecewiseLinearSchedule`: weights given at points of progress, each normalized, linearly
  interpolated between points and held constant before the first and after the last. Two points at
  the same ``p`` make a jump; at that ``p`` the later point holds (right-continuous).

Every schedule gives ``weights_at(p)``, ``weights_at_step(step, total_steps)``,
``tokens_per_domain(total_tokens, steps)`` (the schedule integrated over the steps and rounded with
:func:`mixers.mixture.allocate`, so the totals add up to ``total_tokens`` exactly),
``repetitions(...)`` (epochs per domain, the paper's pitfall), ``to_json``/``from_json`` and
``plot(path)``.
"""
from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from core.values import check_int
from mixers.mixture import allocate, exact, exact_weights

__all__ = [
    "ConstantSchedule",
    "PAPER_BASE_MIX",
    "PAPER_UPSAMPLED_MIX",
    "PiecewiseLinearSchedule",
    "Schedule",
    "UpsamplingSchedule",
]

# The paper's example mixes (Blakeney et al. 2024, arXiv:2406.03476), as a secondary excerpt that
# quotes its Tables 1-7 gives them:
#
#   | Group                                   | Base mix (0-0.8T) | DU mix (last 20%, 0.2T) |
#   | Large-scale Common Crawl                | 34.35%            | 0%                      |
#   | Small-scale Common Crawl                | 36.70%            | 30% (kept "to prevent a large distribution shift") |
#   | Domain-specific (math, wiki, papers, …) | 7.17%             | 35%                     |
#   | Code                                    | 21.78%            | 35%                     |
#
#   "Which datasets sit in each group is **UNVERIFIED**."
#
# The percentages are secondary (quoted, not read from the paper itself); the group membership is
# UNVERIFIED. The domain keys below are Winnow's names for the four groups.
PAPER_BASE_MIX: dict[str, float] = {
    "cc_large": 0.3435,
    "cc_small": 0.3670,
    "domain_specific": 0.0717,
    "code": 0.2178,
}
PAPER_UPSAMPLED_MIX: dict[str, float] = {
    "cc_large": 0.0,
    "cc_small": 0.30,
    "domain_specific": 0.35,
    "code": 0.35,
}
PAPER_FRACTION = 0.2  # "last 20%, 0.2T" of the paper's 1T-token run; it recommends f = 0.1-0.2


def _progress(p: float | Fraction) -> Fraction:
    try:
        q = exact(p)
    except (TypeError, ValueError):
        raise ValueError(f"progress must be a number in [0, 1], got {p!r}") from None
    if not 0 <= q <= 1:
        raise ValueError(f"progress must be in [0, 1], got {p!r}")
    return q


def _check_steps(total_steps: int) -> int:
    return check_int("total_steps", total_steps, 1, whole_floats=True)


def _step_progress(step: int, total_steps: int) -> Fraction:
    n = _check_steps(total_steps)
    s = check_int("step", step, 0, whole_floats=True)
    if s > n:
        raise ValueError(f"step must be in [0, total_steps={n}], got {step!r}")
    return Fraction(s, n)


def _union(*mixes: Mapping[str, Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for m in mixes:
        for d in m:
            seen.setdefault(d, None)
    return tuple(seen)


class Schedule(ABC):
    """Domain weights as a function of training progress ``p`` in ``[0, 1]``."""

    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type["Schedule"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Schedule._registry[cls.kind] = cls

    # ---- to implement

    @property
    @abstractmethod
    def domains(self) -> tuple[str, ...]:
        """Every domain the schedule ever names, in a fixed order (keys of every weights dict)."""

    @abstractmethod
    def _weights_exact(self, p: Fraction) -> dict[str, float]:
        """Normalized weights at exact progress ``p`` (already validated)."""

    @abstractmethod
    def _step_weight_sums(self, steps: int) -> dict[str, Fraction]:
        """Sum over steps ``0..steps-1`` of each domain's weight at the step's start."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """JSON-able parameters (``from_json`` passes them back to the constructor)."""

    def _breakpoints(self) -> list[float]:
        """Progress values where the weights jump (for plotting)."""
        return []

    # ---- public API

    def weights_at(self, p: float) -> dict[str, float]:
        """Normalized weights at progress ``p`` in ``[0, 1]`` (every domain, zeros included)."""
        return self._weights_exact(_progress(p))

    def weights_at_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Weights of step ``step`` (0-indexed) of ``total_steps``: progress ``step / total_steps``."""
        return self._weights_exact(_step_progress(step, total_steps))

    def tokens_per_domain(self, total_tokens: int, steps: int) -> dict[str, int]:
        """Tokens each domain contributes over a run of ``total_tokens`` in ``steps`` equal steps.

        Step ``s`` carries ``total_tokens / steps`` tokens at the weights of its start; the exact
        per-domain sums are rounded with :func:`mixers.mixture.allocate` (largest remainder, ties
        by domain name), so the result adds up to ``total_tokens`` exactly.
        """
        total = check_int("total_tokens", total_tokens, 0, whole_floats=True)
        n = _check_steps(steps)
        sums = self._step_weight_sums(n)
        return allocate({d: sums[d] for d in self.domains}, total)

    def repetitions(self, total_tokens: int, steps: int, available: Mapping[str, int]) -> dict[str, float]:
        """Epochs of each domain the run implies, ``tokens_per_domain / available``.

        Small domains get repeated heavily when the upsampled phase favours them; check this.
        A domain with tokens to give but nothing available is ``inf``.
        """
        tokens = self.tokens_per_domain(total_tokens, steps)
        out: dict[str, float] = {}
        for d, t in tokens.items():
            if d not in available:
                raise ValueError(f"available tokens not given for domain {d!r}")
            a = check_int(f"available tokens of domain {d!r}", available[d], 0, whole_floats=True)
            out[d] = t / a if a else (math.inf if t else 0.0)
        return out

    # ---- serialization

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **self._params()}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> "Schedule":
        """Rebuild a schedule from :meth:`to_json` output (a string or the parsed dict).

        On :class:`Schedule` it dispatches on ``"type"``; on a subclass the type must match.
        """
        d = dict(json.loads(data) if isinstance(data, str) else data)
        kind = d.pop("type", None)
        target = cls._registry.get(kind) if isinstance(kind, str) else None
        if target is None:
            known = ", ".join(sorted(cls._registry))
            raise ValueError(f"unknown schedule type {kind!r}; expected one of: {known}")
        if cls is not Schedule and target is not cls:
            raise ValueError(f"expected a schedule of type {cls.kind!r}, got {kind!r}")
        return target._from_params(d)

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "Schedule":
        return cls(**params)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        # Only what __eq__'s dict comparison cannot tell apart: the type and the set of domains.
        # (The JSON text, hashed before, depends on the order of the mixes' keys and on the sign
        # of a zero weight, so equal schedules hashed differently.)
        return hash((type(self).__name__, frozenset(self.domains)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._params()!r})"

    # ---- plot

    def plot(self, path: str | Path, *, title: str | None = None, total_steps: int | None = None) -> Path:
        """Save a stacked-area plot of the weights over progress as a PNG; return its path.

        With ``total_steps`` the x axis is in steps (the weights of each step), else in progress.
        Uses matplotlib's Agg canvas directly (no display, no global backend change).
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out = Path(path)
        if total_steps is not None:
            n = _check_steps(total_steps)
            xs = list(range(n + 1))
            rows = [self.weights_at_step(min(s, n - 1), n) for s in xs]
            xlabel = "step"
            step = True
        else:
            grid = {float(x) for x in np.linspace(0.0, 1.0, 401)}
            for b in self._breakpoints():
                grid.add(b)
                if b > 0:
                    grid.add(math.nextafter(b, 0.0))
            xs = sorted(grid)
            rows = [self.weights_at(x) for x in xs]
            xlabel = "training progress (fraction of tokens)"
            step = False
        ys = np.array([[r[d] for r in rows] for d in self.domains])

        fig = Figure(figsize=(7, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.stackplot(xs, ys, labels=list(self.domains), step="post" if step else None)
        for b in self._breakpoints():  # mark abrupt switches
            x = math.ceil(exact(b) * n) if step else b  # the first step at or after the jump
            ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("domain weight")
        ax.set_title(title or f"{type(self).__name__}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
        return out


class ConstantSchedule(Schedule):
    """The same mix for the whole run."""

    kind = "constant"

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._exact = exact_weights(weights)
        self._raw = {d: float(w) for d, w in weights.items()}
        self._weights = {d: float(w) for d, w in self._exact.items()}

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self._exact)

    def _weights_exact(self, p: Fraction) -> dict[str, float]:
        return dict(self._weights)

    def _step_weight_sums(self, steps: int) -> dict[str, Fraction]:
        return {d: steps * w for d, w in self._exact.items()}

    def _params(self) -> dict[str, Any]:
        return {"weights": dict(self._raw)}


class UpsamplingSchedule(Schedule):
    """Domain upsampling (Blakeney et al. 2024): ``base`` until ``1 - fraction`` of the tokens, then ``upsampled``.

    ``fraction`` in ``[0, 1]``; the paper uses 0.1-0.2 and its headline run 0.2. The switch is
    abrupt. See the module docstring for exactly which step switches.
    """

    kind = "upsampling"

    def __init__(
        self, base: Mapping[str, float], upsampled: Mapping[str, float], fraction: float = 0.2
    ) -> None:
        try:
            f = exact(fraction)
        except (TypeError, ValueError):
            raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}") from None
        if not 0 <= f <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        self._fraction = f
        try:
            base_e = exact_weights(base)
        except ValueError as e:
            raise ValueError(f"base mix: {e}") from None
        try:
            up_e = exact_weights(upsampled)
        except ValueError as e:
            raise ValueError(f"upsampled mix: {e}") from None
        self._raw = ({d: float(w) for d, w in base.items()}, {d: float(w) for d, w in upsampled.items()})
        self._domains = _union(base_e, up_e)
        self._base_e = {d: base_e.get(d, Fraction(0)) for d in self._domains}
        self._up_e = {d: up_e.get(d, Fraction(0)) for d in self._domains}
        self._base = {d: float(w) for d, w in self._base_e.items()}
        self._up = {d: float(w) for d, w in self._up_e.items()}

    @classmethod
    def paper(
        cls, fraction: float = PAPER_FRACTION, rename: Mapping[str, str] | None = None
    ) -> "UpsamplingSchedule":
        """The paper's example: base mix for the first 80%, DU mix for the last 20% (Blakeney et al. 2024).

        Domains are ``cc_large``, ``cc_small``, ``domain_specific``, ``code`` (the four groups of
        the paper's table; which datasets belong to each is UNVERIFIED). ``rename`` maps these keys
        to your own domain names.
        """
        rename = dict(rename or {})
        unknown = sorted(set(rename) - set(PAPER_BASE_MIX))
        if unknown:
            raise ValueError(f"rename names unknown paper groups: {', '.join(unknown)}; "
                             f"the groups are {', '.join(PAPER_BASE_MIX)}")
        base = {rename.get(d, d): w for d, w in PAPER_BASE_MIX.items()}
        up = {rename.get(d, d): w for d, w in PAPER_UPSAMPLED_MIX.items()}
        if len(base) != len(PAPER_BASE_MIX):
            raise ValueError("rename maps two paper groups to the same domain")
        return cls(base, up, fraction)

    @property
    def fraction(self) -> float:
        return float(self._fraction)

    @property
    def base(self) -> dict[str, float]:
        return dict(self._base)

    @property
    def upsampled(self) -> dict[str, float]:
        return dict(self._up)

    @property
    def domains(self) -> tuple[str, ...]:
        return self._domains

    @property
    def switch_progress(self) -> float:
        """``1 - fraction``: the progress from which (inclusive) the upsampled mix is used."""
        return float(1 - self._fraction)

    def switch_step(self, total_steps: int) -> int:
        """The first step (0-indexed) that uses the upsampled mix: ``ceil((1 - fraction) * total_steps)``.

        That is the first step whose start token is ``>= (1 - fraction) * total_tokens``. It equals
        ``total_steps`` (no step is upsampled) when ``fraction`` is 0 or too small to cover a step.
        """
        n = _check_steps(total_steps)
        return math.ceil((1 - self._fraction) * n)

    def _weights_exact(self, p: Fraction) -> dict[str, float]:
        return dict(self._up if p >= 1 - self._fraction else self._base)

    def _step_weight_sums(self, steps: int) -> dict[str, Fraction]:
        k = self.switch_step(steps)
        return {d: k * self._base_e[d] + (steps - k) * self._up_e[d] for d in self._domains}

    def _breakpoints(self) -> list[float]:
        return [self.switch_progress] if 0 < self._fraction < 1 else []

    def _params(self) -> dict[str, Any]:
        return {"base": self._raw[0], "upsampled": self._raw[1], "fraction": self.fraction}


class PiecewiseLinearSchedule(Schedule):
    """Weights given at points of progress, linearly interpolated between them.

    ``points``: ``[(p, weights), ...]`` with ``p`` in ``[0, 1]`` and non-decreasing. Each point's
    weights are normalized first (a domain missing from a point has weight 0 there); between two
    points the weights are the linear interpolation, which stays normalized. Before the first and
    after the last point the weights are held. Two points at the same ``p`` make a jump, the later
    one holding at that ``p``.
    """

    kind = "piecewise_linear"

    def __init__(self, points: Sequence[tuple[float, Mapping[str, float]]]) -> None:
        if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
            raise ValueError("points must be a non-empty list of (p, weights) pairs")
        ps: list[Fraction] = []
        mixes: list[dict[str, Fraction]] = []
        raw: list[tuple[float, dict[str, float]]] = []
        for i, item in enumerate(points):
            try:
                p, w = item
            except (TypeError, ValueError):
                raise ValueError(f"point {i} must be a (p, weights) pair, got {item!r}") from None
            try:
                q = _progress(p)
            except ValueError as e:
                raise ValueError(f"point {i}: {e}") from None
            if ps and q < ps[-1]:
                raise ValueError(f"point {i}: progress {p!r} is before the previous point's; "
                                 "points must be in non-decreasing order of p")
            try:
                mixes.append(exact_weights(w))
            except ValueError as e:
                raise ValueError(f"point {i} (p={p!r}): {e}") from None
            ps.append(q)
            raw.append((float(p), {d: float(x) for d, x in w.items()}))
        self._domains = _union(*mixes)
        self._ps = ps
        self._mixes = [{d: m.get(d, Fraction(0)) for d in self._domains} for m in mixes]
        self._raw = raw
        self._floats = np.array([[float(m[d]) for d in self._domains] for m in self._mixes])

    @property
    def domains(self) -> tuple[str, ...]:
        return self._domains

    @property
    def points(self) -> list[tuple[float, dict[str, float]]]:
        """The points, each mix normalized."""
        return [(float(p), {d: float(w) for d, w in m.items()}) for p, m in zip(self._ps, self._mixes)]

    def _segment(self, p: Fraction) -> tuple[int, Fraction]:
        """(i, t): weights are ``(1 - t) * mix[i] + t * mix[i + 1]`` (t = 0 means mix[i] alone)."""
        ps = self._ps
        if p < ps[0]:
            return 0, Fraction(0)
        # last index with ps[i] <= p (right-continuous at jumps)
        lo, hi = 0, len(ps) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if ps[mid] <= p:
                lo = mid
            else:
                hi = mid - 1
        i = lo
        if i == len(ps) - 1 or p == ps[i]:
            return i, Fraction(0)
        return i, (p - ps[i]) / (ps[i + 1] - ps[i])

    def _weights_exact(self, p: Fraction) -> dict[str, float]:
        i, t = self._segment(p)
        if t == 0:
            w = {d: self._mixes[i][d] for d in self._domains}
        else:
            a, b = self._mixes[i], self._mixes[i + 1]
            w = {d: (1 - t) * a[d] + t * b[d] for d in self._domains}
        return {d: float(x) for d, x in w.items()}  # exact convex combination: sums to 1

    def _step_weight_sums(self, steps: int) -> dict[str, Fraction]:
        # float accumulation (vectorized; exactness is not needed: allocate() makes totals add up)
        p = np.arange(steps, dtype=np.float64) / steps
        ps = np.array([float(x) for x in self._ps])
        idx = np.searchsorted(ps, p, side="right") - 1  # last point with ps <= p
        before = idx < 0
        idx = np.clip(idx, 0, len(ps) - 1)
        nxt = np.minimum(idx + 1, len(ps) - 1)
        span = ps[nxt] - ps[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(span > 0, (p - ps[idx]) / np.where(span > 0, span, 1.0), 0.0)
        t = np.where(before, 0.0, np.clip(t, 0.0, 1.0))
        w = (1 - t)[:, None] * self._floats[idx] + t[:, None] * self._floats[nxt]
        sums = w.sum(axis=0)
        return {d: Fraction(float(max(s, 0.0))) for d, s in zip(self._domains, sums)}

    def _breakpoints(self) -> list[float]:
        return [float(a) for a, b in zip(self._ps, self._ps[1:]) if a == b]

    def _params(self) -> dict[str, Any]:
        return {"points": [[p, w] for p, w in self._raw]}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "Schedule":
        return cls([(p, w) for p, w in params["points"]])
