"""Stage `read`: input files -> document rows.

Records are read by Python tasks over the file list, not by Spark's JSON reader: that reader
gives no line numbers and, with `ignoreCorruptFiles`, drops a truncated .gz silently. Each bad
record or unreadable file becomes a removed row with its place.

A large file is read by several tasks where its format allows (`plan_pieces`): plain JSONL by
byte ranges, zstd JSONL by groups of whole frames (when it has several), Parquet by row groups.
A .gz file cannot be cut (a deflate stream has no points to start from): when the read tasks
would be fewer than the session's cores, a large .gz file is decompressed by one task into
blocks of whole lines that are spread over the cores and parsed there (`_gz_blocks`); otherwise
one task reads it. When fewer tasks read than the session has cores, the rows are spread over
the cores after reading, so later stages do not run on one core either.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from core.errors import WinnowError
from core.params import param

from .read_kernel import (
    FORMATS, FileTask, count_pieces, file_fingerprint, gunzip_tasks, parquet_row_groups,
    piece_counts, read_blocks, read_tasks, zstd_frames,
)
from .schema import DOCUMENT_SCHEMA, READ_SCHEMA
from .stage import StageContext, StageResult

NAME = "read"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
# A piece of a large file: at most this many bytes of plain JSONL; zstd frames and Parquet row
# groups are cut at a quarter of it on disk (compressed). Smaller pieces (down to MIN_SPLIT_BYTES)
# when the files are too few to give every core two tasks. Module constants, so a test can cut
# small files.
SPLIT_BYTES = 64 << 20
MIN_SPLIT_BYTES = 8 << 20
_COMPRESSED_SHARE = 4
# Up to this many bytes to count (zstd counted 4x: it is decompressed), the driver counts the
# pieces' newlines itself (about 1 GB/s from the page cache); past it, a Spark job counts them in
# parallel. A job costs about 0.9 s on the 2-core machine, the driver 0.13 s for 150 MB.
DRIVER_COUNT_BYTES = 1 << 30
# A .gz JSONL file of at least this many bytes on disk is decompressed into blocks parsed by
# every core when the read tasks would otherwise be fewer than the cores (a smaller one is read
# by one task: the blocks' shuffle costs more than it saves). Its decompressed size is guessed
# as GZ_RATIO times that, to cut the blocks' partitions to about SPLIT_BYTES.
GZ_SPLIT_BYTES = 4 << 20
GZ_RATIO = 4
GZ_BLOCK = 1 << 20  # decompressed bytes per block, at least (a block ends at a line end)
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


def _parallelism(spark) -> int:
    try:
        return max(1, spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return max(1, int(spark.conf.get("spark.sql.shuffle.partitions", "8")))


def _task_frame(ctx: StageContext, tasks: list[FileTask]) -> DataFrame:
    """`tasks` as a frame with exactly one task per partition."""
    rows = [t.as_row() for t in tasks]
    try:
        rdd = ctx.spark.sparkContext.parallelize(rows, max(1, len(rows)))
        return ctx.spark.createDataFrame(rdd, _TASK_SCHEMA)
    except Exception:  # noqa: BLE001 - Spark Connect: round-robin over as many partitions as rows
        return ctx.spark.createDataFrame(rows, _TASK_SCHEMA).repartition(max(1, len(rows)))


_TASK_SCHEMA = (
    "index int, path string, relpath string, format string, source string, domain string, text_field string, "
    "id_field string, domain_field string, part_start long, part_end long, part_line long, part_mid_line boolean"
)


def piece_bytes(tasks: list[FileTask], parallelism: int) -> int:
    """SPLIT_BYTES, or less (not under MIN_SPLIT_BYTES) when that gives every core two tasks."""
    total = sum(os.path.getsize(t.path) for t in tasks if t.format != "datasets")
    return max(MIN_SPLIT_BYTES, min(SPLIT_BYTES, total // (2 * parallelism)))


def _piece_counter(ctx: StageContext) -> Callable[[list[FileTask]], list[dict]]:
    """`piece_counts` of a list of pieces: on the driver up to DRIVER_COUNT_BYTES, else a Spark job."""
    def count(pieces: list[FileTask]) -> list[dict]:
        work = sum((p.part_end - p.part_start) * (_COMPRESSED_SHARE if p.path.lower().endswith((".zst", ".zstd"))
                                                  else 1) for p in pieces)
        if work <= DRIVER_COUNT_BYTES:
            return [piece_counts(p) for p in pieces]
        schema = ("index int, part_start long, newlines long, content boolean, ends_line boolean, length long, "
                  "ok boolean")
        return [row.asDict() for row in _task_frame(ctx, pieces).mapInArrow(count_pieces, schema).collect()]
    return count


def plan_pieces(tasks: list[FileTask], piece: int,
                count: Callable[[list[FileTask]], list[dict]]) -> list[FileTask]:
    """The read tasks: `tasks` with each large plain or zstd JSONL file and each large Parquet
    file cut into pieces. A JSONL piece needs the line number of its first byte: `count` gives
    the newlines of every piece (decompressing zstd frames), and their prefix sums give it; a
    Parquet piece's first row comes from the footer's row counts. A file that does not cut cleanly (zstd that is truncated or not a clean run of
    frames, a Parquet footer that cannot be read, nothing but blank lines) stays whole, so its
    error rows are the whole-file reader's. `piece`: bytes of plain JSONL per piece; `count`:
    `read_kernel.piece_counts` of a list of pieces (`_piece_counter` in `apply`)."""
    small = max(1, piece // _COMPRESSED_SHARE)
    out: dict[int, list[FileTask]] = {}
    to_count: list[FileTask] = []
    for t in tasks:
        if t.format == "datasets":
            continue
        name = t.path.lower()
        size = os.path.getsize(t.path)
        if t.format == "jsonl" and not name.endswith((".gz", ".zst", ".zstd")) and size > piece:
            cuts = list(range(0, size, piece))
            pieces = [replace(t, part_start=a, part_end=min(a + piece, size)) for a in cuts]
        elif t.format == "jsonl" and name.endswith((".zst", ".zstd")) and size > small:
            frames = zstd_frames(t.path)
            if not frames or len(frames) < 2:
                continue
            pieces, start, at = [], 0, 0
            for offset, length in frames:
                at = offset + length
                if at - start >= small:
                    pieces.append(replace(t, part_start=start, part_end=at))
                    start = at
            if start < at:
                pieces.append(replace(t, part_start=start, part_end=at))
        elif t.format == "parquet" and size > small:
            groups = parquet_row_groups(t.path)
            if not groups or len(groups) < 2:
                continue
            pieces, first, rows, acc = [], 0, 1, 0
            for i, (n, nbytes) in enumerate(groups):
                acc += nbytes
                if acc >= small or i == len(groups) - 1:
                    pieces.append(replace(t, part_start=first, part_end=i + 1, part_line=rows))
                    rows += sum(g[0] for g in groups[first:i + 1])
                    first, acc = i + 1, 0
            if len(pieces) > 1:
                out[t.index] = pieces
            continue
        else:
            continue
        if len(pieces) > 1:
            out[t.index] = pieces
            to_count += pieces
    if to_count:
        counts = {(r["index"], r["part_start"]): r for r in count(to_count)}
        for index in {p.index for p in to_count}:
            pieces = out[index]
            found = [counts[(p.index, p.part_start)] for p in pieces]
            if not all(c["ok"] for c in found) or not any(c["content"] for c in found):
                del out[index]  # read whole: its errors (or its emptiness) as the whole-file reader says
                continue
            line, ends_line, placed = 1, True, []
            for p, c in zip(pieces, found):
                placed.append(replace(p, part_line=line, part_mid_line=not ends_line))
                line += c["newlines"]
                if c["length"]:
                    ends_line = c["ends_line"]
            out[index] = placed
    return [p for t in tasks for p in out.get(t.index, [t])]


class _LocalCheckpoint:
    """The read rows, kept for the stage's three passes (the id check, kept, removed) as a local
    checkpoint instead of a persisted frame: Spark's in-memory columnar cache compresses every
    column as it builds, which for text costs more CPU than reading it (measured: about 1.5 s of
    the stage's 5.5 s on 150 MB of JSONL). Handed to `ctx.persist`, which calls `persist` now and
    `unpersist` when the stage's outputs are written; `df` is the checkpointed frame. Like
    dedup_minhash's components, a lost executor fails the job instead of re-reading the files."""

    def __init__(self, df: DataFrame):
        self.df = df

    def persist(self, _level) -> "_LocalCheckpoint":
        # not eager: the stage's first pass (the id check) reads the files and keeps the rows;
        # an eager checkpoint would add a job of its own
        self.df = self.df.localCheckpoint(eager=False)
        return self

    def unpersist(self) -> None:
        try:  # the checkpoint's blocks belong to the RDD under the frame's plan
            self.df._jdf.logicalPlan().rdd().unpersist(False)
        except Exception:  # noqa: BLE001 - Spark Connect: Spark's cleaner frees them later
            pass


def gz_to_split(pieces: list[FileTask], parallelism: int) -> list[FileTask]:
    """The .gz JSONL files to decompress into blocks (`_gz_blocks`): those of at least
    GZ_SPLIT_BYTES, when the read tasks are fewer than the cores."""
    if len(pieces) >= parallelism:
        return []
    return [p for p in pieces if p.format == "jsonl" and p.whole and p.path.lower().endswith(".gz")
            and os.path.getsize(p.path) >= GZ_SPLIT_BYTES]


def _gz_blocks(ctx: StageContext, tasks: list[FileTask], parallelism: int) -> tuple[DataFrame, int]:
    """The rows of .gz files, parsed on every core: one task per file decompresses it into blocks
    of whole lines (`read_kernel.gunzip_blocks`), the blocks are hashed over about one partition
    per SPLIT_BYTES of text (a multiple of the cores: with blocks of 1 MB, a core's share is
    within a few percent of the others'), and each partition's blocks are parsed there
    (`read_kernel.read_block`). Returns the rows and their number of partitions."""
    guessed = sum(os.path.getsize(t.path) for t in tasks) * GZ_RATIO
    parts = parallelism * max(1, -(-guessed // (SPLIT_BYTES * parallelism)))
    blocks = _task_frame(ctx, tasks).mapInArrow(partial(gunzip_tasks, GZ_BLOCK), _BLOCK_DDL)
    by_index = {t.index: t for t in tasks}
    rows = blocks.repartition(parts, "index", "block").mapInArrow(partial(read_blocks, by_index), READ_SCHEMA)
    return rows, parts


_BLOCK_DDL = "index int, block long, line long, data binary, error string, empty boolean"  # read_kernel.BLOCK_SCHEMA


def _spread(rows: DataFrame, tasks: int, parallelism: int) -> DataFrame:
    """Rows read by fewer tasks than there are cores (say, one .gz under GZ_SPLIT_BYTES), hashed over the cores by
    their place in the input, so the stages after `read` use every core."""
    if tasks >= parallelism:
        return rows
    return rows.repartition(parallelism, "_file", "_row")


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
    parallelism = _parallelism(ctx.spark)
    pieces = plan_pieces(tasks, piece_bytes(tasks, parallelism), _piece_counter(ctx))
    gz = gz_to_split(pieces, parallelism)
    rest = [p for p in pieces if p not in gz]
    read = _task_frame(ctx, rest).mapInArrow(read_tasks, READ_SCHEMA) if rest else None
    read_tasks_n = len(rest)
    if gz:
        gz_rows, parts = _gz_blocks(ctx, gz, parallelism)
        read = gz_rows if read is None else read.unionByName(gz_rows)
        read_tasks_n += parts
    rows = ctx.persist(_LocalCheckpoint(_spread(read, read_tasks_n, parallelism))).df
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
    if read_tasks_n > len(tasks):  # large files read by several tasks
        stats["read_tasks"] = read_tasks_n
    if gz:
        stats["gz_files_in_blocks"] = len(gz)
    if skipped:  # in directories, not read: hidden, internal (_SUCCESS) or unknown extension
        stats["skipped_examples"] = skipped[:20]
    return StageResult(kept, removed, stats)
