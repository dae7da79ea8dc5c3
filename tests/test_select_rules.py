"""The select stage's newer rules on small hand-made frames: CCNet buckets, Ankner et al.'s
perplexity bands (by documents and by characters), order = "low", random_char_fraction and
stratification by domain; their parameters' checks; and every rule against a plain-Python
reference on a frame spread over several partitions."""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from fractions import Fraction

import pytest
from pyspark.sql import functions as F

from core.errors import WinnowError
from pipelines import select
from pipelines.reasons import reason_kind
from pipelines.select import RANDOM_BITS, SelectParams

SCHEMA = "id string, _file string, _row long, text string, domain string, score double"
# Ten documents with distinct scores 0..9 in a shuffled input order, and one without a score.
SCORES = [5, 3, 9, 1, 7, 0, 8, 2, 6, 4]
# Characters by score: 40 for the lowest, 80 for the highest, 10 for the others: 200 in all.
LENGTH = {0: 40, 9: 80}


@pytest.fixture(scope="module")
def ten(spark):
    rows = [(f"d{s}", "a" if i < 5 else "b", i, "x" * LENGTH.get(s, 10), "web", float(s)) for i, s in enumerate(SCORES)]
    rows.append(("null", "a", 99, "y" * 30, "web", None))
    return spark.createDataFrame(rows, SCHEMA)


def scores(df) -> list[float]:
    return sorted(r["score"] for r in df.select("score").collect())


def run(df, ctx, **params):
    return select.apply(df, SelectParams(**({"score": "score"} | params)), ctx)


def test_ccnet_buckets_cut_at_the_30th_and_60th_percentiles(ten, ctx):
    results = {b: run(ten, ctx, bucket=b) for b in ("head", "middle", "tail")}
    # 10 scored documents: head = ranks 1..3, middle = 4..6, tail = 7..10; the null is in none.
    assert {b: scores(r.kept) for b, r in results.items()} == {"head": [0, 1, 2], "middle": [3, 4, 5],
                                                               "tail": [6, 7, 8, 9]}
    middle = results["middle"]
    assert middle.stats == {"rule": "CCNet middle (score from the 30th up to the 60th percentile)", "score": "score",
                            "band": [0.3, 0.6], "unit": "documents", "lower_edge": 2.0, "upper_edge": 5.0, "kept": 3}
    why = {r["id"]: r["reason"] for r in middle.removed.select("id", "reason").collect()}
    assert why["d1"] == "score below the band: 1.000 < 2 (CCNet middle (score from the 30th up to the 60th percentile))"
    assert why["d9"].startswith("score above the band: 9.000 > 5 (")
    assert why["d2"].startswith("score equal to the band's lower edge: ")
    assert why["null"] == "score is null"
    assert {reason_kind(w) for w in why.values()} == {"score below the band", "score above the band",
                                                      "score equal to the band's lower edge", "score is null"}
    assert SelectParams(score="s", bucket="head").rule == "CCNet head (score below the 30th percentile)"
    assert SelectParams(score="s", bucket="tail", bucket_percentiles=(12.5, 22)).rule == \
        "CCNet tail (score at or above the 22nd percentile)"


def test_bucket_ties_are_broken_by_input_order(spark, ctx):
    # Ten documents with one score: input order is (_file, _row): a0..a4, then b0..b4.
    order = [("a", i) for i in range(5)] + [("b", i) for i in range(5)]
    rows = [(f"{f}{i}", f, i, "t", "web", 0.5) for f, i in order]
    df = spark.createDataFrame(random.Random(3).sample(rows, len(rows)), SCHEMA).repartition(3)
    middle = run(df, ctx, bucket="middle")
    assert sorted(r["id"] for r in middle.kept.select("id").collect()) == ["a3", "a4", "b0"]
    kinds = {r["id"]: reason_kind(r["reason"]) for r in middle.removed.select("id", "reason").collect()}
    assert kinds == {**{i: "score equal to the band's lower edge" for i in ("a0", "a1", "a2")},
                     **{i: "score equal to the band's upper edge" for i in ("b1", "b2", "b3", "b4")}}


