"""The samplers of `mixers.sampler` as torch datasets, for a ``torch.utils.data.DataLoader``.

`torch_dataset(sampler, start)` wraps a `VariableLengthSampler` or `ConcatSampler` as an
``IterableDataset`` of its batches from global step ``start``, each a dict with ``tokens`` (and
``lengths`` for padded tail batches) as tensors and the other fields as they are. With
``DataLoader(ds, batch_size=None, num_workers=K)`` worker ``k`` yields the steps ``start + k,
start + k + K, ...`` (planning but not reading the others), and the loader takes from its workers
in turn, so the order is the sampler's. The workers advance their own copies of the sampler, not
the one in the main process: record the ``step`` of the last batch trained on and resume from
``step + 1``. `SamplerDataset` is a module-level class, so it pickles: a ``"spawn"`` or
``"forkserver"`` worker context works, not only ``"fork"``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mixers.sampler import Sampler

__all__ = ["SamplerDataset", "torch_dataset"]


class SamplerDataset(IterableDataset):
    """A sampler's batches from global step ``start``, as tensors (see the module docstring)."""

    def __init__(self, sampler: Sampler, start: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.start = start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for batch in self.sampler.iter_steps(self.start, worker, workers, track=False):
            out = dict(batch)
            out["tokens"] = torch.from_numpy(batch["tokens"])
            if "lengths" in batch:
                out["lengths"] = torch.from_numpy(batch["lengths"])
            yield out

    def __len__(self) -> int:
        return len(self.sampler) - self.start


def torch_dataset(sampler: Sampler, start: int | None = None) -> SamplerDataset:
    """A ``torch.utils.data.IterableDataset`` over ``sampler``'s batches from ``start`` (default:
    the sampler's current step); use ``DataLoader(ds, batch_size=None)``."""
    if not isinstance(sampler, Sampler):
        raise ValueError("sampler must be a VariableLengthSampler or ConcatSampler, "
                         f"got {type(sampler).__name__}")
    begin = sampler.step if start is None else sampler.check_step(start)
    return SamplerDataset(sampler, begin)
