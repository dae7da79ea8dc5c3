from hypothesis import given
from hypothesis import strategies as st

from filters.text import content_hash, content_hashes, normalize


def test_whitespace_mode_collapses_runs_and_strips():
    assert normalize("  a\t b\n\nc  ", "whitespace") == "a b c"


def test_whitespace_mode_composes_unicode():
    decomposed = "cafe\u0301"
    assert normalize(decomposed, "whitespace") == "caf\u00e9"


def test_whitespace_mode_keeps_case_and_punctuation():
    assert normalize("Hello, World!", "whitespace") == "Hello, World!"


def test_none_mode_is_identity():
    assert normalize(" a  b ", "none") == " a  b "


def test_aggressive_mode_follows_methods_section_8():
    assert normalize("Crème Brûlée costs $12.50, in 2024!", "aggressive") == "creme brulee costs 0 0 in 0"
    assert normalize("snake_case-and/slashes", "aggressive") == "snake case and slashes"


def test_unknown_mode_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="unknown normalization"):
        normalize("x", "lower")  # type: ignore[arg-type]


def test_hash_is_128_bits_and_stable():
    digest = content_hash("hello world")
    assert len(digest) == 16
    assert digest == content_hash("hello   world\n")
    assert digest != content_hash("hello world!")
    assert content_hashes(["a", "b"]) == [content_hash("a"), content_hash("b")]


@given(st.text())
def test_normalization_is_idempotent(text):
    for mode in ("none", "whitespace", "aggressive"):
        once = normalize(text, mode)
        assert normalize(once, mode) == once


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1), min_size=1),
       st.sampled_from([" ", "  ", "\t", "\n", " \n "]))
def test_hash_ignores_how_words_are_spaced(words, sep):
    words = [w for w in (" ".join(x.split()) for x in words) if w]
    assert content_hash(" ".join(words)) == content_hash(sep.join(words) + sep)


def _strip_by_definition(text):
    """filters/text.py's definition of stripping diacritics, written here independently of it:
    NFKD, then drop every code point whose canonical combining class is not 0 (no recomposition)."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.combining(c) == 0)


def test_strip_by_definition_on_known_cases():
    assert _strip_by_definition("Cr\u00e8me br\u00fbl\u00e9e") == "Creme brulee"
    assert _strip_by_definition("Cre\u0300me") == "Creme"          # already decomposed
    assert _strip_by_definition("\ufb01 \u00b2 \u2460") == "fi 2 1"  # compatibility forms (the K)
    assert _strip_by_definition("\u0130") == "I"                    # dotted capital I


def test_strip_diacritics_follows_its_definition_on_every_code_point():
    from filters.text import _strip_diacritics

    every = "".join(map(chr, range(0x110000)))
    assert _strip_diacritics(every) == _strip_by_definition(every)
    # non-ASCII with marks, and without any (compatibility forms still decompose: \ufb01 -> fi)
    for text in ("plain ascii", "", "e\u0301", "\u00e9t\u00e9 \u1e9b\u0323 \u01c5 \ud55c\uad6d\uc5b4 \u0915\u093f \u0e01\u0e34",
                 "\ufb01", "\u00b2\u00b3 \uff21\u2460", "\u65e5\u672c \u0416"):
        assert _strip_diacritics(text) == _strip_by_definition(text), text


def _aggressive_by_regex(text):
    """The aggressive mode written the slow, obvious way: what the numpy pass must reproduce. The
    diacritics are stripped by `_strip_by_definition`, not by the code under test."""
    import re

    text = _strip_by_definition(_strip_by_definition(text).lower())
    text = re.sub(r"[^\w\s]|_", " ", re.sub(r"\d+", "0", text))
    return " ".join(text.split())


@given(st.text())
def test_aggressive_mode_equals_the_regex_definition(text):
    assert normalize(text, "aggressive") == _aggressive_by_regex(text)


def test_aggressive_mode_equals_the_regex_definition_on_every_code_point():
    every = "".join(map(chr, range(0x110000)))
    for text in (every, every[::-1], "x١٢y ３４ ǅ İ ﬁ ²³ \u2028\u00a0 \x1c a_b 日本", "", "  ", "_"):
        assert normalize(text, "aggressive") == _aggressive_by_regex(text)
