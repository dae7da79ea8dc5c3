"""Training and evaluation data from `winnow export` directories, through `mixers`.

- `batches(...)` picks the source an export asks for: Dataset Decomposition buckets
  (`mixers.sampler.VariableLengthSampler`, constant tokens per batch, curriculum), the
  concat-and-chunk baseline (`mixers.sampler.ConcatSampler`, fixed batches), or, when a mixture
  schedule is given and the export keeps domains apart, `ScheduledBatches`: one endless
  variable-length sampler per domain, and at every step one domain drawn with the schedule's
  weights at that step. Every source has `iter_from(step)`, so a resumed run sees the same
  batches as an uninterrupted one.
- `token_bytes(tokenizer)` is the UTF-8 length of every token id, for bits per byte.
- `heldout_sets(root)` lists the evaluation rows of a held-out export per domain.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mixers.sampler import ConcatSampler, VariableLengthSampler, _data_files, _offsets, _open, _tokens_column
from mixers.schedule import Schedule

_BUCKET = re.compile(r"^bucket_(\d+|tail)$")
_CONCAT = re.compile(r"^concat_(\d+)$")


def export_layout(root: str | Path) -> str:
    """'decomposition' or 'concat', from what the export directory holds."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"export directory not found: {root}")
    names = [c.name for c in root.iterdir() if c.is_dir()]
    if any(_CONCAT.match(n) for n in names):
        return "concat"
    if any(_BUCKET.match(n) for n in names) or any(
            _BUCKET.match(g.name) for c in root.iterdir() if c.is_dir() for g in c.iterdir() if g.is_dir()):
        return "decomposition"
    raise ValueError(f"{root} holds neither bucket_<i> nor concat_<n> datasets: is it a `winnow export` output?")


def export_domains(root: str | Path) -> list[str]:
    """The domain directories of an export made with domains apart (empty when it is flat)."""
    root = Path(root)
    if any(_BUCKET.match(c.name) for c in root.iterdir() if c.is_dir()):
        return []
    return sorted(c.name for c in root.iterdir()
                  if c.is_dir() and any(_BUCKET.match(g.name) for g in c.iterdir() if g.is_dir()))


def export_schedule(root: str | Path) -> Schedule | None:
    """The schedule the export's manifest planned (an `export` stage with a mixture), if any."""
    manifest = Path(root) / "manifest.json"
    if not manifest.is_file():
        return None
    for stage in json.loads(manifest.read_text()).get("stages", []):
        if stage.get("stage") == "export" and stage.get("stats", {}).get("schedule"):
            return Schedule.from_json(stage["stats"]["schedule"])
    return None


