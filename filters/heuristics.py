"""Rule-based quality heuristics: the Gopher rules, RefinedWeb's line modifiers and the C4 rules,
as DCLM's RefinedWeb reproduction applies them (METHODS.md §1.1). Pure Python and numpy over plain
strings; no Spark.

Sources: Gopher, Rae et al. 2021, App. A (the quality and repetition rules); RefinedWeb, Penedo et
al. 2023 (the line-wise corrections and the 5% rule of its Macrodata Refinement); C4, Raffel et
al. 2020, §2.2, and its TFDS code `c4_utils.py`; DCLM's code
`baselines/mappers/filters/content_filters.py` and `modifiers.py`, driven by
`dclm_baseline_refinedweb.yaml` (the function names are cited below).

How a document is judged
------------------------
`check(text, config)` first runs the configured line modifiers in the order given (by default
RefinedWeb's), then judges the *rewritten* text with every configured rule. Each rule gives
pass/fail, the measured value and, on failure, a reason that starts with the rule's name:
``"gopher_mean_word_length: 2.1 < 3"``. Every limit is inclusive: a value exactly at the limit
passes, as in DCLM (`> max_fraction` fails). Rules run in the fixed order of `RULES`, which is
METHODS §1.1's order followed by C4's.

Note the order: DCLM runs the Gopher rules on the page *before* the line modifiers and only the
5% rule after them. Here (the Winnow API) the modifiers rewrite the text first and every rule
judges the result. As a page that loses more than 5% of its words fails anyway, the two differ
only by the <= 5% of words the modifiers removed.

Definitions chosen where the papers leave room
----------------------------------------------
- **Words**: whitespace tokens (`str.split()`), dropping tokens made only of Unicode punctuation
  (category P*), as DCLM's page-length filter ignores punctuation. A token keeps any attached
  punctuation ("end." has length 4); symbols that are not punctuation ("|", "$", "©") are words.
  DCLM counts words with uniseg word boundaries for the length and n-gram rules and with plain
  `split()` for the others; one definition is used for all rules here, so each document is
  tokenized once.
- **Mean word length**: characters of the words above / number of words.
- **Symbol ratio**: occurrences of "#", "...", ". . ." and "…" in the text (`str.count`, so "......"
  is two) / words (DCLM `symbol_ratio_filter`; ". . ." is DCLM's addition).
- **Lines**: the text split on "\\n", each stripped, empty ones ignored. Bullet, ellipsis and
  duplicate-line fractions are over these non-empty lines. A bullet line starts with one of
  `BULLETS` (DCLM `bullet_count_filter` uses only ● • * -). An ellipsis line ends with "...",
  ". . ." or "…" (DCLM `ellipsis_count_filter`).
- **Paragraphs**: the text split on two or more newlines (blank-looking lines of whitespace count
  as blank), each stripped, empty ones ignored.
- **Words without an alphabetic character**: no character for which `str.isalpha()` holds (in
  effect: no Unicode letter), as in DCLM `alphabetic_word_ratio_filter`.
- **Stop words**: Gopher's eight {the, be, to, of, and, that, have, with}, matched in lowercase
  after stripping surrounding punctuation ("The," counts). By default every occurrence counts
  (DCLM `stop_word_filter(count_unique=False)`); `count_unique_stop_words=True` counts distinct
  stop words instead (one reading of Gopher's "at least two of the following words").
- **Duplicate lines / paragraphs**: a unit that equals (exactly, after stripping) an earlier unit
  of the same document; every repeat after the first counts, the first occurrence does not
  (datatrove's reading of Gopher). DCLM's `repetition_filter` also counts the first occurrence,
  which is stricter. The character fractions divide the characters of the repeats by the
  characters of all units (line or paragraph text, without the newlines between them).
- **Top n-gram (n = 2, 3, 4)**: word n-grams over the words above, compared exactly (case kept).
  Value = characters (word characters, no spaces) covered by all occurrences of the most frequent
  n-gram, overlapping occurrences counted once per word, / characters of all words. Ties in count
  go to the n-gram covering the most characters (as DCLM takes the longest). If no n-gram occurs
  twice the value is 0: there is no repetition (as DCLM `repetition_filter`).
- **Duplicated n-grams (n = 5 ... 10)**: every word position covered by any occurrence (the first
  included) of an n-gram that occurs at least twice is marked once; value = characters of the
  marked words / characters of all words (DCLM `repetition_filter(..., 'all')`).
- **Ratios with nothing to count**: a document without words fails the word-count, mean word
  length, symbol ratio, alphabetic-word and stop-word rules (DCLM fails them too), and the
  RefinedWeb removal rule ("no words"). Line, paragraph and n-gram fractions of a text without
  lines or repeats are 0 and pass. So an empty text gets a defined verdict and never divides by 0.

RefinedWeb line modifiers (`refinedweb_lines`)
----------------------------------------------
Per line (split on "\\n"), in DCLM's order: drop a line that is
(1) more than 50% uppercase, counted over its *letters* (DCLM `uppercase_ratio_line_modifier`
divides by all characters, spaces included, so it drops fewer lines);
(2) entirely numeric: every non-space character a digit or one of . , : / - + % and at least one
digit (DCLM `numeric_ratio_line_modifier` drops only lines that are 100% digits);
(3) a counter such as "3 likes", "1.2K views", "12 comments" (DCLM `counter_line_modifier`; the
singular forms are added here);
(4) shorter than 2 words (DCLM `line_length_modifier(min_length=2)`). As in DCLM, blank lines are
kept: they hold no words and separate paragraphs. A line of punctuation only ("-----") has no
words and is dropped.
Then, on lines of at most 10 words, strip "items in cart" anywhere, a trailing "Read more..." (or
"Read more…") and a leading "Sign-in" / "Sign in" (DCLM `substring_line_modifier`, which matches
"Read more..." as a regex, so its dots match any character; here they are literal). A line left
empty by stripping is dropped. `refinedweb_line_removal` fails when the removed words (dropped
lines plus stripped substrings) exceed 5% of the words before (DCLM
`word_removal_ratio_filter`). If "refinedweb" is not among the configured line modifiers the rule
still measures what the modifiers *would* remove from the text, without rewriting it.

C4 (`c4_lines` and the C4 rules)
--------------------------------
`c4_lines` keeps a line when, stripped, it ends in terminal punctuation (. ! ? " and, added here,
”) but not in an ellipsis ("..." or "…"), has at least 5 words (`split()`; C4 §2.2 and TFDS
`_MIN_WORDS_PER_LINE = 5`; datatrove's `C4QualityFilter` uses 3: set `c4_min_line_words=3`), no
word longer than 1000 characters, does not mention "javascript" (any case), and has none of the
policy phrases of the TFDS code (`POLICY_PHRASES`: the cookie wording plus "terms of use" and
"privacy policy"). Blank lines are kept as paragraph separators (TFDS drops them). TFDS's
citation-marker removal ("[1]", "[edit]") is not done.
`c4_min_sentences` counts sentences on the C4-filtered text (filtering it for the count only,
when "c4" is not a configured modifier): per kept line, the number of runs of . ! ? followed by
optional closing quotes/brackets and then whitespace or the line end, at least 1 (TFDS uses NLTK's
punkt; this regex splits after abbreviations such as "e.g." too). `c4_lorem_ipsum` and
`c4_curly_brace` look at the whole judged text (TFDS looks only at the lines it keeps); their value
is the number of occurrences.

Cost
----
Words, lines and paragraphs are computed once per document, lazily, and shared by the rules.
The n-gram rules hash each word once (Python's `hash`, 64 bits), build n-gram hashes by a rolling
polynomial in numpy and group equal hashes with one stable `argsort` per n: O(N log N) in the
number of words, no quadratic step; covered word positions come from prefix sums. When no n-gram
repeats, no longer one can, so the larger n are skipped. A hash collision could only make two
different n-grams count as one, with odds of about N^2 / 2^64. About 0.7 ms per document on the
sample pool (mean 260 words, all rules); a 10 MB text takes a few seconds.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import ScorerError

from . import registry
from .base import ScorerSpec, read_json_config

# --------------------------------------------------------------------------------------------
# The rules


@dataclass(frozen=True)
class Rule:
    name: str
    group: str        # "gopher" | "refinedweb" | "c4"
    description: str  # one line, with the paper default


_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
_DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_RULE_LIST: list[Rule] = [
    Rule("gopher_word_count", "gopher", "words (punctuation-only tokens ignored) within [50, 100000] (Gopher)"),
    Rule("gopher_mean_word_length", "gopher", "mean word length within [3, 10] characters (Gopher)"),
    Rule("gopher_symbol_ratio", "gopher", "('#' + '...' + '…') per word <= 0.1 (Gopher)"),
    Rule("gopher_bullet_lines", "gopher", "fraction of non-empty lines starting with a bullet <= 0.9 (Gopher)"),
    Rule("gopher_ellipsis_lines", "gopher", "fraction of non-empty lines ending with an ellipsis <= 0.3 (Gopher)"),
    Rule("gopher_alpha_words", "gopher", "fraction of words without an alphabetic character <= 0.2 (Gopher)"),
    Rule("gopher_stop_words", "gopher", "at least 2 stop words of {the, be, to, of, and, that, have, with} (Gopher)"),
    Rule("gopher_dup_lines", "gopher", "fraction of lines that repeat an earlier line <= 0.3 (Gopher)"),
    Rule("gopher_dup_paragraphs", "gopher", "fraction of paragraphs that repeat an earlier paragraph <= 0.3 (Gopher)"),
    Rule("gopher_dup_line_chars", "gopher", "fraction of characters in repeated lines <= 0.2 (Gopher)"),
    Rule("gopher_dup_paragraph_chars", "gopher", "fraction of characters in repeated paragraphs <= 0.2 (Gopher)"),
    *[Rule(f"gopher_top_{n}gram", "gopher",
           f"fraction of word characters in the most frequent word {n}-gram <= {limit:.2f} (Gopher)")
      for n, limit in _TOP_NGRAM.items()],
    *[Rule(f"gopher_dup_{n}gram", "gopher",
           f"fraction of word characters in duplicated word {n}-grams <= {limit:.2f} (Gopher)")
      for n, limit in _DUP_NGRAM.items()],
    Rule("refinedweb_line_removal", "refinedweb",
         "RefinedWeb line modifiers remove at most 5% of the words (RefinedWeb)"),
    Rule("c4_min_sentences", "c4", "at least 3 sentences after the C4 line filter (C4)"),
    Rule("c4_lorem_ipsum", "c4", "no 'lorem ipsum', any case (C4)"),
    Rule("c4_curly_brace", "c4", "no '{' (C4)"),
]

RULES: dict[str, Rule] = {rule.name: rule for rule in _RULE_LIST}
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(r.name for r in _RULE_LIST if r.group == group) for group in ("gopher", "refinedweb", "c4")
}
LINE_MODIFIERS: tuple[str, ...] = ("refinedweb", "c4")

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = frozenset("•●○◦∙·■□▪▫◆◇►▶▸‣⁃➢➤→✓✔-–*")
ELLIPSES = ("...", ". . .", "…")
C4_TERMINAL = (".", "!", "?", '"', "”")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

_RULE_INDEX = {name: i for i, name in enumerate(RULES)}

# --------------------------------------------------------------------------------------------
# The configuration

_INT_FIELDS = ("min_words", "max_words", "min_stop_words", "rw_min_line_words", "rw_max_edit_line_words",
               "c4_min_line_words", "c4_max_word_length", "c4_min_sentences")
_FRACTION_FIELDS = (
    "max_bullet_line_fraction", "max_ellipsis_line_fraction", "max_non_alpha_word_fraction",
    "max_dup_line_fraction", "max_dup_paragraph_fraction", "max_dup_line_char_fraction",
    "max_dup_paragraph_char_fraction", *[f"max_top_{n}gram_char_fraction" for n in _TOP_NGRAM],
    *[f"max_dup_{n}gram_char_fraction" for n in _DUP_NGRAM], "max_removed_word_fraction",
    "rw_max_uppercase_fraction",
)
_NONNEG_FIELDS = ("min_mean_word_length", "max_mean_word_length", "max_symbol_ratio")


@dataclass(frozen=True)
class HeuristicsConfig:
    """Which rules run, which line modifiers rewrite the text first, and every threshold.

    Each threshold defaults to its paper value. `rules` is stored in `RULES` order whatever order
    it was given in; lists (from TOML or JSON) are accepted and stored as tuples. A bad value raises
    `ScorerError` (a ValueError) naming the field.
    """

    rules: tuple[str, ...] = tuple(RULES)
    line_modifiers: tuple[str, ...] = ("refinedweb",)
    # Gopher quality rules
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    max_non_alpha_word_fraction: float = 0.2
    min_stop_words: int = 2
    count_unique_stop_words: bool = False
    # Gopher repetition rules
    max_dup_line_fraction: float = 0.3
    max_dup_paragraph_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    max_dup_paragraph_char_fraction: float = 0.2
    max_top_2gram_char_fraction: float = 0.20
    max_top_3gram_char_fraction: float = 0.18
    max_top_4gram_char_fraction: float = 0.16
    max_dup_5gram_char_fraction: float = 0.15
    max_dup_6gram_char_fraction: float = 0.14
    max_dup_7gram_char_fraction: float = 0.13
    max_dup_8gram_char_fraction: float = 0.12
    max_dup_9gram_char_fraction: float = 0.11
    max_dup_10gram_char_fraction: float = 0.10
    # RefinedWeb line modifiers and the 5% rule
    max_removed_word_fraction: float = 0.05
    rw_max_uppercase_fraction: float = 0.5
    rw_min_line_words: int = 2
    rw_max_edit_line_words: int = 10
    # C4
    c4_min_line_words: int = 5
    c4_max_word_length: int = 1000
    c4_min_sentences: int = 3

    def __post_init__(self) -> None:
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

        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ScorerError(f"heuristics: {name} must be an integer >= 0, got {value!r}")
        for name in _FRACTION_FIELDS + _NONNEG_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ScorerError(f"heuristics: {name} must be a number >= 0, got {value!r}")
            if name in _FRACTION_FIELDS and value > 1:
                raise ScorerError(f"heuristics: {name} is a fraction and must be within [0, 1], got {value!r}")
        if not isinstance(self.count_unique_stop_words, bool):
            raise ScorerError("heuristics: count_unique_stop_words must be true or false, "
                              f"got {self.count_unique_stop_words!r}")
        if self.min_words > self.max_words:
            raise ScorerError(f"heuristics: min_words ({self.min_words}) > max_words ({self.max_words})")
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ScorerError(f"heuristics: min_mean_word_length ({self.min_mean_word_length}) > "
                             f"max_mean_word_length ({self.max_mean_word_length})")


def _as_names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ScorerError(f"heuristics: {what} must be a list of names, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise ScorerError(f"heuristics: {what} must be a list of names (strings), got {list(value)!r}")
    return tuple(value)


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
# Words

# Whitespace-delimited tokens without a letter ([^\W\d_]: str.isalpha, bar a few numeric signs
# such as "²" that count as letters here), found in one pass over the text.
_NO_ALPHA_TOKEN = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
# Candidates for punctuation-only tokens: whitespace-delimited runs without a letter or digit.
_NO_WORDCHAR_TOKEN = re.compile(r"(?<!\S)(?:[^\w\s]|_)+(?!\S)")


def _punct_only(token: str) -> bool:
    return all(unicodedata.category(c)[0] == "P" for c in token)


def _split(text: str) -> tuple[list[str], int]:
    """(words, number of whitespace tokens)."""
    tokens = text.split()
    punct = {t for t in _NO_WORDCHAR_TOKEN.findall(text) if _punct_only(t)}
    return ([t for t in tokens if t not in punct] if punct else tokens), len(tokens)


def split_words(text: str) -> list[str]:
    """Whitespace tokens, without the tokens made only of punctuation (the module's word)."""
    return _split(text)[0]


def _count_words(line: str) -> int:
    n = len(line.split())
    for t in _NO_WORDCHAR_TOKEN.findall(line):
        if _punct_only(t):
            n -= 1
    return n


# --------------------------------------------------------------------------------------------
# Line modifiers

_COUNTER = re.compile(
    r"\W*\d[\d,.]*(?:\s*[kmb])?\s+(?:likes?|shares?|comments?|retweets?|reposts?|quotes?|bookmarks?"
    r"|upvotes?|downvotes?|downloads?|views?|followers?|replies|reply|votes?)\W*",
    re.IGNORECASE,
)
_NUMERIC_LINE = re.compile(r"[\d.,:/+%\s-]+")
_DIGIT = re.compile(r"\d")
_ITEMS_IN_CART = re.compile(r"\s*items in cart", re.IGNORECASE)
_READ_MORE = re.compile(r"\s*\bread more\s*(?:\.\.\.|…)\s*$", re.IGNORECASE)
_SIGN_IN = re.compile(r"^\s*sign[- ]?in\b\s*", re.IGNORECASE)
_ASCII_NOT_ALPHA = bytes(c for c in range(128) if not chr(c).isalpha())
_ASCII_NOT_UPPER = bytes(c for c in range(128) if not chr(c).isupper())


def _is_numeric_line(stripped: str) -> bool:
    """Only digits, number punctuation (. , : / + % -) and spaces, with at least one digit."""
    return _NUMERIC_LINE.fullmatch(stripped) is not None and _DIGIT.search(stripped) is not None


def _is_counter_line(stripped: str) -> bool:
    return _COUNTER.fullmatch(stripped) is not None


def _uppercase_fraction(line: str) -> float:
    """Uppercase letters / letters (0 without letters)."""
    if line.isascii():
        raw = line.encode("ascii")
        letters = len(raw.translate(None, _ASCII_NOT_ALPHA))
        upper = len(raw.translate(None, _ASCII_NOT_UPPER))
    else:
        letters = sum(map(str.isalpha, line))
        upper = sum(map(str.isupper, line))
    return upper / letters if letters else 0.0


def _strip_boilerplate(line: str) -> str:
    """RefinedWeb's edits: "items in cart" anywhere, a trailing "Read more...", a leading "Sign-in"."""
    low = line.lower()
    if "items in cart" in low:
        line = _ITEMS_IN_CART.sub("", line)
    if "read more" in low:
        line = _READ_MORE.sub("", line)
    if "sign" in low:
        line = _SIGN_IN.sub("", line, count=1)
    return line


def refinedweb_lines(text: str, *, max_uppercase_fraction: float = 0.5, min_line_words: int = 2,
                     max_edit_line_words: int = 10) -> tuple[str, int, int]:
    """RefinedWeb's line modifiers (see the module doc): (new text, words before, words removed)."""
    kept: list[str] = []
    before = after = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            kept.append(line)  # a blank line: no words, a paragraph break
            continue
        n = _count_words(stripped)
        before += n
        if (n < min_line_words or _is_numeric_line(stripped) or _is_counter_line(stripped)
                or _uppercase_fraction(stripped) > max_uppercase_fraction):
            continue
        if n <= max_edit_line_words:
            edited = _strip_boilerplate(line)
            if edited != line:
                if not edited.strip():
                    continue
                line, n = edited, _count_words(edited)
        after += n
        kept.append(line)
    return "\n".join(kept), before, before - after


def c4_lines(text: str, *, min_line_words: int = 5, max_word_length: int = 1000) -> str:
    """C4's line filter (see the module doc): the lines that look like sentences, blank lines kept."""
    kept: list[str] = []
    for line in text.split("\n"):
        s = line.strip()
        if not s:
            kept.append(line)
            continue
        if not s.endswith(C4_TERMINAL) or s.endswith(ELLIPSES):
            continue
        tokens = s.split()
        if len(tokens) < min_line_words or max(map(len, tokens)) > max_word_length:
            continue
        low = s.lower()
        if "javascript" in low or any(p in low for p in POLICY_PHRASES):
            continue
        kept.append(line)
    return "\n".join(kept)


_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def _count_sentences(text: str) -> int:
    return sum(max(1, len(_SENTENCE_END.findall(s))) for s in (l.strip() for l in text.split("\n")) if s)


# --------------------------------------------------------------------------------------------
# One document's measurements, computed lazily and shared by the rules

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_MULT = np.uint64(0x9E3779B97F4A7C15)
_STRIP = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalnum()) + "“”‘’«»„‚…—–"


