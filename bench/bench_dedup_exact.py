"""Stage `dedup_exact` against Spark's dropDuplicates on the same normalized text, and against a
single-process Python set of hashes (what a script would do), on the same in-memory frame.

Usage: bench/bench_dedup_exact.py [COPIES]   (the pool repeated COPIES times: heavy duplication)
"""
import sys

from _common import make_corpus, report, spark_session, timed


def main(copies: int = 10) -> None:
    corpus, docs = make_corpus(copies, files=4)
    spark = spark_session()
    from pyspark.sql import functions as F

    from filters.text import content_hash
    from pipelines import dedup_exact, read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    ctx = StageContext(spark=spark)
    frame = read.apply(None, ReadParams((InputSpec(str(corpus), "bench"),)), ctx).kept
    staged = str(corpus / "staged.parquet")
    frame.write.mode("overwrite").parquet(staged)
    ctx.release()
    df = spark.read.parquet(staged).cache()
    df.count()

    def ours():
        c = StageContext(spark=spark)
        result = dedup_exact.apply(df, dedup_exact.DedupExactParams(), c)
        assert result.kept.count() == expected
        c.release()

    def spark_drop_duplicates():
        norm = df.withColumn("_n", F.regexp_replace(F.trim(F.col("text")), r"\s+", " "))
        # Spark's \s is ASCII whitespace and there is no NFC, so its count may differ slightly.
        norm.dropDuplicates(["_n"]).count()

    texts = [r["text"] for r in df.select("text").toLocalIterator()]
    expected = len({content_hash(t) for t in texts})

    def python_set():
        seen = set()
        kept = 0
        for t in texts:
            h = content_hash(t)
            if h not in seen:
                seen.add(h)
                kept += 1
        assert kept == expected

    report("dedup_exact", docs, timed(ours), {
        "spark dropDuplicates": timed(spark_drop_duplicates),
        "python set (1 proc)": timed(python_set),
    })


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
