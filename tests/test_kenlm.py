"""KenLM models in the perplexity scorer (filters/kenlm_lm.py, filters/perplexity.py).

KenLM's PyPI package only queries models, so every model here is an ARPA file the test writes:
a hand-made bigram model whose scores are worked out by hand from its numbers, and a bigram
model over the pieces of a small SentencePiece model trained on the reference set.
"""
from __future__ import annotations

import gzip
import io
import math
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ScorerError
from filters.base import ScorerSpec, load_scorer
from filters.kenlm_lm import PUNCT, KenlmModel, is_kenlm, normalize, write_bigram_arpa
from filters.perplexity import model_files

from .conftest import DATA, read_zst_jsonl

pytest.importorskip("kenlm", reason="the kenlm extra: pip install -e '.[kenlm]'")
spm = pytest.importorskip("sentencepiece", reason="the kenlm extra: pip install -e '.[kenlm]'")

# log10 probabilities and backoffs; every score below is a sum of these numbers
ARPA = """\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\t</s>\t0
-0.6\ta\t-0.2
-0.7\tb\t-0.1

\\2-grams:
-0.2\t<s> a
-0.3\ta b
-0.4\tb </s>
-0.25\ta </s>

\\end\\
"""


@pytest.fixture(scope="module")
def arpa(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kenlm") / "hand.arpa"
    path.write_text(ARPA)
    return path


@pytest.mark.parametrize("text, expected", [
    ("  Héllo WORLD  ", "hello world"),
    ("Ça coûte 12,50 € à Zürich", "ca coute 00,00 € a zurich"),
    ("Ünïcödé ÅÉÎ ñ", "unicode aei n"),
    ("room 101, ٣ apples, ２ pears", "room 000, 0 apples, 0 pears"),
    ("«Quote» — “this” … ‘that’ – ok", '"quote" - "this" ... \'that\' - ok'),
    ("你好，世界。（测试）！？", "你好,世界.(测试)!?"),
    ("first line\nsecond line\r\n\tthird", "first linesecond linethird"),  # lines glued, as CCNet
    ("\x7fa\x00b\x1fc\x85d\x9fe", "abcde"),                            # 0-31 and 127-159 deleted
    ("   \n\t ", ""),
    ("", ""),
])
def test_normalize_is_ccnets(text, expected):
    assert normalize(text) == expected


def _normalize_step_by_step(text: str) -> str:
    """METHODS §3.1's steps one after another, as written there."""
    text = text.strip().lower()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = re.sub(r"\d", "0", text)
    text = "".join(PUNCT.get(c, c) for c in text)
    return "".join(c for c in text if not (ord(c) < 32 or 127 <= ord(c) < 160))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=40)
       | st.text(alphabet="aÁé1٣ \n\t\x85«»—…，。０\u0301\u200b", max_size=40))
def test_normalize_is_the_steps_one_after_another(text):
    assert normalize(text) == _normalize_step_by_step(text)


def test_kenlm_files_are_told_from_winnow_lms_by_their_content(tmp_path, arpa):
    gz = tmp_path / "m.arpa.gz"
    gz.write_bytes(gzip.compress(ARPA.encode()))
    padded = tmp_path / "padded"
    padded.write_text("\n\n" + ARPA)
    binary = tmp_path / "m.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0" + bytes(64))
    torch_like = tmp_path / "lm.pt"
    torch_like.write_bytes(b"PK\x03\x04" + bytes(64))   # torch.save writes a zip
    assert all(is_kenlm(p) for p in (arpa, gz, padded, binary))
    assert not any(is_kenlm(p) for p in (torch_like, tmp_path, tmp_path / "missing"))
    assert load_scorer(ScorerSpec("perplexity", str(gz))).score(["a b"])[0] > 0
    # a file with KenLM's magic goes to KenLM, whose refusal is one line
    with pytest.raises(ScorerError, match=r"m\.bin is not a KenLM model \(.*\)$"):
        load_scorer(ScorerSpec("perplexity", str(binary)))