class ScheduledBatches:
    """Constant-token batches that follow a domain schedule.

    One endless `VariableLengthSampler` per domain (``<root>/<domain>/bucket_*``, each with its
    own seed stream), and at global step ``s`` of ``total_steps`` the domain is drawn with
    probabilities ``schedule.weights_at_step(s, total_steps)`` by
    ``default_rng(SeedSequence([seed, 3, s]))``: the same on every rank, and independent of
    every other step, so `iter_from(step)` replays only the draws (no data) to know how far each
    domain's sampler has gone. Every batch holds the same number of tokens, so each domain's share
    of the training tokens is its weight, in expectation. A domain that runs out starts its next
    epoch (repetition), as a mixture with more weight than data asks for.
    """

    def __init__(self, root: str | Path, schedule: Schedule, total_steps: int, tokens_per_batch: int,
                 *, curriculum: str = "uniform", cycles: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.root = Path(root)
        self.schedule = schedule
        self.total_steps = int(total_steps)
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.seed = seed
        found = set(export_domains(self.root))
        probes = [schedule.weights_at_step(s, self.total_steps)
                  for s in sorted({0, self.total_steps // 2, self.total_steps - 1})]
        missing = sorted(d for d in schedule.domains if d not in found and any(w.get(d, 0) > 0 for w in probes))
        if missing:
            raise ValueError(f"the schedule gives weight to domains with no data under {self.root}: "
                             f"{', '.join(missing)} (found: {', '.join(sorted(found)) or 'none'})")
        self.domains = [d for d in schedule.domains if d in found]
        self.samplers = {d: VariableLengthSampler(self.root, tokens_per_batch, curriculum, cycles,
                                                  seed=seed * 1000 + i, rank=rank, world_size=world_size,
                                                  domains=[d], epochs=None)
                         for i, d in enumerate(self.domains)}

    def domain_at(self, step: int) -> str:
        weights = self.schedule.weights_at_step(min(step, self.total_steps - 1), self.total_steps)
        p = np.array([float(weights.get(d, 0.0)) for d in self.domains])
        if p.sum() <= 0:
            raise ValueError(f"step {step}: the schedule gives no weight to any domain with data")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3, step]))
        return self.domains[int(rng.choice(len(p), p=p / p.sum()))]

    def iter_from(self, step: int) -> Iterator[dict[str, Any]]:
        done = {d: 0 for d in self.domains}
        for s in range(step):
            done[self.domain_at(s)] += 1
        streams: dict[str, Iterator[dict[str, Any]]] = {}
        s = step
        while True:
            d = self.domain_at(s)
            if d not in streams:
                streams[d] = self.samplers[d].iter_from(done[d])
            batch = dict(next(streams[d]))
            batch["domain_step"], batch["step"], batch["domain"] = batch["step"], s, d
            yield batch
            s += 1


def batches(root: str | Path, tokens_per_batch: int, *, total_steps: int, seed: int = 0,
            curriculum: str = "uniform", cycles: int = 1, schedule: Schedule | None = None,
            rank: int = 0, world_size: int = 1):
    """The endless batch source for an export directory (see the module docstring)."""
    layout = export_layout(root)
    if layout == "concat":
        if schedule is not None:
            raise ValueError("a concat-and-chunk export has no domains apart: it cannot follow a mixture schedule")
        widths = sorted(int(m.group(1)) for c in Path(root).iterdir() if (m := _CONCAT.match(c.name)))
        if len(widths) != 1:
            raise ValueError(f"{root} holds concat datasets of several lengths {widths}: export one per directory")
        width = widths[0]
        if tokens_per_batch % (width * world_size):
            raise ValueError(f"tokens_per_batch {tokens_per_batch} must be a multiple of seq_len {width} x world_size")
        return ConcatSampler(root, tokens_per_batch // width, seed, rank, world_size, epochs=None)
    if schedule is not None and export_domains(root):
        return ScheduledBatches(root, schedule, total_steps, tokens_per_batch, curriculum=curriculum,
                                cycles=cycles, seed=seed, rank=rank, world_size=world_size)
    if schedule is not None:
        raise ValueError(f"{root} was exported without domains apart (export by_domain = true, or with a "
                         "mixture): it cannot follow a mixture schedule")
    return VariableLengthSampler(root, tokens_per_batch, curriculum, cycles, seed=seed, rank=rank,
                                 world_size=world_size, epochs=None)


def export_longest(root: str | Path) -> int:
    """The longest input of any batch of a decomposition export: 2**(its largest bucket)."""
    widths = [int(m.group(1)) for p in Path(root).rglob("bucket_*")
              if (m := _BUCKET.match(p.name)) and m.group(1).isdigit()]
    if not widths:
        raise ValueError(f"no bucket_<i> datasets under {root}")
    return 1 << max(widths)


def token_bytes(tokenizer_path: str | Path) -> np.ndarray:
    """UTF-8 bytes of every token id (special tokens: 0).

    Byte-level BPE (the vocabulary written in GPT-2's byte-to-character alphabet): one character
    of a token's string is one byte, so the count is exact. Any other tokenizer: the length of
    the token decoded alone (exact for most; approximate where a token is part of a character).
    """
    from tokenizers import Tokenizer, pre_tokenizers

    tok = Tokenizer.from_file(str(tokenizer_path))
    n = tok.get_vocab_size(with_added_tokens=True)
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    byte_level = "ByteLevel" in json.dumps(json.loads(tok.to_str()).get("pre_tokenizer"))
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        piece = tok.id_to_token(i)
        if piece is None or piece in special:
            continue
        if byte_level and set(piece) <= alphabet:
            out[i] = len(piece)
        else:
            out[i] = len(tok.decode([i], skip_special_tokens=False).encode("utf-8"))
    return out


def heldout_sets(root: str | Path) -> dict[str, list[Path]]:
    """Held-out datasets per domain: ``{domain: [bucket directories]}`` for an export by domain,
    ``{"all": [...]}`` for a flat one (buckets and tails; concat windows for a concat export)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"held-out export not found: {root}")
    flat = sorted(c for c in root.iterdir() if c.is_dir() and (_BUCKET.match(c.name) or _CONCAT.match(c.name)))
    if flat:
        return {"all": flat}
    out = {d: sorted(g for g in (root / d).iterdir() if g.is_dir() and _BUCKET.match(g.name))
           for d in export_domains(root)}
    if not out:
        raise ValueError(f"{root} holds no held-out datasets (bucket_<i> directories)")
    return out


def dataset_rows(directory: Path) -> Iterator[np.ndarray]:
    """Every row's token ids of one `save_to_disk` directory, in file order."""
    for path in _data_files(directory):
        col = _tokens_column(_open(path), path)
        for chunk in col.chunks:
            offsets = _offsets(chunk)  # positions in chunk.values, the unsliced child array
            values = chunk.values.to_numpy(zero_copy_only=False)
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                yield values[a:b]
