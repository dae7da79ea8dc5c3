"""dedup_exact on small frames: the first occurrence in input order survives."""
from pipelines import dedup_exact
from pipelines.dedup_exact import DedupExactParams
from pipelines.schema import DOCUMENT_SCHEMA


def frame(spark, rows):
    """rows: (id, text, source, file, row)"""
    data = [(i, t, s, "web", {}, f, r) for i, t, s, f, r in rows]
    return spark.createDataFrame(data, DOCUMENT_SCHEMA)


ROWS = [
    ("late", "Hello  world", "b", 1, 5),
    ("first", "Hello world", "a", 0, 9),
    ("mid", "Hello world\n", "b", 1, 2),
    ("solo", "Something else", "a", 0, 1),
    ("case", "hello world", "a", 0, 3),
]


def test_first_occurrence_survives_and_the_rest_name_it(spark, ctx):
    result = dedup_exact.apply(frame(spark, ROWS), DedupExactParams(), ctx)
    assert sorted(r["id"] for r in result.kept.collect()) == ["case", "first", "solo"]
    removed = {r["id"]: (r["reason"], r["duplicate_of"], r["removed_by"]) for r in result.removed.collect()}
    assert removed == {
        "late": ("exact duplicate of first", "first", "dedup_exact"),
        "mid": ("exact duplicate of first", "first", "dedup_exact"),
    }
    assert result.stats == {"duplicate_groups": 1, "largest_group": 3}
    assert set(result.kept.columns) == set(DOCUMENT_SCHEMA.names)


def test_aggressive_normalization_also_folds_case(spark, ctx):
    result = dedup_exact.apply(frame(spark, ROWS), DedupExactParams(normalize="aggressive"), ctx)
    # "case" (file 0, row 3) comes before "first" (file 0, row 9) in input order
    assert sorted(r["id"] for r in result.kept.collect()) == ["case", "solo"]


def test_per_source_keeps_one_per_source(spark, ctx):
    result = dedup_exact.apply(frame(spark, ROWS), DedupExactParams(per_source=True), ctx)
    assert sorted(r["id"] for r in result.kept.collect()) == ["case", "first", "mid", "solo"]
    assert {r["id"]: r["duplicate_of"] for r in result.removed.collect()} == {"late": "mid"}


def test_none_mode_is_byte_exact(spark, ctx):
    result = dedup_exact.apply(frame(spark, ROWS), DedupExactParams(normalize="none"), ctx)
    assert result.removed.count() == 0
