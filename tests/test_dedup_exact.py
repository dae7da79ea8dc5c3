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


# For none mode: byte-identical copies (must go) next to texts that differ from them only in
# whitespace, case or Unicode normalization form (must stay).
BYTES = [
    ("cafe", "Caf\u00e9 au lait", "a", 2, 4),
    ("cafe-copy", "Caf\u00e9 au lait", "b", 2, 9),          # same bytes, other source: removed
    ("cafe-nfd", "Cafe\u0301 au lait", "a", 2, 5),         # NFD form of "cafe": kept
    ("cafe-nfd-copy", "Cafe\u0301 au lait", "a", 3, 1),    # same bytes as cafe-nfd: removed
    ("cafe-spaces", "Caf\u00e9  au\tlait", "a", 2, 6),     # whitespace only: kept
    ("cafe-newline", "Caf\u00e9 au lait\n", "a", 2, 7),    # trailing newline: kept
    ("cafe-case", "caf\u00e9 au lait", "a", 2, 8),          # case only: kept
    ("hello-copy", "Hello world", "a", 3, 2),               # same bytes as ROWS' "first": removed
]


def test_none_mode_is_byte_exact(spark, ctx):
    result = dedup_exact.apply(frame(spark, ROWS + BYTES), DedupExactParams(normalize="none"), ctx)
    removed = {r["id"]: r["duplicate_of"] for r in result.removed.collect()}
    assert removed == {"cafe-copy": "cafe", "cafe-nfd-copy": "cafe-nfd", "hello-copy": "first"}
    assert sorted(r["id"] for r in result.kept.collect()) == sorted(
        [r[0] for r in ROWS] + ["cafe", "cafe-nfd", "cafe-spaces", "cafe-newline", "cafe-case"]
    )
    assert result.stats == {"duplicate_groups": 3, "largest_group": 2}
    # the same rows in the default (whitespace) mode: the NFD, spacing and newline variants go too
    # (so the rows above do exercise what none mode must not fold), case still counts
    default = dedup_exact.apply(frame(spark, ROWS + BYTES), DedupExactParams(), ctx)
    assert {r["id"] for r in default.removed.collect()} >= {"cafe-nfd", "cafe-spaces", "cafe-newline"}
    assert "cafe-case" not in {r["id"] for r in default.removed.collect()}
