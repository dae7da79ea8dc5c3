"""The local engine: `read -> dedup_minhash -> write` on one machine, in a pool of processes,
without a JVM.

Why: on a corpus that fits one machine, the JVM, the SparkSession, the Arrow hand-over to Python
workers and about thirty Spark jobs cost more than the work (issue 15: `winnow dedup` on 25k
documents took 32 s on two cores, 21 s of it fixed cost, where a one-process datasketch script
takes 14 s). The same kernels run here in a process pool: the read kernel (`read_kernel`), the
signature and band-key kernels, the candidate pairs of sorted buckets and the per-group check
(`minhash_lsh`). The output is the Spark engine's, row for row (tests/test_local_engine.py runs
both on the same inputs, hostile ones included).

The pool starts first (`_ready`: each worker reads two lines, so its first-use costs are paid
then, as a fixed cost). The steps, each over the units of work (a file, a piece of a large file,
or an 8 MB block of a large `.gz`), in input order:

1. **read**: each unit's rows (documents and removed rows with their reasons) go to one
   uncompressed Arrow IPC file under `<output>/_work/local/`; the worker returns the kept rows' nodes (``_file << 40 |
   _row``), their band keys, and a 64-bit hash of every row's id. Repeated ids are re-keyed as the
   Spark engine does (`<id>#<k>` in input order, rounds until unique).
2. **candidates** (driver): one band at a time, the band's repeated keys sorted with their
   nodes, each bucket's members paired with its first member and with the one before (as
   `minhash_lsh.bucket_pairs_kernel` pairs them).
3. **check**: the candidate graph's components packed in bins of about `BIN_DOCS` documents;
   the pool reads the candidates' texts from the unit files and the driver appends them, a unit
   at a time, to one Arrow spill file per bin; each bin is checked in a worker
   (`minhash_lsh.verify_bin`), which labels the components of the pairs that pass.
4. **write**: each unit's file is split into kept rows (`<output>/kept/`), rows removed by `read`
   and rows removed as near-duplicates, with the ids of the components' first documents.

The driver holds per document its node and band keys (8 bytes x (1 + bands x probes): 456 bytes
at the defaults), and never more than a few units' candidate texts: `LOCAL_MAX_BYTES` of text
bounds the keys to about a GB. Past it, or with a master URL, another stage, a second dedup, or
`score_column`, a run goes to Spark (`choose`).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import AccountingError, WinnowError

from . import minhash_lsh as lsh
from .reasons import reason_kind
from .read_kernel import FileTask, gunzip_blocks, piece_counts, read_block, read_file
from .schema import READ_ARROW_SCHEMA

ENGINES = ("auto", "spark", "local")
# Bytes of text (estimated: `text_bytes`) up to which `auto` picks the local engine. The driver
# holds 456 bytes a document at the defaults: 1 GiB of 500-byte documents is about 1 GB there.
LOCAL_MAX_BYTES = 1 << 30
COMPRESSED_RATIO = 4  # text bytes per byte of gzip or zstd JSONL, for the estimate (3-5 on web text)
# Decompressed bytes per block of a large .gz file, and at most per piece of a plain JSONL file:
# fewer, larger units than Spark's 1 MB blocks (each unit is a file read back twice), but small
# enough that a worker's memory is reused from unit to unit. Fresh memory is slow to fault in on
# the 2-core VM: the first 30 MB unit of a worker took 2.5 s, the next ones 0.5 s; in 8 MB
# pieces the 152 MB file took 3.5 CPU-s against 4.9 (both with mimalloc, before `use_jemalloc`).
LOCAL_GZ_BLOCK = 8 << 20
# Documents per bin of the check, as in the Spark engine (`dedup_minhash.BIN_DOCS`), and at most
# MAX_BINS bins (each is a spill file open while the texts are gathered).
BIN_DOCS = 2_000
MAX_BINS = 256
# Jobs submitted to the pool and not yet collected, where each carries or returns data (blocks of
# a .gz file, gathered texts): enough to keep every worker busy, few enough to bound memory.
IN_FLIGHT = 2 * max(1, os.cpu_count() or 1)
NODE_ROW_BITS = lsh.NODE_ROW_BITS
# Parquet dictionary encoding, in the output, for the few-valued columns only: on texts and ids
# it cost more than it saved (a 30 MB unit: 0.29 s to write and 0.70 s to read back with it,
# 0.11 s and 0.05 s without it). The units' own files are uncompressed Arrow IPC, memory-mapped
# when read back: for the 152 MB plain file 0.05-0.08 CPU-s to write and 0.13 s to read every
# text, where lz4 Parquet took 0.40 and 0.27-0.45 (0.8-4.7 s with mimalloc); disk: the text's
# size, under `LOCAL_MAX_BYTES`.
DICTIONARY = ["source", "domain", "removed_by"]
_META = pa.list_(pa.field("element", pa.struct([pa.field("key", pa.string(), False), pa.field("value", pa.string())]),
                          nullable=False))  # as Spark writes map_entries


def workers(master: str | None = None) -> int:
    """The processes of the pool: the cores this process may run on, or N of a `local[N]` master
    (as many threads as Spark would run; `local[*]` and `local`: the cores, `local` being
    Spark's one thread)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    match = re.fullmatch(r"local\[(\d+)(?:,\s*\d+)?\]", (master or "").strip())
    if (master or "").strip() == "local":
        return 1
    return max(1, int(match.group(1))) if match else cores


def choose(engine: str, master: str | None, stages: list[tuple[str, Any]], input_bytes: int,
           other: str | None = None) -> tuple[str, str]:
    """(engine, why): the engine a run gets. `stages` are (registry name, params) of the
    configured stages; `input_bytes` the text the inputs hold, estimated (`text_bytes`);
    `other`: what else in the run needs Spark ([[train]], validate, a resumed stage), if
    anything. `local` when asked for and possible, or under `auto` when the run is a local-mode
    dedup of at most LOCAL_MAX_BYTES; a run `local` cannot do under an explicit
    ``engine = "local"`` is a one-line error."""
    if engine not in ENGINES:
        raise WinnowError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "spark":
        return "spark", "asked for"
    why = None
    if master and not master.startswith("local"):
        why = f"a Spark master is given ({master})"
    elif other:
        why = other
    elif len(stages) > 1:
        why = "the local engine runs one stage between read and write; this run has " + ", ".join(n for n, _ in stages)
    elif any(name != lsh.NAME for name, _ in stages):
        why = "the local engine runs read, dedup_minhash and write only; this run has " + ", ".join(
            sorted({name for name, _ in stages if name != lsh.NAME}))
    elif any(getattr(params, "score_column", None) for _, params in stages):
        why = "dedup_minhash.score_column is set (survivors by score run on Spark)"
    elif any(getattr(params, "against", None) for _, params in stages):
        why = "dedup_minhash.against is set (deduplication against earlier outputs runs on Spark)"
    if engine == "local":
        if why:
            raise WinnowError(f"engine local: not possible here: {why}; use engine auto or spark")
        return "local", "asked for"
    if why:
        return "spark", why
    if input_bytes > LOCAL_MAX_BYTES:
        return "spark", (f"the input holds about {input_bytes:,} bytes of text, above the local engine's "
                         f"{LOCAL_MAX_BYTES:,}")
    what = "a dedup" if stages else "a read and write"
    return "local", f"{what} of about {input_bytes:,} bytes of text on one machine"


def text_bytes(files: list[FileTask]) -> int:
    """The text the input files hold, estimated from their sizes: compressed JSONL counts
    COMPRESSED_RATIO times its size (the driver's memory goes with the number of documents,
    which the compressed size understates)."""
    total = 0
    for path in {f.path for f in files}:
        if os.path.isdir(path):
            total += sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(path) for n in names)
            continue
        size = os.path.getsize(path)
        total += size * COMPRESSED_RATIO if path.lower().endswith((".gz", ".zst", ".zstd")) else size
    return total


