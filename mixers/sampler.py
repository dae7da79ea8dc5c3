"""Training batches from an export directory: the Dataset Decomposition buckets and the
concat-and-chunk baseline of Pouransari et al. 2024, "Dataset Decomposition: Faster LLM Training
with Variable Sequence Length Curriculum" (arXiv:2405.13226, and its reference code
``apple/ml-dataset-decomposition``), deterministic, identical on every data-parallel rank, and
resumable from a step number. The export directories are read through `mixers.exported`
(layout, lazy memory-mapped rows, manifest checks, domain directories); torch's ``DataLoader``
is adapted in `training.loader`.

Batches (`VariableLengthSampler`; the paper's constant tokens per step)
----------------------------------------------------------------------
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
- **Curriculum** (the paper's length curricula, as the reference's ``get_dd_params.py`` and
  ``MyRandomMix`` draw them). An epoch is one pass over the data, in ``cycles`` cycles (the
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

Data loading workers: `training.loader.torch_dataset` wraps a sampler as a
``torch.utils.data.IterableDataset``; worker ``k`` of ``K`` yields the steps ``start + k, start
+ k + K, ...`` (reading nothing for the others), and a ``DataLoader(ds, batch_size=None)`` takes
from its workers in turn, so the order is unchanged. The sampler object in the main process is
not advanced by the workers: record the ``step`` of the last batch trained on and resume from
``step + 1``.

Memory: per bucket, one permutation of its row numbers for the current epoch (8 bytes a row) and
the schedule of the current epoch (8 bytes a step); token data only for the batch being built.

`ConcatSampler` is the same machinery for the fixed-length ``concat_<seq_len>`` rows: a fixed
``batch_size`` (global, in sequences), a per-epoch permutation ``SeedSequence([seed, 1, e, 0])``,
the incomplete last batch dropped and counted, the same rank slices and resumption.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.values import check_int, jsonable

from .decomposition import CURRICULA, batch_sizes, bucket_schedule
from .dirnames import dir_name
from .exported import (CONCAT_DIR, TokenRows, bucket_dirs, compare_manifest, data_files, domain_dirs,
                       first_row_width)

__all__ = [
    "ConcatSampler",
    "Sampler",
    "TAIL_MODES",
    "VariableLengthSampler",
]

log = logging.getLogger(__name__)

TAIL_MODES = ("skip", "pad")
_STATE_VERSION = 1  # of `Sampler.state_dict`; bump when a saved state would resume differently

# The first word after the seed in every `SeedSequence` here: which random stream it is, so the
# streams of one seed never coincide.
_PERMUTATION = 1  # a bucket's (or the concat rows') order in an epoch
_CURRICULUM = 2  # the bucket order of one curriculum cycle


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _ranks(rank: object, world_size: object) -> tuple[int, int]:
    w = check_int("world_size", world_size, 1)
    r = check_int("rank", rank, 0)
    if r >= w:
        raise ValueError(f"rank ({r}) must be < world_size ({w})")
    return r, w


def _epochs(epochs: object) -> int | None:
    return None if epochs is None else check_int("epochs", epochs, 1)


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
# The shared machinery: a plan of global batches, rank slices, resumption
# --------------------------------------------------------------------------------------------


class Sampler:
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

    def check_step(self, step: object) -> int:
        """``step`` as an int, checked to be a step of the run (``0 .. len(self)``)."""
        s = check_int("step", step, 0)
        if self.epochs is not None and s > len(self):
            raise ValueError(f"step must be in [0, {len(self)}], got {s}")
        return s

    def iter_steps(self, start: int, worker: int = 0, workers: int = 1,
                   track: bool = True) -> Iterator[dict[str, Any]]:
        """The batches of the global steps ``start, start + 1, ...`` that are ``worker``'s of
        ``workers`` (every ``workers``-th from ``start + worker``; the others are planned but not
        read). ``track``: advance `step` as batches are yielded (not in a loader's workers,
        whose sampler is a copy)."""
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
        s = self.check_step(step)
        self._step = s
        return self.iter_steps(s)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """From the current step (0, or the one `load_state_dict` set, or after the last batch
        yielded)."""
        return self.iter_steps(self._step)

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
                if jsonable(state.get(k)) != jsonable(v)]
        if diff:
            raise ValueError("state does not match this sampler: " + "; ".join(diff))
        self._step = self.check_step(state["step"])


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


class VariableLengthSampler(Sampler):
    """Constant-token batches from Dataset Decomposition buckets, in curriculum order
    (Pouransari et al. 2024, arXiv:2405.13226); see the module docstring for every choice.

    Parameters: ``root`` (the export directory), ``tokens_per_batch`` (global, ``2**i`` per
    sequence), ``curriculum`` (``"uniform"`` or ``"grow_p2"``), ``cycles`` (curriculum cycles per
    epoch), ``seed`` (>= 0), ``rank``/``world_size``, ``domains`` (None: ``<root>/bucket_*`` if
    there, else every domain directory ``<root>/<dir>/bucket_*``, in order of domain name; or a
    list of domain names, not directory names (see `mixers.exported.domain_dirs`), whose buckets are merged);
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
        self.tokens_per_batch = check_int("tokens_per_batch", tokens_per_batch, 1)
        if curriculum not in CURRICULA:
            raise ValueError(f"unknown curriculum {curriculum!r}; known: {', '.join(CURRICULA)}")
        self.curriculum = curriculum
        self.cycles = check_int("cycles", cycles, 1)
        self.seed = check_int("seed", seed, 0)
        self.rank, self.world_size = _ranks(rank, world_size)
        self.epochs = _epochs(epochs)
        if tails not in TAIL_MODES:
            raise ValueError(f"tails must be one of {TAIL_MODES}, got {tails!r}")
        self.tails = tails
        if tails == "pad":
            if pad_id is None:
                raise ValueError('tails="pad" needs a pad_id')
            pad_id = check_int("pad_id", pad_id)
        self.pad_id = pad_id
        self.dtype = _out_dtype(dtype)
        if not self.root.is_dir():
            raise ValueError(f"export directory not found: {self.root}")

        self.domains = self._find_domains(domains)
        bucket_paths: dict[int, list[Path]] = {}
        tail_paths: list[Path] = []
        for domain in self.domains:
            base = self.root if domain is None else self.root / self._dirs[domain]
            buckets, tail = bucket_dirs(base)
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
        self._stores: dict[int, TokenRows] = {i: TokenRows(f"bucket_{i}", bucket_paths[i], (1 << i) + 1)
                                          for i in self.buckets}
        self._tail = TokenRows("bucket_tail", tail_paths, None) if tail_paths else None
        self._tail_key = self.buckets[0] - 1  # the tails' place in the curriculum (pad mode)
        stores = [*self._stores.values(), *([self._tail] if self._tail is not None else [])]
        self.manifest = (compare_manifest(self.root, stores, {v: k for k, v in self._dirs.items()})
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
        directory under root}`` (see `mixers.exported.domain_dirs`: directories may be encoded names)."""
        self._dirs: dict[str, str] = {}
        if domains is None:
            flat, tail = bucket_dirs(self.root)
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

    def _store(self, key: int) -> TokenRows:
        return self._tail if self._is_tail(key) else self._stores[key]  # type: ignore[return-value]

    def _rows_per_batch(self, key: int) -> int:
        return self.batch_size[self.buckets[0]] if self._is_tail(key) else self.batch_size[key]

    def schedule(self, epoch: int = 0) -> np.ndarray:
        """The bucket of every step of ``epoch`` (tails, with ``tails="pad"``, as
        ``min(buckets) - 1``); the same for every rank."""
        e = check_int("epoch", epoch, 0)
        if self._cache_epoch != e:
            parts = []
            for c in range(self.cycles):
                counts = {k: n // self.cycles + (1 if c < n % self.cycles else 0)
                          for k, n in self._batches.items()}
                if sum(counts.values()):
                    seed = int(_derive(self.seed, _CURRICULUM, e, c).generate_state(1)[0])
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
            rng = np.random.default_rng(_derive(self.seed, _PERMUTATION, epoch, code))
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
        e = check_int("epoch", epoch, 0)
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
        n = check_int("steps", steps, 0)
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


class ConcatSampler(Sampler):
    """Fixed batches of ``batch_size`` (global) rows from a ``concat_<seq_len>`` dataset (the
    concat-and-chunk baseline of Pouransari et al. 2024), with the same determinism, rank slices
    (contiguous) and resumption as `VariableLengthSampler`; see the module docstring.

    ``root_or_dataset_dir``: the dataset directory itself (it has ``state.json``) or an export
    root holding ``concat_<seq_len>/`` (pick one with ``seq_len`` when there are several).
    """

    def __init__(self, root_or_dataset_dir: str | Path, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, *, epochs: int | None = 1,
                 seq_len: int | None = None, dtype: Any = np.int64,
                 check_manifest: bool = True) -> None:
        path = Path(root_or_dataset_dir)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
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
            m = CONCAT_DIR.match(path.name)
            named = int(m.group(1)) if m else None
        else:
            found = {int(m.group(1)): c for c in path.iterdir()
                     if c.is_dir() and (m := CONCAT_DIR.match(c.name))}
            if seq_len is not None:
                want = check_int("seq_len", seq_len, 1)
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
        files = data_files(directory)
        width = first_row_width(files)
        if width is None:
            raise ValueError(f"{directory} holds no rows")
        if named is not None and width != named + 1:
            raise ValueError(f"{directory}: rows of {width} tokens, expected seq_len + 1 = {named + 1}")
        if seq_len is not None and width != check_int("seq_len", seq_len, 1) + 1:
            raise ValueError(f"{directory}: rows of {width} tokens, not seq_len + 1 = {seq_len + 1}")
        self.seq_len = width - 1
        self.directory = directory
        self._store = TokenRows(directory.name, [directory], width)
        self.manifest = (compare_manifest(root, [self._store])
                         if check_manifest and root != directory else {"path": None, "checked": []})
        self._batches = self._store.n // self.batch_size
        if self._batches == 0:
            raise ValueError(f"{directory} has {self._store.n} rows, fewer than one batch of "
                             f"{self.batch_size}")
        self._step = 0
        self._perm_epoch: int | None = None
        self._perm_rows: np.ndarray | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self._batches

    def permutation(self, epoch: int = 0) -> np.ndarray:
        """The order of the rows in ``epoch``."""
        e = check_int("epoch", epoch, 0)
        if self._perm_epoch != e:
            self._perm_rows = np.random.default_rng(_derive(self.seed, _PERMUTATION, e, 0)).permutation(self._store.n)
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
        check_int("epoch", epoch, 0)
        s, b, n = self._store, self.batch_size, self._batches
        return {"epoch": epoch, "steps": n, "seq_len": self.seq_len, "batch_size": b,
                "world_size": self.world_size, "sequences": s.n, "tokens": s.tokens, "batches": n,
                "used_sequences": n * b, "used_tokens": n * b * s.width,
                "leftover_sequences": s.n - n * b, "leftover_tokens": (s.n - n * b) * s.width,
                "manifest": self.manifest}

    def usage(self, steps: int) -> dict[str, Any]:
        """What the global steps ``0 .. steps - 1`` take from the data (see `_usage`)."""
        n = check_int("steps", steps, 0)
        begun = -(-n // self._batches)
        leftover = (self._store.n - self._batches * self.batch_size) * self._store.width
        return _usage(n, self._batches, n * self.batch_size, n * self.batch_size * self.seq_len,
                      self._store.tokens, begun * leftover, 0)
