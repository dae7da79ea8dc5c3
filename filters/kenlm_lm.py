"""KenLM models for the perplexity scorer, as CCNet (Wenzek et al. 2020) scores with them.

CCNet's models are a KenLM 5-gram (``en.arpa.bin``) over SentencePiece pieces (``en.sp.model``)
of normalized text (`../shared/METHODS.md` §3.1). A document is scored as they score it:

1. `normalize`: strip, lowercase, remove accents (NFD, then drop the combining marks), every
   digit to ``0``, unicode punctuation to ASCII (`PUNCT`, Winnow's own table), and delete the
   non-printing characters 0-31 and 127-159. ``\\n`` is one of them, so the whole document
   becomes one line, its lines glued without a separator (as in CCNet).
2. The normalized text as pieces: SentencePiece's when a ``sp_model`` is given, else the
   normalized text split on whitespace (a KenLM model over words).
3. KenLM's log10 probability of the pieces as one sentence, ``<s>`` before and ``</s>`` after,
   so ``n + 1`` predictions for ``n`` pieces.

`KenlmModel.log10` gives per document the summed log10 probability and the piece count; the
perplexity scorer (`filters/perplexity.py`) turns them into bits per byte, per character, or
CCNet's perplexity ``10 ** (-log10 / (pieces + 1))``.

``kenlm`` and ``sentencepiece`` are the ``kenlm`` extra (``pip install 'winnow[kenlm]'``), both
imported only when a model is loaded, so this module imports without them. A model is an ARPA
file (gzipped or not) or a KenLM binary (``build_binary``); `is_kenlm` tells one from a
`winnow train-lm` file by its first bytes. Reading an ARPA file, KenLM prints "Loading the LM
will be faster if you build a binary file." on stderr once per process; its Python package
offers no switch for that line (the progress bar is switched off).

`normalize` is the steps above one after another (`tests/test_kenlm.py` holds it to them on
random text), done in two passes: ASCII text (most documents) in one ``bytes.translate``, other
text NFD and one ``str.translate`` table, then the digits: 5x faster than step by step.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import ScorerError

EXTRA = "install the kenlm extra: pip install 'winnow[kenlm]'"
# every KenLM binary begins with "mmap lm http://kheafield.com/code format version <n>\n\0"
# (lm/binary_format.cc); anything else KenLM reads as ARPA text, which begins with "\data\"
BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
ARPA_HEAD = b"\\data\\"
GZIP_MAGIC = b"\x1f\x8b"       # KenLM reads a gzipped ARPA file too
SENTENCE_MARKS = ("<s>", "</s>")  # a piece spelled so would be scored as KenLM's own markers

# Unicode punctuation to ASCII: quotes, dashes, the fullwidth and CJK forms, ellipsis, bullets.
PUNCT = {
    # quotation marks and primes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u2035": "'", "\u2039": "'", "\u203a": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u2036": '"',
    "\u00ab": '"', "\u00bb": '"', "\u300c": '"', "\u300d": '"', "\u300e": '"', "\u300f": '"',
    "\u300a": '"', "\u300b": '"', "\u301d": '"', "\u301e": '"',
    # dashes, hyphens and minus
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2500": "-", "\u2501": "-", "\u30fc": "-", "\ufe58": "-",
    # ellipsis, bullets, arrows used as bullets
    "\u2026": "...", "\u22ef": "...", "\u2022": "-", "\u2023": "-", "\u25cf": "-", "\u25ba": "-",
    # CJK and fullwidth punctuation
    "\u3001": ",", "\u3002": ".", "\uff0c": ",", "\uff0e": ".", "\uff1a": ":", "\u2236": ":",
    "\uff1b": ";", "\uff1f": "?", "\uff01": "!", "\uff08": "(", "\uff09": ")", "\uff3b": "[",
    "\uff3d": "]", "\uff5b": "{", "\uff5d": "}", "\u3010": "[", "\u3011": "]", "\u3008": "<",
    "\u3009": ">", "\uff1c": "<", "\uff1e": ">", "\uff05": "%", "\uff03": "#", "\uff06": "&",
    "\uff0a": "*", "\uff0b": "+", "\uff0f": "/", "\uff3c": "\\", "\uff1d": "=", "\uff5e": "~",
    "\u301c": "~", "\uff3f": "_", "\uff02": '"', "\uff07": "'", "\uff20": "@", "\uff04": "$",
    "\uff3e": "^", "\uff5c": "|", "\uff0d": "-",
}
_NON_PRINTING = (*range(0, 32), *range(127, 160))
_DIGIT = re.compile(r"\d")
# ASCII text (most of it): digits to 0 and 0-31, 127 deleted in one bytes.translate
_ASCII_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_ASCII_DELETE = bytes(range(32)) + b"\x7f"


@functools.cache
def _unicode_table() -> dict[int, str | None]:
    """Every step after NFD but the digits maps one character to at most one string, and none
    makes a character another step maps, so they are one str.translate table: combining marks
    (category Mn) and non-printing characters deleted, punctuation to ASCII. Built once per
    process (a scan of the code points, about 0.15 s)."""
    table: dict[int, str | None] = {cp: None for cp in range(0x300, 0x110000)
                                    if unicodedata.category(chr(cp)) == "Mn"}
    table.update({ord(k): v for k, v in PUNCT.items()})
    table.update(dict.fromkeys(_NON_PRINTING))
    return table


def normalize(text: str) -> str:
    """CCNet's normalization of a document (METHODS §3.1): strip, lowercase, no accents (NFD,
    then no combining marks), digits to 0, unicode punctuation to ASCII, no non-printing
    characters 0-31 and 127-159 (so no newlines)."""
    text = (text or "").strip().lower()
    if text.isascii():   # NFD changes nothing, and there is no mark, unicode digit or punctuation
        return text.encode("ascii").translate(_ASCII_DIGITS, _ASCII_DELETE).decode("ascii")
    text = unicodedata.normalize("NFD", text).translate(_unicode_table())
    return _DIGIT.sub("0", text)


def is_kenlm(path: str | Path) -> bool:
    """True when `path` is a file that KenLM reads: a binary (its magic) or an ARPA file (its
    ``\\data\\`` header, after any blank lines). A directory or a torch file is not."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
        if head.startswith(GZIP_MAGIC):
            import gzip

            with gzip.open(p, "rb") as f:
                head = f.read(4096)
    except (OSError, EOFError):
        return False
    return head.startswith(BINARY_MAGIC) or head.lstrip().startswith(ARPA_HEAD)


