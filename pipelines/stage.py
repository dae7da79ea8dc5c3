"""The stage contract: `apply(df, params, ctx) -> StageResult(kept, removed, stats)`.

A stage is a frozen dataclass of parameters plus an `apply` function. It never drops a column a
later stage may need and never loses a row: every input row is in `kept` or in `removed`, and
each removed row says which stage removed it (`removed_by`) and why (`reason`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession


@dataclass
class StageResult:
    kept: DataFrame
    removed: DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    # Stats that need a pass over the kept rows, taken from the written output instead of a second
    # pass over the stage's (unpersisted) result: the flow calls it with the kept Parquet.
    # Called as stats_after_write(kept, removed) with the written Parquet of both.
    stats_after_write: Callable[[DataFrame, DataFrame], dict[str, Any]] | None = None

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
    _persisted: list[DataFrame] = field(default_factory=list)

    def own(self, *paths: str) -> None:
        """Record paths this stage is about to write into the run's output directory."""
        if self.claim is not None and paths:
            self.claim(*paths)

    def persist(self, df: DataFrame) -> DataFrame:
        """Persist `df` (memory, spilling to disk) until the running stage has been written."""
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(df)
        return df

    def release(self) -> None:
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
