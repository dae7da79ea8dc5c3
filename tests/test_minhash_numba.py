"""The compiled MinHash kernel gives the numpy reference's signatures and shingle sets, bit for bit."""
import os

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import minhash_kernel as mk
from pipelines import minhash_numba as mn

pytestmark = pytest.mark.skipif(not mn.AVAILABLE, reason="numba is not installed")

# Text that exercises every branch: ASCII words and digits, punctuation runs, accents and marks
# (NFKD), case changes that expand (U+0130), final sigma, ligatures, scripts without spaces,
# characters outside the BMP, lone surrogates and control characters.
ALPHABET = st.sampled_from(
    list("aZ09 .,;-_\t\n'\"") + ["é", "É", "ñ", "ǅ", "ﬁ", "İ", "Σ", "σ", "ς", "ß", "\u0301", "\u0345",
                                 "\U0001D165", "中", "文", "ก", "ໄ", "あ", "カ", "\u30fb", "٣", "𝐀", "😀",
                                 "\ud800", "\x00", "\u00a0", "\u2028", "“", "Ⅻ"]
)
TEXTS = st.lists(st.text(alphabet=ALPHABET, max_size=80), min_size=1, max_size=8)


def test_xxh3_matches_the_library_at_every_short_length():
    buf = np.frombuffer(os.urandom(256), dtype=np.uint8).copy()
    for n in range(mn.LONG_TOKEN + 1):
        assert mn.xxh3_64_short(buf, n, mn._SECRET) == xxhash.xxh3_64_intdigest(buf[:n].tobytes()), n


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.integers(1, 6))
def test_hypothesis_texts_give_the_reference_signatures_and_shingle_sets(texts, ngram):
    assert np.array_equal(mn.signatures(texts, 64, ngram, 7), mk.signatures(texts, 64, ngram, 7))
    for got, text in zip(mn.shingle_sets(texts, ngram), texts):
        assert np.array_equal(got, mk.shingle_set(text, ngram))
    hashed = mn.Hashed(texts, ngram)
    assert np.array_equal(hashed.signatures(64, 7), mk.signatures(texts, 64, ngram, 7))
    need = np.arange(len(texts))[::-1]  # any order of documents
    sets = hashed.sets(need)
    a, b = np.meshgrid(np.arange(len(texts)), np.arange(len(texts)))
    want = [mk.jaccard(mk.shingle_set(texts[need[x]], ngram), mk.shingle_set(texts[need[y]], ngram))
            for x, y in zip(a.ravel(), b.ravel())]
    assert mn.pair_jaccard(sets, a.ravel(), b.ravel()).tolist() == want


@pytest.mark.parametrize("token", ["x" * 241, "7" * 5 + "é" * 130 + "12" * 90, "中" + "ab1" * 100 + "中"])
def test_tokens_past_240_bytes_hash_through_the_library(token):
    texts = [f"start {token} end", token, "short " * 3]
    th, off = mn.token_hashes(texts)
    for d, text in enumerate(texts):
        assert np.array_equal(th[off[d]:off[d + 1]], mk.token_hashes(mk.tokens(text))), text
    assert np.array_equal(mn.signatures(texts, 256, 5, 1), mk.signatures(texts, 256, 5, 1))


def test_the_sample_pool_gives_the_reference_signatures():
    from build_minhash_truth import pool_documents  # data/ is on sys.path (tests/conftest.py)

    texts = [t or "" for _, t in pool_documents()]
    assert np.array_equal(mn.signatures(texts, 256, 5, 1), mk.signatures(texts, 256, 5, 1))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 8), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_band_keys_match_the_reference_and_separate_bands(n, n_bands, rows, seed):
    rng = np.random.default_rng(seed)
    sigs = rng.integers(0, 2**32, size=(n, 64), dtype=np.uint64).astype(np.uint32)
    positions = np.stack([rng.permutation(64)[:rows] for _ in range(n_bands)])
    keys = mn.band_keys(sigs, positions)
    assert np.array_equal(keys, mk.band_keys(sigs, positions))
    # documents equal on a band's values share its key; the same values in another band do not
    same = sigs.copy()
    same[:, positions[0]] = sigs[0, positions[0]]
    k = mk.band_keys(same, positions)
    assert (k[:, 0] == k[0, 0]).all()
    if n_bands > 1:
        shifted = positions.copy()
        shifted[1] = positions[0]
        assert mk.band_keys(sigs, shifted)[0, 1] != mk.band_keys(sigs, shifted)[0, 0]
