"""The `score` and `select` stages on Spark, the [[train]] step, and `winnow score` / `train-scorer`."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from core.errors import WinnowError
from filters.dclm import DclmScorer
from filters.heuristics import RULES, HeuristicsScorer
from filters.langid import LangIdScorer
from flows.cli import main as winnow
from pipelines import score, select
from pipelines.score import ScoreParams
from pipelines.select import SelectParams
from pipelines.stage import StageContext

from .conftest import DATA


@pytest.fixture(scope="module")
def scored(spark, pool_docs, dclm_model, tmp_path_factory):
    ctx = StageContext(spark)
    params = ScoreParams(scorers=({"kind": "dclm", "model": str(dclm_model)}, {"kind": "langid"},
                                  {"kind": "heuristics"}))
    result = score.apply(pool_docs.repartition(3), params, ctx)
    path = str(tmp_path_factory.mktemp("scored") / "scored.parquet")
    result.kept.write.parquet(path)
    ctx.release()
    written = spark.read.parquet(path)
    return written, result.finish(written, None)


def test_spark_scores_equal_the_scorers_called_directly(scored, dclm_model):
    df, stats = scored
    rows = df.orderBy("_file", "_row").collect()
    texts = [r["text"] or "" for r in rows]
    assert np.array_equal(np.array([r["score_dclm"] for r in rows], dtype=np.float32), DclmScorer.load(dclm_model).score(texts))
    assert np.array_equal(np.array([r["score_langid"] for r in rows], dtype=np.float32), LangIdScorer().score(texts))
    heuristics = HeuristicsScorer()
    assert np.array_equal(np.array([r["score_heuristics"] for r in rows], dtype=np.float32), heuristics.score(texts))
    table = heuristics.rule_table(texts)
    assert set(table) == set(RULES)
    for rule in RULES:
        assert [r[f"rule_{rule}"] for r in rows] == table[rule].tolist(), rule
    assert stats["scores"] == ["score_dclm", "score_langid", "score_heuristics"]
    hist = stats["score_histograms"]["score_dclm"]
    assert sum(hist["counts"]) == len(rows) and len(hist["edges"]) == 21
    q = stats["score_quantiles"]["score_dclm"]
    assert q["0.1"] <= q["0.5"] <= q["0.9"]


def ordered(df, key):
    rows = df.select("id", key, "_file", "_row", F.length("text").alias("n")).collect()
    return sorted(rows, key=lambda r: (-(r[key] if r[key] is not None else -math.inf), r["_file"], r["_row"]))


def test_top_fraction_keeps_exactly_the_best_documents(scored, spark):
    df, _ = scored
    ctx = StageContext(spark)
    result = select.apply(df, SelectParams(score="score_dclm", top_fraction=0.1), ctx)
    n = df.count()
    want = {r["id"] for r in ordered(df, "score_dclm")[: math.ceil(0.1 * n)]}
    kept = {r["id"] for r in result.kept.select("id").collect()}
    assert kept == want
    removed = result.removed.select("removed_by", "reason").collect()
    assert len(removed) == n - len(kept)
    assert all(r["removed_by"] == "select" and r["reason"].startswith("score_dclm ") for r in removed)
    assert "(top 0.1 of documents)" in removed[0]["reason"]
    ctx.release()


def test_top_char_fraction_stops_at_the_document_that_crosses_the_line(scored, spark):
    df, _ = scored
    ctx = StageContext(spark)
    result = select.apply(df, SelectParams(score="score_langid", top_char_fraction=0.25), ctx)
    rows = ordered(df, "score_langid")
    total = sum(r["n"] or 0 for r in rows)
    run, want = 0, set()
    for r in rows:
        want.add(r["id"])
        run += r["n"] or 0
        if run >= 0.25 * total:
            break
    assert {r["id"] for r in result.kept.select("id").collect()} == want
    ctx.release()


def test_threshold_and_combined_ranks(scored, spark):
    df, _ = scored
    ctx = StageContext(spark)
    result = select.apply(df, SelectParams(score="score_dclm", threshold=0.5), ctx)
    assert result.kept.where(F.col("score_dclm") < 0.5).count() == 0
    assert result.kept.count() == df.where(F.col("score_dclm") >= 0.5).count()
    reason = result.removed.select("reason").first()["reason"]
    assert reason.startswith("score_dclm ") and reason.endswith(" < 0.5")
    both = select.apply(df, SelectParams(score=("score_dclm", "score_langid"), top_fraction=0.2), ctx)
    assert "score_combined" in both.kept.columns
    assert both.kept.count() == math.ceil(0.2 * df.count())
    ranks = both.kept.agg(F.min("score_combined"), F.max("score_combined")).first()
    assert 0.0 <= ranks[0] <= ranks[1] <= 1.0
    ctx.release()


def test_random_fraction_is_exact_seeded_and_independent_of_partitioning(scored, spark):
    df, _ = scored
    ctx = StageContext(spark)
    n = df.count()

    def pick(frame, seed):
        return {r["id"] for r in select.apply(frame, SelectParams(random_fraction=0.1, seed=seed), ctx).kept.select("id").collect()}

    a, b, c = pick(df.repartition(1), 7), pick(df.repartition(5), 7), pick(df, 8)
    assert len(a) == math.ceil(0.1 * n) and a == b and a != c
    ctx.release()


@pytest.mark.parametrize("params, message", [
    (dict(score="score_dclm"), "exactly one of"),
    (dict(score="score_dclm", top_fraction=0.1, threshold=0.2), "exactly one of"),
    (dict(score="score_dclm", top_fraction=1.5), "must be in (0, 1]"),
    (dict(top_fraction=0.1), "name the score column"),
    (dict(score=("a", "b"), weights=(1.0,), top_fraction=0.1), "2 score columns"),
])
def test_select_parameters_are_checked(params, message):
    with pytest.raises(WinnowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SelectParams(**params)


def test_unknown_columns_and_scorers_fail_before_data_is_read(scored, spark, tmp_path):
    df, _ = scored
    ctx = StageContext(spark)
    from pipelines import check_columns

    plan = [("select", "select", SelectParams(score="score_ppl", top_fraction=0.1))]
    with pytest.raises(WinnowError, match="stage select: needs column score_ppl"):
        check_columns(plan, df.columns)
    with pytest.raises(WinnowError, match="unknown scorer 'qualiti'"):
        score.apply(df, ScoreParams(scorers=({"kind": "qualiti"},)), ctx)
    with pytest.raises(WinnowError, match="model file not found"):
        score.apply(df, ScoreParams(scorers=({"kind": "dclm", "model": str(tmp_path / "x.bin")},)), ctx)
    with pytest.raises(WinnowError, match="distinct `name`s"):
        ScoreParams(scorers=({"kind": "langid"}, {"kind": "langid", "language": "fr"}))


def test_winnow_score_and_train_scorer(pool_slice, tmp_path, prefect_server, spark, capsys):
    model = tmp_path / "m" / "dclm.bin"
    neg = [str(p) for p in pool_slice["paths"]]
    status = winnow(["train-scorer", "dclm", "--positives", str(DATA / "reference" / "hq.jsonl.zst"),
                     "--negatives", *neg, "--output", str(model), "--threads", "1", "--seed", "1"])
    assert status == 0
    out = capsys.readouterr().out
    report = json.loads(model.with_suffix(".bin.json").read_text())
    assert report["heldout_roc_auc"] > 0.85 and "held-out ROC-AUC" in out
    assert report["positives"]["trained"] + report["positives"]["heldout"] == 1102

    dest = tmp_path / "scores"
    status = winnow(["score", *neg, "--scorer", f"dclm={model}", "--scorer", "langid", "--output", str(dest),
                     "--top-fraction", "0.1"])
    assert status == 0
    kept = pq.read_table(dest / "kept")
    assert kept.column_names == ["id", "source", "domain", "score_dclm", "score_langid", "selected"]
    assert kept.num_rows == pool_slice["docs"]
    assert pq.read_table(dest / "selected").num_rows == math.ceil(0.1 * kept.num_rows)
    assert (dest / "plots" / "score-score_dclm-histogram.png").stat().st_size > 1000
    assert "score quantiles" in (dest / "report.md").read_text()

    assert winnow(["score", *neg, "--scorer", "qualiti", "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown scorer 'qualiti'" in err[0]
    assert winnow(["score", *neg, "--scorer", f"dclm={tmp_path / 'nope.bin'}", "--output", str(tmp_path / "bad2")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert not (tmp_path / "bad2" / "kept").exists()  # the error came before any data was read