def _readable(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ScorerError(f"perplexity: {what} not found: {p}")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ScorerError(f"perplexity: cannot read {what} {p} ({exc.strerror or exc})") from None
    return p


class KenlmModel:
    """A KenLM model (ARPA or binary) and, optionally, the SentencePiece model its pieces come
    from. Loading checks both files; every problem is one ScorerError line."""

    def __init__(self, path: str | Path, sp_model: str | Path | None = None):
        p = _readable(path, "KenLM model")
        sp_path = _readable(sp_model, "SentencePiece model") if sp_model is not None else None
        try:
            import kenlm
        except ImportError:
            raise ScorerError(f"perplexity: a KenLM model needs the kenlm package; {EXTRA}") from None
        config = kenlm.Config()
        config.show_progress = False      # no progress bar on stderr in every worker
        try:
            self.model = kenlm.Model(str(p), config)
        except (OSError, RuntimeError, ValueError) as exc:
            msg = " ".join(str(exc).split())[:300]
            raise ScorerError(f"perplexity: {p} is not a KenLM model ({msg})") from None
        self.sp = None
        if sp_path is not None:
            try:
                import sentencepiece as spm
            except ImportError:
                raise ScorerError(f"perplexity: sp_model needs the sentencepiece package; {EXTRA}") from None
            try:
                self.sp = spm.SentencePieceProcessor(model_file=str(sp_path))
            except (OSError, RuntimeError, ValueError) as exc:
                msg = " ".join(str(exc).split())[:300]
                raise ScorerError(f"perplexity: {sp_path} is not a SentencePiece model ({msg})") from None
        self.path, self.sp_path = str(p), (str(sp_path) if sp_path else None)

    @property
    def order(self) -> int:
        return int(self.model.order)

    def pieces(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text normalized and cut into the pieces the model was trained on."""
        normalized = [normalize(t) for t in texts]
        if self.sp is None:
            return [t.split() for t in normalized]
        return self.sp.encode(normalized, out_type=str, num_threads=1)

    def log10(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per document: (summed log10 probability of its pieces and of ``</s>``, number of
        pieces). A document without pieces (empty once normalized) is (NaN, 0): there is
        nothing of it to score. A piece spelled ``<s>`` or ``</s>`` (a word of the text, when
        there is no SentencePiece model) is scored as the unknown word, not as KenLM's marks."""
        pieces = self.pieces(texts)
        total = np.full(len(texts), np.nan, dtype=np.float64)
        count = np.zeros(len(texts), dtype=np.int64)
        score = self.model.score
        for i, ps in enumerate(pieces):
            if ps:
                line = " ".join(ps)
                if "<s>" in line or "</s>" in line:
                    line = " ".join("<unk>" if x in SENTENCE_MARKS else x for x in ps)
                total[i] = score(line, bos=True, eos=True)
                count[i] = len(ps)
        return total, count


def write_bigram_arpa(path: str | Path, sentences, discount: float = 0.5) -> Path:
    """A small bigram backoff model of `sentences` (lists of pieces) in ARPA, for tests and
    benchmarks where KenLM's trainer (``lmplz``, not in the PyPI package) is not at hand:
    absolute discounting, each seen bigram ``(c - discount) / c(v)``, the freed mass given to the
    unigrams (``c / (N + 1)``, one count for ``<unk>``) through normalized backoff weights.
    KenLM reads ARPA models of order 2 and up, not unigrams alone."""
    import math
    from collections import Counter

    uni: Counter = Counter()
    bi: Counter = Counter()
    for pieces in sentences:
        seq = ["<s>", *pieces, "</s>"]
        uni.update(seq[1:])
        bi.update(zip(seq[:-1], seq[1:]))
    total = sum(uni.values()) + 1
    p1 = {w: c / total for w, c in uni.items()}
    p1["<unk>"] = 1 / total
    seen: Counter = Counter()
    types: Counter = Counter()
    after: dict[str, float] = {}
    for (v, w), c in bi.items():
        seen[v] += c
        types[v] += 1
        after[v] = after.get(v, 0.0) + p1[w]
    backoff = {v: discount * types[v] / seen[v] / max(1.0 - after[v], 1e-12) for v in seen}
    vocab = sorted(set(p1) | {"<s>"})
    lines = ["\\data\\", f"ngram 1={len(vocab)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    for w in vocab:
        prob = -99.0 if w == "<s>" else math.log10(p1[w])
        lines.append(f"{prob:.7f}\t{w}\t{math.log10(backoff[w]) if w in backoff else 0.0:.7f}")
    lines += ["", "\\2-grams:"]
    for (v, w), c in sorted(bi.items()):
        lines.append(f"{math.log10((c - discount) / seen[v]):.7f}\t{v} {w}")
    lines += ["", "\\end\\", ""]
    out = Path(path)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