# --- units of work ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    index: int                      # position in input order; names the unit's files
    task: FileTask
    block: dict[str, Any] | None = None  # a block of `gunzip_blocks`, when the unit is one


def plan_units(tasks: list[FileTask], n_workers: int, pool) -> tuple[Iterable[Unit], dict[str, int]]:
    """The units of work in input order, lazily (a large `.gz` file's blocks are decompressed
    as the pool takes them), and the read stage's stats about them. Large plain and zstd JSONL
    and Parquet files are cut as the Spark engine cuts them (`read.plan_pieces`, with pieces of at
    most LOCAL_GZ_BLOCK); when the pieces are fewer than the workers, a `.gz` file of at least
    GZ_SPLIT_BYTES is decompressed here into blocks of whole lines (LOCAL_GZ_BLOCK). Every worker
    step streams its unit in batches, so a whole-file unit (a .gz, a single-frame .zst) is not
    held in memory either."""
    from .read import gz_to_split, piece_bytes, plan_pieces

    piece = min(piece_bytes(tasks, n_workers), LOCAL_GZ_BLOCK)
    pieces = plan_pieces(tasks, piece, lambda ps: list(_bounded(pool, piece_counts, ((p,) for p in ps), IN_FLIGHT)))
    # a large .gz in blocks when there are fewer pieces than workers (otherwise the workers
    # decompress the files side by side, faster than the driver alone; each streams its file)
    gz = set(p.index for p in gz_to_split(pieces, n_workers))
    stats: dict[str, int] = {}
    if gz:
        stats["gz_files_in_blocks"] = len(gz)

    def units() -> Iterable[Unit]:  # stats["read_tasks"] is completed by the caller, who counts them
        i = 0
        for p in pieces:
            if p.index in gz:
                for block in gunzip_blocks(p, LOCAL_GZ_BLOCK):
                    yield Unit(i, p, block)
                    i += 1
            else:
                yield Unit(i, p)
                i += 1

    return units(), stats


# --- workers (run in the pool; module-level so they pickle by name) ----------------------------

