"""Reading what `winnow export` wrote: its dataset directories, their token rows, its manifest
and its domain directories. The samplers (`mixers.sampler`) and the training data
(`training.data`) read export directories through this module only.

The layout
----------
`pipelines.export` writes one `datasets` ``save_to_disk`` directory per bucket of Dataset
Decomposition (Pouransari et al. 2024, arXiv:2405.13226), ``<root>/bucket_<i>/`` (rows of
exactly ``2**i + 1`` token ids in a ``tokens`` list column), optionally ``<root>/bucket_tail/``
(shorter rows), or ``<root>/<dir>/bucket_<i>/`` with domains apart, where ``<dir>`` is
`mixers.dirnames.dir_name(domain)` (the name itself when plain, else a ``%``-encoding, cut with a
hash when long); and for the concat-and-chunk baseline ``<root>/concat_<seq_len>/`` (rows of
``seq_len + 1`` ids). ``<root>/manifest.json`` holds the export stage's stats (`export_stats`):
the sequences and tokens of every dataset (`compare_manifest` compares them with the shards), the
map of domain directories back to domains (``domain_dirs``), and the planned mixture and
schedule, if any.

Domains are named by their names, never by directories: `domain_dirs` maps directories back to
domains through the manifest's ``domain_dirs``, `mixers.dirnames.name_of`, or the name as it is,
in that order (`domain_name`).

Reading rows lazily
-------------------
Each dataset directory's ``state.json`` lists its Arrow IPC stream files (`data_files`). They
are opened with ``pyarrow.memory_map`` and ``pyarrow.ipc.open_stream`` (`open_table`): the
tables are views of the mapped files, so nothing is read into memory until rows are gathered,
and only those rows are copied. `TokenRows` numbers the rows of one or more directories; at
construction each file is opened once to count its rows (the stream's batch headers and two
list offsets per record batch) and then let go; a file is mapped again, and kept mapped, the
first time a batch needs one of its rows. Every row's length is checked against the required
width (from the offsets) the first time its record batch is used.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .dirnames import name_of

__all__ = [
    "BUCKET_DIR",
    "CONCAT_DIR",
    "TAIL_DIR",
    "TokenRows",
    "bucket_dirs",
    "compare_manifest",
    "data_files",
    "dataset_rows",
    "domain_dirs",
    "domain_name",
    "export_stats",
    "first_row_width",
    "is_bucket_dir",
    "list_offsets",
    "open_table",
    "tokens_column",
]

BUCKET_DIR = re.compile(r"^bucket_(\d+)$")  # bucket i of Dataset Decomposition: rows of 2**i + 1
TAIL_DIR = "bucket_tail"  # rows shorter than the smallest bucket's
CONCAT_DIR = re.compile(r"^concat_(\d+)$")  # concat-and-chunk windows: rows of seq_len + 1


def is_bucket_dir(name: str) -> bool:
    """Whether a directory name is a Dataset Decomposition dataset (``bucket_<i>`` or the tails)."""
    return name == TAIL_DIR or BUCKET_DIR.match(name) is not None


# --------------------------------------------------------------------------------------------
# One `save_to_disk` directory
# --------------------------------------------------------------------------------------------


def data_files(directory: Path) -> list[Path]:
    """The Arrow stream files of a ``save_to_disk`` directory, in its ``state.json`` order; a
    ValueError when the directory, its ``state.json`` or a listed file is missing."""
    state = directory / "state.json"
    if not directory.is_dir():
        raise ValueError(f"dataset directory not found: {directory}")
    if not state.is_file():
        raise ValueError(f"{directory} is not a `datasets` save_to_disk directory (no state.json)")
    try:
        files = [directory / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{state}: cannot read _data_files ({exc})") from None
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{state} lists files that are missing: {', '.join(missing)}")
    return files


def open_table(path: Path) -> pa.Table:
    """The whole stream file as a table of views into its memory map."""
    source = pa.memory_map(str(path), "r")
    try:
        return pa.ipc.open_stream(source).read_all()
    finally:
        source.close()  # the table's buffers keep the mapping alive; the descriptor goes


def tokens_column(table: pa.Table, path: Path) -> pa.ChunkedArray:
    """The ``tokens`` column of a table read from ``path``, checked to be a list of integers."""
    if "tokens" not in table.column_names:
        raise ValueError(f"{path}: no `tokens` column (columns: {', '.join(table.column_names)})")
    col = table.column("tokens")
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise ValueError(f"{path}: `tokens` must be a list of integers, got {t}")
    if not pa.types.is_integer(t.value_type):
        raise ValueError(f"{path}: `tokens` must be a list of integers, got {t}")
    return col


def list_offsets(chunk: pa.Array) -> np.ndarray:
    """Where each row of a list chunk starts in ``chunk.values`` (the unsliced child array),
    and where the last ends: ``len(chunk) + 1`` int64 positions, for any kind of list."""
    if pa.types.is_fixed_size_list(chunk.type):
        size = chunk.type.list_size
        return (np.arange(len(chunk) + 1, dtype=np.int64) + chunk.offset) * size
    return chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _values(chunk: pa.Array, offsets: np.ndarray) -> np.ndarray:
    """The chunk's token ids, flat, as a zero-copy numpy view."""
    values = chunk.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    if values.null_count:
        raise ValueError("null token ids")
    return values.to_numpy(zero_copy_only=True)


