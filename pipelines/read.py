"""Stage `read`: input files -> document rows.

Records are read by Python tasks over the file list (one task per file or `datasets` split), not
by Spark's JSON reader: that reader gives no line numbers and, with `ignoreCorruptFiles`, drops a
truncated .gz silently. Each bad record or unreadable file becomes a removed row with its place.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.errors import WinnowError
from core.params import param

from .read_kernel import FORMATS, FileTask, file_fingerprint, read_tasks
from .schema import DOCUMENT_SCHEMA, READ_SCHEMA
from .stage import StageContext, StageResult

NAME = "read"
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_COMPRESSIONS = ("", ".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class InputSpec:
    """One declared input: a file, a directory of files, a glob, or a saved `datasets` directory."""

    path: str = param(help="an input file, directory, glob or saved `datasets` directory", metavar="PATH")
    source: str = param(help="the source name of these documents (the `source` column)", metavar="NAME")
    domain: str = param("default", metavar="NAME", help="domain of the inputs")
    format: str | None = param(None, choices=FORMATS, metavar="FORMAT",
                               help="jsonl, parquet or datasets; none: inferred from the path")
    text_field: str = param("text", metavar="FIELD", help="the records' field holding the text")
    id_field: str = param("id", metavar="FIELD",
                          help="the records' field holding the document id (a record without one gets an "
                          "id derived from its source, file and position)")
    domain_field: str = param("", metavar="FIELD",
                              help="records' own domain: a string field of each record (e.g. domain), "
                              "else the input's domain")


@dataclass(frozen=True)
class ReadParams:
    inputs: tuple[InputSpec, ...]


def infer_format(path: str) -> str | None:
    p = Path(path)
    if p.is_dir():
        if (p / "state.json").exists() or (p / "dataset_dict.json").exists():
            return "datasets"
        return None
    name = p.name.lower()
    for comp in _COMPRESSIONS:
        if any(name.endswith(s + comp) for s in _JSONL_SUFFIXES):
            return "jsonl"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return None


def _datasets_splits(path: Path) -> list[tuple[str, str]]:
    """(path, relpath) of each split of a saved DatasetDict, or the Dataset itself."""
    if (path / "dataset_dict.json").exists():
        return [(str(d), d.name) for d in sorted(path.iterdir()) if (d / "state.json").exists()]
    return [(str(path), path.name)]


def expand_inputs(inputs: Sequence[InputSpec]) -> list[FileTask]:
    """The file list in input order: inputs as declared, then files sorted by path."""
    return expand_inputs_and_skips(inputs)[0]


def _shown(text: str) -> str:
    """`text` printable: bytes that were not UTF-8 (surrogate escapes) as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8_path(path: Path, spec: InputSpec) -> None:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise WinnowError(f"input file name is not UTF-8: {_shown(str(path))} (in {_shown(spec.path)}); "
                          "rename it") from None


def expand_inputs_and_skips(inputs: Sequence[InputSpec]) -> tuple[list[FileTask], list[str]]:
    """`expand_inputs`, and the files that directory inputs hold but that are not read: hidden
    (``.``), internal (``_``, e.g. Spark's ``_SUCCESS``) or of an unknown extension. They are
    reported in the read stage's stats, never skipped without a word."""
    tasks: list[FileTask] = []
    skipped: list[str] = []
    for spec in inputs:
        for key in ("source", "domain", "text_field", "id_field", "domain_field"):
            try:  # a command-line argument that is not UTF-8 arrives with surrogate escapes
                getattr(spec, key).encode("utf-8")
            except UnicodeEncodeError:
                raise WinnowError(f"input {_shown(spec.path)}: {key} is not UTF-8 text") from None
        if any(ch in spec.path for ch in "*?["):
            prefix = spec.path.split("*")[0].split("?")[0].split("[")[0]
            root = Path(os.path.dirname(prefix) or ".")
            matches = [Path(m) for m in sorted(glob.glob(spec.path, recursive=True))]
            if not matches:
                raise WinnowError(f"input pattern matches no file: {spec.path}")
        else:
            p = Path(spec.path)
            if not p.exists():
                raise WinnowError(f"input path does not exist: {spec.path}")
            if p.is_dir() and (spec.format == "datasets" or infer_format(spec.path) == "datasets"):
                root, matches = p.parent, [p]
            elif p.is_dir():
                root = p
                matches, passed = [], []
                # a saved `datasets` directory inside is one input of format datasets, not the
                # state.json and dataset_info.json files it holds
                tree = list(p.rglob("*"))  # walked once
                saved = [d for d in tree if d.is_dir() and infer_format(str(d)) == "datasets"]
                inner = set(saved)
                saved = [d for d in saved if inner.isdisjoint(d.parents)]  # not a dict's splits
                inner = set(saved)
                for f in sorted([f for f in tree if f.is_file() and inner.isdisjoint(f.parents)] + saved):
                    fmt = infer_format(str(f))
                    hidden = any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
                    if hidden or fmt is None or (spec.format is not None and fmt != spec.format):
                        passed.append(str(f))
                    else:
                        matches.append(f)
                skipped += passed
                if not matches:
                    shown = ", ".join(os.path.relpath(f, p) for f in passed[:3]) + (", ..." if len(passed) > 3 else "")
                    raise WinnowError(f"input directory holds no JSONL or Parquet file: {spec.path}"
                                      + (f" (skipped {len(passed)} files: {shown})" if passed else " (it is empty)"))
            else:
                root, matches = p.parent, [p]
        for match in matches:
            _utf8_path(match, spec)
            fmt = spec.format or infer_format(str(match))
            if fmt is None:
                raise WinnowError(
                    f"cannot tell the format of {match}; set format to one of {', '.join(FORMATS)}"
                )
            if fmt not in FORMATS:
                raise WinnowError(f"unknown format {fmt!r} for {spec.path}; expected one of {', '.join(FORMATS)}")
            if fmt == "datasets":
                pieces = _datasets_splits(match)
            else:
                pieces = [(str(match.resolve()), os.path.relpath(match, root))]
            for path, rel in pieces:
                tasks.append(FileTask(
                    index=len(tasks), path=os.path.abspath(path), relpath=rel, format=fmt,
                    source=spec.source, domain=spec.domain, text_field=spec.text_field, id_field=spec.id_field,
                    domain_field=spec.domain_field,
                ))
    return tasks, skipped


