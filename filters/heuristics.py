"""Rule-based quality heuristics: the Gopher rules, RefinedWeb's line modifiers and the C4 rules,
as DCLM's RefinedWeb reproduction applies them (Li et al. 2024, arXiv:2406.11794,
`baselines/baselines_configs/dclm_baseline_refinedweb.yaml`). Pure Python and numpy over plain
strings; no Spark.

The parts, each documented in its own module:
- `filters.heuristic_rules`: the rule table, every threshold with its paper default and source,
  and `HeuristicsConfig` made from it;
- `filters.line_modifiers`: RefinedWeb's line-wise corrections and C4's line filter;
- `filters.text_measures`: what the rules measure (words, lines, paragraphs, n-grams).
This module judges a document with them (`check`), and holds the scorer built from that.

How a document is judged
------------------------
`check(text, config)` first runs the configured line modifiers in the order given (by default
RefinedWeb's), then judges the *rewritten* text with every configured rule. Each rule gives
pass/fail, the measured value and, on failure, a reason that starts with the rule's name:
``"gopher_mean_word_length: 2.1 < 3"``. Every limit is inclusive. Rules run in the fixed order
of `RULES`.

Note the order: DCLM runs the Gopher rules on the page *before* the line modifiers and only the
5% rule after them. Here (the Winnow API) the modifiers rewrite the text first and every rule
judges the result. As a page that loses more than 5% of its words fails anyway, the two differ
only by the <= 5% of words the modifiers removed.

- `refinedweb_line_removal` takes the words the RefinedWeb modifiers removed from the text; if
  "refinedweb" is not among the configured line modifiers it measures what they *would* remove,
  without rewriting the text.
- `c4_min_sentences` counts sentences on the C4-filtered text (filtering it for the count only,
  when "c4" is not a configured modifier). `c4_lorem_ipsum` and `c4_curly_brace` look at the
  whole judged text (TFDS looks only at the lines it keeps); their value is the number of
  occurrences.
- **Ratios with nothing to count**: a document without words fails the word-count, mean word
  length, symbol ratio, alphabetic-word and stop-word rules (DCLM fails them too), and the
  RefinedWeb removal rule ("no words"). Line, paragraph and n-gram fractions of a text without
  lines or repeats are 0 and pass. So an empty text gets a defined verdict and never divides by 0.

Cost: about 0.7 ms per document on the sample pool (mean 260 words, all rules); a 10 MB text
takes a few seconds (see `filters.text_measures` for the n-gram machinery).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import ScorerError

from . import registry
from .base import ScorerSpec, read_json_config
from .heuristic_rules import DEFAULT_CONFIG, LINE_MODIFIERS, RULES, HeuristicsConfig
from .line_modifiers import c4_lines, refinedweb_lines
from .text_measures import BULLETS, ELLIPSES, Doc, count_sentences

__all__ = ["LINE_MODIFIERS", "RULES", "HeuristicsConfig", "RuleResult", "Verdict", "check", "HeuristicsScorer",
           "build"]

# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    value: float   # the measured quantity
    reason: str    # "" when passed; else "<rule>: <value> <op> <limit>"


@dataclass(frozen=True)
class Verdict:
    text: str                        # the text after the configured line modifiers
    results: tuple[RuleResult, ...]  # one per configured rule, in RULES order

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def reason(self) -> str | None:
        """The reason of the first failing rule, None if all pass."""
        for r in self.results:
            if not r.passed:
                return r.reason
        return None

    @property
    def fraction_passed(self) -> float:
        return sum(r.passed for r in self.results) / len(self.results) if self.results else 1.0

    def result(self, name: str) -> RuleResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"rule {name!r} was not run (configured: {', '.join(r.name for r in self.results)})")


# --------------------------------------------------------------------------------------------
# The measure of each rule


def _refinedweb(text: str, config: HeuristicsConfig) -> tuple[str, int, int]:
    return refinedweb_lines(text, max_uppercase_fraction=config.rw_max_uppercase_fraction,
                            min_line_words=config.rw_min_line_words,
                            max_edit_line_words=config.rw_max_edit_line_words)


def _c4(text: str, config: HeuristicsConfig) -> str:
    return c4_lines(text, min_line_words=config.c4_min_line_words, max_word_length=config.c4_max_word_length)


class _Page(Doc):
    """A document being judged: its measures, the config, and what the line modifiers did."""

    def __init__(self, text: str, config: HeuristicsConfig, rw_counts: tuple[int, int] | None, c4_done: bool):
        super().__init__(text)
        self.config = config
        self.rw_counts = rw_counts
        self.c4_done = c4_done

    def rw_fraction(self) -> float | None:
        if self.rw_counts is None:
            _, before, removed = _refinedweb(self.text, self.config)
        else:
            before, removed = self.rw_counts
        return removed / before if before else None

    def sentences(self) -> int:
        return count_sentences(self.text if self.c4_done else _c4(self.text, self.config))


# Each rule's measurement (None: nothing to measure, the rule fails with "no words").
Measure = Callable[[_Page], "float | None"]


def _per_word(doc: _Page, count: Callable[[list[str]], int]) -> float | None:
    return count(doc.words) / len(doc.words) if doc.words else None


def _symbols(doc: _Page) -> float | None:
    t = doc.text
    return _per_word(doc, lambda _: sum(t.count(s) for s in ("#", *ELLIPSES)))


def _fraction(lines: list[str], test: Callable[[str], bool]) -> float:
    return sum(1 for line in lines if test(line)) / len(lines) if lines else 0.0


_MEASURES: dict[str, Measure] = {
    "gopher_word_count": lambda d: len(d.words),
    "gopher_mean_word_length": lambda d: d.total_chars / len(d.words) if d.words else None,
    "gopher_symbol_ratio": _symbols,
    "gopher_bullet_lines": lambda d: _fraction(d.lines, lambda s: s[0] in BULLETS),
    "gopher_ellipsis_lines": lambda d: _fraction(d.lines, lambda s: s.endswith(ELLIPSES)),
    "gopher_alpha_words": lambda d: _per_word(d, lambda _: d.non_alpha_words()),
    "gopher_stop_words": lambda d: d.stop_words(d.config.count_unique_stop_words),
    "gopher_dup_lines": lambda d: d.line_dups[0],
    "gopher_dup_paragraphs": lambda d: d.paragraph_dups[0],
    "gopher_dup_line_chars": lambda d: d.line_dups[1],
    "gopher_dup_paragraph_chars": lambda d: d.paragraph_dups[1],
    **{f"gopher_top_{n}gram": (lambda d, n=n: d.top_ngram_fraction(n)) for n in (2, 3, 4)},
    **{f"gopher_dup_{n}gram": (lambda d, n=n: d.dup_ngram_fraction(n)) for n in range(5, 11)},
    "refinedweb_line_removal": lambda d: d.rw_fraction(),
    "c4_min_sentences": lambda d: d.sentences(),
    "c4_lorem_ipsum": lambda d: d.text.lower().count("lorem ipsum"),
    "c4_curly_brace": lambda d: d.text.count("{"),
}
assert list(_MEASURES) == list(RULES)


def _limit(bound: str | int | None) -> Callable[[HeuristicsConfig], "float | None"]:
    """A rule's limit read from the config: `bound` is a config field, a fixed limit or None."""
    return attrgetter(bound) if isinstance(bound, str) else lambda _config: bound


