"""Stage `heuristics`: the Gopher / RefinedWeb / C4 rules of `filters.heuristics`, each document
judged once, removed with the first failing rule as its reason.

- ``line_modifiers`` rewrite the text first (RefinedWeb's by default, C4's line filter on
  request); with ``rewrite`` (default) the kept document is the rewritten text, as in DCLM.
- ``domains`` limits the stage to documents of those domains (code and dictionaries fail prose
  rules by nature); the others pass through unjudged and are counted as kept.
- ``thresholds`` overrides rule limits by their `HeuristicsConfig` field names, e.g.
  ``thresholds = {min_words = 20}``.
- The reason is ``<rule>: <detail>``, so the flow's count of removed rows per kind of reason
  (`pipelines.stage`) is the count per first failing rule.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param
from filters.heuristics import LINE_MODIFIERS, RULES, HeuristicsConfig, check

from .stage import Columns, StageContext, StageResult

NAME = "heuristics"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1


@dataclass(frozen=True)
class HeuristicsParams:
    rules: tuple[str, ...] = param(tuple(RULES), choices=tuple(RULES), metavar="RULE",
                                   help="the rules to apply, by name (filters/heuristics.py); a document "
                                   "is removed with the first one it fails")
    line_modifiers: tuple[str, ...] = param(("refinedweb",), choices=LINE_MODIFIERS, metavar="NAME",
                                            help="line filters that rewrite the text before the rules: "
                                            "refinedweb, c4 (C4's line filter)")
    thresholds: dict[str, int | float | bool] = param(
        default_factory=dict, metavar="NAME=VALUE",
        help="rule limits overridden by their HeuristicsConfig field names, e.g. min_words=20")
    domains: tuple[str, ...] = param((), metavar="DOMAIN",
                                     help="judge only documents of these domains; the others pass "
                                     "unjudged (empty: every domain)")
    rewrite: bool = param(True, help="keep the text as the line modifiers rewrote it (as DCLM), "
                          "not the original")

    def __post_init__(self) -> None:
        self.config()

    def config(self) -> HeuristicsConfig:
        known = {f.name for f in dataclasses.fields(HeuristicsConfig)} - {"rules", "line_modifiers"}
        unknown = sorted(set(self.thresholds) - known)
        if unknown:
            raise WinnowError(f"heuristics.thresholds: unknown limit {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return HeuristicsConfig(rules=self.rules, line_modifiers=self.line_modifiers, **self.thresholds)


def columns(params: HeuristicsParams) -> Columns:
    return Columns(requires=("text",) + (("domain",) if params.domains else ()))


def _kernel(config: HeuristicsConfig, domains: frozenset[str], rewrite: bool):
    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            names = batch.schema.names
            texts = batch.column(names.index("text")).to_pylist()
            doms = batch.column(names.index("domain")).to_pylist() if domains else None
            reasons, new_texts = [], []
            for i, text in enumerate(texts):
                if doms is not None and doms[i] not in domains:
                    reasons.append(None)
                    new_texts.append(text)
                    continue
                verdict = check(text or "", config)
                reasons.append(verdict.reason)
                new_texts.append(verdict.text if rewrite and text is not None else text)
            arrays = list(batch.columns)
            arrays[names.index("text")] = pa.array(new_texts, type=pa.string())
            arrays.append(pa.array(reasons, type=pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, names=names + ["_reason"])

    return kernel


def apply(df: DataFrame, params: HeuristicsParams, ctx: StageContext) -> StageResult:
    config = params.config()
    schema = T.StructType(list(df.schema.fields) + [T.StructField("_reason", T.StringType())])
    judged = df.mapInArrow(_kernel(config, frozenset(params.domains), params.rewrite), schema)
    judged = ctx.persist(judged)  # kept and removed both come from one judging pass
    kept = judged.where(F.col("_reason").isNull()).drop("_reason")
    removed = judged.where(F.col("_reason").isNotNull()).select(
        *df.columns, F.lit(NAME).alias("removed_by"), F.col("_reason").alias("reason"))
    stats = {"rules": len(config.rules), "line_modifiers": ", ".join(config.line_modifiers) or "none",
             "domains": ", ".join(params.domains) or "all"}
    return StageResult(kept, removed, stats)


__all__ = ["NAME", "HeuristicsParams", "apply", "LINE_MODIFIERS"]
