"""What the heuristics rules measure in a text: words, lines, paragraphs, repeats and n-grams.

Plain Python and numpy over one string; no rule limits here (those are in
`filters.heuristic_rules`). `Doc` computes each measure once, lazily, and the rules share it.

Definitions chosen where the papers leave room
----------------------------------------------
Gopher is Rae et al. 2021, arXiv:2112.11446, App. A; DCLM is Li et al. 2024, arXiv:2406.11794,
whose code `baselines/mappers/filters/content_filters.py` is cited by function name.

- **Words** (`Doc.words`, `count_words`): whitespace tokens (`str.split()`), dropping tokens made only of
  Unicode punctuation (category P*), as DCLM's page-length filter ignores punctuation. A token
  keeps any attached punctuation ("end." has length 4); symbols that are not punctuation ("|",
  "$", "©") are words. DCLM counts words with uniseg word boundaries for the length and n-gram
  rules and with plain `split()` for the others; one definition is used for all rules here, so
  each document is tokenized once.
- **Mean word length**: characters of the words above / number of words.
- **Symbol ratio**: occurrences of "#", "...", ". . ." and "…" in the text (`str.count`, so
  "......" is two) / words (DCLM `symbol_ratio_filter`; ". . ." is DCLM's addition).
- **Lines**: the text split on "\\n", each stripped, empty ones ignored. Bullet, ellipsis and
  duplicate-line fractions are over these non-empty lines. A bullet line starts with one of
  `BULLETS` (DCLM `bullet_count_filter` uses only ● • * -). An ellipsis line ends with "...",
  ". . ." or "…" (DCLM `ellipsis_count_filter`).
- **Paragraphs**: the text split on two or more newlines (blank-looking lines of whitespace count
  as blank), each stripped, empty ones ignored.
- **Words without an alphabetic character**: no character for which `str.isalpha()` holds (in
  effect: no Unicode letter), as in DCLM `alphabetic_word_ratio_filter`.
- **Stop words**: Gopher's eight {the, be, to, of, and, that, have, with}, matched in lowercase
  after stripping surrounding punctuation ("The," counts). Every occurrence counts (DCLM
  `stop_word_filter(count_unique=False)`), or, with `unique`, distinct stop words (one reading
  of Gopher's "at least two of the following words").
- **Duplicate lines / paragraphs**: a unit that equals (exactly, after stripping) an earlier unit
  of the same document; every repeat after the first counts, the first occurrence does not
  (datatrove's reading of Gopher). DCLM's `repetition_filter` also counts the first occurrence,
  which is stricter. The character fractions divide the characters of the repeats by the
  characters of all units (line or paragraph text, without the newlines between them).
- **Top n-gram (n = 2, 3, 4)**: word n-grams over the words above, compared exactly (case
  kept). Value = characters (word characters, no spaces) covered by all occurrences of the most
  frequent n-gram, overlapping occurrences counted once per word, / characters of all words. Ties
  in count go to the n-gram covering the most characters (as DCLM takes the longest). If no
  n-gram occurs twice the value is 0: there is no repetition (as DCLM `repetition_filter`).
- **Duplicated n-grams (n = 5 ... 10)**: every word position covered by any occurrence (the
  first included) of an n-gram that occurs at least twice is marked once; value = characters of
  the marked words / characters of all words (DCLM `repetition_filter(..., 'all')`).
- **Sentences** (`count_sentences`, for C4's rule: Raffel et al. 2020, JMLR 21(140), §2.2): per
  non-empty line, the number of runs of . ! ? followed by optional closing quotes/brackets and
  then whitespace or the line end, at least 1 (TFDS uses NLTK's punkt; this regex splits after
  abbreviations such as "e.g." too).

Cost
----
Words, lines and paragraphs are computed once per document, lazily. The n-gram measures hash
each word once (Python's `hash`, 64 bits), build n-gram hashes by a rolling polynomial in numpy
and group equal hashes with one stable `argsort` per n: O(N log N) in the number of words, no
quadratic step; covered word positions come from prefix sums. When no n-gram repeats, no longer
one can, so the larger n are skipped. A hash collision could only make two different n-grams
count as one, with odds of about N^2 / 2^64.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import cached_property

import numpy as np

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher, App. A
BULLETS = frozenset("•●○◦∙·■□▪▫◆◇►▶▸‣⁃➢➤→✓✔-–*")
ELLIPSES = ("...", ". . .", "…")

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


def count_words(text: str) -> int:
    """The number of words of `text` (as `Doc(text).words`), without building the list."""
    n = len(text.split())
    for t in _NO_WORDCHAR_TOKEN.findall(text):
        if _punct_only(t):
            n -= 1
    return n


# --------------------------------------------------------------------------------------------
# Sentences

_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def count_sentences(text: str) -> int:
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


class Doc:
    """The measures of one text, each computed on first use."""

    def __init__(self, text: str):
        self.text = text
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

    def stop_words(self, unique: bool) -> int:
        """Occurrences of Gopher's stop words (`unique`: distinct stop words)."""
        found: Counter[str] = Counter()
        for token, k in Counter(self.words).items():
            w = token.lower().strip(_STRIP)
            if w in STOP_WORDS:
                found[w] += k
        return len(found) if unique else sum(found.values())
