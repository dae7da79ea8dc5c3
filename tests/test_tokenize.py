"""The `tokenize` stage: a trained or given tokenizer, ids equal to direct encoding plus eot."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from core.errors import WinnowError
from pipelines import tokenize
from pipelines.stage import StageContext
from pipelines.tokenize import EOT, TokenizeParams, load_tokenizer, train_tokenizer


def test_a_trained_tokenizer_encodes_like_the_library_plus_eot(spark, pool_docs, tmp_path):
    ctx = StageContext(spark, output=str(tmp_path))
    result = tokenize.apply(pool_docs.repartition(3), TokenizeParams(vocab_size=1000, sample_docs=300), ctx)
    assert (tmp_path / "tokenizer.json").exists() and result.stats["trained"]
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == 1000 == result.stats["vocab_size"]
    eot = tok.token_to_id(EOT)
    rows = result.kept.orderBy("_file", "_row").select("text", "tokens", "n_tokens").collect()
    assert len(rows) == pool_docs.count()
    for r in rows[:200]:
        want = tok.encode(r["text"] or "", add_special_tokens=False).ids + [eot]
        assert list(r["tokens"]) == want and r["n_tokens"] == len(want)
    assert tok.decode(list(rows[0]["tokens"])[:-1]) == rows[0]["text"]  # byte-level BPE round-trips
    assert result.kept.where(F.col("n_tokens") < 1).count() == 0
    stats = result.finish(result.kept, None)
    assert stats["tokens"] == sum(r["n_tokens"] for r in rows)


def test_a_given_tokenizer_is_used_as_is_and_bad_ones_fail_early(spark, pool_docs, tmp_path):
    tok = train_tokenizer(["alpha beta gamma delta"] * 20, 300)
    path = tmp_path / "t.json"
    tok.save(str(path))
    ctx = StageContext(spark)
    result = tokenize.apply(pool_docs.limit(20), TokenizeParams(tokenizer=str(path)), ctx)
    assert result.stats["tokenizer"] == str(path) and not result.stats["trained"]
    assert result.kept.count() == 20
    with pytest.raises(WinnowError, match="tokenizer file not found"):
        tokenize.apply(pool_docs, TokenizeParams(tokenizer=str(tmp_path / "nope.json")), ctx)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(WinnowError, match="not a tokenizers JSON file"):
        tokenize.apply(pool_docs, TokenizeParams(tokenizer=str(tmp_path / "bad.json")), ctx)
    with pytest.raises(WinnowError, match="no end-of-text token"):
        tokenize.apply(pool_docs, TokenizeParams(tokenizer=str(path), eot="<|eos|>"), ctx)
    with pytest.raises(WinnowError, match="vocab_size"):
        TokenizeParams(vocab_size=10)