def _dup_fractions(units: list[str]) -> tuple[float, float]:
    """(repeated units / units, characters of repeated units / characters of all units)."""
    if not units:
        return 0.0, 0.0
    seen: set[str] = set()
    dup = dup_chars = total = 0
    for u in units:
        total += len(u)
        if u in seen:
            dup += 1
            dup_chars += len(u)
        else:
            seen.add(u)
    return dup / len(units), (dup_chars / total if total else 0.0)


class _Doc:
    def __init__(self, text: str, config: HeuristicsConfig, rw_counts: tuple[int, int] | None, c4_done: bool):
        self.text = text
        self.config = config
        self.rw_counts = rw_counts
        self.c4_done = c4_done
        self._grams: dict[int, np.ndarray] = {}
        self._groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        self._no_repeats_from = 1 << 30

    @cached_property
    def words(self) -> list[str]:
        words, self.token_count = _split(self.text)
        return words

    def non_alpha_words(self) -> int:
        """Words without a letter: tokens without a letter, less the punctuation-only ones."""
        words = len(self.words)  # sets token_count
        dropped = self.token_count - words
        return len(_NO_ALPHA_TOKEN.findall(self.text)) - dropped

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))

    @cached_property
    def total_chars(self) -> int:
        return int(self.lengths.sum())

    @cached_property
    def prefix(self) -> np.ndarray:
        out = np.zeros(len(self.words) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    @cached_property
    def lines(self) -> list[str]:
        return [s for s in (line.strip() for line in self.text.split("\n")) if s]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [s for s in (p.strip() for p in _PARAGRAPH_BREAK.split(self.text)) if s]

    @cached_property
    def line_dups(self) -> tuple[float, float]:
        return _dup_fractions(self.lines)

    @cached_property
    def paragraph_dups(self) -> tuple[float, float]:
        return _dup_fractions(self.paragraphs)

    def grams(self, n: int) -> np.ndarray:
        """64-bit hashes of the word n-grams, one per start position."""
        if n not in self._grams:
            if n == 1:
                words = self.words
                h = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
            else:
                prev, base = self.grams(n - 1), self.grams(1)
                h = prev[:-1] * _MULT + base[n - 1:] if len(prev) > 1 else np.zeros(0, dtype=np.uint64)
            self._grams[n] = h
        return self._grams[n]

    def groups(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """None when no word n-gram occurs twice; else (start positions sorted by n-gram hash, and by
        position within one n-gram; the group of each of them; the count of each group)."""
        if n not in self._groups:
            h = self.grams(n)
            found = None
            if n < self._no_repeats_from and len(h) > 1:
                order = np.argsort(h, kind="stable")
                ordered = h[order]
                first = np.empty(len(h), dtype=bool)
                first[0] = True
                np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
                if not first.all():
                    group = np.cumsum(first) - 1
                    found = (order, group, np.bincount(group))
            if found is None:  # no repeated n-gram: no longer n-gram can repeat either
                self._no_repeats_from = min(self._no_repeats_from, n)
            self._groups[n] = found
        return self._groups[n]

    def top_ngram_fraction(self, n: int) -> float:
        found = self.groups(n)
        if found is None:
            return 0.0
        order, group, counts = found
        in_top = counts[group] == counts.max()   # occurrences of the most frequent n-grams
        positions, groups = order[in_top], group[in_top]
        same = np.zeros(len(groups), dtype=bool)
        same[1:] = groups[1:] == groups[:-1]
        previous_end = np.zeros_like(positions)
        previous_end[1:] = positions[:-1] + n
        start = np.where(same, np.maximum(positions, previous_end), positions)
        new_chars = self.prefix[positions + n] - self.prefix[start]  # characters not yet covered
        covered = np.add.reduceat(new_chars, np.flatnonzero(~same))
        return float(covered.max()) / self.total_chars

    def dup_ngram_fraction(self, n: int) -> float:
        found = self.groups(n)
        if found is None:
            return 0.0
        order, group, counts = found
        m = len(order)
        repeated = np.empty(m, dtype=bool)
        repeated[order] = counts[group] > 1
        starts = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(repeated, out=starts[1:])
        j = np.arange(len(self.words))
        low = np.maximum(j - n + 1, 0)
        high = np.minimum(j, m - 1)
        covered = starts[high + 1] > starts[low]   # some repeated n-gram starts in [j-n+1, j]
        return float(self.lengths[covered].sum()) / self.total_chars

    def stop_words(self) -> int:
        found: Counter[str] = Counter()
        for token, k in Counter(self.words).items():
            w = token.lower().strip(_STRIP)
            if w in STOP_WORDS:
                found[w] += k
        return len(found) if self.config.count_unique_stop_words else sum(found.values())

    def rw_fraction(self) -> float | None:
        if self.rw_counts is None:
            _, before, removed = refinedweb_lines(
                self.text, max_uppercase_fraction=self.config.rw_max_uppercase_fraction,
                min_line_words=self.config.rw_min_line_words, max_edit_line_words=self.config.rw_max_edit_line_words)
        else:
            before, removed = self.rw_counts
        return removed / before if before else None

    def sentences(self) -> int:
        text = self.text if self.c4_done else c4_lines(
            self.text, min_line_words=self.config.c4_min_line_words, max_word_length=self.config.c4_max_word_length)
        return _count_sentences(text)


# Each rule: its measurement (None: nothing to measure, the rule fails with "no words") and its
# (min, max) limits from the config, either of which may be None.
Measure = Callable[[_Doc], "float | None"]
Limits = Callable[[HeuristicsConfig], "tuple[float | None, float | None]"]


def _per_word(doc: _Doc, count: Callable[[list[str]], int]) -> float | None:
    return count(doc.words) / len(doc.words) if doc.words else None


def _symbols(doc: _Doc) -> float | None:
    t = doc.text
    return _per_word(doc, lambda _: sum(t.count(s) for s in ("#", *ELLIPSES)))


def _fraction(lines: list[str], test: Callable[[str], bool]) -> float:
    return sum(1 for line in lines if test(line)) / len(lines) if lines else 0.0


_SPECS: dict[str, tuple[Measure, Limits]] = {
    "gopher_word_count": (lambda d: len(d.words), lambda c: (c.min_words, c.max_words)),
    "gopher_mean_word_length": (lambda d: d.total_chars / len(d.words) if d.words else None,
                                lambda c: (c.min_mean_word_length, c.max_mean_word_length)),
    "gopher_symbol_ratio": (_symbols, lambda c: (None, c.max_symbol_ratio)),
    "gopher_bullet_lines": (lambda d: _fraction(d.lines, lambda s: s[0] in BULLETS),
                            lambda c: (None, c.max_bullet_line_fraction)),
    "gopher_ellipsis_lines": (lambda d: _fraction(d.lines, lambda s: s.endswith(ELLIPSES)),
                              lambda c: (None, c.max_ellipsis_line_fraction)),
    "gopher_alpha_words": (lambda d: _per_word(d, lambda _: d.non_alpha_words()),
                           lambda c: (None, c.max_non_alpha_word_fraction)),
    "gopher_stop_words": (lambda d: d.stop_words(), lambda c: (c.min_stop_words, None)),
    "gopher_dup_lines": (lambda d: d.line_dups[0], lambda c: (None, c.max_dup_line_fraction)),
    "gopher_dup_paragraphs": (lambda d: d.paragraph_dups[0], lambda c: (None, c.max_dup_paragraph_fraction)),
    "gopher_dup_line_chars": (lambda d: d.line_dups[1], lambda c: (None, c.max_dup_line_char_fraction)),
    "gopher_dup_paragraph_chars": (lambda d: d.paragraph_dups[1], lambda c: (None, c.max_dup_paragraph_char_fraction)),
    **{f"gopher_top_{n}gram": ((lambda d, n=n: d.top_ngram_fraction(n)),
                               (lambda c, n=n: (None, getattr(c, f"max_top_{n}gram_char_fraction"))))
       for n in _TOP_NGRAM},
    **{f"gopher_dup_{n}gram": ((lambda d, n=n: d.dup_ngram_fraction(n)),
                               (lambda c, n=n: (None, getattr(c, f"max_dup_{n}gram_char_fraction"))))
       for n in _DUP_NGRAM},
    "refinedweb_line_removal": (lambda d: d.rw_fraction(), lambda c: (None, c.max_removed_word_fraction)),
    "c4_min_sentences": (lambda d: d.sentences(), lambda c: (c.c4_min_sentences, None)),
    "c4_lorem_ipsum": (lambda d: d.text.lower().count("lorem ipsum"), lambda c: (None, 0)),
    "c4_curly_brace": (lambda d: d.text.count("{"), lambda c: (None, 0)),
}
assert list(_SPECS) == list(RULES)


def _fmt(x: float) -> str:
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def _judge(name: str, doc: _Doc, config: HeuristicsConfig) -> RuleResult:
    measure, limits = _SPECS[name]
    value = measure(doc)
    if value is None:
        return RuleResult(name, False, 0.0, f"{name}: no words")
    value = float(value)
    low, high = limits(config)
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


DEFAULT_CONFIG = HeuristicsConfig()


def check(text: str, config: HeuristicsConfig = DEFAULT_CONFIG) -> Verdict:
    """Run the configured line modifiers, then judge the result with every configured rule."""
    if text is None:  # a null text from a table is judged as empty
        text = ""
    rw_counts, c4_done = None, False
    for modifier in config.line_modifiers:
        if modifier == "refinedweb":
            text, before, removed = refinedweb_lines(
                text, max_uppercase_fraction=config.rw_max_uppercase_fraction,
                min_line_words=config.rw_min_line_words, max_edit_line_words=config.rw_max_edit_line_words)
            rw_counts = (before, removed)
        else:
            text = c4_lines(text, min_line_words=config.c4_min_line_words, max_word_length=config.c4_max_word_length)
            c4_done = True
    doc = _Doc(text, config, rw_counts, c4_done)
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

    def verdicts(self, texts: Sequence[str]) -> list[Verdict]:
        return [check(t, self.config) for t in texts]

    def _results(self, texts: Sequence[str]) -> list[tuple[RuleResult, ...]]:
        key = tuple(texts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        results = [check(t, self.config).results for t in key]
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
