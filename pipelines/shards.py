"""Sharded Arrow datasets in `datasets`' `save_to_disk` layout, written by Spark executors.

A directory per group (``<output>/bucket_<i>/`` or ``<output>/<domain>/bucket_<i>/``) holds
Arrow IPC *stream* files (`data-<partition>-<k>.arrow`, at most ``shard_rows`` rows each), a
`dataset_info.json` with the `datasets` features and a `state.json` listing the files: what
`datasets.load_from_disk` reads, and what `pyarrow.ipc.open_stream` opens file by file.

- Executors write the shards: rows are repartitioned by group and sorted within partitions, and
  each task writes its part of each group to a hidden temporary name, then renames it (a shard is
  either whole or absent). Only one row per shard (its group, name, rows, tokens) comes back.
- A group is Winnow's own dataset name (``bucket_8``), optionally under a domain. A domain is a
  name from a record or a config: its directory is `mixers.dirnames.dir_name(domain)` (plain
  names as they are, others %-encoded), and every directory is checked to resolve inside the
  output before anything is written to it.
- The driver then writes each group's `state.json` and `dataset_info.json` (temporary name, then
  rename), with the files in name order, and `features` from `datasets.Features` of the Arrow
  schema, so the layout is the library's own, not a copy of it.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T


@dataclass(frozen=True)
class ShardFile:
    group: str      # directory relative to the output, e.g. "bucket_8" or "code/bucket_8"
    filename: str
    rows: int
    tokens: int
    domain: str | None = None   # the domain's own name (its directory may be encoded)


def group_relpath(group: str, domain: str | None) -> str:
    """A dataset's directory relative to the output: ``<group>`` or ``<dir_name(domain)>/<group>``.
    `group` is Winnow's own name and must be one plain component."""
    from mixers.dirnames import dir_name

    if not group or "/" in group or "\0" in group or group in (".", ".."):
        raise ValueError(f"dataset group {group!r} is not one directory name")
    return group if domain is None else f"{dir_name(domain)}/{group}"


def group_directory(out_dir: str, group: str, domain: str | None) -> Path:
    """The directory of one dataset, checked to resolve inside `out_dir`."""
    from mixers.dirnames import inside

    return inside(out_dir, group_relpath(group, domain))


def _features(schema: pa.Schema):
    import datasets

    return datasets.Features.from_arrow_schema(schema)


def _write_kernel(out_dir: str, group_col: str, domain_col: str | None, arrow_schema: pa.Schema, shard_rows: int,
                  token_col: str | None):
    schema_with_meta = _features(arrow_schema).arrow_schema
    drop = [group_col] + ([domain_col] if domain_col else [])

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        # (domain, group) -> [writer, file path, tmp path, rows, tokens, k]
        state: dict[tuple, list] = {}
        done: list[ShardFile] = []

        def close(key: tuple) -> None:
            writer, path, tmp, rows, tokens, _ = state[key]
            writer.close()
            os.replace(tmp, path)
            done.append(ShardFile(group_relpath(key[1], key[0]), os.path.basename(path), rows, tokens, key[0]))

        for batch in batches:
            groups = batch.column(batch.schema.get_field_index(group_col)).to_pylist()
            domains = (batch.column(batch.schema.get_field_index(domain_col)).to_pylist() if domain_col
                       else [None] * len(groups))
            data = pa.Table.from_batches([batch]).drop_columns(drop).cast(arrow_schema)
            start = 0
            while start < len(groups):
                key = (domains[start], groups[start])
                end = start
                while end < len(groups) and (domains[end], groups[end]) == key:
                    end += 1
                piece = data.slice(start, end - start)
                offset = 0
                while offset < piece.num_rows:
                    entry = state.get(key)
                    if entry is None or entry[3] >= shard_rows:
                        k = 0
                        if entry is not None:
                            close(key)
                            k = entry[5] + 1
                        directory = group_directory(out_dir, key[1], key[0])
                        directory.mkdir(parents=True, exist_ok=True)
                        path = directory / f"data-{part:05d}-{k:05d}.arrow"
                        tmp = directory / f".tmp-{uuid.uuid4().hex}.arrow"
                        sink = pa.OSFile(str(tmp), "wb")
                        entry = state[key] = [pa.ipc.new_stream(sink, schema_with_meta), str(path), str(tmp), 0, 0, k]
                    take = min(shard_rows - entry[3], piece.num_rows - offset)
                    chunk = piece.slice(offset, take)
                    entry[0].write_table(chunk)
                    entry[3] += take
                    if token_col is not None:
                        entry[4] += int(pc.sum(pc.list_value_length(chunk.column(token_col))).as_py() or 0)
                    offset += take
                start = end
        for key in list(state):
            close(key)
        if done:
            yield pa.RecordBatch.from_pylist([d.__dict__ for d in done], schema=_RESULT_ARROW)

    return kernel


