"""Reference LMs (filters/lm.py), the perplexity scorer and `winnow train-lm`.

The scoring arithmetic is checked on small untrained models (any weights do: what is tested is
which tokens are predicted from which context); one short `train_lm` run checks the whole path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ScorerError
from filters.base import ScorerSpec, load_scorer
from filters.lm import document_nats, load_lm, save_lm, windows
from filters.perplexity import fold_of

from .conftest import DATA, read_zst_jsonl

REF = DATA / "reference" / "hq.jsonl.zst"


def _texts(n: int, path: Path = REF) -> list[str]:
    return [r["text"] for r in read_zst_jsonl(path)][:n]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> str:
    from pipelines.tokenize import train_tokenizer

    tok = train_tokenizer(iter(_texts(300)), 512)
    return tok.to_str()


def _lm(tmp: Path, tokenizer_json: str, context: int = 16, seed: int = 0, name: str = "lm") -> Path:
    from tokenizers import Tokenizer

    from training.model import TransformerLM, model_config

    torch.manual_seed(seed)
    vocab = Tokenizer.from_str(tokenizer_json).get_vocab_size(with_added_tokens=True)
    model = TransformerLM(model_config(vocab, "tiny", max_seq_len=context, init_std=0.2))
    save_lm(tmp / name, model, tokenizer_json, {"note": "untrained"})
    return tmp / name


@pytest.mark.parametrize("n, context, stride", [(2, 4, 2), (5, 4, 4), (17, 4, 2), (17, 4, 1), (30, 8, 3), (9, 8, 8)])
def test_windows_predict_every_target_once(n, context, stride):
    seen = []
    for start, end, first in windows(n, context, stride):
        assert end - start <= context and start < first <= end
        assert first - start - 1 >= 0  # a target's context lies inside its window
        seen += list(range(first, end + 1))
    assert seen == list(range(1, n))


def test_windows_reject_a_stride_past_the_context():
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)


def _manual_nats(lm, ids: list[int], context: int, stride: int) -> float:
    """The same sum, one window at a time through the model's own loss."""
    seq = torch.tensor([lm.eot_id] + ids)
    total = 0.0
    with torch.no_grad():
        for s, e, f in windows(len(seq), context, stride):
            logits = lm.model(seq[s:e][None])[0]
            losses = torch.nn.functional.cross_entropy(logits.float(), seq[s + 1:e + 1], reduction="none")
            total += float(losses[f - s - 1:].sum())
    return total


@pytest.mark.parametrize("stride", [16, 8, 5])
def test_document_loss_is_the_sum_over_its_windows(tmp_path, tokenizer_json, stride):
    lm = load_lm(_lm(tmp_path, tokenizer_json, context=16))
    texts = [t for t in _texts(40) if 60 < len(lm.encode([t])[0]) < 200][:3]
    assert texts
    nats, counted = document_nats(lm, texts, stride=stride)
    for text, got, k in zip(texts, nats, counted):
        ids = lm.encode([text])[0]
        assert k == len(ids)  # every token predicted once, the first after <|endoftext|>
        assert got == pytest.approx(_manual_nats(lm, ids, 16, stride), rel=1e-5)


