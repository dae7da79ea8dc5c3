"""The MinHash kernel on plain strings: shingles, signatures, banding."""
import numpy as np
import pytest

from pipelines import minhash_kernel as mk


def words(n, seed=0):
    rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=5)) for _ in range(3000)]
    return [vocab[i] for i in rng.integers(0, len(vocab), size=n)]


def test_tokens_follow_the_aggressive_normalization():
    assert mk.tokens("Héllo, WORLD!  It's 2024-11-23.") == ["hello", "world", "it", "s", "0", "0", "0"]


def test_scripts_without_spaces_shingle_on_characters():
    assert mk.tokens("数据清洗很重要") == list("数据清洗很重要")
    assert mk.tokens("ภาษาไทย ok") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย", "ok"]
    assert len(mk.shingle_hashes("数据清洗很重要", 5)) == 3


def test_a_document_shorter_than_n_is_one_shingle_and_order_matters():
    assert len(mk.shingle_hashes("just three words", 5)) == 1
    assert not np.array_equal(mk.shingle_set("one two three"), mk.shingle_set("three two one"))
    assert len(mk.shingle_hashes("a b c d e f", 5)) == 2


def test_empty_and_punctuation_only_documents_share_the_empty_shingle():
    empty = mk.shingle_set("")
    assert len(empty) == 1
    assert np.array_equal(mk.shingle_set("   \n\t"), empty) and np.array_equal(mk.shingle_set("!!! ... ---"), empty)
    assert not np.array_equal(mk.shingle_set("word"), empty)


def test_exact_jaccard():
    a = " ".join(words(100))
    assert mk.jaccard(mk.shingle_set(a), mk.shingle_set(a)) == 1.0
    assert mk.jaccard(np.array([1, 2, 3], np.uint64), np.array([2, 3, 4], np.uint64)) == 0.5
    assert mk.jaccard(np.zeros(0, np.uint64), np.zeros(0, np.uint64)) == 1.0
    b = " ".join(words(100, seed=5)[:60] + words(100)[60:])
    sa, sb = mk.shingle_set(a), mk.shingle_set(b)
    as_sets = len(set(sa.tolist()) & set(sb.tolist())) / len(set(sa.tolist()) | set(sb.tolist()))
    assert mk.jaccard(sa, sb) == as_sets  # the same number as Python's set arithmetic


def test_signatures_are_deterministic_and_independent_of_the_block_size():
    texts = [" ".join(words(n, seed=n)) for n in (0, 1, 4, 5, 50, 3000)]
    sig = mk.signatures(texts, num_perm=64)
    assert sig.dtype == np.uint32 and sig.shape == (6, 64)
    assert np.array_equal(sig, mk.signatures(texts, num_perm=64))
    shingles = [mk.shingle_hashes(t) for t in texts]
    for block in (1, 7, 1000):
        assert np.array_equal(sig, mk.signatures_of_shingles(shingles, mk.permutations(64, 1), block=block))
    # one document alone gets the same signature as inside a batch
    assert np.array_equal(sig[4], mk.signatures([texts[4]], num_perm=64)[0])
    assert not np.array_equal(sig, mk.signatures(texts, num_perm=64, seed=2))


def test_signature_agreement_estimates_jaccard_without_bias():
    rng = np.random.default_rng(7)
    errors = []
    for trial in range(200):
        base = words(300, seed=trial)
        other = list(base)
        for i in rng.integers(0, 300, size=int(rng.integers(0, 40))):
            other[i] = "zz" + base[i]
        a, b = " ".join(base), " ".join(other)
        truth = mk.jaccard(mk.shingle_set(a), mk.shingle_set(b))
        sig = mk.signatures([a, b], num_perm=256)
        errors.append(mk.estimated_jaccard(sig[0], sig[1]) - truth)
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.006          # unbiased: standard error of the mean is ~0.002
    assert errors.std() < 0.035               # sqrt(J(1-J)/256) <= 0.031


def test_a_10_mb_document_gets_a_signature_and_its_edited_copy_matches():
    text = " ".join(words(1_700_000, seed=3))
    assert len(text) > 10_000_000
    edited = text.replace(text[5_000_000:5_000_100], "an edit in the middle", 1)
    sig = mk.signatures([text, edited], num_perm=128)
    assert mk.estimated_jaccard(sig[0], sig[1]) > 0.95


def test_banding_reproduces_text_dedup_and_the_formula():
    # text-dedup's configs/minhash.toml: threshold 0.7, 240 permutations -> (24, 10)
    assert mk.optimal_bands(0.7, 240) == (24, 10)
    b, r = mk.optimal_bands(0.8, 256, fp_weight=0.05, fn_weight=0.95)
    assert b * r <= 256
    assert mk.collision_probability(0.8, b, r) > 0.9
    assert mk.collision_probability(0.8, 14, 8) == pytest.approx(1 - (1 - 0.8 ** 8) ** 14)
    assert mk.midpoint(14, 8) == pytest.approx((1 / 14) ** (1 / 8))
    with pytest.raises(ValueError):
        mk.optimal_bands(1.0, 128)
