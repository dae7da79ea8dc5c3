"""The stage contract: `apply(df, params, ctx) -> StageResult(kept, removed, stats)`.

A stage is a frozen dataclass of parameters plus an `apply` function. It never drops a column a
later stage may need and never loses a row: every input row is in `kept` or in `removed`, and
each removed row says which stage removed it (`removed_by`) and why (`reason`).

Reasons and their kinds. The flow counts every stage's removed rows per *kind* of reason
(`removed_by_reason` in the stage's stats, a table per stage in report.md), so the kind must take
few values however many rows are removed. One rule gives it: **the kind is the reason's text
before its first ":", " of " or " at "** (trailing spaces and commas dropped; the whole reason when
none occurs). Reasons are written so that the part before that separator is a fixed phrase and
everything about the row (an id, a file and line, a value) comes after it:

- ``gopher_word_count: 12 words < 50`` (heuristics) -> ``gopher_word_count``;
- ``no chunk: 40 tokens, fewer than ...`` (decompose) -> ``no chunk``;
- ``score_dclm below the cut: 0.12 < 0.5 (top 0.1 of documents)`` (select) -> ``score_dclm below the cut``;
- ``exact duplicate of <id>``, ``near-duplicate of <id>`` (dedup) -> ``exact duplicate``, ``near-duplicate``;
- ``malformed json at <file> line 3: ...``, ``unreadable file at <file> after line 9: ...`` (read)
  -> ``malformed json``, ``unreadable file``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from .reasons import REASON_KIND, TRAILING as _TRAILING, reason_kind  # noqa: F401 - re-exported


def reason_kind_column(reason: str = "reason") -> Column:
    """`reason_kind` as a Spark expression."""
    return F.regexp_replace(F.regexp_extract(F.col(reason), "(?s)" + REASON_KIND, 1), _TRAILING, "")


def removed_by_reason(removed: DataFrame) -> dict[str, int]:
    """Removed rows per kind of reason, most first: one aggregation, one row per kind."""
    if "reason" not in removed.columns:
        return {}
    counts = removed.groupBy(reason_kind_column().alias("kind")).count().collect()
    return dict(sorted(((r["kind"], int(r["count"])) for r in counts), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class StageResult:
    kept: DataFrame
    removed: DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    # Stats that need a pass over the kept rows, taken from the written output instead of a second
    # pass over the stage's (unpersisted) result: the flow calls it with the kept Parquet.
    # Called as stats_after_write(kept, removed) with the written Parquet of both.
    stats_after_write: Callable[[DataFrame, DataFrame], dict[str, Any]] | None = None
    # Rows (kept or removed) each input row becomes: 1 for every stage that keeps or removes its
    # input; `rephrase` adds rows, and the flow checks in + added = kept + removed with
    # added = in * (outputs_per_input - 1).
    outputs_per_input: int = 1

    def finish(self, kept: DataFrame, removed: DataFrame) -> dict[str, Any]:
        """`stats`, completed from the written kept and removed rows."""
        if self.stats_after_write is not None:
            self.stats.update(self.stats_after_write(kept, removed))
            self.stats_after_write = None
        return self.stats


@dataclass
class StageContext:
    """What a stage may use besides its input and parameters."""

    spark: SparkSession
    seed: int = 0
    # The flow's record of what it owns in the output directory: a stage that writes there (a
    # tokenizer, export datasets) calls `ctx.own(path, ...)` before writing; None outside a flow.
    claim: Callable[..., None] | None = None
    # The run's output directory (absolute): where a trained tokenizer and export's datasets go,
    # and what `{output}` in a scorer's model path means. None outside a flow.
    output: str | None = None
    # Shows a line of live progress beside the running stage (the CLI's spinner); None: nowhere.
    note: Callable[[str], None] | None = None
    # Records an entry of the output directory the run owns (so --overwrite deletes it) but that a
    # resumed run keeps, unlike `own`'s: an answer cache. None outside a flow.
    claim_lasting: Callable[..., None] | None = None
    _persisted: list[DataFrame] = field(default_factory=list)
    _on_release: list[Callable[[], None]] = field(default_factory=list)

    def own(self, *paths: str) -> None:
        """Record paths this stage is about to write into the run's output directory."""
        if self.claim is not None and paths:
            self.claim(*paths)

    def own_lasting(self, *paths: str) -> None:
        """Record paths the run owns that outlive a rerun of this stage (see `claim_lasting`)."""
        if self.claim_lasting is not None and paths:
            self.claim_lasting(*paths)

    def on_release(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the running stage has been written (and on failure)."""
        self._on_release.append(fn)

    def persist(self, df: DataFrame) -> DataFrame:
        """Persist `df` (memory, spilling to disk) until the running stage has been written."""
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(df)
        return df

    def release(self) -> None:
        for fn in self._on_release:
            fn()
        self._on_release.clear()
        for df in self._persisted:
            df.unpersist()
        self._persisted.clear()


@dataclass(frozen=True)
class Columns:
    """The columns a stage reads from its input (`requires`) and the ones it adds to its kept
    rows (`adds`), for given parameters."""

    requires: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()


def _no_columns(_params: Any) -> Columns:
    return Columns()


@dataclass(frozen=True)
class StageSpec:
    """A registered stage: its name, parameter class, apply function, and `columns(params)`: the
    columns it requires and adds (some depend on the parameters: `score` adds ``score_<name>``,
    `select` requires its score column). `pipelines.check_columns` walks a run's stages with
    these before any data is read."""

    name: str
    params: type
    apply: Callable[[DataFrame, Any, StageContext], StageResult]
    doc: str = ""
    columns: Callable[[Any], Columns] = _no_columns
    version: int = 1  # the module's VERSION: part of the key a rerun compares (flows/state.py)


def series_udf(return_type, fn: Callable):
    """A scalar pandas UDF of `fn(*series) -> series`, with pandas imported when the UDF is built:
    a command that only parses its arguments (`--help`) then never imports pandas (about 0.35 s).
    `fn` imports pandas in its body; its parameters are typed as `pd.Series` here, which is how
    Spark tells a scalar UDF from the other kinds."""
    import inspect

    import pandas as pd

    fn.__annotations__ = {**{name: pd.Series for name in inspect.signature(fn).parameters}, "return": pd.Series}
    return F.pandas_udf(return_type)(fn)
