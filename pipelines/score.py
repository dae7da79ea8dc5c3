"""Stage `score`: scorers from `filters/` over the text, one `score_<name>` column each.

Score first, select later: this stage removes nothing; `select` keeps or removes by the written
scores, so a user can re-select without re-scoring.

- Every scorer is loaded and checked on the driver before any data is read (a missing or corrupt
  model, an unknown kind, a model trained with other labels is one error line).
- Model files go to the executors once (`pipelines.spark.ship_file`: `SparkContext.addFile`,
  or `addArtifacts` on Spark Connect) under a content-hash name; each Python worker loads each
  model once and keeps it for every later batch and task (`_LOADED`).
- The scorers run inside `mapInArrow` over Arrow batches of the whole row: the new columns are
  appended, no join.
- The heuristics scorer also writes one boolean `rule_<name>` column per rule (pass = true).
- Stats: per score, quantiles and a 20-bin histogram, computed in Spark from the written output
  (`StageResult.stats_after_write`; only the bins come back).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param
from filters.base import ScorerSpec, load_scorer

from .spark import file_identity, ship_file
from .stage import Columns, StageContext, StageResult

NAME = "score"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
BINS = 20
# percentile_approx's accuracy for the reported quantiles: rank error at most 1e-4 of the rows,
# finer than the 1% steps of QUANTILES and than a report shows.
QUANTILE_ACCURACY = 10_000


@dataclass(frozen=True)
class ScoreParams:
    scorers: tuple[dict[str, Any], ...] = param(
        (), metavar="SPEC",
        help="scorers, each a table {kind, model, name, <options>}: kind heuristics, dclm, langid, "
        "perplexity, preselect or dfn; model a file (dclm, preselect, dfn: from `winnow train-scorer`; "
        "perplexity: a `winnow train-lm` directory; {output} is the run's output directory) or, for "
        "langid, a language; name the column suffix (score_<name>)")

    def __post_init__(self) -> None:
        if not self.scorers:
            raise WinnowError("score.scorers: give at least one scorer, e.g. {kind = \"heuristics\"}")
        specs = self.specs()
        columns = [s.column for s in specs]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise WinnowError(f"score.scorers: two scorers write {', '.join(twice)}; give them distinct `name`s")

    def specs(self, output: str | None = None) -> list[ScorerSpec]:
        """The scorers, with `{output}` in a model path replaced by `output` (the run's output
        directory, `StageContext.output`) when it is given."""
        out = []
        for i, raw in enumerate(self.scorers):
            spec = ScorerSpec.from_mapping(dict(raw), f"score.scorers[{i}]")
            if output:
                def fill(v):
                    if isinstance(v, str):
                        return v.replace("{output}", output)
                    return [fill(x) for x in v] if isinstance(v, (list, tuple)) else v

                spec = ScorerSpec(spec.kind, fill(spec.model), spec.name,
                                  {k: fill(v) for k, v in spec.options.items()})
            out.append(spec)
        return out


def columns(params: ScoreParams) -> Columns:
    """``score_<name>`` per scorer, and ``rule_<rule>`` per rule of a heuristics scorer (its
    config is loaded for its rules: a JSON file, no model)."""
    adds: list[str] = []
    for spec in params.specs():
        adds.append(spec.column)
        if spec.kind == "heuristics" and not (spec.model and "{output}" in spec.model):
            adds += [f"rule_{r}" for r in check_scorers([spec])[0].config.rules]
    return Columns(requires=("text",), adds=tuple(adds))


_DRIVER_SCORERS: dict[tuple, Any] = {}  # (spec, model file identity) -> loaded scorer


def check_scorers(specs: list[ScorerSpec]) -> list:
    """Load every scorer on the driver: the first bad one is a WinnowError naming it. A model
    file loaded before (same path, size and mtime) is not loaded again: the flow checks every
    scorer before `read`, and the stage needs them again."""
    loaded = []
    for spec in specs:
        try:
            files = tuple(file_identity(f) for f in model_files(spec).values())
        except WinnowError:
            files = ()
        key = (spec.kind, spec.model, spec.name, json.dumps(spec.options, sort_keys=True, default=str), files)
        if key not in _DRIVER_SCORERS:
            _DRIVER_SCORERS[key] = load_scorer(spec)
        loaded.append(_DRIVER_SCORERS[key])
    return loaded


_LOADED: dict[tuple, Any] = {}  # in each Python worker: (kind, files, options) -> scorer


def _swap(value: Any, files: dict[str, str]) -> Any:
    """`value` with every string that names a shipped file replaced by the worker's copy."""
    if isinstance(value, str):
        return files.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_swap(v, files) for v in value)
    return value


