"""Stage `score` with the DFN scorer (filters/dfn.py: frozen MiniLM embeddings + an MLP) through
Spark, against the same scorer called directly in one process on the same texts.

Usage: bench/bench_dfn.py [DOCS]   (documents scored, default 256; about a minute in all on 2 cores)

- Model: trained once on 100 reference documents against 100 pool documents (`DfnScorer.train`,
  default parameters), saved to a temp dir. Training time is printed, embedding included.
- Corpus: DOCS pool documents, a seeded sample over all four pool files (whole texts: the encoder
  reads each one's first 256 word pieces), as a cached DataFrame of one partition per core. A
  partition's Arrow batch is one `score` call, and the encoder sorts a call's texts by length
  before cutting them into minibatches of 64, so bigger calls pad less (calls of 64 cost about
  1.5x calls of 128 per document here); real partitions hold thousands of documents.
- Winnow: `score.apply`, Spark `local[2]`, the result materialized through Spark's `noop` sink
  (every row scored, nothing written), one timed run after a warm-up on a few documents in
  every partition (each Python worker loads the encoder once). Per core = docs/s / 2. Spark's
  workers run torch with one thread each (PySpark sets OMP_NUM_THREADS to spark.task.cpus).
- Peer: one Python process, `DfnScorer.score` over the same texts in batches of 1,000, torch
  with its default threads (one per core); CPU seconds, so per core = docs / CPU s.
- Ratio: Winnow per core / direct per core. The encoder dominates both. Also printed: the CPU
  seconds of this process tree during the timed Spark run (driver, JVM, Python workers), which
  a busy machine inflates less than wall time.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time

from _common import REPO, TreeMemory, pool_texts, spark_session

CORES = 2


def main(docs: int = 256) -> None:
    import io
    import json

    import zstandard

    from filters.dfn import DfnScorer, device
    from pipelines import score
    from pipelines.score import ScoreParams
    from pipelines.stage import StageContext

    rng = random.Random(0)
    pool = [r for r in pool_texts() if (r["text"] or "").strip()]
    with open(REPO / "data" / "reference" / "hq.jsonl.zst", "rb") as f:
        hq = [json.loads(line)["text"] for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")]
    t0 = time.perf_counter()
    scorer = DfnScorer.train(rng.sample(hq, 100), [r["text"] for r in rng.sample(pool, 100)])
    model = os.path.join(tempfile.mkdtemp(prefix="winnow-bench-"), "dfn.pt")
    scorer.save(model)
    loss = scorer.describe()["train_loss"]
    print(f"model: trained on 100 + 100 documents in {time.perf_counter() - t0:.1f} s (encoder load and "
          f"embedding included), {os.path.getsize(model) / 1e3:.0f} kB, loss {loss[0]:.3f} -> {loss[-1]:.3f}, "
          f"device {device()}")

    rows = rng.sample(pool, docs)
    texts = [r["text"] for r in rows]
    chars = sum(len(t) for t in texts)
    spark = spark_session(f"local[{CORES}]")
    df = spark.createDataFrame([(r["id"], r["text"]) for r in rows], "id string, text string")
    df = df.repartition(CORES).cache()
    n = df.count()
    params = ScoreParams(scorers=({"kind": "dfn", "model": model},))
    print(f"\nscore dfn: {n:,} documents ({chars / 1e6:.2f} M characters), {os.cpu_count()} cores, Spark local[{CORES}]")

    def run(frame) -> None:
        c = StageContext(spark=spark)
        # every row scored and materialized (Spark's no-op sink: no file is written)
        score.apply(frame, params, c).kept.write.format("noop").mode("overwrite").save()
        c.release()

    warm = spark.createDataFrame([(f"w{i}", t) for i, t in enumerate(texts[:CORES * 4])], "id string, text string")
    start = time.perf_counter()
    run(warm.repartition(CORES))  # each worker loads the encoder and the MLP once
    print(f"  warm-up (workers load the encoder) {time.perf_counter() - start:6.2f} s")
    start = time.perf_counter()
    with TreeMemory() as tree:
        run(df)
    wall = time.perf_counter() - start

    start, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, len(texts), 1_000):
        scorer.score(texts[lo:lo + 1_000])
    peer_wall, peer = time.perf_counter() - start, time.process_time() - cpu

    ours_core = n / wall / CORES
    peer_core = n / peer
    print(f"  winnow score stage   {wall:6.2f} s wall  {n / wall:7,.1f} docs/s  {ours_core:7,.1f} docs/s per core"
          f"   ({tree.cpu_seconds:.2f} CPU s driver + JVM + workers: {n / tree.cpu_seconds:,.1f} docs per CPU s)")
    print(f"  direct, one process  {peer:6.2f} CPU s ({peer_wall:.2f} s wall, {n / peer_wall:,.1f} docs/s)  "
          f"{peer_core:7,.1f} docs/s per core   winnow/direct per core = {ours_core / peer_core:.2f}x")
    spark.stop()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 256))
