"""Stage `read` against Spark's own JSON reader and pyarrow's, on the same .jsonl.gz files.

Spark's reader is the peer Winnow replaced (it loses line numbers and drops truncated .gz
silently); pyarrow.json is the single-process reference. Usage: bench/bench_read.py [COPIES]
"""
import sys

from _common import make_corpus, report, spark_session, timed


def main(copies: int = 10) -> None:
    corpus, docs = make_corpus(copies, files=4)
    spark = spark_session()
    from pipelines import read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    def winnow_read():
        ctx = StageContext(spark=spark)
        result = read.apply(None, ReadParams((InputSpec(str(corpus), "bench"),)), ctx)
        assert result.kept.count() == docs
        ctx.release()

    def spark_json():
        assert spark.read.json(str(corpus)).count() == docs

    def pyarrow_json():
        import gzip

        import pyarrow.json as pj

        total = 0
        for path in sorted(corpus.glob("*.gz")):
            with gzip.open(path, "rb") as fh:
                total += pj.read_json(fh).num_rows
        assert total == docs

    # The count forces every record to be parsed in all three.
    ours = timed(winnow_read)
    report("read", docs, ours, {"spark.read.json": timed(spark_json), "pyarrow.json (1 proc)": timed(pyarrow_json)})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