def test_ankner_low_medium_high_by_documents(ten, ctx):
    got = {p: scores(run(ten, ctx, perplexity=p).kept) for p in ("low", "medium", "high")}
    # rate 0.5 on 10: low = ranks 1..5, medium = [0.25, 0.75) = ranks 4..8, high = ranks 6..10.
    assert got == {"low": [0, 1, 2, 3, 4], "medium": [3, 4, 5, 6, 7], "high": [5, 6, 7, 8, 9]}
    assert SelectParams(score="s", perplexity="medium").rule == "Ankner medium 0.5 of documents"


def test_ankner_low_medium_high_by_characters(ten, ctx):
    results = {p: run(ten, ctx, perplexity=p, unit="characters") for p in ("low", "medium", "high")}
    got = {p: scores(r.kept) for p, r in results.items()}
    # Running characters in ascending score: 40, 50, 60, ..., 120, 200. low: up to the document
    # that reaches 100 (score 6); medium: after the one that reaches 50 (score 1), up to the one
    # that reaches 150 (score 9); high: after score 6. The unscored document's 30 do not count.
    assert got == {"low": [0, 1, 2, 3, 4, 5, 6], "medium": [2, 3, 4, 5, 6, 7, 8, 9], "high": [7, 8, 9]}
    assert results["medium"].stats["unit"] == "characters"
    assert (results["medium"].stats["lower_edge"], results["medium"].stats["upper_edge"]) == (1.0, 9.0)
    assert results["high"].stats["rule"] == "Ankner high 0.5 of characters"


def test_order_low_takes_the_lowest_scores_first(ten, ctx):
    top = run(ten, ctx, top_fraction=0.3, order="low")
    assert scores(top.kept) == [0, 1, 2, 3]  # ceil(0.3 * 11): the unscored document counts in N
    assert top.stats["threshold"] == 3.0 and top.stats["order"] == "low"
    why = {r["id"]: r["reason"] for r in top.removed.select("id", "reason").collect()}
    assert why["d7"] == "score above the cut: 7.000 > 3 (top 0.3 of documents, lower is better)"
    assert why["null"] == "score is null"
    below = run(ten, ctx, threshold=2.5, order="low")
    assert scores(below.kept) == [0, 1, 2]
    why = {r["id"]: r["reason"] for r in below.removed.select("id", "reason").collect()}
    assert why["d3"] == "score above the threshold: 3.000 > 2.5" and why["null"] == "score is null"


def random_order(df, seed):
    """The documents in random_fraction's order: its key (the id's seeded hash) descending."""
    key = F.xxhash64("id", F.lit(seed)).bitwiseAND(F.lit((1 << RANDOM_BITS) - 1).cast("long"))
    rows = df.select("id", "_file", "_row", F.length("text").alias("n"), key.alias("k")).collect()
    return sorted(rows, key=lambda r: (-r["k"], r["_file"], r["_row"]))


def test_random_char_fraction_holds_the_fraction_of_characters(spark, ctx):
    rng = random.Random(5)
    rows = [(f"r{i}", "f", i, "z" * rng.randint(1, 90), "web", None) for i in range(80)]
    df = spark.createDataFrame(rows, SCHEMA)
    result = select.apply(df, SelectParams(random_char_fraction=0.3, seed=4), ctx)
    total = sum(len(r[3]) for r in rows)
    want, held = [], 0
    for r in random_order(df, 4):
        want.append(r["id"])
        held += r["n"]
        if held >= 0.3 * total:
            break
    assert sorted(r["id"] for r in result.kept.select("id").collect()) == sorted(want)
    assert held - 90 < 0.3 * total <= held  # about 0.3 of the characters: the crossing document kept
    assert result.stats["rule"] == "random 0.3 of characters, seed 4"


@pytest.fixture(scope="module")
def domains(spark):
    """web 5, code 8 (all scored low), books 3 and 2 without a domain, in one input order."""
    sizes = {"web": (5, 10.0), "code": (8, 0.0), "books": (3, 5.0), None: (2, 20.0)}
    rows = []
    for d, (n, base) in sizes.items():
        rows += [(f"{d}{i}", "f", len(rows), "w" * 20, d, base + i / 10) for i in range(n)]
    return spark.createDataFrame(random.Random(1).sample(rows, len(rows)), SCHEMA)