# Each rule: its measurement and its (min, max) limits from the config, either of which may be None.
_SPECS = {name: (_MEASURES[name], _limit(rule.low), _limit(rule.high)) for name, rule in RULES.items()}


def _fmt(x: float) -> str:
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def _judge(name: str, doc: _Page, config: HeuristicsConfig) -> RuleResult:
    measure, low_of, high_of = _SPECS[name]
    value = measure(doc)
    if value is None:
        return RuleResult(name, False, 0.0, f"{name}: no words")
    value = float(value)
    low, high = low_of(config), high_of(config)
    if low is not None and value < low:
        op, limit = "<", low
    elif high is not None and value > high:
        op, limit = ">", high
    else:
        return RuleResult(name, True, value, "")
    shown = _fmt(value)
    if shown == _fmt(limit):  # just past the limit: show every digit
        shown = repr(value)
    return RuleResult(name, False, value, f"{name}: {shown} {op} {_fmt(limit)}")


def check(text: str, config: HeuristicsConfig = DEFAULT_CONFIG) -> Verdict:
    """Run the configured line modifiers, then judge the result with every configured rule."""
    if text is None:  # a null text from a table is judged as empty
        text = ""
    rw_counts, c4_done = None, False
    for modifier in config.line_modifiers:
        if modifier == "refinedweb":
            text, before, removed = _refinedweb(text, config)
            rw_counts = (before, removed)
        else:
            text = _c4(text, config)
            c4_done = True
    doc = _Page(text, config, rw_counts, c4_done)
    return Verdict(text, tuple(_judge(name, doc, config) for name in config.rules))


