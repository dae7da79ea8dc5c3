"""dedup_minhash on Spark: quality against exact truth, determinism, edge cases, survivors."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import numpy as np
import pytest
from pyspark.sql import functions as F

from core.errors import WinnowError
from flows.cli import main as winnow
from pipelines import dedup_minhash
from pipelines.dedup_minhash import DedupMinhashParams
from pipelines.read import InputSpec, ReadParams
from pipelines import read
from pipelines.schema import DOCUMENT_SCHEMA
from pipelines.stage import StageContext

from .conftest import DATA

POOL = DATA / "sample" / "pool"
FILES = ["code.parquet", "docs.jsonl.gz", "fiction.jsonl.zst", "reference.jsonl.zst"]  # input order


@pytest.fixture(scope="module")
def pool(spark, tmp_path_factory):
    """The whole sample pool (5,645 docs) as the stage sees it, materialized once."""
    ctx = StageContext(spark)
    specs = [InputSpec(str(POOL / name), name.split(".")[0]) for name in FILES]
    path = str(tmp_path_factory.mktemp("pool") / "pool.parquet")
    read.apply(None, ReadParams(specs), ctx).kept.write.parquet(path)
    return spark.read.parquet(path)


def truth_ids() -> set[str]:
    lines = (DATA / "sample" / "minhash_truth.jsonl").read_text().splitlines()
    return {json.loads(line)["id"] for line in lines}


def kept_ids(result) -> bytes:
    rows = result.kept.orderBy("_file", "_row").select("id").collect()
    return "\n".join(r["id"] for r in rows).encode()


def test_precision_and_recall_against_exact_jaccard_truth(pool, ctx):
    result = dedup_minhash.apply(pool, DedupMinhashParams(), ctx)
    removed = {r["id"] for r in result.removed.select("id").collect()}
    truth = truth_ids()
    hits = len(removed & truth)
    precision, recall = hits / len(removed), hits / len(truth)
    assert precision >= 0.95, (precision, recall)
    assert recall >= 0.95, (precision, recall)
    assert result.kept.count() + len(removed) == pool.count()
    stats = result.stats
    assert stats["components"] == sum(stats["component_sizes"].values())
    assert len(removed) == sum((size - 1) * n for size, n in stats["component_sizes"].items())


def test_the_same_input_gives_identical_kept_ids_whatever_the_partitioning(pool, spark):
    subset = pool.where(F.col("_file") >= 2)  # fiction and reference: ~2.3k docs, ~150 removed
    before = spark.conf.get("spark.sql.shuffle.partitions")
    outputs = []
    try:
        for parts in (1, 3, 8, 3):
            spark.conf.set("spark.sql.shuffle.partitions", str(parts))
            ctx = StageContext(spark)
            result = dedup_minhash.apply(subset.repartition(parts), DedupMinhashParams(), ctx)
            outputs.append((kept_ids(result), result.removed.count()))
            ctx.release()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert outputs[0][1] > 50
    assert all(o == outputs[0] for o in outputs)


def frame(spark, rows):
    """rows: (id, text, source); input order is the list order."""
    data = [(i, t, s, "web", {}, 0, n) for n, (i, t, s) in enumerate(rows)]
    return spark.createDataFrame(data, DOCUMENT_SCHEMA)


PROSE = (
    "The library keeps its old catalogue in a long wooden cabinet near the reading room, and every "
    "card in it was typed by hand between the wars by two sisters who worked there for forty years "
    "without once agreeing on how a title with a leading article should be filed or alphabetized."
)


def edited(text, old, new):
    assert old in text
    return text.replace(old, new, 1)


def frame_from_file(spark, rows, path):
    """Like `frame`, but through a Parquet file, as real input arrives: Spark ships a local
    DataFrame inside its tasks, which fails for 10 MB rows."""
    table = pa.table({
        "id": [r[0] for r in rows], "text": [r[1] for r in rows], "source": [r[2] for r in rows],
        "domain": ["web"] * len(rows),
        "meta": pa.array([[] for _ in rows], type=pa.map_(pa.string(), pa.string())),
        "_file": pa.array([0] * len(rows), type=pa.int32()),
        "_row": pa.array(range(len(rows)), type=pa.int64()),
    })
    pq.write_table(table, path)
    return spark.read.parquet(str(path))


def test_bad_and_odd_input_passes_through_with_a_defined_result(spark, ctx, tmp_path):
    big = " ".join(f"{w}{i % 977}x" for i, w in enumerate(PROSE.split() * 60_000))  # ~12 MB
    assert len(big) > 10_000_000
    han = "数据清洗是训练语言模型之前最重要的一步因为重复的文档会让模型记住而不是学会语言的规律所以我们先删除近似重复"
    han += "我们还要检查每一个来源的语言和质量并且记录每一步删除了多少文档以及删除的原因"
    rows = [
        ("empty", "", "a"),
        ("blank", " \n\t ", "a"),
        ("punct", "!!! ... ???", "a"),
        ("one-word", "hello", "a"),
        ("one-word-copy", "Hello!", "a"),
        ("other-word", "goodbye", "a"),
        ("big", big, "a"),
        ("big-edited", edited(big, big[6_000_000:6_000_050], "a small edit"), "a"),
        ("han", han, "a"),
        ("han-edited", edited(han, "所以", "所已"), "a"),
        ("cyrillic", "Съешь же ещё этих мягких французских булок да выпей чаю " * 3, "a"),
        ("greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία και γράφω πολλές ακόμη λέξεις εδώ", "a"),
    ]
    df = frame_from_file(spark, rows, tmp_path / "odd.parquet")
    result = dedup_minhash.apply(df, DedupMinhashParams(), ctx)
    removed = {r["id"]: r["reason"] for r in result.removed.select("id", "reason").collect()}
    assert removed == {
        "blank": "near-duplicate of empty",        # no tokens at all: one empty shingle each
        "punct": "near-duplicate of empty",
        "one-word-copy": "near-duplicate of one-word",  # shorter than n: the whole text is one shingle
        "big-edited": "near-duplicate of big",
        "han-edited": "near-duplicate of han",       # Han shingles on characters
    }
    assert result.kept.count() == len(rows) - len(removed)


def test_removed_rows_name_their_survivor_and_component(spark, ctx):
    rows = [
        ("a", PROSE, "s1"),
        ("b", edited(PROSE, "forty", "thirty"), "s2"),
        ("c", "Something else entirely, with enough words to make a few shingles of its own.", "s1"),
        ("d", edited(PROSE, "wooden", "oak"), "s1"),
    ]
    result = dedup_minhash.apply(frame(spark, rows), DedupMinhashParams(), ctx)
    removed = {r["id"]: (r["reason"], r["duplicate_of"], r["cluster_id"], r["removed_by"])
               for r in result.removed.collect()}
    assert removed == {
        "b": ("near-duplicate of a", "a", "a", "dedup_minhash"),
        "d": ("near-duplicate of a", "a", "a", "dedup_minhash"),
    }
    kept = {r["id"]: r["cluster_id"] for r in result.kept.collect()}
    assert kept == {"a": "a", "c": None}
    assert set(result.kept.columns) == set(DOCUMENT_SCHEMA.names) | {"cluster_id"}

    per_source = dedup_minhash.apply(frame(spark, rows), DedupMinhashParams(per_source=True), ctx)
    assert {r["id"] for r in per_source.removed.collect()} == {"d"}


def test_a_score_column_keeps_the_best_copy(spark, ctx):
    rows = [("a", PROSE, "s"), ("b", edited(PROSE, "forty", "thirty"), "s"), ("c", edited(PROSE, "two", "three"), "s")]
    df = frame(spark, rows).withColumn("score_q", F.when(F.col("id") == "b", 0.9).when(F.col("id") == "a", 0.2))
    result = dedup_minhash.apply(df, DedupMinhashParams(score_column="score_q"), ctx)
    assert {r["id"]: r["duplicate_of"] for r in result.removed.collect()} == {"a": "b", "c": "b"}
    from pipelines import check_columns

    with pytest.raises(WinnowError, match="stage dedup_minhash: needs column score_missing"):
        check_columns([("dedup_minhash", "dedup_minhash", DedupMinhashParams(score_column="score_missing"))], df.columns)


def test_the_checks_agree_on_clear_cases(spark, ctx):
    rows = [("a", PROSE, "s"), ("b", edited(PROSE, "forty", "thirty"), "s"), ("c", "unrelated words " * 20, "s")]
    for check in ("signature", "exact", "none"):
        result = dedup_minhash.apply(frame(spark, rows), DedupMinhashParams(check=check), ctx)
        assert {r["id"] for r in result.removed.collect()} == {"b"}, check


def letters(i: int) -> str:
    """A three-letter word for `i` (base 26): no digits, which the normalization would fold to 0."""
    return "".join("abcdefghijklmnopqrstuvwxyz"[(i // 26 ** k) % 26] for k in range(3))


def pair_just_below_the_threshold(params: DedupMinhashParams) -> tuple[str, str, float, float]:
    """Two texts whose exact shingle Jaccard is just below the threshold but whose signatures agree
    on more than the threshold fraction of the K values (yet less than threshold + margin) and
    share a band (so they are a candidate pair). 44 distinct words, the middle one replaced: 5 of
    the 40 shingles differ on each side, J = 35/45 = 0.778. Of 1,000 replacement words, in a fixed
    order, the one with the highest agreement below threshold + margin is taken, so the pair is the
    same on every run (at K = 256: 0.832, above t + 1 sigma = 0.825 as well as t = 0.8)."""
    from pipelines import minhash_kernel as mk
    from pipelines.dedup_minhash import band_rows

    words = [letters(7 * i + 3) for i in range(44)]
    base = " ".join(words)
    others = [" ".join(words[:22] + ["edit" + letters(k)] + words[23:]) for k in range(1000)]
    sig = mk.signatures([base] + others, params.num_perm, params.ngram, params.seed)
    agree = mk.estimated_jaccard(sig[:1], sig[1:])
    shares_band = np.array([any(np.array_equal(sig[0][g], s[g]) for g in band_rows(params)) for s in sig[1:]])
    usable = np.flatnonzero(shares_band & (agree < params.threshold + params.margin()))
    best = int(usable[np.argmax(agree[usable])])
    other = others[best]
    exact = mk.jaccard(mk.shingle_set(base, params.ngram), mk.shingle_set(other, params.ngram))
    return base, other, exact, float(agree[best])


def test_the_signature_check_does_not_accept_a_pair_at_the_bare_threshold(spark, ctx):
    """Signature agreement between t and t + 3 sigma is not enough: exact Jaccard decides, and
    here it is below t, so both documents stay (as with check = "exact"). Accepting at agreement
    >= t would remove one."""
    params = DedupMinhashParams()
    base, other, exact, agree = pair_just_below_the_threshold(params)
    assert exact == pytest.approx(35 / 45)
    assert exact < params.threshold <= agree < params.threshold + params.margin(), (exact, agree)
    assert agree >= params.threshold + params.margin() / 3, agree  # a 1-sigma margin would accept it too
    rows = [("a", base, "s"), ("b", other, "s")]
    for check in ("signature", "exact"):
        result = dedup_minhash.apply(frame(spark, rows), DedupMinhashParams(check=check), ctx)
        assert result.stats["candidate_pairs"] == 1, check  # a candidate: plain LSH would remove "b"
        assert result.removed.count() == 0, check
        assert sorted(r["id"] for r in result.kept.collect()) == ["a", "b"], check


@pytest.mark.parametrize("bad, message", [
    ({"threshold": 1.2}, "threshold"),
    ({"bands": 4}, "bands and rows go together"),
    ({"bands": 40, "rows": 10}, "at most num_perm"),
    ({"check": "maybe"}, "check"),
    ({"num_perm": 1}, "num_perm"),
    ({"probes": 0}, "probes"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(WinnowError, match=message):
        DedupMinhashParams(**bad)


def test_regrouped_bands_are_deterministic_permutations_of_the_values():
    from pipelines.dedup_minhash import band_rows

    params = DedupMinhashParams(probes=3)
    b, r = params.banding()
    rows = band_rows(params)
    assert len(rows) == 3 * b and all(len(x) == r for x in rows)
    assert np.array_equal(np.concatenate(rows[:b]), np.arange(b * r))  # grouping 0: plain LSH
    for g in (1, 2):
        grouping = np.concatenate(rows[g * b:(g + 1) * b])
        assert len(set(grouping.tolist())) == b * r and grouping.max() < params.num_perm
    assert all(np.array_equal(x, y) for x, y in zip(rows, band_rows(DedupMinhashParams(probes=3))))
    assert not np.array_equal(rows[b], band_rows(DedupMinhashParams(probes=3, seed=2))[b])


def test_a_second_grouping_only_adds_duplicates(pool, ctx):
    """More groupings give a superset of candidate pairs, so every document plain LSH removes is
    still removed (components only grow, and a survivor is its component's first document)."""
    plain = dedup_minhash.apply(pool, DedupMinhashParams(probes=1), ctx)
    plain_removed = {r["id"] for r in plain.removed.select("id").collect()}
    two = dedup_minhash.apply(pool, DedupMinhashParams(probes=2), ctx)
    two_removed = {r["id"] for r in two.removed.select("id").collect()}
    assert plain_removed <= two_removed
    assert two.stats["candidate_pairs"] > plain.stats["candidate_pairs"]
    truth = truth_ids()
    assert len(two_removed & truth) >= len(plain_removed & truth)
    assert two_removed - plain_removed <= truth  # what the second grouping adds is true duplicates


def test_explain_prints_the_banding(capsys):
    assert winnow(["dedup", "--explain", "--threshold", "0.7", "--num-perm", "240", "--fp-weight", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "bands x rows = 24 x 10" in out
    assert "0.70    0.4973" in out


def test_winnow_dedup_writes_the_output_layout_with_a_component_plot(pool_slice, tmp_path, prefect_server, spark, capsys):
    out = tmp_path / "dedup"
    status = winnow(["dedup", *[str(p) for p in pool_slice["paths"]], "--output", str(out), "--check", "exact"])
    assert status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["dedup_minhash"]["removed"] >= 60   # at least the planted exact duplicates
    report = (out / "report.md").read_text()
    assert "near-duplicate component sizes" in report
    assert (out / "plots" / "dedup_minhash-component-sizes.png").stat().st_size > 1000
    assert manifest["engine"]["name"] == "local"  # a dedup of a few MB on one machine
    # --engine spark: the same command on Spark, the same kept rows
    on_spark = tmp_path / "dedup-spark"
    assert winnow(["dedup", *[str(p) for p in pool_slice["paths"]], "--output", str(on_spark), "--check", "exact",
                   "--engine", "spark"]) == 0
    assert json.loads((on_spark / "manifest.json").read_text())["engine"]["name"] == "spark"
    kept = lambda d: [r["id"] for f in sorted((d / "kept").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]  # noqa: E731
    assert kept(out) == kept(on_spark)
    assert winnow(["dedup", str(pool_slice["paths"][0])]) == 2
    assert "winnow: error:" in capsys.readouterr().err
    assert winnow(["dedup", str(pool_slice["paths"][0]), "--output", str(tmp_path / "x"), "--engine", "fast"]) == 2
    assert "--engine: 'fast' is not one of auto, spark, local" in capsys.readouterr().err


def removed_rows(result) -> list[tuple]:
    return sorted((r["id"], r["cluster_id"], r["duplicate_of"]) for r in result.removed.collect())


@pytest.mark.parametrize("check", ["signature", "exact"])
def test_the_binned_check_and_the_joined_check_give_the_same_output(pool, spark, monkeypatch, check):
    """The check runs per bin of candidate components (cogroup) while the candidate pairs are
    few, and as distributed joins otherwise (a component above MAX_GROUP_DOCS): both give the
    same removed rows, clusters and ambiguous-pair count. Tiny bins (BIN_DOCS = 7) put many
    components in many bins."""
    subset = pool.where(F.col("_file") >= 2)
    params = DedupMinhashParams(check=check)
    outputs = []
    for bin_docs, max_group in ((dedup_minhash.BIN_DOCS, dedup_minhash.MAX_GROUP_DOCS), (7, dedup_minhash.MAX_GROUP_DOCS), (7, 0)):
        monkeypatch.setattr(dedup_minhash, "BIN_DOCS", bin_docs)
        monkeypatch.setattr(dedup_minhash, "MAX_GROUP_DOCS", max_group)
        ctx = StageContext(spark)
        result = dedup_minhash.apply(subset, params, ctx)
        outputs.append((removed_rows(result), result.stats["ambiguous_pairs"], result.stats["component_sizes"]))
        ctx.release()
    assert len(outputs[0][0]) > 50
    assert outputs[0][1] > 0
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]


def bucket_pairs_reference(rows: list[tuple]) -> set[tuple[int, int]]:
    """(key, source, node) rows -> the star-and-chain pairs, straight from the definition."""
    buckets: dict = {}
    for key, source, node in rows:
        buckets.setdefault((key, source), []).append(node)
    pairs = set()
    for members in buckets.values():
        members = sorted(members)
        for i, node in enumerate(members):
            for other in (members[0], members[i - 1] if i else None):
                if other is not None and other != node:
                    pairs.add((node, other))
    return pairs


@pytest.mark.parametrize("per_source", [False, True])
def test_candidate_pairs_match_their_definition_across_batches_and_partitions(spark, per_source):
    """Buckets sorted within partitions run across Arrow batches (7 rows a batch here): the
    kernel's carried bucket gives the same pairs as the definition."""
    from pyspark.sql import types as T

    rng = np.random.default_rng(5)
    n = 400
    keys = rng.integers(0, 60, size=(n, 3)).tolist()  # 3 bands, 60 keys: buckets of many sizes
    sources = rng.choice(["a", "b", None], size=n).tolist()
    rows = [(node, sources[node], keys[node]) for node in rng.permutation(n).tolist()]
    schema = T.StructType([T.StructField("node", T.LongType()), T.StructField("source", T.StringType()),
                           T.StructField("keys", T.ArrayType(T.LongType()))])
    sigs = spark.createDataFrame(rows, schema).repartition(3)
    extra = ["source"] if per_source else []
    buckets = sigs.select(F.explode("keys").alias("key"), *extra, "node")
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    try:
        got = {(r["src"], r["dst"]) for r in dedup_minhash._candidates(buckets, extra).collect()}
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)
    want = bucket_pairs_reference(
        [(k, s if per_source else None, node) for node, s, ks in rows for k in ks])
    assert got == want
    assert all(src > dst for src, dst in got)


@pytest.mark.parametrize("check", ["signature", "exact"])
def test_a_bin_gives_the_same_labels_with_the_numpy_kernel(monkeypatch, check):
    """verify_bin with the compiled kernel and with the numpy reference (numba missing): the same
    components and ambiguous count, on near-copies around the threshold and unrelated texts."""
    from pipelines import minhash_numba

    base, other, _, _ = pair_just_below_the_threshold(DedupMinhashParams())
    texts = [PROSE, edited(PROSE, "forty", "thirty"), base, other, edited(PROSE, "sisters", "brothers"),
             "unrelated words " * 20, "café naïve " * 30]
    nodes = np.array([50, 7, 31, 12, 99, 3, 64], dtype=np.int64)  # any order
    src = np.array([50, 99, 31, 64, 99], dtype=np.int64)
    dst = np.array([7, 7, 12, 3, 50], dtype=np.int64)
    params = DedupMinhashParams(check=check)
    compiled = dedup_minhash.verify_bin(nodes, texts, src, dst, params)
    monkeypatch.setattr(minhash_numba, "AVAILABLE", False)
    reference = dedup_minhash.verify_bin(nodes, texts, src, dst, params)
    assert compiled[0].tolist() == reference[0].tolist() == [7, 50, 99]
    assert compiled[1].tolist() == reference[1].tolist() == [7, 7, 7]
    assert compiled[2] == reference[2]
