"""The `heuristics` stage on Spark: reasons, domains, rewriting, parameters."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from core.errors import WinnowError
from filters.heuristics import HeuristicsConfig, check
from pipelines import heuristics
from pipelines.heuristics import HeuristicsParams
from pipelines.schema import DOCUMENT_SCHEMA
from pipelines.stage import StageContext

PROSE = ("The history of the town is told in the records of the church and of the old mill by the "
         "river. That story has been written down with care by the families who have lived there "
         "for generations, and it begins with a flood in the spring of a wet year. The miller "
         "kept a diary of the water levels, the prices of grain and the names of travellers who "
         "came to trade. Those pages survive with the parish registers, and together they show "
         "how a small place grew into a market that served the whole valley.")
SHOUT = "BUY NOW!"


def frame(spark, rows):
    data = [(f"d{i}", text, "s", domain, {}, 0, i) for i, (text, domain) in enumerate(rows)]
    return spark.createDataFrame(data, DOCUMENT_SCHEMA)  # it carries _file and _row


def test_documents_failing_a_rule_are_removed_with_the_rule_as_reason(spark):
    rows = [(PROSE, "web"), ("too short to be a page", "web"), ("", "web"), (None, "web"),
            (PROSE + "\n" + SHOUT, "web"), ("too short but code", "code")]
    ctx = StageContext(spark)
    result = heuristics.apply(frame(spark, rows), HeuristicsParams(domains=("web",)), ctx)
    kept = {r["id"]: r["text"] for r in result.kept.collect()}
    removed = {r["id"]: r["reason"] for r in result.removed.collect()}
    assert set(kept) | set(removed) == {f"d{i}" for i in range(6)} and not set(kept) & set(removed)
    assert "d0" in kept and "d5" in kept  # prose passes; code is not judged
    assert removed["d1"].startswith("gopher_word_count:")
    assert removed["d2"].startswith("gopher_word_count:") and removed["d3"].startswith("gopher_word_count:")
    # The shouting line is dropped by RefinedWeb's line modifier and the rest is kept, rewritten.
    assert kept["d4"] == check(PROSE + "\n" + SHOUT, HeuristicsConfig()).text and SHOUT not in kept["d4"]
    assert result.removed.where(F.col("removed_by") != "heuristics").count() == 0
    from pipelines.stage import removed_by_reason

    assert removed_by_reason(result.removed)["gopher_word_count"] == 3  # as the flow counts it
    ctx.release()


def test_rewrite_off_keeps_the_original_text_and_thresholds_override_defaults(spark):
    rows = [(PROSE + "\n" + SHOUT, "web"), ("a short page of only nine words in it", "web")]
    ctx = StageContext(spark)
    result = heuristics.apply(frame(spark, rows), HeuristicsParams(rewrite=False, rules=("gopher_word_count",),
                                                                   thresholds={"min_words": 5}), ctx)
    kept = {r["id"]: r["text"] for r in result.kept.collect()}
    assert kept == {"d0": PROSE + "\n" + SHOUT, "d1": rows[1][0]}
    ctx.release()


@pytest.mark.parametrize("params, message", [
    (dict(rules=("gopher_colour",)), "unknown rule 'gopher_colour'"),
    (dict(thresholds={"min_wordz": 3}), "unknown limit 'min_wordz'"),
    (dict(line_modifiers=("c5",)), "unknown line modifier 'c5'"),
    (dict(thresholds={"max_dup_line_fraction": 2.0}), "fraction"),
])
def test_parameters_are_checked(params, message):
    with pytest.raises(WinnowError, match=message):
        HeuristicsParams(**params)
