"""Line modifiers: RefinedWeb's line-wise corrections (`refinedweb_lines`) and C4's line filter
(`c4_lines`). Each rewrites a text line by line; blank lines are kept, as they separate
paragraphs. Their keyword defaults are the paper values of `filters.heuristic_rules`.

RefinedWeb (`refinedweb_lines`)
-------------------------------
Penedo et al. 2023, arXiv:2306.01116, §3.2 (line-wise corrections), as DCLM (Li et al. 2024,
arXiv:2406.11794) applies them in `baselines/baselines_configs/dclm_baseline_refinedweb.yaml`
with the modifiers of `baselines/mappers/modifiers.py` cited below by name.
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
empty by stripping is dropped. Words are counted as the rules count them
(`filters.text_measures.count_words`). The function returns the words before and the words
removed (dropped lines plus stripped substrings), from which the `refinedweb_line_removal` rule
takes its fraction (RefinedWeb's "more than 5%"; DCLM `word_removal_ratio_filter`).

C4 (`c4_lines`)
---------------
Raffel et al. 2020, JMLR 21(140), §2.2, and its TFDS code `c4_utils.py`. A line is kept when,
stripped, it ends in terminal punctuation (. ! ? " and, added here, ”) but not in an ellipsis
("..." or "…"), has at least 5 words (`split()`; C4 §2.2 and TFDS `_MIN_WORDS_PER_LINE = 5`;
datatrove's `C4QualityFilter` uses 3: set `c4_min_line_words=3`), no word longer than 1000
characters (TFDS `_MAX_WORD_LENGTH`), does not mention "javascript" (any case), and has none of
the policy phrases of the TFDS code (`POLICY_PHRASES`: the cookie wording plus "terms of use" and
"privacy policy"). Blank lines are kept as paragraph separators (TFDS drops them). TFDS's
citation-marker removal ("[1]", "[edit]") is not done.
"""
from __future__ import annotations

import re

from .heuristic_rules import DEFAULT_CONFIG
from .text_measures import ELLIPSES, count_words

C4_TERMINAL = (".", "!", "?", '"', "”")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

# --------------------------------------------------------------------------------------------
# RefinedWeb

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


def refinedweb_lines(text: str, *, max_uppercase_fraction: float = DEFAULT_CONFIG.rw_max_uppercase_fraction,
                     min_line_words: int = DEFAULT_CONFIG.rw_min_line_words,
                     max_edit_line_words: int = DEFAULT_CONFIG.rw_max_edit_line_words) -> tuple[str, int, int]:
    """RefinedWeb's line modifiers (see the module doc): (new text, words before, words removed)."""
    kept: list[str] = []
    before = after = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            kept.append(line)  # a blank line: no words, a paragraph break
            continue
        n = count_words(stripped)
        before += n
        if (n < min_line_words or _is_numeric_line(stripped) or _is_counter_line(stripped)
                or _uppercase_fraction(stripped) > max_uppercase_fraction):
            continue
        if n <= max_edit_line_words:
            edited = _strip_boilerplate(line)
            if edited != line:
                if not edited.strip():
                    continue
                line, n = edited, count_words(edited)
        after += n
        kept.append(line)
    return "\n".join(kept), before, before - after


# --------------------------------------------------------------------------------------------
# C4


def c4_lines(text: str, *, min_line_words: int = DEFAULT_CONFIG.c4_min_line_words,
             max_word_length: int = DEFAULT_CONFIG.c4_max_word_length) -> str:
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