def test_hand_made_bigram_scores_by_hand(arpa):
    model = KenlmModel(arpa)
    assert model.order == 2 and model.sp is None
    texts = ["Á b Á",        # normalized "a b a": <s> a | a b | backoff(b) + a | a </s>
             "A c",          # c is unknown: <s> a | backoff(a) + <unk> | </s> after <unk>
             "a <s>",        # a word spelled <s> is the unknown word, not KenLM's mark
             "", "  \n ", "\x00\x01"]
    log10, pieces = model.log10(texts)
    abc = -0.2 - 0.3 + (-0.1 - 0.6) - 0.25
    ac = -0.2 + (-0.2 - 1.0) - 0.5
    np.testing.assert_allclose(log10[:3], [abc, ac, ac], rtol=1e-6)
    assert pieces.tolist() == [3, 2, 2, 0, 0, 0]
    assert np.isnan(log10[3:]).all()

    def scores(unit):
        return load_scorer(ScorerSpec("perplexity", str(arpa), options={"unit": unit})).score(texts)

    byte, char, ccnet = scores("byte"), scores("char"), scores("ccnet")
    assert byte.dtype == np.float32
    # bits per byte and per character of the original text ("Á" is two bytes, one character)
    assert byte[0] == pytest.approx(-abc * math.log2(10) / 7, rel=1e-6)
    assert char[0] == pytest.approx(-abc * math.log2(10) / 5, rel=1e-6)
    assert byte[1] == pytest.approx(-ac * math.log2(10) / 3, rel=1e-6)
    # CCNet: 10^(-sum log10 P / (pieces + 1)), </s> counted as a piece; not rounded
    assert ccnet[0] == pytest.approx(10 ** (-abc / 4), rel=1e-6)
    assert ccnet[1] == pytest.approx(10 ** (-ac / 3), rel=1e-6)
    assert ccnet[0] != round(float(ccnet[0]), 1)
    # nothing to score: no perplexity in any unit
    for got in (byte, char, ccnet):
        assert np.isnan(got[3:]).all()
    assert load_scorer(ScorerSpec("perplexity", str(arpa))).score([]).shape == (0,)


@pytest.fixture(scope="module")
def sp_lm(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """A 200-piece SentencePiece model trained on normalized reference documents, and a bigram
    ARPA model over its pieces of the same documents."""
    texts = [r["text"] for r in read_zst_jsonl(DATA / "reference" / "hq.jsonl.zst")][:200]
    tmp = tmp_path_factory.mktemp("kenlm-sp")
    normalized = [normalize(t) for t in texts[:150]]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(normalized), model_writer=buf, vocab_size=200,
                                   model_type="unigram", character_coverage=0.9995, minloglevel=2,
                                   num_threads=1, max_sentence_length=1 << 20)
    sp_path = tmp / "ref.sp.model"
    sp_path.write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    arpa = write_bigram_arpa(tmp / "ref.arpa", sp.encode(normalized, out_type=str))
    return arpa, sp_path, texts


def test_ccnet_unit_is_kenlm_over_sentencepiece_pieces(sp_lm):
    import kenlm

    arpa, sp_path, texts = sp_lm
    scorer = load_scorer(ScorerSpec("perplexity", str(arpa), options={"sp_model": str(sp_path), "unit": "ccnet"}))
    got = scorer.score(texts[150:170])
    # the same arithmetic from the two libraries called by hand
    sp, lm = spm.SentencePieceProcessor(model_file=str(sp_path)), kenlm.Model(str(arpa))
    for text, value in zip(texts[150:170], got):
        pieces = sp.encode(normalize(text), out_type=str)
        assert value == pytest.approx(10 ** (-lm.score(" ".join(pieces)) / (len(pieces) + 1)), rel=1e-5)
    assert np.isfinite(got).all() and (got > 1).all()


def test_kenlm_through_spark_equals_the_scorer_called_directly(ctx, sp_lm, arpa):
    from pyspark import SparkFiles

    from pipelines import score
    from pipelines.score import ScoreParams
    from pipelines.spark import ship_file

    model, sp_path, texts = sp_lm
    texts = texts[150:] + ["", " \n\t "]
    ccnet = {"kind": "perplexity", "name": "ccnet", "model": str(model), "sp_model": str(sp_path), "unit": "ccnet"}
    words = {"kind": "perplexity", "name": "words", "model": str(arpa)}
    spec = ScorerSpec.from_mapping(dict(ccnet))
    # both files travel to the executors, and a worker loads its own copies of both
    assert model_files(spec) == {str(model): str(model), str(sp_path): str(sp_path)}
    shipped = tuple(sorted((v, ship_file(ctx.spark, p)) for v, p in model_files(spec).items()))
    options = tuple(sorted((k, v) for k, v in spec.options.items()))
    worker = score._worker_scorer("perplexity", str(model), shipped, options)
    root = SparkFiles.getRootDirectory()
    assert worker.model.path.startswith(root) and worker.model.sp_path.startswith(root)

    df = ctx.spark.createDataFrame([(f"d{i}", t) for i, t in enumerate(texts)], "id string, text string")
    rows = score.apply(df.repartition(3), ScoreParams(scorers=(ccnet, words)), ctx).kept.collect()
    got = {r["id"]: (r["score_ccnet"], r["score_words"]) for r in rows}
    direct = load_scorer(spec).score(texts)
    by_words = load_scorer(ScorerSpec("perplexity", str(arpa))).score(texts)
    for i in range(len(texts) - 2):
        assert got[f"d{i}"][0] == pytest.approx(float(direct[i]), rel=1e-6)
        assert got[f"d{i}"][1] == pytest.approx(float(by_words[i]), rel=1e-6)
    # no perplexity for an empty or blank text: null, not NaN
    assert got[f"d{len(texts) - 2}"] == got[f"d{len(texts) - 1}"] == (None, None)