@dataclass(frozen=True)
class SignatureSpec:
    num_perm: int
    ngram: int
    seed: int
    positions: np.ndarray


def _nodes(table: pa.Table) -> np.ndarray:
    files = table.column("_file").to_numpy().astype(np.int64)
    return (files << NODE_ROW_BITS) | table.column("_row").to_numpy().astype(np.int64)


def _id_hashes(ids: list[str]) -> np.ndarray:
    import xxhash

    return np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8", "surrogatepass")) for i in ids),
                       dtype=np.uint64, count=len(ids))


def read_unit(unit: Unit, work: str, sig: SignatureSpec | None, per_source: bool) -> dict[str, Any]:
    """Read one unit into `<work>/read-<index>.arrow` (READ_ARROW_SCHEMA), a batch at a time;
    return its row count, its kept rows' nodes (and band keys, and sources with `per_source`),
    every row's node and id hash, and the kinds of its rows' errors."""
    path = os.path.join(work, f"read-{unit.index:06d}.arrow")
    batches = read_block(unit.task, unit.block) if unit.block is not None else read_file(unit.task)
    rows, all_nodes, nodes, hashes, keys, sources = 0, [], [], [], [], []
    kinds: Counter = Counter()
    with pa.ipc.new_file(path, READ_ARROW_SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
            errors = batch.column("_error")
            every = _nodes(batch)
            all_nodes.append(every)
            hashes.append(_id_hashes(batch.column("id").to_pylist()))
            if errors.null_count == batch.num_rows:  # no error row: nothing to filter (or copy)
                ok = batch
                nodes.append(every)
            else:
                ok = batch.filter(pc.is_null(errors))
                nodes.append(_nodes(ok))
                kinds.update(reason_kind(r) for r in errors.drop_null().to_pylist())
            if sig is not None:
                texts = [t or "" for t in ok.column("text").to_pylist()]
                keys.append(lsh.band_keys(lsh.signatures(texts, sig.num_perm, sig.ngram, sig.seed), sig.positions))
                if per_source:
                    sources += ok.column("source").to_pylist()
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    out: dict[str, Any] = {"index": unit.index, "path": path, "rows": rows, "all_nodes": cat(all_nodes, np.int64),
                           "id_hash": cat(hashes, np.uint64), "nodes": cat(nodes, np.int64), "kinds": kinds}
    if rows:
        out["lo"], out["hi"] = int(out["all_nodes"].min()), int(out["all_nodes"].max())
    if sig is not None:
        out["keys"] = np.concatenate(keys) if keys else np.zeros((0, len(sig.positions)), np.int64)
        if per_source:
            out["sources"] = sources
    return out


def _unit_batches(path: str) -> Iterator[pa.RecordBatch]:
    """The batches of a unit file, memory-mapped: a column not used is never read from disk."""
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def gather_unit(path: str, wanted: np.ndarray, bins: np.ndarray, id_nodes: np.ndarray) -> dict[str, Any]:
    """From one unit file, a batch at a time: the `wanted` documents' nodes (sorted) with their
    `bins` and texts, and the ids of the `id_nodes` (any rows). Texts come back as an Arrow array (it pickles as
    buffers, not as Python strings)."""
    got_nodes, got_texts, named, ids = [], [], [], []
    columns = ["id", "_file", "_row", "_error"] + (["text"] if len(wanted) else [])
    for batch in _unit_batches(path):
        batch = batch.select(columns)
        nodes = _nodes(batch)
        good = pc.is_null(batch.column("_error")).to_numpy(zero_copy_only=False)
        name = np.isin(nodes, id_nodes)  # any row's id, a removed one's too (re-keying asks for those)
        named.append(nodes[name])
        ids += batch.column("id").filter(pa.array(name)).to_pylist()
        if not len(wanted):
            continue
        take = np.isin(nodes, wanted) & good
        got_nodes.append(nodes[take])
        got_texts.append(batch.column("text").filter(pa.array(take)))
    found = np.concatenate(got_nodes) if got_nodes else np.zeros(0, np.int64)
    return {"nodes": found, "bins": bins[np.searchsorted(wanted, found)] if len(found) else np.zeros(0, np.int64),
            "texts": pa.concat_arrays(got_texts) if got_texts else pa.array([], pa.string()),
            "id_nodes": np.concatenate(named) if named else np.zeros(0, np.int64), "ids": ids}


def check_bin(path: str, src: np.ndarray, dst: np.ndarray, params: lsh.DedupMinhashParams
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Check one bin of candidate pairs: its documents' texts from the bin's spill file."""
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    nodes = table.column("node").to_numpy()
    return lsh.verify_bin(nodes, [t or "" for t in table.column("text").to_pylist()], src, dst, params)


@dataclass(frozen=True)
class WriteSpec:
    kept: str                 # <output>/kept
    removed_read: str         # <output>/removed/read
    removed_dedup: str | None  # <output>/removed/<label>, None without a dedup stage
    label: str
    compression: str
    max_records_per_file: int
    columns: tuple[str, ...]


def _meta_as_list(column: pa.ChunkedArray) -> pa.Array:
    """A map column as a list of {key, value} structs (how every engine writes `meta`)."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(arr) == 0:
        return pa.array([], _META)
    offsets = arr.offsets
    if arr.offset:
        offsets = pc.subtract(offsets, offsets[0])
    items = pa.StructArray.from_arrays([arr.keys, arr.items], fields=list(_META.value_type))
    return pa.ListArray.from_arrays(offsets, items, type=_META, mask=arr.is_null())


def output_table(table: pa.Table, extra: dict[str, pa.Array]) -> pa.Table:
    """The document columns as written (internal columns dropped, `meta` as a list), then `extra`."""
    cols = {"id": table.column("id"), "text": table.column("text"), "source": table.column("source"),
            "domain": table.column("domain"), "meta": _meta_as_list(table.column("meta"))}
    cols.update(extra)
    return pa.table(cols)


class _Parts:
    """Tables appended to `<directory>/part-<index>-<k>.parquet` files of at most `most` rows
    each (0: one file), opened when the first row comes."""

    def __init__(self, directory: str, index: int, compression: str = "zstd", most: int = 0):
        self.directory, self.index, self.most = directory, index, most
        self.compression = None if compression == "none" else compression
        self.writer: pq.ParquetWriter | None = None
        self.k = self.in_file = self.rows = 0

    def add(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            if self.writer is None:
                os.makedirs(self.directory, exist_ok=True)
                name = os.path.join(self.directory, f"part-{self.index:06d}-{self.k:04d}.parquet")
                self.writer = pq.ParquetWriter(name, table.schema, compression=self.compression,
                                               use_dictionary=DICTIONARY)
            room = self.most - self.in_file if self.most else table.num_rows - start
            piece = table.slice(start, room)
            self.writer.write_table(piece)
            start += piece.num_rows
            self.in_file += piece.num_rows
            self.rows += piece.num_rows
            if self.most and self.in_file >= self.most:
                self.close()
                self.k, self.in_file = self.k + 1, 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _within(nodes: np.ndarray, keys: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The slice [a, b) of the sorted `keys` that falls in the sorted `nodes`, and where each is."""
    if not len(nodes) or not len(keys):
        return 0, 0, np.zeros(0, np.int64)
    a, b = np.searchsorted(keys, [nodes[0], nodes[-1] + 1])
    return int(a), int(b), np.searchsorted(nodes, keys[a:b])


def write_unit(path: str, index: int, spec: WriteSpec, rekey: tuple[np.ndarray, list[str]],
               tags: tuple[np.ndarray, list[str | None], list[str | None]]) -> dict[str, Any]:
    """Split one unit file, a batch at a time, into kept rows, rows removed by `read` and
    near-duplicates. `rekey`: (sorted nodes, new ids) of this unit's re-keyed rows; `tags`:
    (sorted nodes, cluster ids, survivor ids) of this unit's documents in a component (survivor
    id None: kept)."""
    kept_parts = _Parts(spec.kept, index, spec.compression, spec.max_records_per_file)
    read_parts = _Parts(spec.removed_read, index)  # removed rows: zstd, unsplit, as Spark writes them
    dedup_parts = _Parts(spec.removed_dedup, index) if spec.removed_dedup is not None else None
    schema = None
    try:
        for batch in _unit_batches(path):
            table = pa.Table.from_batches([batch])
            nodes = _nodes(table)
            a, b, at = _within(nodes, rekey[0])
            if b > a:
                ids = table.column("id").to_pylist()
                for i, new in zip(at, rekey[1][a:b]):
                    ids[i] = new
                table = table.set_column(0, table.schema.field("id"), pa.array(ids, pa.string()))
            bad = pc.is_valid(table.column("_error")).to_numpy(zero_copy_only=False)
            if bad.any():
                errors = table.filter(pa.array(bad))
                read_parts.add(pa.table({
                    "id": errors.column("id"), "source": errors.column("source"), "domain": errors.column("domain"),
                    "removed_by": pa.array(["read"] * errors.num_rows, pa.string()),
                    "reason": errors.column("_error"), "raw": errors.column("_raw"), "file": errors.column("_path"),
                    "line": errors.column("_row"),
                }))
            docs = table.filter(pa.array(~bad))
            cluster: list[str | None] = [None] * docs.num_rows
            survivor: list[str | None] = [None] * docs.num_rows
            a, b, at = _within(nodes[~bad], tags[0])
            for i, c, s in zip(at, tags[1][a:b], tags[2][a:b]):
                cluster[i], survivor[i] = c, s
            gone = np.array([s is not None for s in survivor], dtype=bool)
            if dedup_parts is not None and gone.any():
                dup = docs.filter(pa.array(gone))
                dedup_parts.add(output_table(dup, {
                    "cluster_id": pa.array([c for c, g in zip(cluster, gone) if g], pa.string()),
                    "removed_by": pa.array([spec.label] * dup.num_rows, pa.string()),
                    "reason": pa.array([f"near-duplicate of {s}" for s in survivor if s is not None], pa.string()),
                    "duplicate_of": pa.array([s for s in survivor if s is not None], pa.string()),
                }))
            kept = docs.filter(pa.array(~gone))
            extra = {"cluster_id": pa.array([c for c, g in zip(cluster, gone) if not g], pa.string())} \
                if dedup_parts is not None else {}
            written = output_table(kept, extra)
            if spec.columns:
                from fnmatch import fnmatchcase

                written = written.select([c for c in written.column_names
                                          if any(fnmatchcase(c, p) for p in spec.columns)])
            schema = written.schema
            kept_parts.add(written)
    finally:
        for parts in (kept_parts, read_parts, dedup_parts):
            if parts is not None:
                parts.close()
    out: dict[str, Any] = {"kept": kept_parts.rows, "removed_read": read_parts.rows,
                           "removed_dedup": dedup_parts.rows if dedup_parts is not None else 0}
    if schema is not None:
        out["schema"] = schema
    return out


# --- the run ------------------------------------------------------------------------------------

@dataclass
class LocalStage:
    """What the flow turns into a StageRecord."""

    name: str
    stage: str
    n_in: int
    kept: int
    removed: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def rekey_ids(hashes: np.ndarray, order_nodes: np.ndarray, fetch: Callable[[np.ndarray], dict[int, str]],
              max_rounds: int = 5) -> dict[int, str]:
    """The new id of every row whose id repeats an earlier row's (input order = `order_nodes`,
    ascending): the k-th repeat of an id becomes ``<id>#<k>``, in rounds until no id repeats, as
    `read.rekey_duplicate_ids` does. `hashes`: the 64-bit hash of each row's id; `fetch(nodes)`:
    the ids of those rows. Only rows whose hash repeats are fetched, so the usual case (no id
    repeats) costs one `np.unique`."""
    hashes = hashes.copy()
    new: dict[int, str] = {}
    known: dict[int, str] = {}
    for _ in range(max_rounds + 1):
        values, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        repeated = counts[inverse] > 1
        if not repeated.any():
            return new
        if _ == max_rounds:
            break
        rows = np.flatnonzero(repeated)
        missing = [order_nodes[r] for r in rows if int(order_nodes[r]) not in known]
        if missing:
            known.update(fetch(np.array(missing, dtype=np.int64)))
        seen: dict[str, int] = {}
        changed = False
        for r in rows:  # ascending rows: input order
            node = int(order_nodes[r])
            current = new.get(node, known[node])
            k = seen.get(current, 0)
            seen[current] = k + 1
            if k:
                new[node] = f"{current}#{k}"
                hashes[r] = _id_hashes([new[node]])[0]
                changed = True
        if not changed:  # a 64-bit hash collision between different ids: nothing repeats
            return new
    raise WinnowError(f"could not make ids unique in {max_rounds} rounds of re-keying")


def run(tasks: list[FileTask], skipped: list[str], dedup: tuple[str, lsh.DedupMinhashParams] | None,
        output: Path, compression: str, max_records_per_file: int, columns: tuple[str, ...],
        progress: Callable[[str, LocalStage | None], None] | None = None,
        n_workers: int | None = None) -> list[LocalStage]:
    """Run read -> (dedup_minhash) -> write into `output` (`kept/`, `removed/<stage>/`, with
    `_work/` in between, removed at the end by the caller). Returns the stages' records."""
    import multiprocessing as mp

    n_workers = n_workers or workers()
    work = output / "_work" / "local"
    work.mkdir(parents=True, exist_ok=True)
    label, params = dedup if dedup else (None, None)
    sig = None
    if params is not None:
        positions = np.array([list(r) for r in lsh.band_rows(params)], dtype=np.int64)
        sig = SignatureSpec(params.num_perm, params.ngram, params.seed, positions)
    say = progress or (lambda name, record: None)
    records: list[LocalStage] = []
    # forkserver: the workers are forked from a clean server process, not from this one (which
    # may hold threads: a fork of a threaded process can deadlock). The server imports this
    # module once and every worker is forked with it loaded, instead of each importing it.
    from .spark import use_jemalloc

    use_jemalloc()  # before the forkserver starts: its workers inherit the variable
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    try:
        with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
            say("read", None)
            start = time.perf_counter()
            # the pool's start (the forkserver's imports, one fork per worker) is a fixed cost
            # of the command, not part of reading: timed apart, and reported as such
            per_source = bool(params and params.per_source)
            for ready in [pool.submit(_ready, str(work), sig, per_source) for _ in range(n_workers)]:
                ready.result()
            pool_start = time.perf_counter() - start
            start, cpu = time.perf_counter(), _cpu()
            units, read_stats = plan_units(tasks, n_workers, pool)
            results = list(_bounded(pool, read_unit, ((u, str(work), sig, per_source) for u in units), IN_FLIGHT))
            results.sort(key=lambda r: r["index"])
            if len(results) > len(tasks):  # large files read as several units
                read_stats["read_tasks"] = len(results)
            n_read = sum(r["rows"] for r in results)
            none = np.zeros(0, np.int64)
            order = [r for r in results if r["rows"]]
            all_hash = np.concatenate([r["id_hash"] for r in results]) if results else np.zeros(0, np.uint64)
            all_nodes = np.concatenate([r["all_nodes"] for r in results]) if results else np.zeros(0, np.int64)
            rekeyed = rekey_ids(all_hash, all_nodes, lambda nodes: _gather(pool, order, none, none, np.sort(nodes), None))
            n_bad = sum(len(r["all_nodes"]) - len(r["nodes"]) for r in results)
            read_record = LocalStage("read", "read", n_read, n_read - n_bad, n_bad, 0.0,
                                     {"files": len(tasks), "skipped_files": len(skipped), **read_stats,
                                      **({"skipped_examples": skipped[:20]} if skipped else {})})
            kinds = sum((r["kinds"] for r in results), Counter())
            if kinds:
                read_record.stats["removed_by_reason"] = _by_count(kinds)
            read_record.seconds = time.perf_counter() - start
            read_record.stats["pool_start_seconds"] = round(pool_start, 3)
            read_record.stats["cpu_seconds"] = round(_cpu() - cpu, 3)
            records.append(read_record)
            say("read", read_record)
            tags_nodes = np.zeros(0, np.int64)
            tags_cluster: list[str | None] = []
            tags_survivor: list[str | None] = []
            dedup_stats: dict[str, Any] = {}
            dedup_seconds = dedup_cpu = 0.0
            if params is not None:
                say(label, None)
                start, cpu = time.perf_counter(), _cpu()
                tags_nodes, tags_cluster, tags_survivor, dedup_stats = _dedup(pool, results, order, params, rekeyed)
                dedup_seconds, dedup_cpu = time.perf_counter() - start, _cpu() - cpu
            start, cpu = time.perf_counter(), _cpu()
            spec = WriteSpec(kept=str(output / "kept"), removed_read=str(output / "removed" / "read"),
                             removed_dedup=str(output / "removed" / label) if label else None, label=label or "",
                             compression=compression, max_records_per_file=max_records_per_file, columns=columns)
            rk_nodes = np.array(sorted(rekeyed), dtype=np.int64)
            rk_ids = [rekeyed[int(n)] for n in rk_nodes]
            jobs = []
            for r in order:
                a, b = np.searchsorted(rk_nodes, [r["lo"], r["hi"] + 1])
                c, d = np.searchsorted(tags_nodes, [r["lo"], r["hi"] + 1])
                jobs.append((r["path"], r["index"], spec, (rk_nodes[a:b], rk_ids[a:b]),
                             (tags_nodes[c:d], tags_cluster[c:d], tags_survivor[c:d])))
            written = list(_bounded(pool, write_unit, jobs, IN_FLIGHT))
    except BrokenProcessPool as exc:  # a worker killed (out of memory, a signal): one line, not a traceback
        raise WinnowError(f"local engine: a worker process died ({exc}); if it ran out of memory, rerun with "
                          "--engine spark (engine = \"spark\")") from exc
    kept = sum(w["kept"] for w in written)
    removed_read = sum(w["removed_read"] for w in written)
    removed_dedup = sum(w["removed_dedup"] for w in written)
    if kept == 0:  # an empty kept/ still has a file with the schema, as Spark writes it
        _empty_kept(spec, written, label is not None)
    write_seconds, write_cpu = time.perf_counter() - start, _cpu() - cpu
    if params is not None:
        dedup_stats.setdefault("seconds_by_phase", {})["write"] = round(write_seconds, 3)
    if removed_read != read_record.removed:
        raise AccountingError(f"local engine: wrote {removed_read} rows removed by read, counted {read_record.removed}")
    if params is None:  # the kept rows are written by the stage before write
        read_record.stats.update(write_seconds=round(write_seconds, 3), write_cpu_seconds=round(write_cpu, 3))
        read_record.seconds += write_seconds
        read_record.stats["cpu_seconds"] = round(read_record.stats["cpu_seconds"] + write_cpu, 3)
    if params is not None:
        record = LocalStage(label, lsh.NAME, read_record.kept, read_record.kept - removed_dedup, removed_dedup,
                            dedup_seconds + write_seconds,
                            {**dedup_stats, "cpu_seconds": round(dedup_cpu + write_cpu, 3)})
        if removed_dedup:
            record.stats["removed_by_reason"] = {"near-duplicate": removed_dedup}
        records.append(record)
        say(label, record)
    last = records[-1]
    write_record = LocalStage("write", "write", last.kept, last.kept, 0, 0.0,
                              {"path": spec.kept, "written_by": last.name})
    records.append(write_record)
    say("write", None)
    say("write", write_record)
    if kept != last.kept:
        raise AccountingError(f"local engine: wrote {kept} kept rows, expected {last.kept}")
    return records


_WORKER_CPU = [0.0]  # CPU seconds the pool's workers spent on the jobs collected so far


def _cpu() -> float:
    """CPU seconds of this process and of the pool's collected jobs: a stage's figure is the
    difference of two readings (docs per CPU-second is its throughput per core)."""
    return time.process_time() + _WORKER_CPU[0]


_WARM_UP = b'{"id": "a", "text": "one two three four five six"}\n{"text": 1}\n'


def _ready(work: str, sig: SignatureSpec | None, per_source: bool) -> None:
    """Submitted once per worker to start the pool: reads two lines through `read_unit`, so
    what a worker pays once whatever the input (its first calls into orjson, Arrow and the
    signature kernel, the pages it shares with the forkserver copied on first write: about
    0.2 CPU-s each on the 2-core VM) is paid at the pool's start, a fixed cost, not by its first
    unit."""
    where = os.path.join(work, f"warm-up-{os.getpid()}")
    os.makedirs(where, exist_ok=True)
    task = FileTask(0, "warm-up", "warm-up", "jsonl", "warm-up", "warm-up")
    block = {"line": 1, "data": _WARM_UP, "error": None, "empty": False}
    read_unit(Unit(0, task, block), where, sig, per_source)
    shutil.rmtree(where, ignore_errors=True)


def _timed(fn: Callable, *args: Any) -> tuple[Any, float]:
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def _bounded(pool, fn, jobs: Iterable[tuple], limit: int) -> Iterable[Any]:
    """`fn(*job)` for each job in the pool, results in order, with at most `limit` jobs submitted
    and not yet collected: a large .gz file's blocks are decompressed, and texts gathered, as the workers take them,
    never all held at once (`Executor.map` would submit every job first). Each job's CPU
    seconds are added to `_WORKER_CPU`."""
    from collections import deque

    def collect(future) -> Any:
        result, cpu = future.result()
        _WORKER_CPU[0] += cpu
        return result

    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(_timed, fn, *job))
        if len(pending) >= limit:
            yield collect(pending.popleft())
    while pending:
        yield collect(pending.popleft())


def _by_count(counts: Counter) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _dedup(pool, results, order, params: lsh.DedupMinhashParams, rekeyed: dict[int, str]):
    """Candidates, check and survivors: (tagged nodes sorted, cluster ids, survivor ids or None
    for the kept one of each component, stats)."""
    b, r = params.banding()
    clock = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 3)
        clock = now

    nodes = np.concatenate([x["nodes"] for x in results]) if results else np.zeros(0, np.int64)
    n_bands = len(lsh.band_rows(params))
    keys = np.concatenate([x["keys"] for x in results]) if results else np.zeros((0, n_bands), np.int64)
    for x in results:  # one copy of the keys, not two
        x.pop("keys", None)
    stats: dict[str, Any] = {"bands": b, "rows": r, "probes": params.probes,
                             "kernel": lsh.kernel_name()}
    codes = None
    if params.per_source:
        sources = [s for x in results for s in x.get("sources", [])]
        codes = np.unique(np.array(sources, dtype=object), return_inverse=True)[1].astype(np.int64)
    src, dst = candidate_pairs(nodes, keys, codes)
    stats["candidate_pairs"] = int(len(src))
    lap("candidates")
    if params.check == "none":
        label_nodes, label_comps = lsh.local_components(src, dst)
        none = np.zeros(0, np.int64)
        ids = _gather(pool, order, none, none, np.unique(label_comps), None)
    else:
        cand_nodes, groups = lsh.local_components(src, dst)
        group_ids, group_of_node = np.unique(groups, return_inverse=True)
        n_bins = min(MAX_BINS, len(group_ids), max(1, -(-len(cand_nodes) // BIN_DOCS)))  # none empty
        bin_of_node = (np.arange(len(group_ids)) % n_bins)[group_of_node]
        bin_of_pair = bin_of_node[np.searchsorted(cand_nodes, src)] if len(src) else np.zeros(0, np.int64)
        spill = Path(results[0]["path"]).parent / "bins" if results else Path(".")
        ids = _gather(pool, order, cand_nodes, bin_of_node, cand_nodes, spill)
        lap("gather")
        jobs = [(str(spill / f"bin-{k:05d}.arrow"), src[bin_of_pair == k], dst[bin_of_pair == k], params)
                for k in range(n_bins if len(cand_nodes) else 0)]
        label_parts, comp_parts, ambiguous = [], [], 0
        for ln, lc, amb in _bounded(pool, check_bin, jobs, IN_FLIGHT):
            label_parts.append(ln)
            comp_parts.append(lc)
            ambiguous += amb
        stats["ambiguous_pairs"] = int(ambiguous)
        label_nodes = np.concatenate(label_parts) if label_parts else np.zeros(0, np.int64)
        label_comps = np.concatenate(comp_parts) if comp_parts else np.zeros(0, np.int64)
        lap("check")
        sort = np.argsort(label_nodes, kind="stable")
        label_nodes, label_comps = label_nodes[sort], label_comps[sort]
    stats["cc_rounds"] = 0
    comp_ids, sizes = np.unique(label_comps, return_counts=True)
    dist = Counter(sizes.tolist())
    stats["components"] = int(len(comp_ids))
    stats["largest_component"] = int(max(dist, default=0))
    stats["component_sizes"] = {int(k): int(v) for k, v in sorted(dist.items())}
    ids.update({n: i for n, i in rekeyed.items() if n in ids})
    cluster = [ids[int(c)] for c in label_comps]
    survivor = [None if n == c else ids[int(c)] for n, c in zip(label_nodes.tolist(), label_comps.tolist())]
    lap("survivors")
    stats["seconds_by_phase"] = phases
    return label_nodes, cluster, survivor, stats


def candidate_pairs(nodes: np.ndarray, keys: np.ndarray, codes: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidate pairs (src > dst) of documents `nodes` (ascending) with band keys
    `keys` (documents x bands): in each bucket, every member with the bucket's smallest node and
    with the member before it, as `minhash_lsh.bucket_pairs_kernel` pairs them. With `codes` (a
    source per document) a bucket is (key, source). One band at a time: a band's keys never meet
    another's (the band's index is hashed into its key), and a band's arrays are a few MB where
    all bands' at once would be hundreds."""
    srcs, dsts = [], []
    for j in range(keys.shape[1]):
        k = keys[:, j]
        by_key = np.argsort(k)  # not stable, so only the keys that repeat are sorted again below
        ks = k[by_key]
        repeat = np.zeros(len(ks), dtype=bool)
        same = ks[1:] == ks[:-1]
        repeat[1:] |= same
        repeat[:-1] |= same
        if not repeat.any():
            continue
        sub = by_key[repeat]  # the members of buckets with more than one document
        k, n = k[sub], nodes[sub]
        order = np.lexsort((n, k)) if codes is None else np.lexsort((n, codes[sub], k))
        k, n = k[order], n[order]  # by bucket, nodes ascending within one
        start = np.ones(len(k), dtype=bool)
        start[1:] = k[1:] != k[:-1]
        if codes is not None:
            c = codes[sub][order]
            start[1:] |= c[1:] != c[:-1]
        anchor = n[np.flatnonzero(start)][np.cumsum(start) - 1]
        star = ~start & (n != anchor)
        chain = ~start[1:] & ~start[:-1] & (n[1:] != n[:-1])  # with the one before, unless it is the anchor
        srcs += [n[1:][star[1:]], n[1:][chain]]
        dsts += [anchor[1:][star[1:]], n[:-1][chain]]
    if not srcs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    fresh = np.ones(len(src), dtype=bool)
    fresh[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return src[fresh], dst[fresh]


_SPILL_SCHEMA = pa.schema([pa.field("node", pa.int64()), pa.field("text", pa.string())])


def _gather(pool, order, wanted: np.ndarray, bins: np.ndarray, id_nodes: np.ndarray, spill: Path | None
            ) -> dict[int, str]:
    """The ids of the `id_nodes`; and the texts of the `wanted` nodes (sorted), written to one
    Arrow file per bin under `spill` (`bin-<k>.arrow`, nodes ascending), for the check. The pool
    reads the unit files; the driver only passes each unit's texts on to their bins' files, so it
    never holds more than a few units' candidate texts."""
    jobs = []
    for r in order:
        a, b = np.searchsorted(wanted, [r["lo"], r["hi"] + 1])
        c, d = np.searchsorted(id_nodes, [r["lo"], r["hi"] + 1])
        if b > a or d > c:
            jobs.append((r["path"], wanted[a:b], bins[a:b], id_nodes[c:d]))
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)
    ids: dict[int, str] = {}
    try:
        for g in _bounded(pool, gather_unit, jobs, IN_FLIGHT):
            ids.update(zip(g["id_nodes"].tolist(), g["ids"]))
            if spill is None or not len(g["nodes"]):
                continue
            nodes, texts, of_bin = g["nodes"], g["texts"], g["bins"]
            for k in np.unique(of_bin).tolist():
                mask = of_bin == k
                if k not in writers:
                    writers[k] = pa.ipc.new_file(str(spill / f"bin-{k:05d}.arrow"), _SPILL_SCHEMA)
                writers[k].write_batch(pa.record_batch([pa.array(nodes[mask]), texts.filter(pa.array(mask))],
                                                       schema=_SPILL_SCHEMA))
    finally:
        for w in writers.values():
            w.close()
    return ids


def _empty_kept(spec: WriteSpec, written: list[dict[str, Any]], with_cluster: bool) -> None:
    schema = next((w["schema"] for w in written if "schema" in w), None)
    if schema is None:
        empty = pa.Table.from_batches([], schema=READ_ARROW_SCHEMA)
        schema = output_table(empty, {"cluster_id": pa.array([], pa.string())} if with_cluster else {}).schema
    os.makedirs(spec.kept, exist_ok=True)
    pq.write_table(schema.empty_table(), os.path.join(spec.kept, "part-000000-0000.parquet"),
                   compression=None if spec.compression == "none" else spec.compression)

