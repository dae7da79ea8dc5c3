"""The stages a flow config may name, and the column check over a list of them."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from core.errors import ConfigError

from . import decompose, dedup_exact, dedup_minhash, export, heuristics, rephrase, score, select, tokenize
from .schema import DOCUMENT_SCHEMA
from .stage import Columns, StageSpec

# Stages a flow config may list under [[stages]]. `read` and `write` open and close every run
# and are configured by [[inputs]] and [write].
STAGES: dict[str, StageSpec] = {
    dedup_exact.NAME: StageSpec(dedup_exact.NAME, dedup_exact.DedupExactParams, dedup_exact.apply,
                                "exact dedup on the hash of normalized text", dedup_exact.columns, dedup_exact.VERSION),
    dedup_minhash.NAME: StageSpec(dedup_minhash.NAME, dedup_minhash.DedupMinhashParams, dedup_minhash.apply,
                                  "MinHash-LSH near-duplicate removal with connected components",
                                  dedup_minhash.columns, dedup_minhash.VERSION),
    heuristics.NAME: StageSpec(heuristics.NAME, heuristics.HeuristicsParams, heuristics.apply,
                               "Gopher / RefinedWeb / C4 rules; removed with the first failing rule",
                               heuristics.columns, heuristics.VERSION),
    score.NAME: StageSpec(score.NAME, score.ScoreParams, score.apply,
                          "scorers from filters/ add score_<name> columns; removes nothing", score.columns, score.VERSION),
    select.NAME: StageSpec(select.NAME, select.SelectParams, select.apply,
                           "keep by score threshold, top (or lowest) fraction of documents or characters, random fraction, "
                           "CCNet bucket or Ankner band; optionally per domain",
                           select.columns, select.VERSION),
    rephrase.NAME: StageSpec(rephrase.NAME, rephrase.RephraseParams, rephrase.apply,
                             "WRAP: an LLM rewrites each document in each style; keeps the input and adds the "
                             "synthetic documents", rephrase.columns, rephrase.VERSION),
    tokenize.NAME: StageSpec(tokenize.NAME, tokenize.TokenizeParams, tokenize.apply,
                             "token ids (tokens, n_tokens) with a given or trained tokenizers tokenizer",
                             tokenize.columns, tokenize.VERSION),
    decompose.NAME: StageSpec(decompose.NAME, decompose.DecomposeParams, decompose.apply,
                              "dataset decomposition: each document's tokens in power-of-two chunks",
                              decompose.columns, decompose.VERSION),
    export.NAME: StageSpec(export.NAME, export.ExportParams, export.apply,
                           "training shards per bucket (and domain) in datasets' save_to_disk layout",
                           export.columns, export.VERSION),
}

# The columns of the documents `read` hands to the first configured stage.
READ_COLUMNS: tuple[str, ...] = tuple(DOCUMENT_SCHEMA.names)


def _who_adds(column: str) -> str:
    """Which stage would add `column`, as a hint; "" when no stage with default parameters does."""
    if column.startswith("score_"):
        return f"a `score` stage with a scorer named {column[len('score_'):]} adds it"
    for name, spec in STAGES.items():
        try:
            adds = spec.columns(spec.params()).adds
        except Exception:  # noqa: BLE001 - a stage whose parameters have no defaults gives no hint
            continue
        if column in adds:
            return f"a `{name}` stage adds it"
    return ""


def check_columns(plans: Iterable[tuple[str, str, Any]], start_columns: Sequence[str]) -> list[str]:
    """Walk the stages ``(label, stage name, params)`` in order from `start_columns` (the read
    documents' columns, or those of the Parquet a run starts from), and raise a one-line
    ConfigError at the first stage that needs a column no stage before it adds, or adds a column
    that is already there. Returns the columns after the last stage. Reads no data."""
    origin = {c: "the input" for c in start_columns}
    for label, name, params in plans:
        cols: Columns = STAGES[name].columns(params)
        for c in cols.requires:
            if c not in origin:
                hint = _who_adds(c)
                shown = ", ".join(x for x in origin if not x.startswith("_"))
                raise ConfigError(f"stage {label}: needs column {c}, which no stage before it adds "
                                  f"({hint + '; ' if hint else ''}columns before it: {shown})")
        for c in cols.adds:
            if c in origin:
                where = "the input already has" if origin[c] == "the input" else f"stage {origin[c]} adds before it"
                raise ConfigError(f"stage {label}: adds column {c}, which {where}; "
                                  "drop it or name it differently")
            origin[c] = label
    return list(origin)


