"""Training batches from an export directory: Dataset Decomposition buckets (METHODS §7.2-7.3)
and the concat-and-chunk baseline (§7.4), deterministic, identical on every data-parallel rank,
and resumable from a step number.

What it reads
-------------
`pipelines.export` writes one `datasets` ``save_to_disk`` directory per bucket,
``<root>/bucket_<i>/`` (rows of exactly ``2**i + 1`` token ids in a ``tokens`` list column),
optionally ``<root>/bucket_tail/`` (shorter rows), or ``<root>/<dir>/bucket_<i>/`` with domains
apart, where ``<dir>`` is `mixers.dirnames.dir_name(domain)` (the name itself when plain, else a
``%``-encoding, cut with a hash when long; `domain_dirs` maps directories back to domains through
the manifest's ``domain_dirs``, `mixers.dirnames.name_of`, or the name as it is, in that order:
samplers and reports name domains, never directories); and for the baseline
``<root>/concat_<seq_len>/`` (rows of ``seq_len + 1`` ids). Each directory's ``state.json``
lists its Arrow IPC stream files (``_data_files``). They are opened with ``pyarrow.memory_map`` and
``pyarrow.ipc.open_stream``: the tables are views of the mapped files, so nothing is read into
memory until a batch's rows are gathered, and only those rows are copied (into the batch array).
At construction each file is opened once to count its rows (the stream's batch headers and two
list offsets per record batch) and then let go; a file is mapped again, and kept mapped, the first
time a batch needs one of its rows. Every row's length is checked against ``2**i + 1`` (from the
offsets) the first time its record batch is used.

Batches (`VariableLengthSampler`, METHODS §7.2)
----------------------------------------------
``tokens_per_batch`` is the *global* batch (all ranks together), counted as the paper does,
``2**i`` tokens per sequence (the inputs, not the ``+1`` target): a batch of bucket ``i`` holds
``tokens_per_batch / 2**i`` sequences (`mixers.decomposition.batch_sizes`), so every step has the
same number of tokens. ``tokens_per_batch`` must be a multiple of ``2**max_i * world_size``
(every global batch splits evenly over the ranks).

Each item the sampler yields is a dict::

    {"tokens": np.ndarray (n, 2**i + 1),   # this rank's rows; x = t[:, :-1], y = t[:, 1:]
     "bucket": i,                          # None for a padded tail batch
     "step": s,                            # global step, the same on every rank
     "epoch": e}
    # padded tail batches only: "lengths": np.ndarray (n,) real tokens per row

``tokens`` is ``dtype`` (``numpy.int64`` by default; ``dtype=None`` keeps the stored uint16/32).

Choices
-------
- **Shuffling.** In epoch ``e`` the rows of bucket ``i`` (all files, and all selected domains,
  concatenated in order: domains in the given or sorted order, files in ``state.json`` order,
  rows in file order) are visited in the order of ``numpy.random.default_rng(SeedSequence([seed,
  1, e, i + 1])).permutation(n_rows)``; the ``k``-th batch of bucket ``i`` in the epoch is
  ``perm[k*B : (k+1)*B]``. Every row of the epoch is used at most once, and all but the leftovers
  exactly once.
- **Leftovers.** The last ``n_rows % B`` rows of each bucket's permutation (an incomplete batch)
  are dropped for that epoch and counted (`epoch_plan`: ``leftover_sequences``,
  ``leftover_tokens``). The permutation changes every epoch, so no row is left out for good.
- **Curriculum** (§7.3). An epoch is one pass over the data, in ``cycles`` cycles (the
  reference's ``--epochs``; the paper's preferred setting is ``grow_p2`` with 8 cycles). Cycle
  ``c`` holds ``n_i // cycles`` batches of bucket ``i``, plus one for ``c < n_i % cycles``, so
  every batch of the epoch is in exactly one cycle. The bucket order of each cycle is
  `mixers.decomposition.bucket_schedule` (weights = token share x `curriculum_odds`, exhausted
  buckets removed) with the seed ``SeedSequence([seed, 2, e, c])``; it depends on the seed, the
  epoch and the batch counts only, never on the rank.
- **Ranks.** Every rank computes the same global batch; rank ``r`` of ``w`` takes the contiguous
  slice ``rows[r*B/w : (r+1)*B/w]`` of it, so the ranks' slices, concatenated in rank order, are
  the global batch.
- **Tails.** ``bucket_tail`` rows (shorter than ``2**min_i + 1``) are skipped by default: a
  warning is logged and `epoch_plan` counts them under ``tail`` (``skipped_sequences``,
  ``skipped_tokens``). With ``tails="pad"`` they become one more batch source with the smallest
  bucket's shape (``tokens_per_batch / 2**min_i`` rows of ``2**min_i + 1``, right-padded with
  ``pad_id``, real lengths in ``lengths``); in the curriculum they sit one step below the
  smallest bucket (``grow_p2`` gives them twice its odds: shortest first). Padding costs compute
  and a loss mask on the trainer's side; that is why it is not the default.
- **Resuming.** ``iter_from(step)`` (or ``load_state_dict(state)`` then ``iter(sampler)``)
  yields exactly what an uninterrupted run yields from ``step`` on. It rebuilds the epoch's bucket
  schedule and the permutations of that epoch and counts, per bucket, the batches scheduled
  before ``step``; no data is read for the skipped steps. ``state_dict()`` holds the next step
  and the settings that fix the order; loading checks them (the rank and the number of ranks may
  change, since the global order does not depend on them).

Data loading workers: `torch_dataset` wraps a sampler as a ``torch.utils.data.IterableDataset``;
worker ``k`` of ``K`` yields the steps ``start + k, start + k + K, ...`` (reading nothing for the
others), and a ``DataLoader(ds, batch_size=None)`` takes from its workers in turn, so the order
is unchanged. The sampler object in the main process is not advanced by the workers: record the
``step`` of the last batch trained on and resume from ``step + 1``.

Memory: per bucket, one permutation of its row numbers for the current epoch (8 bytes a row) and
the schedule of the current epoch (8 bytes a step); token data only for the batch being built.

`ConcatSampler` is the same machinery for the fixed-length ``concat_<seq_len>`` rows: a fixed
``batch_size`` (global, in sequences), a per-epoch permutation ``SeedSequence([seed, 1, e, 0])``,
the incomplete last batch dropped and counted, the same rank slices and resumption.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .decomposition import CURRICULA, batch_sizes, bucket_schedule

__all__ = [
    "ConcatSampler",
    "TAIL_MODES",
    "VariableLengthSampler",
    "domain_dirs",
    "domain_name",
    "export_stats",
    "torch_dataset",
]

log = logging.getLogger(__name__)

TAIL_MODES = ("skip", "pad")
_BUCKET_DIR = re.compile(r"^bucket_(\d+)$")
_CONCAT_DIR = re.compile(r"^concat_(\d+)$")
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _ranks(rank: object, world_size: object) -> tuple[int, int]:
    w = _int("world_size", world_size, 1)
    r = _int("rank", rank, 0)
    if r >= w:
        raise ValueError(f"rank ({r}) must be < world_size ({w})")
    return r, w


def _epochs(epochs: object) -> int | None:
    return None if epochs is None else _int("epochs", epochs, 1)


def _out_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    d = np.dtype(dtype)
    if d.kind not in "iu":
        raise ValueError(f"dtype must be an integer dtype or None, got {d}")
    return d


def _derive(seed: int, *words: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *words])


# --------------------------------------------------------------------------------------------
# Reading `save_to_disk` directories lazily
# --------------------------------------------------------------------------------------------


def _data_files(directory: Path) -> list[Path]:
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


def _open(path: Path) -> pa.Table:
    """The whole stream file as a table of views into its memory map."""
    source = pa.memory_map(str(path), "r")
    try:
        return pa.ipc.open_stream(source).read_all()
    finally:
        source.close()  # the table's buffers keep the mapping alive; the descriptor goes


def _tokens_column(table: pa.Table, path: Path) -> pa.ChunkedArray:
    if "tokens" not in table.column_names:
        raise ValueError(f"{path}: no `tokens` column (columns: {', '.join(table.column_names)})")
    col = table.column("tokens")
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise ValueError(f"{path}: `tokens` must be a list of integers, got {t}")
    if not pa.types.is_integer(t.value_type):
        raise ValueError(f"{path}: `tokens` must be a list of integers, got {t}")
    return col


def _offsets(chunk: pa.Array) -> np.ndarray:
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


class _Rows:
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
            for path in _data_files(directory):
                col = _tokens_column(_open(path), path)
                dtypes.add(np.dtype(col.type.value_type.to_pandas_dtype()))
                self.files.append(path)
                counts.append(len(col))
                d_rows += len(col)
                for chunk in col.chunks:
                    if chunk.null_count:
                        raise ValueError(f"{path}: null rows in `tokens`")
                    if len(chunk):
                        off = _offsets(chunk)
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
            col = _tokens_column(_open(path), path)
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
            off = _offsets(chunk)
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
    from .dirnames import name_of

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
        buckets, tail = _bucket_dirs(child)
        if not buckets and not (tails and tail is not None):
            continue
        name = domain_name(child.name, recorded)
        if name in out:
            raise ValueError(f"{root}: directories {out[name]!r} and {child.name!r} both hold domain {name!r}")
        out[name] = child.name
    return dict(sorted(out.items()))


def _check_manifest(root: Path, stores: Sequence[_Rows], names: Mapping[str, str] | None = None) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# The shared machinery: a plan of global batches, rank slices, resumption
# --------------------------------------------------------------------------------------------


class _Sampler:
    """Iteration, rank slicing and state for a plan of global batches (see subclasses)."""

    rank: int
    world_size: int
    seed: int
    epochs: int | None
    _step: int

    # -- to be provided --------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def _plan_epoch(self, epoch: int, offset: int) -> Iterator[tuple[Any, np.ndarray]]:
        """(source key, global batch row numbers) for the steps ``offset..`` of ``epoch``."""
        raise NotImplementedError

    def _make(self, key: Any, rows: np.ndarray, step: int, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- iteration -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Global steps in the run (the same on every rank)."""
        if self.epochs is None:
            raise TypeError("an endless sampler (epochs=None) has no length")
        return self.epochs * self.steps_per_epoch

    def _local(self, rows: np.ndarray) -> np.ndarray:
        per_rank = len(rows) // self.world_size
        return rows[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _check_step(self, step: object) -> int:
        s = _int("step", step, 0)
        if self.epochs is not None and s > len(self):
            raise ValueError(f"step must be in [0, {len(self)}], got {s}")
        return s

    def _iter(self, start: int, worker: int = 0, workers: int = 1,
              track: bool = True) -> Iterator[dict[str, Any]]:
        spe = self.steps_per_epoch
        step = start
        while spe and (self.epochs is None or step < self.epochs * spe):
            epoch, offset = divmod(step, spe)
            for key, rows in self._plan_epoch(epoch, offset):
                mine = (step - start) % workers == worker
                this = step
                step += 1
                if not mine:
                    continue
                batch = self._make(key, self._local(rows), this, epoch)
                if track:
                    self._step = this + 1
                yield batch

    def iter_from(self, step: int) -> Iterator[dict[str, Any]]:
        """The batches of global steps ``step, step + 1, ...``: exactly those an uninterrupted
        run yields from there. Earlier steps cost no data reading."""
        s = self._check_step(step)
        self._step = s
        return self._iter(s)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """From the current step (0, or the one `load_state_dict` set, or after the last batch
        yielded)."""
        return self._iter(self._step)

    @property
    def step(self) -> int:
        """The next global step this sampler yields."""
        return self._step

    def state_dict(self) -> dict[str, Any]:
        """The next step and the settings that fix the order (JSON-serializable)."""
        return {"version": _STATE_VERSION, "kind": type(self).__name__, "step": self._step,
                **self._settings()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state["step"]``; the settings must match this sampler's (rank and
        world_size may differ)."""
        if not isinstance(state, Mapping) or "step" not in state:
            raise ValueError("state must be a mapping from state_dict()")
        if state.get("kind") != type(self).__name__ or state.get("version") != _STATE_VERSION:
            raise ValueError(f"state is for {state.get('kind')} v{state.get('version')}, "
                             f"not {type(self).__name__} v{_STATE_VERSION}")
        mine = self._settings()
        diff = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items()
                if _jsonable(state.get(k)) != _jsonable(v)]
        if diff:
            raise ValueError("state does not match this sampler: " + "; ".join(diff))
        self._step = self._check_step(state["step"])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _usage(steps: int, per_epoch: int, sequences: int, tokens: int, available: int, leftover: int,
           tail: int) -> dict[str, Any]:
    """The ``usage(steps)`` of a sampler: what its first ``steps`` global batches (all ranks
    together) take from the data.

    - ``steps``, ``steps_per_epoch``, ``epochs`` (``steps / steps_per_epoch``, fractional: how
      many passes over the data the batches make; a pass is one epoch of the sampler);
    - ``sequences``: rows trained; ``tokens``: input tokens trained (``2**i`` per row of bucket
      ``i``, ``seq_len`` per concat row: ``steps * tokens_per_batch``; a padded tail batch
      counts its padding, as the loop does);
    - ``available_tokens``: what the shards store (``2**i + 1`` per row, tails included, as the
      manifest counts);
    - ``skipped_tokens = leftover_tokens + tail_tokens``: stored tokens that the epochs begun
      leave out by construction, summed over those epochs: each epoch's leftovers (the rows of
      its incomplete last batch per bucket) and the ``bucket_tail`` rows a sampler skips. An
      epoch the run ends inside also has rows it had not reached yet; those are not counted as
      skipped (``epochs`` says how far it got).

    After ``k`` whole epochs, ``k * available_tokens == tokens + sequences + skipped_tokens``
    (each stored row is its inputs plus one last target token), so nothing goes uncounted
    (with ``tails="pad"``, once the padding of the tail batches is taken out of ``tokens``).
    """
    return {"steps": steps, "steps_per_epoch": per_epoch, "epochs": steps / per_epoch if per_epoch else 0.0,
            "sequences": int(sequences), "tokens": int(tokens), "available_tokens": int(available),
            "skipped_tokens": int(leftover + tail), "leftover_tokens": int(leftover), "tail_tokens": int(tail)}


# --------------------------------------------------------------------------------------------
# Dataset Decomposition
# --------------------------------------------------------------------------------------------


def _bucket_dirs(directory: Path) -> tuple[dict[int, Path], Path | None]:
    buckets, tail = {}, None
    for child in directory.iterdir():
        if not child.is_dir():
            continue
        m = _BUCKET_DIR.match(child.name)
        if m:
            buckets[int(m.group(1))] = child
        elif child.name == "bucket_tail":
            tail = child
    return buckets, tail


class VariableLengthSampler(_Sampler):
    """Constant-token batches from Dataset Decomposition buckets, in curriculum order (METHODS
    §7.2-7.3); see the module docstring for every choice.

    Parameters: ``root`` (the export directory), ``tokens_per_batch`` (global, ``2**i`` per
    sequence), ``curriculum`` (``"uniform"`` or ``"grow_p2"``), ``cycles`` (curriculum cycles per
    epoch), ``seed`` (>= 0), ``rank``/``world_size``, ``domains`` (None: ``<root>/bucket_*`` if
    there, else every domain directory ``<root>/<dir>/bucket_*``, in order of domain name; or a
    list of domain names, not directory names (see `domain_dirs`), whose buckets are merged);
    keyword-only ``epochs`` (passes over the data; None: endless), ``tails`` (``"skip"`` or
    ``"pad"``), ``pad_id`` (for ``"pad"``), ``dtype`` (of the yielded tokens; None: as stored),
    ``check_manifest`` (compare the shards with ``<root>/manifest.json`` if present). `usage`
    counts what a number of steps takes from the data (tokens, epochs, skipped tokens).
    """

    def __init__(self, root: str | Path, tokens_per_batch: int, curriculum: str = "uniform",
                 cycles: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 domains: Sequence[str] | None = None, *, epochs: int | None = 1,
                 tails: str = "skip", pad_id: int | None = None, dtype: Any = np.int64,
                 check_manifest: bool = True) -> None:
        self.root = Path(root)
        self.tokens_per_batch = _int("tokens_per_batch", tokens_per_batch, 1)
        if curriculum not in CURRICULA:
            raise ValueError(f"unknown curriculum {curriculum!r}; known: {', '.join(CURRICULA)}")
        self.curriculum = curriculum
        self.cycles = _int("cycles", cycles, 1)
        self.seed = _int("seed", seed, 0)
        self.rank, self.world_size = _ranks(rank, world_size)
        self.epochs = _epochs(epochs)
        if tails not in TAIL_MODES:
            raise ValueError(f"tails must be one of {TAIL_MODES}, got {tails!r}")
        self.tails = tails
        if tails == "pad":
            if pad_id is None:
                raise ValueError('tails="pad" needs a pad_id')
            pad_id = _int("pad_id", pad_id)
        self.pad_id = pad_id
        self.dtype = _out_dtype(dtype)
        if not self.root.is_dir():
            raise ValueError(f"export directory not found: {self.root}")

        self.domains = self._find_domains(domains)
        bucket_paths: dict[int, list[Path]] = {}
        tail_paths: list[Path] = []
        for domain in self.domains:
            base = self.root if domain is None else self.root / self._dirs[domain]
            buckets, tail = _bucket_dirs(base)
            for i, path in buckets.items():
                bucket_paths.setdefault(i, []).append(path)
            if tail is not None:
                tail_paths.append(tail)
        if not bucket_paths:
            raise ValueError(f"no bucket_<i> directories under {self.root}"
                             + (f" for domains {list(domains)}" if domains is not None else ""))
        self.buckets = sorted(bucket_paths)
        self.batch_size = batch_sizes(self.tokens_per_batch, self.buckets)  # ValueError if not a multiple
        top = self.buckets[-1]
        if self.batch_size[top] % self.world_size:
            raise ValueError(f"tokens_per_batch ({self.tokens_per_batch}) must be a multiple of "
                             f"2**{top} x world_size = {(1 << top) * self.world_size}, so that every "
                             f"global batch splits evenly over {self.world_size} ranks")
        self._stores: dict[int, _Rows] = {i: _Rows(f"bucket_{i}", bucket_paths[i], (1 << i) + 1)
                                          for i in self.buckets}
        self._tail = _Rows("bucket_tail", tail_paths, None) if tail_paths else None
        self._tail_key = self.buckets[0] - 1  # the tails' place in the curriculum (pad mode)
        stores = [*self._stores.values(), *([self._tail] if self._tail is not None else [])]
        self.manifest = (_check_manifest(self.root, stores, {v: k for k, v in self._dirs.items()})
                         if check_manifest else {"path": None, "checked": []})

        self._batches: dict[int, int] = {i: self._stores[i].n // self.batch_size[i] for i in self.buckets}
        if self._tail is not None and self.tails == "pad":
            self._batches[self._tail_key] = self._tail.n // self.batch_size[self.buckets[0]]
        if self._tail is not None and self._tail.n and self.tails == "skip":
            log.warning("%s: skipping %d tail sequences (%d tokens) in bucket_tail; pass "
                        "tails='pad' to train on them", self.root, self._tail.n, self._tail.tokens)
        if sum(self._batches.values()) == 0:
            raise ValueError(f"no bucket under {self.root} fills one batch of {self.tokens_per_batch} "
                             f"tokens (sequences per bucket: "
                             f"{ {i: self._stores[i].n for i in self.buckets} }, batch sizes: "
                             f"{self.batch_size})")
        self._step = 0
        self._cache_epoch: int | None = None
        self._schedule: np.ndarray | None = None
        self._perms: dict[int, np.ndarray] = {}

    def _find_domains(self, domains: Sequence[str] | None) -> list[str | None]:
        """The domains to read (None: the flat layout), and ``self._dirs``: ``{domain: its
        directory under root}`` (see `domain_dirs`: directories may be encoded names)."""
        self._dirs: dict[str, str] = {}
        if domains is None:
            flat, tail = _bucket_dirs(self.root)
            if flat or tail is not None:
                return [None]
            self._dirs = domain_dirs(self.root)
            if not self._dirs:
                raise ValueError(f"no bucket_<i> directories under {self.root} (nor under a domain "
                                 f"directory <root>/<domain>/bucket_<i>)")
            return list(self._dirs)
        if isinstance(domains, str):
            domains = [domains]
        known = domain_dirs(self.root)
        out = []
        for d in domains:
            if not isinstance(d, str) or not d:
                raise ValueError(f"domains must be domain names, got {d!r}")
            if d not in known:
                from .dirnames import dir_name

                where = self.root / dir_name(d)
                if where.is_dir():
                    raise ValueError(f"domain directory {where} has no bucket_<i> directories")
                raise ValueError(f"domain directory not found: {where} (domain {d!r}; found: "
                                 f"{', '.join(map(repr, known)) or 'none'})")
            out.append(d)
            self._dirs[d] = known[d]
        if not out:
            raise ValueError("domains is empty")
        if len(set(out)) != len(out):
            raise ValueError(f"domains has duplicates: {out}")
        return out

    # -- the plan ----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return int(sum(self._batches.values()))

    def _is_tail(self, key: int) -> bool:
        return self.tails == "pad" and key == self._tail_key

    def _store(self, key: int) -> _Rows:
        return self._tail if self._is_tail(key) else self._stores[key]  # type: ignore[return-value]

    def _rows_per_batch(self, key: int) -> int:
        return self.batch_size[self.buckets[0]] if self._is_tail(key) else self.batch_size[key]

    def schedule(self, epoch: int = 0) -> np.ndarray:
        """The bucket of every step of ``epoch`` (tails, with ``tails="pad"``, as
        ``min(buckets) - 1``); the same for every rank."""
        e = _int("epoch", epoch, 0)
        if self._cache_epoch != e:
            parts = []
            for c in range(self.cycles):
                counts = {k: n // self.cycles + (1 if c < n % self.cycles else 0)
                          for k, n in self._batches.items()}
                if sum(counts.values()):
                    seed = int(_derive(self.seed, 2, e, c).generate_state(1)[0])
                    parts.append(bucket_schedule(self.curriculum, counts, 1, seed))
            self._schedule = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            self._perms = {}
            self._cache_epoch = e
        return self._schedule  # type: ignore[return-value]

    def _perm(self, epoch: int, key: int) -> np.ndarray:
        self.schedule(epoch)  # resets the cache on a new epoch
        perm = self._perms.get(key)
        if perm is None:
            code = 0 if self._is_tail(key) else key + 1
            rng = np.random.default_rng(_derive(self.seed, 1, epoch, code))
            perm = self._perms[key] = rng.permutation(self._store(key).n)
        return perm

    def _plan_epoch(self, epoch: int, offset: int) -> Iterator[tuple[int, np.ndarray]]:
        sched = self.schedule(epoch).copy()
        pointer = {k: int(np.count_nonzero(sched[:offset] == k)) for k in self._batches}
        for j in range(offset, len(sched)):
            key = int(sched[j])
            b = self._rows_per_batch(key)
            k = pointer[key]
            pointer[key] = k + 1
            yield key, self._perm(epoch, key)[k * b:(k + 1) * b]

    def _make(self, key: int, rows: np.ndarray, step: int, epoch: int) -> dict[str, Any]:
        if self._is_tail(key):
            width = (1 << self.buckets[0]) + 1
            assert self._tail is not None and self.pad_id is not None
            tokens, lengths = self._tail.gather_padded(rows, width, self.pad_id, self.dtype)
            return {"tokens": tokens, "bucket": None, "step": step, "epoch": epoch, "lengths": lengths}
        return {"tokens": self._stores[key].gather(rows, self.dtype), "bucket": key, "step": step,
                "epoch": epoch}

    def _settings(self) -> dict[str, Any]:
        return {"tokens_per_batch": self.tokens_per_batch, "curriculum": self.curriculum,
                "cycles": self.cycles, "seed": self.seed, "epochs": self.epochs, "tails": self.tails,
                "domains": [d for d in self.domains if d is not None],
                "sequences": {str(i): self._stores[i].n for i in self.buckets}
                | ({"tail": self._tail.n} if self._tail is not None else {})}

    def epoch_plan(self, epoch: int = 0) -> dict[str, Any]:
        """What one epoch yields (all ranks together), against what the shards hold.

        Per bucket: ``sequences`` and ``tokens`` stored (``2**i + 1`` per sequence, as the
        manifest counts), ``batch_size`` (global sequences per batch), ``batches``,
        ``used_sequences`` / ``used_tokens`` (what the epoch yields), ``leftover_sequences`` /
        ``leftover_tokens`` (the incomplete last batch, dropped this epoch) and ``input_tokens``
        (``2**i`` per used sequence, i.e. ``batches * tokens_per_batch``). ``tail``: the
        ``bucket_tail`` rows, skipped (``skipped_*``) or padded (then the same fields as a bucket,
        ``used_tokens`` counting real tokens; the leftovers depend on ``epoch``'s permutation).
        ``total``: the sums, with ``tokens == used_tokens + leftover_tokens + skipped_tokens``.
        ``manifest``: the manifest checked (``path``, groups ``checked``), if any.
        """
        e = _int("epoch", epoch, 0)
        buckets = {}
        for i in self.buckets:
            s = self._stores[i]
            b = self.batch_size[i]
            n = self._batches[i]
            buckets[i] = {"sequences": s.n, "tokens": s.tokens, "batch_size": b, "batches": n,
                          "used_sequences": n * b, "used_tokens": n * b * s.width,
                          "leftover_sequences": s.n - n * b, "leftover_tokens": (s.n - n * b) * s.width,
                          "input_tokens": n * b * (s.width - 1)}
        tail: dict[str, Any] = {"mode": self.tails, "sequences": 0, "tokens": 0}
        if self._tail is not None:
            t = self._tail
            tail.update(sequences=t.n, tokens=t.tokens)
            if self.tails == "skip":
                tail.update(skipped_sequences=t.n, skipped_tokens=t.tokens)
            else:
                b = self.batch_size[self.buckets[0]]
                n = self._batches[self._tail_key]
                used = self._perm(e, self._tail_key)[:n * b]
                used_tokens = int(t.lengths()[used].sum())
                tail.update(batch_size=b, batches=n, used_sequences=n * b, used_tokens=used_tokens,
                            leftover_sequences=t.n - n * b, leftover_tokens=t.tokens - used_tokens,
                            skipped_sequences=0, skipped_tokens=0)
        else:
            tail.update(skipped_sequences=0, skipped_tokens=0)
        parts = list(buckets.values()) + ([tail] if self.tails == "pad" and self._tail is not None else [])
        total = {
            "sequences": sum(b["sequences"] for b in buckets.values()) + tail["sequences"],
            "tokens": sum(b["tokens"] for b in buckets.values()) + tail["tokens"],
            "batches": self.steps_per_epoch,
            "used_sequences": sum(p["used_sequences"] for p in parts),
            "used_tokens": sum(p["used_tokens"] for p in parts),
            "leftover_sequences": sum(p["leftover_sequences"] for p in parts),
            "leftover_tokens": sum(p["leftover_tokens"] for p in parts),
            "skipped_sequences": tail["skipped_sequences"],
            "skipped_tokens": tail["skipped_tokens"],
        }
        return {"epoch": e, "steps": self.steps_per_epoch, "cycles": self.cycles,
                "curriculum": self.curriculum, "tokens_per_batch": self.tokens_per_batch,
                "world_size": self.world_size, "buckets": buckets, "tail": tail, "total": total,
                "manifest": self.manifest}

    def usage(self, steps: int) -> dict[str, Any]:
        """What the global steps ``0 .. steps - 1`` take from the data, all ranks together,
        without reading any (with ``tails="pad"``: the tails' lengths). See `_usage`."""
        n = _int("steps", steps, 0)
        full, part = divmod(n, self.steps_per_epoch)
        sequences = full * sum(self._batches[k] * self._rows_per_batch(k) for k in self._batches)
        if part:
            keys, counts = np.unique(self.schedule(full)[:part], return_counts=True)
            sequences += sum(int(c) * self._rows_per_batch(int(k)) for k, c in zip(keys, counts))
        begun = full + (1 if part else 0)
        if self.tails == "pad" and self._tail is not None:  # the tails' leftovers change every epoch
            plans = [self.epoch_plan(e)["total"] for e in range(begun)]
        else:
            plans = [self.epoch_plan(0)["total"]] * begun
        leftover = sum(p["leftover_tokens"] for p in plans)
        tail = sum(p["skipped_tokens"] for p in plans)
        return _usage(n, self.steps_per_epoch, sequences, n * self.tokens_per_batch,
                      self.epoch_plan(0)["total"]["tokens"], leftover, tail)


# --------------------------------------------------------------------------------------------
# Concat-and-chunk
# --------------------------------------------------------------------------------------------


class ConcatSampler(_Sampler):
    """Fixed batches of ``batch_size`` (global) rows from a ``concat_<seq_len>`` dataset (METHODS
    §7.4), with the same determinism, rank slices (contiguous) and resumption as
    `VariableLengthSampler`; see the module docstring.

    ``root_or_dataset_dir``: the dataset directory itself (it has ``state.json``) or an export
    root holding ``concat_<seq_len>/`` (pick one with ``seq_len`` when there are several).
    """

    def __init__(self, root_or_dataset_dir: str | Path, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, *, epochs: int | None = 1,
                 seq_len: int | None = None, dtype: Any = np.int64,
                 check_manifest: bool = True) -> None:
        path = Path(root_or_dataset_dir)
        self.batch_size = _int("batch_size", batch_size, 1)
        self.seed = _int("seed", seed, 0)
        self.rank, self.world_size = _ranks(rank, world_size)
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of world_size "
                             f"({self.world_size})")
        self.epochs = _epochs(epochs)
        self.dtype = _out_dtype(dtype)
        if not path.is_dir():
            raise ValueError(f"directory not found: {path}")
        if (path / "state.json").is_file():
            directory, root = path, path.parent
            m = _CONCAT_DIR.match(path.name)
            named = int(m.group(1)) if m else None
        else:
            found = {int(m.group(1)): c for c in path.iterdir()
                     if c.is_dir() and (m := _CONCAT_DIR.match(c.name))}
            if seq_len is not None:
                want = _int("seq_len", seq_len, 1)
                if want not in found:
                    raise ValueError(f"no concat_{want} directory under {path} "
                                     f"(found: {sorted(found) or 'none'})")
                named = want
            elif len(found) == 1:
                named = next(iter(found))
            else:
                raise ValueError(f"{'no' if not found else 'several'} concat_<seq_len> directories "
                                 f"under {path}" + (f" ({sorted(found)}); pass seq_len" if found else ""))
            directory, root = found[named], path
        files = _data_files(directory)
        width = self._first_width(files)
        if width is None:
            raise ValueError(f"{directory} holds no rows")
        if named is not None and width != named + 1:
            raise ValueError(f"{directory}: rows of {width} tokens, expected seq_len + 1 = {named + 1}")
        if seq_len is not None and width != _int("seq_len", seq_len, 1) + 1:
            raise ValueError(f"{directory}: rows of {width} tokens, not seq_len + 1 = {seq_len + 1}")
        self.seq_len = width - 1
        self.directory = directory
        self._store = _Rows(directory.name, [directory], width)
        self.manifest = (_check_manifest(root, [self._store])
                         if check_manifest and root != directory else {"path": None, "checked": []})
        self._batches = self._store.n // self.batch_size
        if self._batches == 0:
            raise ValueError(f"{directory} has {self._store.n} rows, fewer than one batch of "
                             f"{self.batch_size}")
        self._step = 0
        self._perm_epoch: int | None = None
        self._perm_rows: np.ndarray | None = None

    @staticmethod
    def _first_width(files: list[Path]) -> int | None:
        for f in files:
            col = _tokens_column(_open(f), f)
            for chunk in col.chunks:
                if len(chunk):
                    off = _offsets(chunk)
                    return int(off[1] - off[0])
        return None

    @property
    def steps_per_epoch(self) -> int:
        return self._batches

    def permutation(self, epoch: int = 0) -> np.ndarray:
        """The order of the rows in ``epoch``."""
        e = _int("epoch", epoch, 0)
        if self._perm_epoch != e:
            self._perm_rows = np.random.default_rng(_derive(self.seed, 1, e, 0)).permutation(self._store.n)
            self._perm_epoch = e
        return self._perm_rows  # type: ignore[return-value]

    def _plan_epoch(self, epoch: int, offset: int) -> Iterator[tuple[None, np.ndarray]]:
        b = self.batch_size
        for k in range(offset, self._batches):
            yield None, self.permutation(epoch)[k * b:(k + 1) * b]

    def _make(self, key: None, rows: np.ndarray, step: int, epoch: int) -> dict[str, Any]:
        return {"tokens": self._store.gather(rows, self.dtype), "bucket": None, "step": step,
                "epoch": epoch}

    def _settings(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seed": self.seed, "epochs": self.epochs,
                "seq_len": self.seq_len, "sequences": self._store.n}

    def epoch_plan(self, epoch: int = 0) -> dict[str, Any]:
        """``sequences``/``tokens`` stored, ``batches``, ``used_*`` and ``leftover_*`` (the
        incomplete last batch, dropped and counted), per epoch (all ranks together)."""
        _int("epoch", epoch, 0)
        s, b, n = self._store, self.batch_size, self._batches
        return {"epoch": epoch, "steps": n, "seq_len": self.seq_len, "batch_size": b,
                "world_size": self.world_size, "sequences": s.n, "tokens": s.tokens, "batches": n,
                "used_sequences": n * b, "used_tokens": n * b * s.width,
                "leftover_sequences": s.n - n * b, "leftover_tokens": (s.n - n * b) * s.width,
                "manifest": self.manifest}

    def usage(self, steps: int) -> dict[str, Any]:
        """What the global steps ``0 .. steps - 1`` take from the data (see `_usage`)."""
        n = _int("steps", steps, 0)
        begun = -(-n // self._batches)
        leftover = (self._store.n - self._batches * self.batch_size) * self._store.width
        return _usage(n, self._batches, n * self.batch_size, n * self.batch_size * self.seq_len,
                      self._store.tokens, begun * leftover, 0)


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------


_TORCH_CLASS = None


def _torch_class():
    """`SamplerDataset`, built on first use so that torch is imported only when wanted. It is
    reachable as ``mixers.sampler.SamplerDataset`` (module ``__getattr__``), so pickle finds it
    and a ``DataLoader`` with ``multiprocessing_context="spawn"`` can send datasets to workers."""
    global _TORCH_CLASS
    if _TORCH_CLASS is None:
        from torch.utils.data import IterableDataset

        class SamplerDataset(IterableDataset):
            def __init__(self, sampler: _Sampler, start: int) -> None:
                super().__init__()
                self.sampler = sampler
                self.start = start

            def __iter__(self):
                import torch
                from torch.utils.data import get_worker_info

                info = get_worker_info()
                worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
                for batch in self.sampler._iter(self.start, worker, workers, track=False):
                    out = dict(batch)
                    out["tokens"] = torch.from_numpy(batch["tokens"])
                    if "lengths" in batch:
                        out["lengths"] = torch.from_numpy(batch["lengths"])
                    yield out

            def __len__(self) -> int:
                return len(self.sampler) - self.start

        SamplerDataset.__module__ = __name__
        SamplerDataset.__qualname__ = "SamplerDataset"
        _TORCH_CLASS = SamplerDataset
    return _TORCH_CLASS


def __getattr__(name: str):
    if name == "SamplerDataset":
        return _torch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_dataset(sampler: _Sampler, start: int | None = None):
    """A ``torch.utils.data.IterableDataset`` over ``sampler``'s batches (dicts of tensors: the
    token array as a tensor, ``lengths`` too when present; ints as they are), from ``start``
    (default: the sampler's current step). Use ``DataLoader(ds, batch_size=None)``; with
    ``num_workers=K`` worker ``k`` yields the steps ``start + k (mod K)`` and the loader's
    round-robin keeps the order. torch is imported here, not with the module. The dataset
    pickles (a ``"spawn"`` or ``"forkserver"`` worker context works, not only ``"fork"``)."""
    cls = _torch_class()
    if not isinstance(sampler, _Sampler):
        raise ValueError("sampler must be a VariableLengthSampler or ConcatSampler, "
                         f"got {type(sampler).__name__}")
    begin = sampler.step if start is None else sampler._check_step(start)
    return cls(sampler, begin)