# --------------------------------------------------------------------------------------------
# The scorer

FORMAT_VERSION = 1


class HeuristicsScorer:
    """Score = fraction of the configured rules a text passes (float32 in [0, 1]).

    `rule_table` gives each rule's pass/fail. The scorer keeps the results of the last batch it
    judged, so `score(texts)` followed by `rule_table(texts)` on the same batch judges it once.
    """

    name = "heuristics"

    def __init__(self, config: HeuristicsConfig = DEFAULT_CONFIG):
        if not isinstance(config, HeuristicsConfig):
            raise ScorerError(f"heuristics: config must be a HeuristicsConfig, got {type(config).__name__}")
        self.config = config
        self._last: tuple[tuple[str, ...], list[tuple[RuleResult, ...]]] | None = None

    def _results(self, texts: Sequence[str]) -> list[tuple[RuleResult, ...]]:
        key = tuple(texts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        results = [check(t, self.config).results for t in key]  # not the rewritten texts: less to hold
        self._last = (key, results)
        return results

    def score(self, texts: Sequence[str]) -> np.ndarray:
        results = self._results(texts)
        out = np.empty(len(results), dtype=np.float32)
        for i, rs in enumerate(results):
            out[i] = sum(r.passed for r in rs) / len(rs)
        return out

    def rule_table(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        results = self._results(texts)
        table = {name: np.zeros(len(results), dtype=bool) for name in self.config.rules}
        for i, rs in enumerate(results):
            for r in rs:
                table[r.name][i] = r.passed
        return table

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = {"kind": "heuristics", "version": FORMAT_VERSION, "config": asdict(self.config)}
        p.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "HeuristicsScorer":
        data = read_json_config(path, "heuristics")  # missing file, bad JSON, other kind: ScorerError
        if data.get("version") != FORMAT_VERSION:
            raise ScorerError(f"heuristics: {path} has format version {data.get('version')!r}; "
                              f"this Winnow reads version {FORMAT_VERSION}")
        raw = data.get("config")
        if not isinstance(raw, dict):
            raise ScorerError(f"heuristics: {path} has no `config` table")
        known = {f.name for f in fields(HeuristicsConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ScorerError(f"heuristics: {path}: unknown config field {unknown[0]!r}")
        try:
            return cls(HeuristicsConfig(**raw))
        except ValueError as exc:
            raise ScorerError(f"{exc} (in {path})") from None


def build(spec: ScorerSpec) -> HeuristicsScorer:
    if spec.model:
        return HeuristicsScorer.load(spec.model)
    try:
        return HeuristicsScorer(HeuristicsConfig(**spec.options))
    except TypeError as exc:
        raise ScorerError(f"heuristics: {exc}") from None


registry.register(registry.ScorerKind(
    kind="heuristics", summary="Gopher, RefinedWeb and C4 rules: the fraction of rules a document passes",
    build=build))