_RESULT_ARROW = pa.schema([("group", pa.string()), ("filename", pa.string()), ("rows", pa.int64()),
                           ("tokens", pa.int64()), ("domain", pa.string())])
_RESULT_SPARK = T.StructType([T.StructField("group", T.StringType()), T.StructField("filename", T.StringType()),
                              T.StructField("rows", T.LongType()), T.StructField("tokens", T.LongType()),
                              T.StructField("domain", T.StringType())])


def write_datasets(df: DataFrame, out_dir: str, group: str, arrow_schema: pa.Schema, order: list[str],
                   shard_rows: int = 100_000, token_col: str | None = "tokens",
                   partitions: int | None = None, domain: str | None = None) -> dict[str, list[ShardFile]]:
    """Write the rows of `df` as one `save_to_disk` dataset per value of the `group` column
    (Winnow's dataset name, e.g. ``bucket_8``), under the directory of the `domain` column's value
    when `domain` is given; `arrow_schema` gives the columns written and their Arrow types (e.g.
    tokens as uint16), `order` the order of rows inside each group. Returns the shards per
    dataset directory relative to `out_dir` (``bucket_8``, ``code/bucket_8``)."""
    if shard_rows < 1:
        raise ValueError("shard_rows must be >= 1")
    n = partitions or max(1, df.sparkSession.sparkContext.defaultParallelism)
    keys = ["_domain", "_group"] if domain else ["_group"]
    chosen = [F.col(domain).alias("_domain")] if domain else []
    ready = (df.select(*chosen, F.col(group).alias("_group"), *order,
                       *[c for c in arrow_schema.names if c not in order])
             .repartition(n, *keys).sortWithinPartitions(*keys, *order)
             .select(*keys, *arrow_schema.names))
    kernel = _write_kernel(out_dir, "_group", "_domain" if domain else None, arrow_schema, shard_rows, token_col)
    rows = ready.mapInArrow(kernel, _RESULT_SPARK).collect()
    shards: dict[str, list[ShardFile]] = {}
    for r in rows:  # one row per shard file
        shards.setdefault(r["group"], []).append(
            ShardFile(r["group"], r["filename"], r["rows"], r["tokens"], r["domain"]))
    features = _features(arrow_schema)
    for name, files in shards.items():
        files.sort(key=lambda f: f.filename)
        _finish_dataset(group_directory(out_dir, Path(name).name, files[0].domain), files, features)
    return shards


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _finish_dataset(directory: Path, files: list[ShardFile], features) -> None:
    import xxhash

    fingerprint = xxhash.xxh3_64_hexdigest("\n".join(f"{f.filename}:{f.rows}" for f in files))
    _atomic_json(directory / "dataset_info.json",
                 {"citation": "", "description": "", "features": features.to_dict(), "homepage": "", "license": ""})
    _atomic_json(directory / "state.json", {
        "_data_files": [{"filename": f.filename} for f in files], "_fingerprint": fingerprint,
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
        "_output_all_columns": False, "_split": None,
    })