def _file_frame(ctx: StageContext, tasks: list[FileTask]) -> DataFrame:
    rows = [t.as_row() for t in tasks]
    # Round-robin over as many partitions as files: one file per task.
    return ctx.spark.createDataFrame(rows).repartition(max(1, len(rows)))


def fingerprints(ctx: StageContext, tasks: list[FileTask]) -> list[dict]:
    """Size and digest of every input file, computed by Spark tasks (the list is small)."""
    paths = sorted({t.path for t in tasks})
    frame = ctx.spark.createDataFrame([(p,) for p in paths], "path string").repartition(max(1, len(paths)))

    def kernel(batches):
        import pyarrow as pa

        for batch in batches:
            prints = [file_fingerprint(p) for p in batch.column("path").to_pylist()]
            yield pa.RecordBatch.from_pylist(prints, schema=pa.schema(
                [("path", pa.string()), ("bytes", pa.int64()), ("xxh3_128", pa.string())]
            ))

    result = frame.mapInArrow(kernel, "path string, bytes long, xxh3_128 string").collect()
    return sorted((r.asDict() for r in result), key=lambda r: r["path"])


def _has_repeated_ids(df: DataFrame) -> bool:
    return df.groupBy("id").count().where("count > 1").limit(1).count() > 0


def rekey_duplicate_ids(df: DataFrame, max_rounds: int = 5) -> DataFrame:
    """Make ids unique: the k-th repeat (k >= 1, input order) of an id becomes ``<id>#<k>``.

    A rewritten id can collide with an id given verbatim in the input, so the rule is applied
    again until no id repeats (one round suffices unless inputs already hold such ids). When no
    id repeats, which is the usual case, this costs one aggregation and `df` is returned as is.
    """
    for _ in range(max_rounds):
        if not _has_repeated_ids(df):
            return df
        order = Window.partitionBy("id").orderBy("_file", "_row")
        k = F.row_number().over(order) - 1
        df = df.withColumn("id", F.when(k == 0, F.col("id")).otherwise(F.concat_ws("#", "id", k.cast("string"))))
    if _has_repeated_ids(df):
        raise WinnowError(f"could not make ids unique in {max_rounds} rounds of re-keying")
    return df


def apply(df: DataFrame | None, params: ReadParams, ctx: StageContext) -> StageResult:
    """Read every input. `df` is ignored: `read` starts a run."""
    tasks, skipped = expand_inputs_and_skips(params.inputs)
    rows = ctx.persist(_file_frame(ctx, tasks).mapInArrow(read_tasks, READ_SCHEMA))
    rekeyed = rekey_duplicate_ids(rows)
    if rekeyed is not rows:
        rows = ctx.persist(rekeyed)
    kept = rows.where(F.col("_error").isNull()).select(*DOCUMENT_SCHEMA.names)
    removed = rows.where(F.col("_error").isNotNull()).select(
        "id", "source", "domain",
        F.lit(NAME).alias("removed_by"),
        F.col("_error").alias("reason"),
        F.col("_raw").alias("raw"),
        F.col("_path").alias("file"),
        F.col("_row").alias("line"),
        "_file", "_row",
    )
    stats = {"files": len(tasks), "skipped_files": len(skipped)}
    if skipped:  # in directories, not read: hidden, internal (_SUCCESS) or unknown extension
        stats["skipped_examples"] = skipped[:20]
    return StageResult(kept, removed, stats)
