"""PreSelect (filters/preselect.py, flows/preselect.py): predictive strength, labels, the fastText
settings, the flow from reference LMs, and [[train]] entries of kind lm and preselect."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, ScorerError, WinnowError
from filters.base import ScorerSpec, load_scorer
from filters.preselect import (NEG, POS, PreselectScorer, PreselectTrainParams, concordant_pairs, pairs,
                               pick_labels, predictive_strength, to_line)

from .conftest import DATA, read_zst_jsonl
from .test_lm_scorers import _lm, tokenizer_json  # noqa: F401  (a fixture)

REF = DATA / "reference" / "hq.jsonl.zst"


def test_predictive_strength_on_hand_computed_cases():
    # rows: models from the least to the most able; columns: documents
    # N = 2: one pair; the weaker model's loss must be the higher one
    assert predictive_strength([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]).tolist() == [1.0, 0.0, 0.0]  # last: a tie
    # N = 3 (Z = 3): perfect order, reversed order, all tied, one pair tied
    losses = np.array([[3.0, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 1.0]])
    assert concordant_pairs(losses).tolist() == [3, 0, 0, 2]
    # N = 6 (Z = 15, the paper's family): decreasing losses give 15; one swap of neighbours 14;
    # reversed 0; a pair of equal losses is not counted (14 of 15)
    perfect = np.arange(6, 0, -1, dtype=float)
    swapped = perfect.copy()
    swapped[[2, 3]] = swapped[[3, 2]]
    tied = perfect.copy()
    tied[3] = tied[2]
    cols = np.stack([perfect, swapped, perfect[::-1], tied], axis=1)
    assert pairs(6) == 15
    assert concordant_pairs(cols).tolist() == [15, 14, 0, 14]
    assert predictive_strength(cols)[0] == 1.0 and predictive_strength(cols)[1] == pytest.approx(14 / 15)
    with pytest.raises(ValueError):
        concordant_pairs([[1.0, 2.0]])


def test_labels_are_all_perfect_documents_and_as_many_from_the_bottom():
    counts = np.array([3, 0, 2, 3, 1, 0, 3, 0])
    pos, neg = pick_labels(counts, n_models=3)
    assert pos.tolist() == [0, 3, 6]
    assert neg.tolist() == [1, 5, 7]           # the three zeros, in index order
    # a tiebreak orders documents of equal count; the bottom is filled before moving up
    pos, neg = pick_labels(np.array([3, 3, 3, 0, 1, 1, 2]), 3, tiebreak=np.array([0, 0, 0, 0, 9, 1, 0]))
    assert neg.tolist() == [3, 5, 4]


def test_fasttext_has_the_papers_settings_and_a_zero_eos(tmp_path):
    texts = [r["text"] for r in read_zst_jsonl(REF)]
    scorer = PreselectScorer.train(texts[:200], texts[200:400], PreselectTrainParams(threads=1))
    facts = scorer.describe()
    assert (facts["lr"], facts["dim"], facts["epoch"], facts["word_ngrams"], facts["minn"], facts["maxn"]) == \
        (0.1, 100, 5, 2, 0, 0)
    assert facts["eos_norm"] == 0.0 and facts["labels"] == sorted([POS, NEG])
    scorer.save(tmp_path / "ps.bin")
    again = load_scorer(ScorerSpec("preselect", str(tmp_path / "ps.bin")))
    assert again.eos_norm() == 0.0
    np.testing.assert_allclose(again.score(texts[:20]), scorer.score(texts[:20]))
    kept = PreselectScorer.train(texts[:200], texts[200:400], PreselectTrainParams(threads=1, zero_eos=False))
    assert kept.eos_norm() > 0
    assert to_line("a\nb\r\nc") == "a b c"
    with pytest.raises(ScorerError, match="needs a model file"):
        load_scorer(ScorerSpec("preselect"))


def test_preselect_through_spark_equals_the_scorer_called_directly(ctx, tmp_path):
    from pipelines import score
    from pipelines.score import ScoreParams

    texts = [r["text"] for r in read_zst_jsonl(REF)][:400]
    PreselectScorer.train(texts[:200], texts[200:400], PreselectTrainParams(threads=1)).save(tmp_path / "ps.bin")
    df = ctx.spark.createDataFrame([(f"d{i}", t) for i, t in enumerate(texts)], "id string, text string")
    rows = score.apply(df.repartition(2), ScoreParams(scorers=({"kind": "preselect", "model": str(tmp_path / "ps.bin")},)),
                       ctx).kept.collect()
    direct = load_scorer(ScorerSpec("preselect", str(tmp_path / "ps.bin"))).score(texts)
    got = {r["id"]: r["score_preselect"] for r in rows}
    np.testing.assert_allclose([got[f"d{i}"] for i in range(len(texts))], direct, rtol=1e-6)


def test_the_flow_labels_seed_documents_by_concordance(spark, tmp_path, tokenizer_json):  # noqa: F811
    from flows.preselect import PreselectSpec, train_preselect

    models = tuple(str(_lm(tmp_path, tokenizer_json, context=64, seed=s, name=f"m{s}")) for s in range(3))
    seeds = tmp_path / "seeds.jsonl"   # short documents: the test is about the labels, not the LMs
    seeds.write_text("".join(json.dumps({"id": r["id"], "text": r["text"][:300]}) + "\n" for r in read_zst_jsonl(REF)))
    spec = PreselectSpec(output=str(tmp_path / "preselect.bin"), seed_docs=(str(seeds),), models=models,
                         abilities=(1.0, 3.0, 2.0), max_docs=300, heldout_fraction=0.2,
                         params=PreselectTrainParams(threads=1))
    report = train_preselect(spark, spec, log=lambda *_: None)
    # ordered from the least to the most able: m0 (1.0), m2 (2.0), m1 (3.0)
    assert [Path(m["path"]).name for m in report["models"]] == ["m0", "m2", "m1"]
    labels = report["labels"]
    hist = report["strength_histogram"]
    assert labels["perfect"] == hist["3/3"] > 0
    assert labels["positives"] == labels["negatives"] == min(hist["3/3"], hist["0/3"] + hist["1/3"] + hist["2/3"])
    assert sum(report["strength_histogram"].values()) == report["seed_documents"] == 300
    assert sum(labels["trained"].values()) + sum(labels["heldout"].values()) == 2 * labels["positives"]
    saved = json.loads((tmp_path / "preselect.bin.json").read_text())
    assert saved["models"] == report["models"] and saved["model"]["eos_norm"] == 0.0
    assert load_scorer(ScorerSpec("preselect", str(tmp_path / "preselect.bin"))).score(["some text"]).shape == (1,)
    # the positives really are the documents whose losses fall as ability rises
    from filters.lm import document_nats, load_lm

    texts = [r["text"][:300] for r in read_zst_jsonl(REF)][:40]
    losses = np.stack([document_nats(load_lm(models[i]), texts)[0] / np.array([len(t) for t in texts])
                       for i in (0, 2, 1)])
    perfect = [t for t, c in zip(texts, concordant_pairs(losses)) if c == 3]
    assert perfect, "some of the first 40 documents rank the models"
    # two models of the same ability cannot be ordered
    with pytest.raises(WinnowError, match="same ability"):
        train_preselect(spark, PreselectSpec(output=str(tmp_path / "x.bin"), seed_docs=(str(seeds),), models=models,
                                             abilities=(1.0, 1.0, 2.0)), log=lambda *_: None)


def test_a_trained_family_grows_its_budgets_and_seeds_each_model(spark, tmp_path, tokenizer_json,  # noqa: F811
                                                                  monkeypatch):
    """--train-models: budgets lm_tokens * lm_growth**k, seeds seed + k, model 0's data reused,
    fold 0 trained and fold 1 the seed set (the LM training itself is `winnow train-lm`'s, tested
    in tests/test_lm_scorers.py: here a random tiny LM stands in for each model)."""
    import flows.train_lm
    from flows.preselect import PreselectSpec, train_preselect

    calls = []

    def fake_train_lm(spark, spec, log=print, data_from=None):
        calls.append((spec.tokens, spec.seed, spec.fold, data_from))
        out = Path(spec.output)
        _lm(out.parent, tokenizer_json, context=64, seed=spec.seed, name=out.name)
        (out / "lm.json").write_text(json.dumps({"inputs": list(spec.inputs), "settings": {"fold": spec.fold}}))
        return {}

    monkeypatch.setattr(flows.train_lm, "train_lm", fake_train_lm)
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "text": r["text"][:300]}) + "\n" for r in read_zst_jsonl(REF)))
    spec = PreselectSpec(output=str(tmp_path / "ps.bin"), train_models=3, lm_data=(str(data),), lm_tokens=10_000,
                         lm_growth=1.5, abilities=(1.0, 2.0, 3.0), max_docs=200, seed=7, stride=32,
                         params=PreselectTrainParams(threads=1))
    report = train_preselect(spark, spec, log=lambda *_: None)
    m0 = str(tmp_path / "ps.bin.models" / "m0")
    assert calls == [(10_000, 7, "0/2", None), (15_000, 8, "0/2", m0), (22_500, 9, "0/2", m0)]
    assert report["seed_fold"] == 1 and report["stride"] == 32
    assert report["family"] == {"trained": 3, "lm_tokens": 10_000, "lm_growth": 1.5, "lm_size": "tiny"}
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    from filters.perplexity import fold_of

    assert report["seed_documents"] == min(200, sum(fold_of(t) == 1 for t in texts if t.strip()))
    with pytest.raises(ConfigError, match="lm_growth"):
        PreselectSpec(output="x", train_models=3, lm_data=("y",), lm_growth=1.0)


def test_a_model_trained_on_the_seed_documents_is_refused(spark, tmp_path, tokenizer_json):  # noqa: F811
    from flows.preselect import PreselectSpec, train_preselect

    models = tuple(str(_lm(tmp_path, tokenizer_json, seed=s, name=f"m{s}")) for s in range(2))
    (Path(models[0]) / "lm.json").write_text(json.dumps({"inputs": [str(REF)], "settings": {"fold": None}}))
    with pytest.raises(ConfigError, match="disjoint"):  # trained on the whole seed file
        train_preselect(spark, PreselectSpec(output=str(tmp_path / "x.bin"), seed_docs=(str(REF),), models=models,
                                             abilities=(1.0, 2.0)), log=lambda *_: None)
    from flows.preselect import _seed_fold

    for m, fold in zip(models, ("0/2", "0/2")):
        (Path(m) / "lm.json").write_text(json.dumps({"inputs": [str(REF)], "settings": {"fold": fold}}))
    assert _seed_fold(list(models), (str(REF),)) == 1      # trained on fold 0: the seed set is fold 1
    (Path(models[1]) / "lm.json").write_text(json.dumps({"inputs": [str(REF)], "settings": {"fold": "1/2"}}))
    with pytest.raises(ConfigError, match="different folds"):
        _seed_fold(list(models), (str(REF),))
    assert _seed_fold(list(models), ("/elsewhere.jsonl",)) is None
    with pytest.raises(ConfigError, match="at least 2"):
        PreselectSpec(output="x", seed_docs=("y",), models=("a",))
    with pytest.raises(ConfigError, match="--lm-data"):
        PreselectSpec(output="x", train_models=5)


def test_train_entries_of_kind_lm_and_preselect(tmp_path):
    from flows.config import parse_config, train_specs
    from flows.preselect import PreselectSpec
    from flows.train_lm import LmSpec

    raw = {"output": str(tmp_path / "out"), "inputs": [{"path": str(REF), "source": "hq"}],
           "train": [{"kind": "lm", "output": "{output}/lms/ref", "inputs": [str(REF)],
                      "params": {"tokens": 100_000, "size": "tiny", "fold": "0/2"}},
                     {"kind": "preselect", "output": "{output}/models/preselect.bin", "train_models": 5,
                      "lm_data": "inputs", "params": {"threads": 1, "lm_tokens": 20_000, "lm_growth": 1.3,
                                                      "ability_data": "ability.jsonl", "stride": 128}},
                     {"kind": "preselect", "output": "{output}/models/p2.bin", "models": ["{output}/lms/ref", "/x/b"],
                      "seed_docs": "inputs"}]}
    cfg = parse_config(raw, tmp_path, "test")
    lm, family, given = train_specs(cfg)
    assert isinstance(lm, LmSpec) and lm.output == str(tmp_path / "out" / "lms" / "ref") and lm.fold == "0/2"
    assert isinstance(family, PreselectSpec) and family.train_models == 5 and family.lm_data == (str(REF),)
    assert family.params.threads == 1 and (family.lm_tokens, family.lm_growth, family.stride) == (20_000, 1.3, 128)
    assert family.ability_data == str(tmp_path / "ability.jsonl")    # resolved against the config's folder
    assert given.models == (str(tmp_path / "out" / "lms" / "ref"), "/x/b") and given.seed_docs == (str(REF),)
    bad = {**raw, "train": [{"kind": "lm", "output": "x", "params": {"tokens": 10, "size": "tiny"}}]}
    with pytest.raises(ConfigError, match="below one batch"):
        parse_config(bad, tmp_path, "test")
    bad = {**raw, "train": [{"kind": "dclm", "output": "x"}]}
    with pytest.raises(ConfigError, match="needs positives"):
        parse_config(bad, tmp_path, "test")