def dataset_rows(directory: Path) -> Iterator[np.ndarray]:
    """Every row's token ids of one ``save_to_disk`` directory, in file order (views of the
    memory-mapped files; no length check)."""
    for path in data_files(directory):
        col = tokens_column(open_table(path), path)
        for chunk in col.chunks:
            offsets = list_offsets(chunk)  # positions in chunk.values, the unsliced child array
            values = chunk.values.to_numpy(zero_copy_only=False)
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                yield values[a:b]


def first_row_width(files: Sequence[Path]) -> int | None:
    """The length of the first row in ``files`` (None when they hold no rows)."""
    for f in files:
        col = tokens_column(open_table(f), f)
        for chunk in col.chunks:
            if len(chunk):
                off = list_offsets(chunk)
                return int(off[1] - off[0])
    return None


class TokenRows:
    """The ``tokens`` rows of one or more `save_to_disk` directories, concatenated, read lazily.

    ``width`` is the required row length, or None (tails: any length >= 1). Rows are numbered
    0..n-1 over the directories in order, their files in ``state.json`` order, rows in file order.
    """

    def __init__(self, name: str, directories: Sequence[Path], width: int | None) -> None:
        self.name = name
        self.directories = [Path(d) for d in directories]
        self.width = width
        self.files: list[Path] = []
        self.per_directory: dict[Path, tuple[int, int]] = {}  # rows, stored tokens
        counts, tokens = [], 0
        dtypes = set()
        for directory in self.directories:
            d_rows = d_tokens = 0
            for path in data_files(directory):
                col = tokens_column(open_table(path), path)
                dtypes.add(np.dtype(col.type.value_type.to_pandas_dtype()))
                self.files.append(path)
                counts.append(len(col))
                d_rows += len(col)
                for chunk in col.chunks:
                    if chunk.null_count:
                        raise ValueError(f"{path}: null rows in `tokens`")
                    if len(chunk):
                        off = list_offsets(chunk)
                        d_tokens += int(off[-1] - off[0])
            self.per_directory[directory] = (d_rows, d_tokens)
            tokens += d_tokens
        self.storage_dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.int64)
        self.n = int(sum(counts))
        self.tokens = tokens  # stored tokens, as the manifest counts them
        if width is not None and tokens != self.n * width:
            raise ValueError(f"{name}: {self.n} rows hold {tokens} tokens, not {self.n} x {width}; "
                             f"every row must have exactly {width} tokens")
        self._file_starts = np.concatenate([np.zeros(1, dtype=np.int64),
                                            np.cumsum(np.array(counts, dtype=np.int64))])
        # file -> (row starts of its record batches, per batch [arrow chunk, checked view or None])
        self._opened: dict[int, tuple[np.ndarray, list[list[Any]]]] = {}
        self._lengths: np.ndarray | None = None

    def __getstate__(self) -> dict:  # pickle (DataLoader workers with spawn) without the maps
        state = dict(self.__dict__)
        state["_opened"] = {}
        return state

    def _file(self, f: int):
        entry = self._opened.get(f)
        if entry is None:
            path = self.files[f]
            col = tokens_column(open_table(path), path)
            if len(col) != self._file_starts[f + 1] - self._file_starts[f]:
                raise ValueError(f"{path} changed while the sampler was reading it")
            starts = np.concatenate([np.zeros(1, dtype=np.int64),
                                     np.cumsum(np.array([len(c) for c in col.chunks], dtype=np.int64))])
            # per chunk: [offsets, values] and, once checked, a 2-D view for fixed-width rows
            entry = self._opened[f] = (starts, [[c, None] for c in col.chunks])
        return entry

    def _chunk(self, f: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(offsets relative to the values, flat values) of chunk ``c`` of file ``f``, checked."""
        slot = self._file(f)[1][c]
        if slot[1] is None:
            chunk = slot[0]
            off = list_offsets(chunk)
            try:
                values = _values(chunk, off)
            except ValueError as exc:
                raise ValueError(f"{self.files[f]}: {exc}") from None
            rel = off - off[0]
            if self.width is not None:
                lengths = np.diff(rel)
                bad = np.flatnonzero(lengths != self.width)
                if bad.size:
                    raise ValueError(f"{self.files[f]}: row of {int(lengths[bad[0]])} tokens in "
                                     f"{self.name}, expected {self.width}")
                slot[1] = (rel, values.reshape(len(chunk), self.width))
            else:
                slot[1] = (rel, values)
        return slot[1]

    def _locate(self, rows: np.ndarray):
        """Yield (positions in ``rows``, file, chunk, row numbers within the chunk)."""
        files = np.searchsorted(self._file_starts, rows, side="right") - 1
        for f in np.unique(files):
            at = np.flatnonzero(files == f)
            local = rows[at] - self._file_starts[f]
            starts = self._file(int(f))[0]
            chunks = np.searchsorted(starts, local, side="right") - 1
            for c in np.unique(chunks):
                sel = np.flatnonzero(chunks == c)
                yield at[sel], int(f), int(c), local[sel] - starts[c]

    def gather(self, rows: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
        """Rows (fixed width) as an array of shape ``(len(rows), width)``, in the order given."""
        assert self.width is not None
        out = np.empty((len(rows), self.width), dtype=dtype or self.storage_dtype)
        for at, f, c, local in self._locate(np.asarray(rows, dtype=np.int64)):
            out[at] = self._chunk(f, c)[1][local]
        return out

    def gather_padded(self, rows: np.ndarray, width: int, pad_id: int,
                      dtype: np.dtype | None) -> tuple[np.ndarray, np.ndarray]:
        """Variable-length rows right-padded to ``width``; and their lengths."""
        out = np.full((len(rows), width), pad_id, dtype=dtype or self.storage_dtype)
        lengths = np.empty(len(rows), dtype=np.int64)
        for at, f, c, local in self._locate(np.asarray(rows, dtype=np.int64)):
            rel, values = self._chunk(f, c)
            for j, r in zip(at, local):
                a, b = int(rel[r]), int(rel[r + 1])
                if b - a > width:
                    raise ValueError(f"{self.files[f]}: tail row of {b - a} tokens does not fit in {width}")
                out[j, :b - a] = values[a:b]
                lengths[j] = b - a
        return out, lengths

    def lengths(self) -> np.ndarray:
        """Every row's length (reads the offsets of every file)."""
        if self._lengths is None:
            parts = []
            for f in range(len(self.files)):
                for c in range(len(self._file(f)[1])):
                    parts.append(np.diff(self._chunk(f, c)[0]))
            self._lengths = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return self._lengths


# --------------------------------------------------------------------------------------------
# An export root: its manifest and its domain directories
# --------------------------------------------------------------------------------------------


def export_stats(root: str | Path, key: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """``(path, stats)`` of the export stage in ``<root>/manifest.json`` (the stage whose
    ``stage`` or ``name`` is ``export``; with ``key``, the first such stage whose stats hold it),
    or None when there is no manifest or no such stage. A manifest that is not JSON, or not
    shaped like Winnow's, is a ValueError."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        for stage in manifest.get("stages", []):
            if "export" not in (stage.get("stage"), stage.get("name")):
                continue
            stats = stage.get("stats") or {}
            if not isinstance(stats, dict):
                raise ValueError
            if key is None or stats.get(key) is not None:
                return path, stats
    except (ValueError, AttributeError):
        raise ValueError(f"{path}: not a readable Winnow manifest") from None
    return None


def _manifest_groups(root: Path) -> tuple[Path, dict[str, dict]] | None:
    """The export stage's ``datasets`` table from ``<root>/manifest.json``, if there is one."""
    found = export_stats(root, "datasets")
    if found is None or not isinstance(found[1]["datasets"], dict):
        return None
    return found[0], found[1]["datasets"]


def domain_name(directory: str, recorded: Mapping[str, str] | None = None) -> str:
    """The domain a domain directory of an export holds.

    `pipelines.export` names a domain's directory `mixers.dirnames.dir_name(domain)`: the name
    itself when it is plain, else a ``%``-encoding, cut with a hash when very long. The name is,
    in this order: the export manifest's ``domain_dirs`` entry (``recorded``: ``{directory:
    domain}``, which also covers cut names); `mixers.dirnames.name_of` (undoes the encoding);
    the directory name itself (a cut name without a manifest entry, or an export written before
    the names were encoded)."""
    if recorded and isinstance(recorded.get(directory), str):
        return recorded[directory]
    try:
        name = name_of(directory)
    except UnicodeDecodeError:  # %-escapes that are not UTF-8: not one of ours
        name = None
    return directory if name is None else name


def domain_dirs(root: str | Path, *, tails: bool = False) -> dict[str, str]:
    """``{domain: directory name}`` for the domain directories of an export made with domains
    apart: the children of ``root`` that hold ``bucket_<i>`` datasets (or only ``bucket_tail``,
    with ``tails``), named as `domain_name` says, in order of domain name. Empty for a flat
    export. Two directories that stand for one domain are a ValueError."""
    root = Path(root)
    found = export_stats(root, "domain_dirs")
    recorded = found[1]["domain_dirs"] if found is not None and isinstance(found[1]["domain_dirs"], dict) else {}
    out: dict[str, str] = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        buckets, tail = bucket_dirs(child)
        if not buckets and not (tails and tail is not None):
            continue
        name = domain_name(child.name, recorded)
        if name in out:
            raise ValueError(f"{root}: directories {out[name]!r} and {child.name!r} both hold domain {name!r}")
        out[name] = child.name
    return dict(sorted(out.items()))


def compare_manifest(root: Path, stores: Sequence[TokenRows], names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Compare the shards' sequences and tokens per group with the manifest; raise on a mismatch.
    A group is looked up by its path under ``root`` (``<directory>/bucket_<i>``), then, for a
    domain directory in ``names`` (``{directory: domain}``), as ``<domain>/bucket_<i>``."""
    found = _manifest_groups(root)
    if found is None:
        return {"path": None, "checked": []}
    path, groups = found
    wrong = []
    checked = []
    for store in stores:
        for directory, (rows, tokens) in store.per_directory.items():
            group = directory.relative_to(root).as_posix()
            head, _, rest = group.partition("/")
            if group not in groups and rest and names and head in names and f"{names[head]}/{rest}" in groups:
                group = f"{names[head]}/{rest}"
            entry = groups.get(group)
            if entry is None:
                wrong.append(f"{group}: not in the manifest")
                continue
            if int(entry.get("sequences", -1)) != rows or int(entry.get("tokens", -1)) != tokens:
                wrong.append(f"{group}: manifest {entry.get('sequences')} sequences / "
                             f"{entry.get('tokens')} tokens, shards {rows} / {tokens}")
            checked.append(group)
    if wrong:
        raise ValueError(f"the shards under {root} do not match {path}: " + "; ".join(wrong)
                         + " (pass check_manifest=False to read them anyway)")
    return {"path": str(path), "checked": sorted(checked)}



def bucket_dirs(directory: Path) -> tuple[dict[int, Path], Path | None]:
    """``({i: <directory>/bucket_<i>}, <directory>/bucket_tail or None)``: the Dataset
    Decomposition datasets directly under ``directory``."""
    buckets, tail = {}, None
    for child in directory.iterdir():
        if not child.is_dir():
            continue
        m = BUCKET_DIR.match(child.name)
        if m:
            buckets[int(m.group(1))] = child
        elif child.name == TAIL_DIR:
            tail = child
    return buckets, tail

