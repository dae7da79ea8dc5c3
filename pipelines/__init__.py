"""Spark stages: DataFrame in, DataFrame out. The only package that imports pyspark."""
from __future__ import annotations

from . import decompose, dedup_exact, dedup_minhash, export, heuristics, score, select, tokenize
from .stage import StageSpec

# Stages a flow config may list under [[stages]]. `read` and `write` open and close every run
# and are configured by [[inputs]] and [write].
STAGES: dict[str, StageSpec] = {
    dedup_exact.NAME: StageSpec(dedup_exact.NAME, dedup_exact.DedupExactParams, dedup_exact.apply,
                                "exact dedup on the hash of normalized text"),
    dedup_minhash.NAME: StageSpec(dedup_minhash.NAME, dedup_minhash.DedupMinhashParams, dedup_minhash.apply,
                                  "MinHash-LSH near-duplicate removal with connected components"),
    heuristics.NAME: StageSpec(heuristics.NAME, heuristics.HeuristicsParams, heuristics.apply,
                               "Gopher / RefinedWeb / C4 rules; removed with the first failing rule"),
    score.NAME: StageSpec(score.NAME, score.ScoreParams, score.apply,
                          "scorers from filters/ add score_<name> columns; removes nothing"),
    select.NAME: StageSpec(select.NAME, select.SelectParams, select.apply,
                           "keep by score threshold, top fraction of documents or characters, or random fraction"),
    tokenize.NAME: StageSpec(tokenize.NAME, tokenize.TokenizeParams, tokenize.apply,
                             "token ids (tokens, n_tokens) with a given or trained tokenizers tokenizer"),
    decompose.NAME: StageSpec(decompose.NAME, decompose.DecomposeParams, decompose.apply,
                              "dataset decomposition: each document's tokens in power-of-two chunks"),
    export.NAME: StageSpec(export.NAME, export.ExportParams, export.apply,
                           "training shards per bucket (and domain) in datasets' save_to_disk layout"),
}
