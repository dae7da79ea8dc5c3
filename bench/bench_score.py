"""Stage `score` with the DCLM fastText scorer through Spark, against raw fastText `predict` in one
process on the same texts.

Usage: bench/bench_score.py [COPIES]   (the pool repeated COPIES times, default 10: 56,450 docs)

- Model: trained once with DCLM's settings on the reference set against the pool
  (`DclmScorer.train`, bucket sized from the training bigrams), saved to a temp dir.
- Winnow: `score.apply` on a cached DataFrame of the corpus, Spark `local[2]`, the result
  materialized through Spark's `noop` sink (every row scored, every column produced, nothing
  written), best of 2 after one warm-up run. Per core = docs/s / 2. The quantile/histogram stats (taken afterwards from the written
  scores) are timed apart.
- Peer: one Python process, `model.predict(lines, k=1)` over the same texts with DCLM's
  text-to-line rule (the raw cost of fastText), in batches of 10,000; CPU seconds.
- Ratio: Winnow per core / raw per core. The target in issue 4 is >= 0.7x.
- Also: the langid scorer (lid.176.ftz, all 176 probabilities per document) the same two ways.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from _common import cached_corpus, timed

CORES = 2


def main(copies: int = 10) -> None:
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "data")))
    from build_minhash_truth import pool_documents

    import io, json  # noqa: E401
    import zstandard

    from filters.dclm import DclmScorer, DclmTrainParams, to_line
    from filters.langid import LangIdScorer
    from pipelines import score
    from pipelines.score import ScoreParams
    from pipelines.stage import StageContext

    ref = os.path.join(os.path.dirname(__file__), "..", "data", "reference", "hq.jsonl.zst")
    with open(ref, "rb") as f:
        positives = [json.loads(line)["text"] for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")]
    negatives = [t or "" for _, t in pool_documents()]
    t0 = time.perf_counter()
    scorer = DclmScorer.train(positives, negatives, DclmTrainParams(threads=CORES))
    model = os.path.join(tempfile.mkdtemp(prefix="winnow-bench-"), "dclm.bin")
    scorer.save(model)
    print(f"model: trained in {time.perf_counter() - t0:.1f} s, {os.path.getsize(model) / 1e6:.0f} MB, "
          f"bucket {scorer.describe()['bucket']:,}")

    spark, df, n = cached_corpus(copies, CORES)
    texts = [r["text"] or "" for r in df.select("text").toLocalIterator()]
    chars = sum(len(t) for t in texts)
    print(f"\nscore: {n:,} documents ({chars / 1e6:.1f} M characters), {os.cpu_count()} cores, Spark local[{CORES}]")

    for label, table, raw in [
        ("dclm", {"kind": "dclm", "model": model}, lambda batch: scorer.model.predict([to_line(t) for t in batch], k=1)),
        ("langid", {"kind": "langid"}, None),
    ]:
        def ours():
            c = StageContext(spark=spark)
            result = score.apply(df, ScoreParams(scorers=(table,)), c)
            # Every row scored and materialized (Spark's no-op sink: no file is written; the
            # peer writes nothing either).
            result.kept.write.format("noop").mode("overwrite").save()
            c.release()

        ours()  # warm-up: workers load the model once
        wall = timed(ours, repeat=2)
        if raw is None:
            lid = LangIdScorer()
            raw = lid.score
        start = time.process_time()
        for lo in range(0, len(texts), 10_000):
            raw(texts[lo:lo + 10_000])
        peer = time.process_time() - start
        ours_core = n / wall / CORES
        peer_core = n / peer
        print(f"  {label:<7} winnow score stage   {wall:6.2f} s wall  {n / wall:9,.0f} docs/s  {ours_core:9,.0f} docs/s per core")
        print(f"  {label:<7} raw, one process     {peer:6.2f} CPU s  {peer_core:9,.0f} docs/s per core"
              f"   winnow/raw per core = {ours_core / peer_core:.2f}x")
    out = os.path.join(tempfile.mkdtemp(prefix="winnow-bench-"), "scored-langid.parquet")
    c = StageContext(spark=spark)
    score.apply(df, ScoreParams(scorers=({"kind": "langid"},)), c).kept.write.mode("overwrite").parquet(out)
    start = time.perf_counter()
    score.score_stats(spark.read.parquet(out), ["score_langid"])
    print(f"  stats (quantiles + histogram) from the written scores: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
