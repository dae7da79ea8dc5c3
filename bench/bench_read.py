"""Stage `read` against Spark's own JSON reader and pyarrow's, on the same files.

Spark's reader is the peer Winnow replaced (it loses line numbers and drops truncated .gz
silently); it is timed with the text column materialized (the sum of its lengths), since a bare
count() lets Spark skip parsing. pyarrow.json is the single-core reference (use_threads=False):
the goal is at least half its throughput per core. Two corpora: the pool repeated over 4
.jsonl.gz files, and the same records as one large plain .jsonl file (read in pieces by several
tasks). Usage: bench/bench_read.py [COPIES]
"""
import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import make_corpus, report, spark_session, timed


def main(copies: int = 10) -> None:
    corpus, docs = make_corpus(copies, files=4)
    big = Path(tempfile.mkdtemp(prefix="winnow-bench-one-")) / "all.jsonl"  # the same records, one plain file
    with open(big, "wb") as out:
        for path in sorted(corpus.glob("*.gz")):
            with gzip.open(path, "rb") as fh:
                shutil.copyfileobj(fh, out, 8 << 20)
    spark = spark_session()
    cores = spark.sparkContext.defaultParallelism
    from pyspark.sql import functions as F

    from pipelines import read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    tasks_seen = {}

    def winnow_read(path):
        def run():
            ctx = StageContext(spark=spark)
            result = read.apply(None, ReadParams((InputSpec(str(path), "bench"),)), ctx)
            assert result.kept.count() == docs
            tasks_seen[str(path)] = result.stats.get("read_tasks", result.stats["files"])
            ctx.release()
        return run

    def spark_json(path, schema=None):
        def run():
            reader = spark.read.schema(schema) if schema else spark.read
            df = reader.json(str(path))
            (row,) = df.select(F.count("*").alias("n"), F.sum(F.length("text")).alias("chars")).collect()
            assert row["n"] == docs and row["chars"] > 0
        return run

    def pyarrow_json(paths):
        def run():
            import pyarrow.json as pj

            total = 0
            for path in paths:
                opener = gzip.open if str(path).endswith(".gz") else open
                with opener(path, "rb") as fh:
                    table = pj.read_json(fh, read_options=pj.ReadOptions(use_threads=False))
                    total += table.num_rows
            assert total == docs
        return run

    for name, path, files in (("4 x .jsonl.gz", corpus, sorted(corpus.glob("*.gz"))), ("1 x .jsonl", big, [big])):
        size = sum(os.path.getsize(f) for f in files)
        ours = timed(winnow_read(path))
        peers = {
            "spark.read.json": timed(spark_json(path)),
            "  (schema given)": timed(spark_json(path, "id string, text string")),
        }
        arrow = timed(pyarrow_json(files))
        print(f"\n{name}: {size / 1e6:,.0f} MB on disk, read by {tasks_seen[str(path)]} winnow tasks")
        report("read", docs, ours, peers)
        per_core_ours = docs / ours / cores
        print(f"  pyarrow.json 1 thread  {arrow:7.2f} s  {docs / arrow:10,.0f} docs/s   "
              f"winnow per core / pyarrow per core = {per_core_ours / (docs / arrow):.2f}x ({cores} cores)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