def _worker_scorer(kind: str, model: str | None, shipped: tuple, options: tuple):
    """The scorer of a plan entry in this worker: `shipped` pairs (value in the spec, shipped
    name); each such value is swapped for the worker's local copy (`SparkFiles.get`)."""
    key = (kind, model, shipped, options)
    if key not in _LOADED:
        local = {}
        if shipped:
            from pyspark import SparkFiles

            local = {value: SparkFiles.get(name) for value, name in shipped}
        _LOADED[key] = load_scorer(ScorerSpec(kind=kind, model=_swap(model, local),
                                              options={k: _swap(v, local) for k, v in options}))
    return _LOADED[key]


def model_files(spec: ScorerSpec) -> dict[str, str]:
    """{value in the spec: file} of the files a scorer needs on the executors."""
    from filters import registry

    kind = registry.get(spec.kind)
    if kind.model_files is not None:
        return kind.model_files(spec)
    return {spec.model: spec.model} if spec.model else {}


def _kernel(plan: list[tuple[str, str | None, tuple, str, list[str]]]):
    """plan: per scorer (kind, model, shipped (value, name) pairs, options, score column, rule names)."""

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorers = [_worker_scorer(kind, model, shipped, options) for kind, model, shipped, options, _, _ in plan]
        for batch in batches:
            texts = [t if t is not None else "" for t in batch.column(batch.schema.get_field_index("text")).to_pylist()]
            arrays, names = list(batch.columns), list(batch.schema.names)
            for scorer, (_, _, _, _, column, rules) in zip(scorers, plan):
                # NaN (a perplexity of an empty text) becomes null: never selected, and Spark
                # would order NaN above every number
                arrays.append(pa.array(np.asarray(scorer.score(texts), dtype=np.float32), type=pa.float32(),
                                       from_pandas=True))
                names.append(column)
                if rules:
                    table = scorer.rule_table(texts)
                    for rule in rules:
                        arrays.append(pa.array(table[rule], type=pa.bool_()))
                        names.append(f"rule_{rule}")
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    return kernel


def apply(df: DataFrame, params: ScoreParams, ctx: StageContext) -> StageResult:
    specs = params.specs(ctx.output)
    scorers = check_scorers(specs)
    plan, fields = [], list(df.schema.fields)
    for spec, scorer in zip(specs, scorers):
        options, model = dict(spec.options), spec.model
        if spec.kind == "langid" and spec.model and not spec.model.endswith(".json"):
            options["language"], model = spec.model, None  # `langid=fr` names a language
        files = model_files(ScorerSpec(spec.kind, model, spec.name, options))
        shipped = tuple(sorted((value, ship_file(ctx.spark, path)) for value, path in files.items()))
        rules = list(scorer.config.rules) if spec.kind == "heuristics" else []
        options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
        plan.append((spec.kind, model, shipped, options, spec.column, rules))
        fields.append(T.StructField(spec.column, T.FloatType()))
        fields += [T.StructField(f"rule_{r}", T.BooleanType()) for r in rules]
    scored = df.mapInArrow(_kernel(plan), T.StructType(fields))
    columns = [p[4] for p in plan]
    removed = ctx.spark.createDataFrame([], "id string, removed_by string, reason string")
    # Quantiles and histograms come from the written scores (columnar, no text), not from a
    # persisted copy of every row: persisting cost a third of the stage.
    return StageResult(scored, removed, {"scores": columns},
                       stats_after_write=lambda kept, _: score_stats(kept, columns))


def score_stats(df: DataFrame, columns: list[str]) -> dict[str, Any]:
    """Quantiles and a histogram per score column: two aggregations, small results."""
    aggs = []
    for c in columns:
        aggs += [F.min(c).alias(f"{c}__min"), F.max(c).alias(f"{c}__max"),
                 F.percentile_approx(c, list(QUANTILES), QUANTILE_ACCURACY).alias(f"{c}__q"),
                 F.count(c).alias(f"{c}__n")]
    row = df.agg(*aggs).first()
    quantiles, histograms = {}, {}
    for c in columns:
        lo, hi, n = row[f"{c}__min"], row[f"{c}__max"], row[f"{c}__n"]
        if not n:
            quantiles[c], histograms[c] = {}, {"edges": [], "counts": []}
            continue
        quantiles[c] = {f"{q:g}": float(v) for q, v in zip(QUANTILES, row[f"{c}__q"])}
        lo, hi = (0.0, 1.0) if 0.0 <= lo and hi <= 1.0 else (float(lo), float(hi))
        width = (hi - lo) / BINS or 1.0
        b = F.least(F.floor((F.col(c) - F.lit(lo)) / F.lit(width)).cast("int"), F.lit(BINS - 1))
        counts = dict(df.where(F.col(c).isNotNull()).groupBy(b.alias("b")).count().collect())
        histograms[c] = {"edges": [lo + i * width for i in range(BINS + 1)],
                         "counts": [int(counts.get(i, 0)) for i in range(BINS)]}
    return {"scores": columns, "score_quantiles": quantiles, "score_histograms": histograms}
