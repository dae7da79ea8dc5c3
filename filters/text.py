"""Text normalization and content hashing: pure functions over strings, no Spark.

`normalize` has three modes:

- ``none``        the text as given;
- ``whitespace``  Unicode NFC, runs of whitespace collapsed to one space, ends stripped (the
                  default for exact dedup: re-flowed or re-indented copies count as the same text);
- ``aggressive``  the normalization datatrove's MinHash dedup applies before shingling:
                  lowercase, diacritics stripped after NFKD, every digit run becomes ``0``,
                  punctuation and symbols become spaces, then whitespace collapsed.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Literal

import numpy as np
import xxhash

Normalization = Literal["none", "whitespace", "aggressive"]
NORMALIZATIONS: tuple[str, ...] = ("none", "whitespace", "aggressive")

# The aggressive mode's character classes, as Python's `re` defines them: a separator is whitespace
# or anything outside \w (punctuation, symbols) or the underscore; a digit is \d (any script's
# decimal digits); everything else is a word character.
_SEPARATOR = re.compile(r"\s|[^\w\s]|_")
_DIGIT = re.compile(r"\d")
_SEP, _DIG, _WORD = 0, 1, 2


_COMBINING = None  # numpy bool table over all code points: True where the combining class != 0


def _strip_diacritics(text: str) -> str:
    global _COMBINING
    if text.isascii():  # NFKD leaves ASCII as it is and it has no combining marks
        return text
    if _COMBINING is None:
        table = np.zeros(0x110000, dtype=bool)
        table[[cp for cp in range(0x300, 0x110000) if unicodedata.combining(chr(cp))]] = True
        _COMBINING = table
    # Look the code points up in one numpy pass: a Python loop over characters was most of the
    # MinHash signature time on non-ASCII text.
    decomposed = unicodedata.normalize("NFKD", text)
    points = np.frombuffer(decomposed.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    marks = _COMBINING[points]
    if not marks.any():
        return decomposed
    return points[~marks].tobytes().decode("utf-32-le", "surrogatepass")


_CLASSES = None  # numpy uint8 table over all code points: _SEP, _DIG or _WORD


def _classes() -> np.ndarray:
    global _CLASSES
    if _CLASSES is None:
        # Classify every code point with the regexes themselves (one substitution pass over a
        # string of all of them, about 0.3 s once per process), so the table cannot drift from
        # Python's definitions of \s, \w and \d.
        every = "".join(map(chr, range(0x110000)))

        def hit(pattern: re.Pattern) -> np.ndarray:
            marked = pattern.sub("\0", every).encode("utf-32-le", "surrogatepass")
            return np.frombuffer(marked, dtype=np.uint32) == 0

        table = np.full(0x110000, _WORD, dtype=np.uint8)
        table[hit(_DIGIT)] = _DIG
        table[hit(_SEPARATOR)] = _SEP  # NUL is a separator itself, so marking with it is safe
        _CLASSES = table
    return _CLASSES


def _squeeze(points: np.ndarray) -> np.ndarray:
    r"""Code points -> code points with every digit run as one "0" and every separator run as one
    space, no space at either end: `" ".join(re.sub(r"[^\w\s]|_", " ", re.sub(r"\d+", "0", t))
    .split())` as one vectorized pass."""
    cls = _classes()[points]
    prev = np.empty_like(cls)
    prev[:1] = _SEP  # a separator run at the start is dropped
    prev[1:] = cls[:-1]
    keep = np.where(cls == _SEP, prev != _SEP, (cls == _WORD) | (prev != _DIG))
    out = np.where(cls == _SEP, 0x20, np.where(cls == _DIG, 0x30, points))[keep]
    if out.size and out[-1] == 0x20:
        out = out[:-1]
    return out


def normalize(text: str, mode: Normalization = "whitespace") -> str:
    """Return `text` normalized by `mode` (see the module docstring)."""
    if mode == "none":
        return text
    if mode == "whitespace":
        return " ".join(unicodedata.normalize("NFC", text).split())
    if mode == "aggressive":
        # Lowercasing can expose new decompositions (U+0130 -> i + combining dot) and NFKD can
        # expose new cases (mathematical bold A -> A), so strip, lower, strip.
        text = _strip_diacritics(_strip_diacritics(text).lower())
        # Digits and separators are replaced in one numpy pass over the code points; the
        # regex substitutions this replaces were 3/4 of the MinHash signature time.
        if text.isascii():
            points = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
            return _squeeze(points).astype(np.uint8).tobytes().decode("ascii")
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        squeezed = _squeeze(points).astype(np.uint32)
        return squeezed.tobytes().decode("utf-32-le", "surrogatepass")
    raise ValueError(f"unknown normalization {mode!r}; expected one of {', '.join(NORMALIZATIONS)}")


def content_hash(text: str, mode: Normalization = "whitespace") -> bytes:
    """128-bit xxh3 digest of the normalized UTF-8 text.

    128 bits keep the chance of any collision negligible at corpus scale (about 1e-20 for 1e9
    documents), where 64 bits would give about 3% at 1e9.
    """
    return xxhash.xxh3_128_digest(normalize(text, mode).encode("utf-8", "surrogatepass"))


def content_hashes(texts: Iterable[str], mode: Normalization = "whitespace") -> list[bytes]:
    """`content_hash` of each text, in order."""
    return [content_hash(t, mode) for t in texts]
