"""Stage `write` (ordered, zstd Parquet shards) against a plain Spark Parquet write of the same
frame (no ordering) and pyarrow's single-process writer. Usage: bench/bench_write.py [COPIES]
"""
import sys
import tempfile

from _common import make_corpus, report, spark_session, timed


def main(copies: int = 10) -> None:
    corpus, docs = make_corpus(copies, files=4)
    spark = spark_session()
    from pipelines import read, write
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    ctx = StageContext(spark=spark)
    staged = str(corpus / "staged.parquet")
    read.apply(None, ReadParams((InputSpec(str(corpus), "bench"),)), ctx).kept.write.parquet(staged)
    ctx.release()
    df = spark.read.parquet(staged).cache()
    df.count()
    table = df.drop("meta").toArrow()
    out = tempfile.mkdtemp(prefix="winnow-bench-write-")

    def ours():
        write.apply(df, write.WriteParams(path=f"{out}/ours"), StageContext(spark=spark))

    def spark_plain():
        df.write.mode("overwrite").option("compression", "zstd").parquet(f"{out}/plain")

    def pyarrow_single():
        import pyarrow.parquet as pq

        pq.write_table(table, f"{out}/single.parquet", compression="zstd")

    report("write", docs, timed(ours), {
        "spark parquet write": timed(spark_plain), "pyarrow (1 proc)": timed(pyarrow_single),
    })


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
