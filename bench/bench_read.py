"""Stage `read` against Spark's own JSON reader and pyarrow's, on the same files.

Spark's reader is the peer Winnow replaced (it loses line numbers and drops truncated .gz
silently); it is timed with the text column materialized (the sum of its lengths), since a bare
count() lets Spark skip parsing. pyarrow.json is the single-core reference (use_threads=False):
the goal is at least half its throughput per core. Three corpora: the pool repeated over 4
.jsonl.gz files, the same records as one large plain .jsonl file (read in pieces by several
tasks), and that file gzipped (one task decompresses it, every core parses its blocks; Spark's
reader parses it in one task). Each corpus is also read by the local engine (`winnow run --input`
without Spark: the read and the kept/ write, in a process pool), timed whole and, from the
stage's own figures, its read step alone (the kept/ write and the pool's start left out; its CPU
seconds are every worker's and the driver's, so docs per CPU-second is the per-core figure).
Usage: bench/bench_read.py [COPIES]
"""
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import _proc_table, _tree, make_corpus, spark_session


def _cpu() -> float:
    """CPU seconds of this process and all it started (the JVM, the Python workers)."""
    table = _proc_table()
    return sum(table[pid][2] for pid in _tree(table, os.getpid()) if pid in table)


def timed(fn, repeat: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds of the run with the least wall time of `repeat` (the first also warms
    the JVM and the workers). CPU seconds count every core: docs / CPU-second is the throughput
    per core, which a busy machine disturbs less than wall time."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        cpu, start = _cpu(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start, _cpu() - cpu))
    return best


def main(copies: int = 10) -> None:
    corpus, docs = make_corpus(copies, files=4)
    big = Path(tempfile.mkdtemp(prefix="winnow-bench-one-")) / "all.jsonl"  # the same records, one plain file
    with open(big, "wb") as out:
        for path in sorted(corpus.glob("*.gz")):
            with gzip.open(path, "rb") as fh:
                shutil.copyfileobj(fh, out, 8 << 20)
    big_gz = big.with_suffix(".jsonl.gz")
    with open(big, "rb") as src, gzip.open(big_gz, "wb", compresslevel=6) as out:
        shutil.copyfileobj(src, out, 8 << 20)
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

    local_steps = {}

    def local_read(path):
        def run():  # `winnow run --input PATH` on the local engine: read, then kept/ written (zstd)
            from pipelines import local_engine

            out = Path(tempfile.mkdtemp(prefix="winnow-bench-local-"))
            try:
                stages = local_engine.run(read.expand_inputs([InputSpec(str(path), "bench")]), [], None, out,
                                          "zstd", 0, ())
                assert stages[0].kept == docs
                st = stages[0].stats  # the read step alone: the stage's figures less the kept/ write
                step = (stages[0].seconds - st["write_seconds"], st["cpu_seconds"] - st["write_cpu_seconds"])
                local_steps[str(path)] = min(local_steps.get(str(path), step), step)
            finally:
                shutil.rmtree(out, ignore_errors=True)
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

    def kernel(files):
        def run():
            from pipelines.read_kernel import FileTask, read_file

            total = 0
            for i, path in enumerate(files):
                task = FileTask(i, str(path), path.name, "jsonl", "bench", "default")
                total += sum(b.num_rows for b in read_file(task))
            assert total == docs
        return run

    print(f"read: {docs:,} documents, {cores} cores; wall s, CPU s (all processes), docs per CPU-second")
    for name, path, files in (("4 x .jsonl.gz", corpus, sorted(corpus.glob("*.gz"))), ("1 x .jsonl", big, [big]),
                              ("1 x .jsonl.gz", big_gz, [big_gz])):
        size = sum(os.path.getsize(f) for f in files)
        runs = {"winnow read (stage)": timed(winnow_read(path))}
        tasks = tasks_seen[str(path)]
        runs["winnow local engine"] = timed(local_read(path))
        runs["  its read step"] = local_steps[str(path)]
        runs["spark.read.json"] = timed(spark_json(path))
        runs["  schema given"] = timed(spark_json(path, "id string, text string"))
        runs["winnow kernel, 1 core"] = timed(kernel(files))
        runs["pyarrow.json, 1 thread"] = timed(pyarrow_json(files))
        print(f"\n{name}: {size / 1e6:,.0f} MB on disk, {tasks} winnow read task{'s' if tasks > 1 else ''}")
        ours_wall, ours_cpu = runs["winnow read (stage)"]
        local_wall, local_cpu = runs["winnow local engine"]
        step_wall, step_cpu = runs["  its read step"]
        for label, (wall, cpu) in runs.items():
            line = f"  {label:<24} {wall:6.2f} s  {cpu:6.2f} CPU-s  {docs / cpu:9,.0f} docs/CPU-s"
            if label.startswith(("spark", "  schema")):
                line += (f"   winnow/peer: wall {wall / ours_wall:.2f}x, per core {cpu / ours_cpu:.2f}x; "
                         f"local engine/peer: wall {wall / local_wall:.2f}x, per core {cpu / local_cpu:.2f}x; "
                         f"read step/peer: wall {wall / step_wall:.2f}x, per core {cpu / step_cpu:.2f}x")
            if label.startswith("pyarrow"):
                k_cpu = runs["winnow kernel, 1 core"][1]
                line += (f"   kernel/pyarrow per core {cpu / k_cpu:.2f}x, stage/pyarrow {cpu / ours_cpu:.2f}x, "
                         f"local engine/pyarrow {cpu / local_cpu:.2f}x, read step/pyarrow {cpu / step_cpu:.2f}x")
            print(line)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
