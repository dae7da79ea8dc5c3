"""Text normalization and content hashing: pure functions over strings, no Spark.

`normalize` has three modes:

- ``none``        the text as given;
- ``whitespace``  Unicode NFC, runs of whitespace collapsed to one space, ends stripped (the
                  default for exact dedup: re-flowed or re-indented copies count as the same text);
- ``aggressive``  the MinHash normalization of METHODS.md §8: lowercase, diacritics stripped after
                  NFKD, every digit run becomes ``0``, punctuation and symbols become spaces, then
                  whitespace collapsed.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Literal

import numpy as np
import xxhash

Normalization = Literal["none", "whitespace", "aggressive"]
NORMALIZATIONS: tuple[str, ...] = ("none", "whitespace", "aggressive")

_DIGITS = re.compile(r"\d+")
# \w keeps letters, digits and underscore; everything else that is not space is punctuation or a
# symbol. Underscore is punctuation too.
_NON_WORD = re.compile(r"[^\w\s]|_")


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
        text = _DIGITS.sub("0", text)
        text = _NON_WORD.sub(" ", text)
        return " ".join(text.split())
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
