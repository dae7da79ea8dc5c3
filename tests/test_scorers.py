"""The scorer framework, DCLM and langid, without Spark."""
from __future__ import annotations


import numpy as np
import pytest

from core.errors import ScorerError
from filters.base import ScorerSpec, load_scorer
from filters.dclm import HQ, BigramCounter, DclmScorer, DclmTrainParams, roc_auc, to_line
from filters.langid import LangIdScorer

from .conftest import DATA, read_zst_jsonl



def test_dclm_ranks_heldout_reference_text_above_the_pool(dclm_model):
    heldout = read_zst_jsonl(DATA / "eval" / "heldout.jsonl.zst")
    scorer = DclmScorer.load(dclm_model)
    scores = scorer.score([r["text"] for r in heldout])
    positive = np.array([r["domain"] == "hq" for r in heldout])
    auc = roc_auc(scores, positive)
    assert positive.sum() == 150 and (~positive).sum() == 600
    assert auc > 0.85, auc  # chance is 0.5


def test_dclm_scores_are_p_hq_with_the_label_flip(dclm_model):
    scorer = DclmScorer.load(dclm_model)
    texts = ["How do I sort a list in Python?\n\nAnswer: use sorted().", "%%%% ~~ lol", ""]
    scores = scorer.score(texts)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    labels, probs = scorer.model.predict([to_line(t) for t in texts], k=2)
    for s, labs, ps in zip(scores, labels, probs):
        p_hq = dict(zip(labs, ps))[HQ]
        assert s == pytest.approx(min(p_hq, 1.0), abs=1e-4)
    assert 0.0 <= scores.min() and scores.max() <= 1.0


def test_dclm_text_to_line_is_dclms():
    assert to_line("  a\nb\r\nc  \n") == "a b c"
    assert "\n" not in to_line("x\u2028y\n\nz")


def test_bucket_is_sized_from_distinct_bigrams():
    c = BigramCounter()
    assert c.bucket() == 1 << 18  # the floor
    for i in range(300_000):
        c.add(f"w{i} v{i}")
    assert c.bucket() == 1 << 18  # 300k bigrams / 4 per row -> 75k -> 131,072, raised to the floor
    for i in range(300_000, 1_200_000):
        c.add(f"w{i} v{i}")
    assert c.bucket() == 1 << 19  # 1.2M bigrams / 4 per row -> 300k -> 524,288
    small = BigramCounter(cap=10)
    small.add(" ".join(str(i) for i in range(100)))
    assert small.full


def test_missing_corrupt_and_wrongly_labelled_models_are_one_line_errors(tmp_path):
    with pytest.raises(ScorerError, match="model file not found"):
        DclmScorer.load(tmp_path / "nope.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ScorerError, match="not a fastText model"):
        DclmScorer.load(bad)
    import fasttext

    from build_minhash_truth import pool_documents

    # Real text under other labels (tiny synthetic sets, or the default step, made this build diverge).
    texts = [t for _, t in pool_documents() if t and t.strip()][:1500]
    train = tmp_path / "t.txt"
    train.write_text("".join(f"__label__{'good' if i % 2 else 'bad'} {to_line(t)}\n" for i, t in enumerate(texts)))
    other = fasttext.train_supervised(input=str(train), epoch=1, lr=0.01, wordNgrams=2, bucket=1 << 14,
                                     thread=1, verbose=0)  # a small step: the labels matter here, not the fit
    other_path = tmp_path / "other.bin"
    other.save_model(str(other_path))
    with pytest.raises(ScorerError, match=r"trained with labels \['__label__bad', '__label__good'\]"):
        DclmScorer.load(other_path)
    with pytest.raises(ScorerError, match="unknown scorer 'qualiti'"):
        load_scorer(ScorerSpec(kind="qualiti"))
    with pytest.raises(ScorerError, match="needs a model file"):
        load_scorer(ScorerSpec(kind="dclm"))


def test_training_needs_both_labels(tmp_path):
    with pytest.raises(ScorerError, match="no __label__cc examples"):
        DclmScorer.train(["some words here"] * 5, [], DclmTrainParams(threads=1, bucket=1 << 10))
    with pytest.raises(ScorerError, match="epoch must be >= 1"):
        DclmTrainParams(epoch=0)


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.random(200).round(1)  # with ties
    y = rng.random(200) < 0.3
    pairs = [(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]]
    assert roc_auc(s, y) == pytest.approx(np.mean(pairs))
    assert np.isnan(roc_auc(s, np.zeros(200, bool)))


def test_langid_gives_the_probability_of_the_configured_language():
    en = LangIdScorer()
    texts = ["The quick brown fox jumps over the lazy dog and runs into the forest.",
             "Le renard brun rapide saute par-dessus le chien paresseux.", "", "\n\n"]
    s = en.score(texts)
    assert s.dtype == np.float32 and s[0] > 0.8 and s[1] < 0.1
    fr = load_scorer(ScorerSpec.parse("langid=fr"))
    assert fr.score(texts[:2])[1] > 0.8
    with pytest.raises(ScorerError, match="not one of the model's"):
        LangIdScorer("klingon")


def test_langid_deletes_newlines_as_dclm_does():
    s = LangIdScorer()
    assert s.score(["hello\nworld"])[0] == s.score(["helloworld"])[0]


def test_scorer_specs_parse_and_save_load(tmp_path):
    assert ScorerSpec.parse("dclm=/m.bin") == ScorerSpec(kind="dclm", model="/m.bin")
    assert ScorerSpec.parse("best:dclm=/m.bin").column == "score_best"
    assert ScorerSpec.parse("heuristics").column == "score_heuristics"
    with pytest.raises(ScorerError):
        ScorerSpec.parse("=x")
    # options after the model: a comma before `key=` starts one; other commas stay in the path
    assert ScorerSpec.parse("cc:perplexity=/m,1/en.arpa.bin,sp_model=/m/en.sp.model,unit=ccnet,stride=128") == \
        ScorerSpec(kind="perplexity", model="/m,1/en.arpa.bin", name="cc",
                   options={"sp_model": "/m/en.sp.model", "unit": "ccnet", "stride": 128})
    with pytest.raises(ScorerError, match="given twice or reserved"):
        ScorerSpec.parse("dclm=/m.bin,name=x")
    LangIdScorer("de").save(tmp_path / "lid.json")
    assert load_scorer(ScorerSpec(kind="langid", model=str(tmp_path / "lid.json"))).language == "de"
    (tmp_path / "wrong.json").write_text('{"kind": "heuristics"}')
    with pytest.raises(ScorerError, match="of kind 'heuristics', not 'langid'"):
        LangIdScorer.load(tmp_path / "wrong.json")


def test_a_scorer_name_is_a_column_name_not_a_path():
    from core.errors import ScorerError

    for bad in ("../../x", "a/b", "a.b", "", "x" * 65):
        with pytest.raises(ScorerError, match="letters, digits and _"):
            ScorerSpec.parse(f"{bad}:dclm=/m.bin") if bad else ScorerSpec(kind="dclm", name=bad)
    assert ScorerSpec.parse("my_dclm2:dclm=/m.bin").column == "score_my_dclm2"