def test_a_short_document_is_one_pass_and_batching_changes_nothing(tmp_path, tokenizer_json):
    lm = load_lm(_lm(tmp_path, tokenizer_json, context=64))
    texts = _texts(30)
    together, _ = document_nats(lm, texts, batch_tokens=4096)
    alone = np.array([document_nats(lm, [t], batch_tokens=64)[0][0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-4)
    short = "How do I reverse a list in Python? Use reversed() or the slice [::-1]."
    assert len(lm.encode([short])[0]) < 60
    seq = torch.tensor([[lm.eot_id] + lm.encode([short])[0]])
    with torch.no_grad():
        whole = float(lm.model.loss(seq, reduction="sum"))
    assert document_nats(lm, [short])[0][0] == pytest.approx(whole, rel=1e-5)


def test_perplexity_is_bits_per_byte_or_char_and_empty_is_nan(tmp_path, tokenizer_json):
    path = _lm(tmp_path, tokenizer_json)
    texts = ["naïve café ünïcode text", "plain words here", ""]
    lm = load_lm(path)
    nats, _ = document_nats(lm, texts)
    per_byte = load_scorer(ScorerSpec("perplexity", str(path))).score(texts)
    per_char = load_scorer(ScorerSpec("perplexity", str(path), options={"unit": "char"})).score(texts)
    for i, t in enumerate(texts[:2]):
        assert per_byte[i] == pytest.approx(nats[i] / math.log(2) / len(t.encode()), rel=1e-5)
        assert per_char[i] == pytest.approx(nats[i] / math.log(2) / len(t), rel=1e-5)
    assert per_byte[0] < per_char[0]  # more bytes than characters
    assert math.isnan(per_byte[2]) and math.isnan(per_char[2])


def test_bad_reference_lm_files_are_one_line_errors(tmp_path, tokenizer_json):
    with pytest.raises(ScorerError, match="not found"):
        load_lm(tmp_path / "missing")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(ScorerError, match="not a reference LM file"):
        load_lm(junk)
    other = tmp_path / "other.pt"
    torch.save({"kind": "something-else", "state": {}}, other)
    with pytest.raises(ScorerError, match="no 'winnow-lm' header"):
        load_lm(other)
    good = _lm(tmp_path, tokenizer_json) / "lm.pt"
    raw = torch.load(good, weights_only=True)
    raw["state"].pop(next(iter(raw["state"])))
    torch.save(raw, tmp_path / "damaged.pt")
    with pytest.raises(ScorerError, match="damaged reference LM"):
        load_lm(tmp_path / "damaged.pt")
    with pytest.raises(ScorerError, match="unknown options"):
        load_scorer(ScorerSpec("perplexity", str(good), options={"units": "byte"}))
    with pytest.raises(ScorerError, match="needs a reference LM"):
        load_scorer(ScorerSpec("perplexity"))


def test_two_folds_score_each_document_with_the_other_folds_model(tmp_path, tokenizer_json):
    a, b = _lm(tmp_path, tokenizer_json, seed=1, name="a"), _lm(tmp_path, tokenizer_json, seed=2, name="b")
    texts = _texts(20)
    folds = load_scorer(ScorerSpec("perplexity", options={"folds": [str(a), str(b)]})).score(texts)
    by_a = load_scorer(ScorerSpec("perplexity", str(a))).score(texts)
    by_b = load_scorer(ScorerSpec("perplexity", str(b))).score(texts)
    fold = np.array([fold_of(t) for t in texts])
    assert set(fold) == {0, 1}
    np.testing.assert_allclose(folds, np.where(fold == 0, by_b, by_a), rtol=1e-6)


def test_perplexity_through_spark_equals_the_scorer_called_directly(ctx, tmp_path, tokenizer_json):
    from pipelines import score
    from pipelines.score import ScoreParams

    a, b = _lm(tmp_path, tokenizer_json, seed=1, name="a"), _lm(tmp_path, tokenizer_json, seed=2, name="b")
    texts = _texts(40) + [""]
    df = ctx.spark.createDataFrame([(f"d{i}", t) for i, t in enumerate(texts)], "id string, text string")
    params = ScoreParams(scorers=({"kind": "perplexity", "model": str(a)},
                                  {"kind": "perplexity", "name": "ankner", "folds": [str(a), str(b)]}))
    rows = score.apply(df.repartition(3), params, ctx).kept.collect()
    got = {r["id"]: (r["score_perplexity"], r["score_ankner"]) for r in rows}
    direct = load_scorer(ScorerSpec("perplexity", str(a))).score(texts)
    folds = load_scorer(ScorerSpec("perplexity", options={"folds": [str(a), str(b)]})).score(texts)
    for i in range(len(texts) - 1):
        assert got[f"d{i}"][0] == pytest.approx(float(direct[i]), rel=1e-5)
        assert got[f"d{i}"][1] == pytest.approx(float(folds[i]), rel=1e-5)
    assert got[f"d{len(texts) - 1}"] == (None, None)  # an empty text has no perplexity: null, not NaN


def test_train_lm_writes_a_reference_lm_that_scores(spark, tmp_path):
    from pyspark.sql import functions as F

    from flows.train_lm import LmSpec, train_lm

    spec = LmSpec(inputs=(str(REF),), output=str(tmp_path / "lm"), tokens=16_384, vocab_size=512,
                  seq_len=64, tokens_per_batch=1024, fold="1/2", threads=1)
    info = train_lm(spark, spec, log=lambda *_: None)
    lm = load_lm(tmp_path / "lm")
    assert lm.context == 64 and lm.info["heldout_bpb"] == info["heldout_bpb"] > 0
    assert (tmp_path / "lm" / "tokenizer.json").is_file() and (tmp_path / "lm" / "lm.json").is_file()
    # only fold 1 was trained on: the Spark split is the scorer's fold_of
    texts = [r["text"] for r in read_zst_jsonl(REF) if r["text"].strip()]
    in_fold = sum(fold_of(t) == 1 for t in texts)
    assert info["documents"]["train"] + info["documents"]["heldout"] == in_fold
    trained = spark.read.parquet(str(tmp_path / "lm" / "_data" / "train")).select("text")
    assert trained.where(F.pmod(F.xxhash64("text"), F.lit(2)) != 1).count() == 0
    assert np.isfinite(load_scorer(ScorerSpec("perplexity", str(tmp_path / "lm"))).score(texts[:5])).all()
    with pytest.raises(Exception, match="fold must be"):
        LmSpec(inputs=("x",), output="y", fold="2/2")
