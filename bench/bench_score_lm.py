"""Stage `score` with the model-based scorers (perplexity under a reference LM, PreSelect's
fastText classifier) through Spark, against the same scorer called directly in one process.

Usage: bench/bench_score_lm.py [DOCS] [CASE,...]   (a seeded sample of DOCS documents of the sample
pool, default 1,000; CASE: only the cases whose label starts so, e.g. `kenlm`)

- Perplexity: a `tiny` reference LM (the preset `winnow train-lm` uses; 0.4M parameters at a
  2,048-entry vocabulary, context 256) with random weights and a tokenizer trained on the pool:
  the cost of scoring does not depend on what the weights are. Strided windows at the
  scorer's default stride (half the context) and at stride = context.
- PreSelect: fastText with the paper's settings trained on the reference set against the pool
  (as DCLM's benchmark does; the labels do not change the cost of `predict`).
- KenLM (the `kenlm` extra), CCNet's way: a 4,096-piece SentencePiece model trained on the
  normalized reference set and a **bigram** ARPA model over its pieces written by
  `kenlm_lm.write_bigram_arpa` (KenLM's trainer is not in its PyPI package), scored with
  ``unit = "ccnet"``. CCNet's published models are 5-grams in KenLM's binary format: larger, so
  each lookup misses the cache more; this measures the normalization, SentencePiece and the
  stage around them, not a 5-gram's lookups. Tokens = pieces + 1 (``</s>``).
- Winnow: `score.apply` on a cached DataFrame, Spark `local[2]`, materialized through Spark's
  `noop` sink, best of 2 after a warm-up. Direct: `scorer.score(texts)` in this process, in
  batches of 1,000, CPU seconds (torch on its default threads: the CPU time, not the wall time,
  is what is compared). Ratio = Winnow docs/s per core over direct docs/s per CPU second.
- Tokens/s for the LM: tokens scored (each document's `[eot] + tokens`) per second per core.
- On a GPU (when one is there) the direct LM scorer also runs on it (bf16), printed apart.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from _common import REPO, pool_texts, timed

CORES = 2


def main(docs: int = 1000, only: tuple[str, ...] = ()) -> None:
    import io

    import sentencepiece as spm
    import torch

    from filters.base import ScorerSpec, load_scorer
    from filters.kenlm_lm import normalize, write_bigram_arpa
    from filters.lm import save_lm
    from filters.preselect import PreselectScorer, PreselectTrainParams
    from pipelines import score
    from pipelines.score import ScoreParams
    from pipelines.spark import get_spark
    from pipelines.stage import StageContext
    from pipelines.tokenize import train_tokenizer
    from training.model import TransformerLM, model_config

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import read_zst_jsonl  # noqa: E402

    import random

    every = [r for r in pool_texts() if r["text"]]
    rows = random.Random(0).sample(every, min(docs, len(every)))   # every domain, not the code file first
    texts = [r["text"] for r in rows]
    tmp = tempfile.mkdtemp(prefix="winnow-bench-")
    tok = train_tokenizer(iter(texts), 2048)
    torch.manual_seed(0)
    model = TransformerLM(model_config(tok.get_vocab_size(), "tiny", max_seq_len=256))
    lm_dir = os.path.join(tmp, "lm")
    save_lm(lm_dir, model, tok.to_str(), {"note": "random weights, for timing"})
    hq = [r["text"] for r in read_zst_jsonl(REPO / "data" / "reference" / "hq.jsonl.zst")]
    ps = os.path.join(tmp, "preselect.bin")
    PreselectScorer.train(hq, texts[:len(hq)], PreselectTrainParams(threads=CORES)).save(ps)
    hq_norm = [normalize(t) for t in hq]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(hq_norm), model_writer=buf, vocab_size=4096,
                                   model_type="unigram", character_coverage=0.9995, minloglevel=2,
                                   num_threads=CORES, max_sentence_length=1 << 20)
    sp_path = os.path.join(tmp, "hq.sp.model")
    with open(sp_path, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    arpa = str(write_bigram_arpa(os.path.join(tmp, "hq.arpa"), sp.encode(hq_norm, out_type=str)))
    sp_tokens = sum(len(p) + 1 for p in sp.encode([normalize(t) for t in texts], out_type=str))

    spark = get_spark(f"local[{CORES}]", shuffle_partitions=CORES * 4)
    df = spark.createDataFrame([(r["id"], r["text"]) for r in rows], "id string, text string")
    df = df.repartition(CORES * 4).cache()
    n = df.count()
    chars = sum(len(t) for t in texts)
    n_tokens = sum(len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False))
    print(f"score (model-based): {n:,} documents, {chars / 1e6:.1f} M characters, {n_tokens / 1e6:.2f} M tokens "
          f"(2,048-entry BPE), Spark local[{CORES}]")

    cases = [("perplexity, stride 128", {"kind": "perplexity", "model": lm_dir}, n_tokens),
             ("perplexity, stride 256", {"kind": "perplexity", "model": lm_dir, "stride": 256}, n_tokens),
             ("preselect", {"kind": "preselect", "model": ps}, 0),
             ("kenlm bigram + sp, ccnet", {"kind": "perplexity", "model": arpa, "sp_model": sp_path,
                                           "unit": "ccnet"}, sp_tokens)]
    print(f"  kenlm: bigram ARPA built here over a 4,096-piece SentencePiece model of the reference set "
          f"({os.path.getsize(arpa) / 1e6:.1f} MB; not CCNet's 5-gram), {sp_tokens / 1e6:.2f} M pieces + </s>")
    for label, table, tokens in cases:
        if only and not any(label.startswith(o) for o in only):
            continue
        def ours():
            c = StageContext(spark=spark)
            score.apply(df, ScoreParams(scorers=(table,)), c).kept.write.format("noop").mode("overwrite").save()
            c.release()

        ours()
        wall = timed(ours, repeat=2)
        spec = ScorerSpec(table["kind"], table["model"], options={k: v for k, v in table.items()
                                                                 if k not in ("kind", "model")})
        direct = load_scorer(spec)
        start = time.process_time()
        for lo in range(0, len(texts), 1000):
            direct.score(texts[lo:lo + 1000])
        peer = time.process_time() - start
        ours_core, peer_core = n / wall / CORES, n / peer
        extra = f"  {tokens / wall / CORES:9,.0f} tokens/s per core" if tokens else ""
        print(f"  {label:<24} winnow score stage {wall:7.2f} s wall {ours_core:8,.1f} docs/s per core{extra}")
        extra = f"  {tokens / peer:9,.0f} tokens/s per CPU s" if tokens else ""
        print(f"  {label:<24} direct, one process {peer:6.2f} CPU s {peer_core:8,.1f} docs/s per CPU s{extra}"
              f"   winnow/direct = {ours_core / peer_core:.2f}x")
    if torch.cuda.is_available() and (not only or any("perplexity".startswith(o) for o in only)):
        gpu = load_scorer(ScorerSpec("perplexity", lm_dir))
        start = time.perf_counter()
        gpu.score(texts)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        print(f"  perplexity on {torch.cuda.get_device_name()} (bf16): {n / wall:,.0f} docs/s, {n_tokens / wall:,.0f} tokens/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000,
         tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ())
