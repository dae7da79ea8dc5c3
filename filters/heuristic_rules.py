"""The heuristics rules and their thresholds, each paper default written once, with its source.

`_TABLE` below is the one place a rule's limits are declared. Each `Rule` row names the rule, its
group and a one-line description template; each of its `Setting`s is one `HeuristicsConfig` field:
the field name, the paper default, the kind of value it accepts, whether it is the rule's lower
(`MIN`) or upper (`MAX`) limit or a setting of how the rule measures (`OPTION`), a help line and
the source of the default. From the table come:

- `RULES` (name -> `Rule`, in judging order) and `GROUPS` (group -> rule names);
- each rule's description, its defaults filled into the template;
- the `HeuristicsConfig` dataclass: one field per setting, its default and help
  (`core.params.param`), in table order after `rules` and `line_modifiers`;
- the config's value checks, from each setting's kind, and the check that a rule's lower limit
  is not above its upper one.

Rules run in table order: Gopher's quality rules, Gopher's repetition rules, RefinedWeb's 5% rule
(the order of DCLM's `dclm_baseline_refinedweb.yaml`), then C4's rules. Every limit is inclusive:
a value exactly at the limit passes, as in DCLM (`> max_fraction` fails).

Sources:
- Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
  Gopher", arXiv:2112.11446, App. A (the quality filters, and the repetition filters with their
  thresholds in Table A1).
- RefinedWeb: Penedo et al. 2023, "The RefinedWeb Dataset for Falcon LLM", arXiv:2306.01116, §3.2
  (line-wise corrections; a document whose corrections remove more than 5% of it is dropped).
- C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
  Transformer", JMLR 21(140), §2.2, and its TFDS preprocessing code `c4_utils.py`.
- DCLM: Li et al. 2024, "DataComp-LM", arXiv:2406.11794, whose RefinedWeb reproduction
  (`baselines/baselines_configs/dclm_baseline_refinedweb.yaml`, with
  `baselines/mappers/filters/content_filters.py` and `modifiers.py`) fixes the values the
  RefinedWeb paper leaves open.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from core.errors import ScorerError
from core.params import param

GOPHER_QUALITY = "Rae et al. 2021 (Gopher), arXiv:2112.11446, App. A, quality filters"
GOPHER_REPETITION = "Rae et al. 2021 (Gopher), arXiv:2112.11446, App. A, repetition filters, Table A1"
REFINEDWEB = "Penedo et al. 2023 (RefinedWeb), arXiv:2306.01116, §3.2, line-wise corrections"
DCLM_REFINEDWEB = ("Li et al. 2024 (DCLM), arXiv:2406.11794, code: "
                   "baselines/baselines_configs/dclm_baseline_refinedweb.yaml")
DCLM_STOP_WORDS = ("Li et al. 2024 (DCLM), arXiv:2406.11794, code: "
                   "baselines/mappers/filters/content_filters.py, stop_word_filter(count_unique=False)")
C4 = "Raffel et al. 2020 (C4), JMLR 21(140), §2.2"
C4_TFDS = "Raffel et al. 2020 (C4), JMLR 21(140), §2.2; TFDS c4_utils.py"

_PAPER = {"gopher": "Gopher", "refinedweb": "RefinedWeb", "c4": "C4"}

# --------------------------------------------------------------------------------------------
# Kinds of value


@dataclass(frozen=True)
class Kind:
    """The values a setting accepts: its type, and why a value is refused (None: accepted)."""

    name: str
    type: type
    problem: Callable[[Any], "str | None"]


def _int_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer >= 0"
    return None


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return "must be a number >= 0"
    return None


def _fraction_problem(value: Any) -> str | None:
    return _number_problem(value) or ("is a fraction and must be within [0, 1]" if value > 1 else None)


def _bool_problem(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


INT = Kind("int", int, _int_problem)
FRACTION = Kind("fraction", float, _fraction_problem)
NUMBER = Kind("number", float, _number_problem)
BOOL = Kind("bool", bool, _bool_problem)

# --------------------------------------------------------------------------------------------
# The table

MIN, MAX, OPTION = "min", "max", "option"


@dataclass(frozen=True)
class Setting:
    """One `HeuristicsConfig` field."""

    field: str
    default: int | float | bool  # the paper's value
    kind: Kind
    bound: str                   # MIN: a passing value is >= it; MAX: <= it; OPTION: how to measure
    help: str
    source: str                  # where the default comes from


@dataclass(frozen=True)
class Rule:
    name: str
    group: str        # "gopher" | "refinedweb" | "c4"
    description: str  # one line, with the paper default
    low: str | int | None = None   # the config field holding the lower limit, a fixed limit, or none
    high: str | int | None = None  # the same for the upper limit
    settings: tuple[Setting, ...] = ()


def _rule(name: str, group: str, template: str, *settings: Setting, fixed_max: int | None = None) -> Rule:
    """A table row: `template` is the description with `{field}` where a default goes."""
    bounds = {s.bound: s.field for s in settings}
    description = template.format(**{s.field: s.default for s in settings}) + f" ({_PAPER[group]})"
    return Rule(name, group, description, low=bounds.get(MIN),
                high=fixed_max if fixed_max is not None else bounds.get(MAX), settings=settings)


# The n-gram limits of Gopher's Table A1 (GOPHER_REPETITION), one rule and one setting per n below.
_TOP_NGRAM_LIMITS = {2: 0.20, 3: 0.18, 4: 0.16}
_DUP_NGRAM_LIMITS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_TABLE: tuple[Rule, ...] = (
    # Gopher quality filters
    _rule("gopher_word_count", "gopher", "words (punctuation-only tokens ignored) within [{min_words}, {max_words}]",
          Setting("min_words", 50, INT, MIN, "fewest words a document may have", GOPHER_QUALITY),
          Setting("max_words", 100_000, INT, MAX, "most words a document may have", GOPHER_QUALITY)),
    _rule("gopher_mean_word_length", "gopher",
          "mean word length within [{min_mean_word_length:g}, {max_mean_word_length:g}] characters",
          Setting("min_mean_word_length", 3.0, NUMBER, MIN, "least mean word length, in characters",
                  GOPHER_QUALITY),
          Setting("max_mean_word_length", 10.0, NUMBER, MAX, "greatest mean word length, in characters",
                  GOPHER_QUALITY)),
    _rule("gopher_symbol_ratio", "gopher", "('#' + '...' + '…') per word <= {max_symbol_ratio}",
          Setting("max_symbol_ratio", 0.1, NUMBER, MAX, "most occurrences of '#', '...' and '…' per word",
                  GOPHER_QUALITY)),
    _rule("gopher_bullet_lines", "gopher",
          "fraction of non-empty lines starting with a bullet <= {max_bullet_line_fraction}",
          Setting("max_bullet_line_fraction", 0.9, FRACTION, MAX,
                  "greatest fraction of non-empty lines that start with a bullet", GOPHER_QUALITY)),
    _rule("gopher_ellipsis_lines", "gopher",
          "fraction of non-empty lines ending with an ellipsis <= {max_ellipsis_line_fraction}",
          Setting("max_ellipsis_line_fraction", 0.3, FRACTION, MAX,
                  "greatest fraction of non-empty lines that end with an ellipsis", GOPHER_QUALITY)),
    _rule("gopher_alpha_words", "gopher",
          "fraction of words without an alphabetic character <= {max_non_alpha_word_fraction}",
          Setting("max_non_alpha_word_fraction", 0.2, FRACTION, MAX,
                  "greatest fraction of words without an alphabetic character (Gopher: 80% must have one)",
                  GOPHER_QUALITY)),
    _rule("gopher_stop_words", "gopher",
          "at least {min_stop_words} stop words of {{the, be, to, of, and, that, have, with}}",
          Setting("min_stop_words", 2, INT, MIN, "fewest stop words a document must contain", GOPHER_QUALITY),
          Setting("count_unique_stop_words", False, BOOL, OPTION,
                  "count distinct stop words instead of every occurrence", DCLM_STOP_WORDS)),
    # Gopher repetition filters
    _rule("gopher_dup_lines", "gopher", "fraction of lines that repeat an earlier line <= {max_dup_line_fraction}",
          Setting("max_dup_line_fraction", 0.3, FRACTION, MAX,
                  "greatest fraction of lines that repeat an earlier line", GOPHER_REPETITION)),
    _rule("gopher_dup_paragraphs", "gopher",
          "fraction of paragraphs that repeat an earlier paragraph <= {max_dup_paragraph_fraction}",
          Setting("max_dup_paragraph_fraction", 0.3, FRACTION, MAX,
                  "greatest fraction of paragraphs that repeat an earlier paragraph", GOPHER_REPETITION)),
    _rule("gopher_dup_line_chars", "gopher",
          "fraction of characters in repeated lines <= {max_dup_line_char_fraction}",
          Setting("max_dup_line_char_fraction", 0.2, FRACTION, MAX,
                  "greatest fraction of characters in lines that repeat an earlier line", GOPHER_REPETITION)),
    _rule("gopher_dup_paragraph_chars", "gopher",
          "fraction of characters in repeated paragraphs <= {max_dup_paragraph_char_fraction}",
          Setting("max_dup_paragraph_char_fraction", 0.2, FRACTION, MAX,
                  "greatest fraction of characters in paragraphs that repeat an earlier one", GOPHER_REPETITION)),
    *(_rule(f"gopher_top_{n}gram", "gopher",
            f"fraction of word characters in the most frequent word {n}-gram <= {{max_top_{n}gram_char_fraction:.2f}}",
            Setting(f"max_top_{n}gram_char_fraction", limit, FRACTION, MAX,
                    f"greatest fraction of word characters in the most frequent word {n}-gram", GOPHER_REPETITION))
      for n, limit in _TOP_NGRAM_LIMITS.items()),
    *(_rule(f"gopher_dup_{n}gram", "gopher",
            f"fraction of word characters in duplicated word {n}-grams <= {{max_dup_{n}gram_char_fraction:.2f}}",
            Setting(f"max_dup_{n}gram_char_fraction", limit, FRACTION, MAX,
                    f"greatest fraction of word characters in word {n}-grams that occur more than once",
                    GOPHER_REPETITION))
      for n, limit in _DUP_NGRAM_LIMITS.items()),
    # RefinedWeb: the 5% rule, and the line modifiers' settings (used by the modifier too)
    _rule("refinedweb_line_removal", "refinedweb",
          "RefinedWeb line modifiers remove at most {max_removed_word_fraction:.0%} of the words",
          Setting("max_removed_word_fraction", 0.05, FRACTION, MAX,
                  "greatest fraction of words the RefinedWeb line modifiers may remove", REFINEDWEB),
          Setting("rw_max_uppercase_fraction", 0.5, FRACTION, OPTION,
                  "RefinedWeb modifier: drop a line with more than this fraction of uppercase letters",
                  DCLM_REFINEDWEB),
          Setting("rw_min_line_words", 2, INT, OPTION, "RefinedWeb modifier: drop a line with fewer words",
                  DCLM_REFINEDWEB),
          Setting("rw_max_edit_line_words", 10, INT, OPTION,
                  "RefinedWeb modifier: strip boilerplate phrases only from lines of at most this many words",
                  DCLM_REFINEDWEB)),
    # C4: the line filter's settings (used by the modifier too), then the page rules
    _rule("c4_min_sentences", "c4", "at least {c4_min_sentences} sentences after the C4 line filter",
          Setting("c4_min_line_words", 5, INT, OPTION, "C4 line filter: drop a line with fewer words", C4_TFDS),
          Setting("c4_max_word_length", 1000, INT, OPTION,
                  "C4 line filter: drop a line with a word longer than this, in characters",
                  "Raffel et al. 2020 (C4), TFDS c4_utils.py (_MAX_WORD_LENGTH)"),
          Setting("c4_min_sentences", 3, INT, MIN, "fewest sentences left by the C4 line filter", C4_TFDS)),
    _rule("c4_lorem_ipsum", "c4", "no 'lorem ipsum', any case", fixed_max=0),  # C4 (§2.2)
    _rule("c4_curly_brace", "c4", "no '{{'", fixed_max=0),                     # C4 (§2.2)
)

RULES: dict[str, Rule] = {rule.name: rule for rule in _TABLE}
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(r.name for r in _TABLE if r.group == group) for group in ("gopher", "refinedweb", "c4")
}
SETTINGS: dict[str, Setting] = {s.field: s for rule in _TABLE for s in rule.settings}
LINE_MODIFIERS: tuple[str, ...] = ("refinedweb", "c4")

_RULE_INDEX = {name: i for i, name in enumerate(RULES)}
# Values are checked kind by kind (integers, fractions, numbers, then flags), so a config with
# several bad values is always refused naming the same field.
_CHECK_ORDER = sorted(SETTINGS.values(), key=lambda s: (INT, FRACTION, NUMBER, BOOL).index(s.kind))
_MIN_MAX = [(r.low, r.high) for r in _TABLE if isinstance(r.low, str) and isinstance(r.high, str)]

# --------------------------------------------------------------------------------------------
# The configuration


def _as_names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ScorerError(f"heuristics: {what} must be a list of names, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise ScorerError(f"heuristics: {what} must be a list of names (strings), got {list(value)!r}")
    return tuple(value)


def _validate(self) -> None:
    rules = _as_names(self.rules, "rules")
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ScorerError(f"heuristics: unknown rule {unknown[0]!r}"
                          f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; "
                          f"valid rules: {', '.join(RULES)}")
    twice = sorted({r for r in rules if rules.count(r) > 1})
    if twice:
        raise ScorerError(f"heuristics: rule {twice[0]!r} is listed twice")
    if not rules:
        raise ScorerError(f"heuristics: rules is empty; name at least one of: {', '.join(RULES)}")
    object.__setattr__(self, "rules", tuple(sorted(rules, key=_RULE_INDEX.__getitem__)))

    modifiers = _as_names(self.line_modifiers, "line_modifiers")
    bad = [m for m in modifiers if m not in LINE_MODIFIERS]
    if bad:
        raise ScorerError(f"heuristics: unknown line modifier {bad[0]!r}; valid: {', '.join(LINE_MODIFIERS)}")
    if len(set(modifiers)) != len(modifiers):
        raise ScorerError(f"heuristics: line_modifiers lists a modifier twice: {list(modifiers)}")
    object.__setattr__(self, "line_modifiers", tuple(modifiers))

    for setting in _CHECK_ORDER:
        value = getattr(self, setting.field)
        problem = setting.kind.problem(value)
        if problem:
            raise ScorerError(f"heuristics: {setting.field} {problem}, got {value!r}")
    for low, high in _MIN_MAX:
        if getattr(self, low) > getattr(self, high):
            raise ScorerError(f"heuristics: {low} ({getattr(self, low)}) > {high} ({getattr(self, high)})")


HeuristicsConfig = dataclasses.make_dataclass(
    "HeuristicsConfig",
    [("rules", tuple[str, ...], param(tuple(RULES), help="the rules to run (judged in table order)")),
     ("line_modifiers", tuple[str, ...],
      param(("refinedweb",), help="line modifiers that rewrite the text first, in this order: "
                                  f"any of {', '.join(LINE_MODIFIERS)}")),
     *[(s.field, s.kind.type, param(s.default, help=f"{s.help} [default from {s.source}]")) for s in SETTINGS.values()]],
    frozen=True,
    namespace={
        "__module__": __name__,
        "__post_init__": _validate,
        "__doc__": """Which rules run, which line modifiers rewrite the text first, and every threshold.

    The threshold fields, their defaults (the paper values) and their help come from the rule
    table (`RULES`, `SETTINGS`). `rules` is stored in `RULES` order whatever order it was given in;
    lists (from TOML or JSON) are accepted and stored as tuples. A bad value raises `ScorerError`
    (a ValueError) naming the field.
    """,
    },
)

DEFAULT_CONFIG = HeuristicsConfig()