def test_the_torch_lm_path_gives_no_perplexity_to_blank_texts(tmp_path):
    lm = _torch_lm(tmp_path)
    got = load_scorer(ScorerSpec("perplexity", str(lm))).score(["some words", "", "  \n "])
    assert np.isfinite(got[0]) and np.isnan(got[1:]).all()


def _torch_lm(tmp: Path) -> Path:
    import torch

    from filters.lm import save_lm
    from pipelines.tokenize import train_tokenizer
    from training.model import TransformerLM, model_config

    tok = train_tokenizer(iter(["some words of text", "more words here"] * 20), 300)
    torch.manual_seed(0)
    save_lm(tmp / "lm", TransformerLM(model_config(tok.get_vocab_size(), "tiny", max_seq_len=16)),
            tok.to_str(), {})
    return tmp / "lm"


def test_kenlm_errors_are_one_line(tmp_path, arpa, sp_lm, monkeypatch):
    def fails(match, model=None, **options):
        with pytest.raises(ScorerError, match=match) as info:
            load_scorer(ScorerSpec("perplexity", str(model) if model else None, options=options))
        assert "\n" not in str(info.value)

    _, sp_path, _ = sp_lm
    fails("model not found: .*missing.arpa", tmp_path / "missing.arpa", sp_model=str(sp_path))
    fails("SentencePiece model not found: .*nope.model", arpa, sp_model=str(tmp_path / "nope.model"))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a sentencepiece model")
    fails("junk.model is not a SentencePiece model", arpa, sp_model=str(junk))
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n")
    fails("broken.arpa is not a KenLM model", broken)
    fails("unit: one of byte, char, ccnet", arpa, unit="token")
    fails("stride: only for a reference LM", arpa, stride=64)
    fails("folds: two reference LMs .* a KenLM model", folds=[str(arpa), str(arpa)])
    lm = _torch_lm(tmp_path)
    fails("sp_model: only with a KenLM model", lm, sp_model=str(sp_path))
    fails('"ccnet" .* is for a KenLM model', lm, unit="ccnet")
    fails("sp_model: only with a KenLM model", folds=[str(lm), str(lm)], sp_model=str(sp_path))
    # without the extra: the modules import, loading a KenLM model says what to install
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    fails(r"sp_model needs the sentencepiece package; install the kenlm extra", arpa, sp_model=str(sp_path))
    monkeypatch.setitem(sys.modules, "kenlm", None)
    fails(r"needs the kenlm package; install the kenlm extra: pip install 'winnow\[kenlm\]'", arpa)


def test_winnow_score_takes_a_kenlm_model_with_its_options(sp_lm, tmp_path, prefect_server, spark):
    """`winnow score --scorer NAME:perplexity=KENLM,sp_model=SP,unit=ccnet`: the options reach the
    scorer (sp_model resolved as a path), so the column equals the scorer called directly."""
    import json

    import pyarrow.parquet as pq

    from flows.cli import main as winnow

    arpa, sp_path, texts = sp_lm
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts[150:190])))
    dest = tmp_path / "scores"
    assert winnow(["score", str(data), "--scorer", f"cc:perplexity={arpa},sp_model={sp_path},unit=ccnet",
                   "--output", str(dest)]) == 0
    kept = pq.read_table(dest / "kept").to_pydict()
    got = dict(zip(kept["id"], kept["score_cc"]))
    direct = load_scorer(ScorerSpec("perplexity", str(arpa), options={"sp_model": str(sp_path), "unit": "ccnet"}))
    expected = direct.score(texts[150:190])
    assert [got[f"d{i}"] for i in range(40)] == pytest.approx([float(x) for x in expected], rel=1e-6)