def by_domain(df) -> dict:
    out: dict = {}
    for r in df.select("domain", "id").collect():
        out.setdefault(r["domain"], []).append(r["id"])
    return {d: sorted(ids) for d, ids in out.items()}


def test_by_domain_keeps_each_domains_share(domains, ctx):
    top = run(domains, ctx, top_fraction=0.5, by="domain")
    # ceil(0.5 * n) of each domain's best: 3 of 5, 4 of 8, 2 of 3, 1 of 2 (the null domain).
    assert by_domain(top.kept) == {"web": ["web2", "web3", "web4"], "code": ["code4", "code5", "code6", "code7"],
                                   "books": ["books1", "books2"], None: ["None1"]}
    assert top.stats["rule"] == "top 0.5 of documents per domain" and top.stats["by"] == "domain"
    assert top.stats["groups"] == {"web": {"documents": 5, "kept": 3, "cut": 10.2},
                                   "code": {"documents": 8, "kept": 4, "cut": 0.4},
                                   "books": {"documents": 3, "kept": 2, "cut": 5.1},
                                   "null": {"documents": 2, "kept": 1, "cut": 20.1}}
    reasons = {r["id"]: r["reason"] for r in top.removed.select("id", "reason").collect()}
    assert reasons["code0"].startswith("score below the cut: 0.000 < 0.4 (top 0.5 of documents per domain)")
    head = run(domains, ctx, bucket="head", by="domain")
    # ceil(0.3 * n): 2 of 5, 3 of 8, 1 of 3, 1 of 2.
    assert by_domain(head.kept) == {"web": ["web0", "web1"], "code": ["code0", "code1", "code2"],
                                    "books": ["books0"], None: ["None0"]}
    assert head.stats["groups"]["code"] == {"documents": 8, "kept": 3, "lower_edge": None, "upper_edge": 0.2}
    rand = run(domains, ctx, random_fraction=0.5, by="domain")
    assert {d: len(ids) for d, ids in by_domain(rand.kept).items()} == {"web": 3, "code": 4, "books": 2, None: 1}


def test_too_many_groups_is_refused(domains, ctx, monkeypatch):
    monkeypatch.setattr(select, "MAX_GROUPS", 3)
    with pytest.raises(WinnowError, match="select.by: column domain has more than 3 distinct values"):
        run(domains, ctx, top_fraction=0.5, by="domain")


@contextmanager
def partitions(spark, n):
    """Sorts into `n` partitions that adaptive execution does not merge: cuts cross partitions."""
    keys = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.coalescePartitions.enabled")
    old = {k: spark.conf.get(k) for k in keys}
    spark.conf.set(keys[0], str(n))
    spark.conf.set(keys[1], "false")
    try:
        yield
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)


