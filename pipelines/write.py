"""Stage `write`: the kept documents as Parquet shards under `<output>/kept/`.

Rows are written in input order (file, then line or row). Internal columns (names starting with
"_") are dropped. `meta` is written as a list of ``{key, value}`` structs, Arrow's own layout of a
map: `datasets` has no map type and refuses a Parquet map column, while Spark
(`map_from_entries`), pyarrow, DuckDB and `datasets` all read the list form.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param

from .stage import StageContext, StageResult

NAME = "write"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
COMPRESSIONS = ("snappy", "zstd", "gzip", "none")


@dataclass(frozen=True)
class WriteParams:
    path: str = ""                       # set by the flow: <output>/kept
    compression: str = param("zstd", choices=COMPRESSIONS, metavar="CODEC",
                             help="Parquet compression of the kept rows")
    max_records_per_file: int = param(100_000, metavar="N", help="rows per Parquet file at most (0: no limit)")
    columns: tuple[str, ...] = param((), metavar="PATTERN",
                                     help='columns to write, as fnmatch patterns such as "score_*" '
                                     "(empty: every column)")

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise WinnowError(f"write.compression: {self.compression!r} is not one of {', '.join(COMPRESSIONS)}")
        if self.max_records_per_file < 0:
            raise WinnowError("write.max_records_per_file: must be >= 0")


def project(df: DataFrame, patterns: tuple[str, ...]) -> DataFrame:
    """The columns matching `patterns` (in the frame's order), plus the internal ones."""
    if not patterns:
        return df
    from fnmatch import fnmatchcase

    keep = [c for c in df.columns if c.startswith("_") or any(fnmatchcase(c, p) for p in patterns)]
    return df.select(*keep)


def for_output(df: DataFrame) -> DataFrame:
    """Rows in input order, internal columns dropped, maps as key/value lists."""
    if "_file" in df.columns and "_row" in df.columns:
        df = df.orderBy("_file", "_row")
    cols = []
    for field in df.schema.fields:
        if field.name.startswith("_"):
            continue
        if isinstance(field.dataType, T.MapType):
            cols.append(F.map_entries(field.name).alias(field.name))
        else:
            cols.append(F.col(field.name))
    return df.select(*cols)


def write_parquet(df: DataFrame, path: str, compression: str = "zstd", max_records_per_file: int = 0) -> None:
    (
        df.write.mode("overwrite")
        .option("compression", compression)
        .option("maxRecordsPerFile", max_records_per_file)
        .parquet(path)
    )


def apply(df: DataFrame, params: WriteParams, ctx: StageContext) -> StageResult:
    if not params.path:
        raise WinnowError("write: no output path")
    out = for_output(project(df, params.columns))
    write_parquet(out, params.path, params.compression, params.max_records_per_file)
    written = ctx.spark.read.schema(out.schema).parquet(params.path)  # the schema given: no inference job
    removed = ctx.spark.createDataFrame([], "id string, removed_by string, reason string")
    return StageResult(written, removed, {"path": params.path})