def reference(rows, params: SelectParams) -> set[str]:
    """What `params` keeps, in plain Python: the spec of every rule but threshold and random."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["domain"] if params.by else 0, []).append(r)
    chars = params.characters
    weight = (lambda r: len(r["text"] or "")) if chars else (lambda r: 1)
    kept: set[str] = set()
    for members in groups.values():
        scored = [r for r in members if r["score"] is not None]
        band = params.band()
        if band is None:
            low = params.order == "low"
            scored.sort(key=lambda r: (r["score"] if low else -r["score"], r["_file"], r["_row"]))
            f = params.top_fraction or params.top_char_fraction
            target = f * sum(map(weight, members)) if chars else math.ceil(f * len(members))
            held = 0
            for r in scored:
                kept.add(r["id"])
                held += weight(r)
                if held >= target:
                    break
            continue
        scored.sort(key=lambda r: (r["score"], r["_file"], r["_row"]))
        total = sum(map(weight, scored))
        lo, hi = math.ceil(band[0] * total), math.ceil(band[1] * total)
        running = [0]
        for r in scored:
            running.append(running[-1] + weight(r))
        first = next((i for i in range(len(scored)) if lo > 0 and running[i + 1] >= lo), -1)
        last = len(scored) - 1 if band[1] == 1 else next(
            (i for i in range(len(scored)) if hi > 0 and running[i + 1] >= hi), -1)
        kept |= {r["id"] for r in scored[first + 1:last + 1]}
    return kept


@pytest.mark.parametrize("params", [
    dict(perplexity="medium", rate=0.3, unit="characters", by="domain"),
    dict(top_char_fraction=0.37, order="low"),
    dict(bucket="middle", bucket_percentiles=(12.5, 71), by="domain"),
], ids=["ankner-chars-by-domain", "top-chars-low", "ccnet-middle-by-domain"])
def test_rules_match_a_plain_python_reference_across_partitions(spark, ctx, params):
    rng = random.Random(11)
    rows = []
    for i in range(240):
        score = None if rng.random() < 0.05 else round(rng.random(), 1)  # ties and nulls
        rows.append({"id": f"x{i}", "_file": rng.choice(["f0", "f1", "f2"]), "_row": i,
                     "text": "t" * rng.randint(0, 60), "domain": rng.choice(["web", "code", "books", None]),
                     "score": score})
    df = spark.createDataFrame([tuple(r.values()) for r in rows], SCHEMA).repartition(4)
    p = SelectParams(score="score", **params)
    with partitions(spark, 5):
        result = select.apply(df, p, ctx)
        got = {r["id"] for r in result.kept.select("id").collect()}
    assert got == reference(rows, p)
    if p.by:
        assert sum(g["kept"] for g in result.stats["groups"].values()) == len(got)


def test_band_edges_are_exact_fractions():
    assert SelectParams(score="s", perplexity="medium", rate=0.3).band() == (Fraction(7, 20), Fraction(13, 20))
    assert SelectParams(score="s", perplexity="high", rate=0.2).band() == (Fraction(4, 5), Fraction(1))
    assert SelectParams(score="s", bucket="middle").band() == (Fraction(3, 10), Fraction(3, 5))


def test_columns_follow_the_rule():
    assert select.columns(SelectParams(score="s", bucket="head")).requires == ("s", "id", "_file", "_row")
    chars = select.columns(SelectParams(score="s", perplexity="low", unit="characters", by="domain"))
    assert chars.requires == ("s", "id", "_file", "_row", "text", "domain")
    assert "text" in select.columns(SelectParams(random_char_fraction=0.1)).requires
    assert SelectParams(score="s", top_char_fraction=0.1, by="domain").rule == "top 0.1 of characters per domain"


@pytest.mark.parametrize("params, message", [
    (dict(score="s", bucket="head", perplexity="low"), "exactly one of"),
    (dict(score="s", random_char_fraction=0.0), "select.random_char_fraction: must be in (0, 1]"),
    (dict(score="s", bucket="top"), "unknown bucket 'top' (known: head, middle, tail)"),
    (dict(score="s", perplexity="mid"), "unknown rule 'mid' (known: low, medium, high)"),
    (dict(score="s", top_fraction=0.1, order="lowest"), "unknown order 'lowest'"),
    (dict(score="s", bucket="head", unit="tokens"), "unknown unit 'tokens'"),
    (dict(score="s", bucket="head", bucket_percentiles=(60, 30)), "0 <= a < b <= 100"),
    (dict(score="s", bucket="head", bucket_percentiles=(-1, 30)), "0 <= a < b <= 100"),
    (dict(score="s", bucket="head", bucket_percentiles=(30, 101)), "0 <= a < b <= 100"),
    (dict(score="s", perplexity="low", rate=0.0), "select.rate: must be in (0, 1]"),
    (dict(score="s", perplexity="low", rate=1.5), "select.rate: must be in (0, 1]"),
    (dict(score="s", bucket="head", rate=0.3), "rate: applies to the perplexity rule only"),
    (dict(score="s", perplexity="low", bucket_percentiles=(10, 20)), "applies to the bucket rule only"),
    (dict(score="s", top_fraction=0.1, unit="characters"), "use top_char_fraction"),
    (dict(score="s", bucket="head", order="low"), "select.order: applies to threshold"),
    (dict(random_fraction=0.1, order="low"), "select.order: applies to threshold"),
    (dict(score="s", threshold=0.5, by="domain"), "not threshold"),
    (dict(score="s", top_fraction=0.1, by=""), "select.by: name a column"),
    (dict(bucket="head"), "name the score column"),
])
def test_new_parameters_are_checked(params, message):
    with pytest.raises(WinnowError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as err:
        SelectParams(**params)
    assert "\n" not in str(err.value)
