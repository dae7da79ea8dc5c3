"""Training and evaluation data from `winnow export` directories, through `mixers`.

- `batches(...)` picks the source an export asks for: Dataset Decomposition buckets
  (`mixers.sampler.VariableLengthSampler`, constant tokens per batch, curriculum), the
  concat-and-chunk baseline (`mixers.sampler.ConcatSampler`, fixed batches), or, when a mixture
  schedule is given and the export keeps domains apart, `ScheduledBatches`: one endless
  variable-length sampler per domain, and at every step one domain drawn with the schedule's
  weights at that step, renormalized over the domains under their repetition cap. Every source
  has `iter_from(step)`, so a resumed run sees the same batches as an uninterrupted one.
- Repetition caps (`ScheduledBatches`, `cap_steps`): ``max_repeats`` epochs of a domain's
  sampler, i.e. at most ``floor(max_repeats * steps_per_epoch)`` of its batches; from the
  export's mixture (`export_max_repeats`) unless the run gives its own. One pool (no schedule)
  is capped by the smallest domain cap (`pool_max_repeats`).
- `usage(source, steps)`: per domain (or ``"all"`` for one pool), tokens and sequences trained,
  epochs reached, tokens available and skipped (leftovers, tails), from the plan alone.
- Domains are named by their names, not their directories: an export writes a domain under
  `mixers.dirnames.dir_name(domain)` (encoded when the name is not plain), and
  `export_domain_dirs` maps each directory back (`mixers.exported.domain_dirs`).
- `token_bytes(tokenizer)` is the UTF-8 length of every token id, for bits per byte.
- `heldout_sets(root)` lists the evaluation rows of a held-out export per domain.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from core.values import check_int
from mixers.exported import BUCKET_DIR, CONCAT_DIR, domain_dirs, export_stats, is_bucket_dir
from mixers.mixture import exact, repeat_cap
from mixers.sampler import ConcatSampler, VariableLengthSampler
from mixers.schedule import Schedule

# A repetition cap: one for every domain, or one per domain (None: no cap); see `ScheduledBatches`.
MaxRepeats = Union[float, Mapping[str, Union[float, None]], None]

# One domain's samplers draw from seed ``seed * DOMAIN_SEED_STRIDE + k`` (the k-th domain of the
# schedule): distinct streams for up to this many domains, and the same for a domain whatever
# the other domains' seeds are.
DOMAIN_SEED_STRIDE = 1000
# The first word after the seed of the `SeedSequence` that draws each step's domain; the samplers
# use 1 and 2 for their own streams (`mixers.sampler`), so the draw never repeats one of them.
_DOMAIN_DRAW = 3


def export_layout(root: str | Path) -> str:
    """'decomposition' or 'concat', from what the export directory holds."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"export directory not found: {root}")
    names = [c.name for c in root.iterdir() if c.is_dir()]
    if any(CONCAT_DIR.match(n) for n in names):
        return "concat"
    if any(is_bucket_dir(n) for n in names) or any(
            is_bucket_dir(g.name) for c in root.iterdir() if c.is_dir() for g in c.iterdir() if g.is_dir()):
        return "decomposition"
    raise ValueError(f"{root} holds neither bucket_<i> nor concat_<n> datasets: is it a `winnow export` output?")


def export_domain_dirs(root: str | Path) -> dict[str, str]:
    """``{domain: directory name}`` of an export made with domains apart (empty when it is flat):
    every child directory holding ``bucket_<i>`` or ``bucket_tail`` datasets. Directories are
    `mixers.dirnames.dir_name(domain)`, so an encoded or cut name maps back to the domain
    (`mixers.exported.domain_dirs`)."""
    root = Path(root)
    if any(is_bucket_dir(c.name) for c in root.iterdir() if c.is_dir()):
        return {}
    return domain_dirs(root, tails=True)


def export_domains(root: str | Path) -> list[str]:
    """The domains of an export made with domains apart, by name, sorted (empty when it is flat)."""
    return list(export_domain_dirs(root))


def export_schedule(root: str | Path) -> Schedule | None:
    """The schedule the export's manifest planned (an `export` stage with a mixture), if any."""
    found = export_stats(root, "schedule")
    return None if found is None else Schedule.from_json(found[1]["schedule"])


def export_max_repeats(root: str | Path) -> dict[str, float | None] | None:
    """The repetition cap per domain of the mixture the export planned (``<root>/manifest.json``:
    the export stage's ``stats.mixture``, `mixers.mixture.MixturePlan.to_dict`, whose
    ``domains[*].max_repeats`` is the most epochs of that domain's tokens the plan allows, None
    for no cap); None when the export planned no mixture. Domains are named as the export's
    directories say (a mixture row that names a directory is mapped to its domain)."""
    found = export_stats(root, "mixture")
    if found is None:
        return None
    rows = found[1]["mixture"].get("domains") if isinstance(found[1]["mixture"], dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{found[0]}: the export's mixture has no domains table")
    names = {v: k for k, v in export_domain_dirs(root).items()} if Path(root).is_dir() else {}
    out: dict[str, float | None] = {}
    for row in rows:
        name = row["domain"]
        out[name if name not in names or name in names.values() else names[name]] = row.get("max_repeats")
    return out


def cap_steps(max_repeats: float | None, steps_per_epoch: int) -> int | None:
    """The most batches a sampler may yield under ``max_repeats`` epochs:
    ``floor(max_repeats * steps_per_epoch)``, in exact arithmetic on the decimal the float
    stands for (``0.7 * 10`` is 7, as `mixers.mixture.Mixture.plan` floors its token caps)."""
    if max_repeats is None:
        return None
    return math.floor(exact(max_repeats) * steps_per_epoch)


def pool_max_repeats(max_repeats: MaxRepeats) -> float | None:
    """The cap of one pool of every domain (a run without a schedule): one epoch of the pool is
    one pass over each domain, so the smallest cap of any domain holds for all."""
    if max_repeats is None or not isinstance(max_repeats, Mapping):
        return repeat_cap("max_repeats of the data", max_repeats)
    caps = [c for d, r in max_repeats.items() if (c := repeat_cap(f"max_repeats of {d!r}", r)) is not None]
    return min(caps) if caps else None


class ScheduledBatches:
    """Constant-token batches that follow a domain schedule, each domain under a repetition cap.

    One endless `VariableLengthSampler` per domain (its directory under ``root``, see
    `export_domain_dirs`; each with its own seed stream), and at global step ``s`` of
    ``total_steps`` one domain is drawn by ``default_rng(SeedSequence([seed, 3, s]))`` with
    probabilities ``schedule.weights_at_step(s, total_steps)`` over the domains still under their
    cap, renormalized. Every batch holds the same number of tokens, so each domain's share of the
    training tokens is its weight, in expectation, until a cap takes it out.

    **Repetition cap.** ``max_repeats`` (a number for every domain, or ``{domain: number or
    None}``; None or infinity: no cap) counts epochs of the domain's sampler: a domain of
    ``steps_per_epoch`` batches may be drawn at most ``cap_steps = floor(max_repeats *
    steps_per_epoch)`` times in the run (exact arithmetic, so fractional caps work: 1.5 is one
    epoch and the first half, in curriculum order, of the second). That is the strongest reading
    of `mixers.mixture.Mixture.plan`'s cap ``floor(available * max_repeats)`` tokens: a batch of
    the domain trains ``tokens_per_batch`` input tokens, and an epoch yields fewer tokens than the
    domain stores (each row's last target token, the leftovers of incomplete batches and the
    tails are not inputs), so the tokens trained stay under the plan's cap, and with a whole cap
    ``r`` no row is trained more than ``r`` times. A domain that reaches its cap is never drawn
    again; the others take its share in proportion to their weights. If at some step every
    domain the schedule weights is at its cap, the run cannot go on: the constructor checks all
    ``total_steps`` steps and raises a ValueError saying where and how far the caps go (and an
    iteration past ``total_steps`` raises the same at the step it happens).

    **Resuming.** The draw at step ``s`` depends on the seed, ``s`` and which domains are at
    their cap before ``s``, which follows from the earlier draws alone: `iter_from(step)` replays
    the draws (no data; cached) to know how far each domain's sampler has gone, and yields
    exactly what an uninterrupted run yields from ``step`` on. Without caps the draws are those of
    the plain weights, as before caps existed.
    """

    def __init__(self, root: str | Path, schedule: Schedule, total_steps: int, tokens_per_batch: int,
                 *, curriculum: str = "uniform", cycles: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1, max_repeats: MaxRepeats = None) -> None:
        self.root = Path(root)
        self.schedule = schedule
        self.total_steps = check_int("total_steps", total_steps, 1)
        self.seed = seed
        self.tokens_per_batch = tokens_per_batch
        found = set(export_domains(self.root))
        probes = [schedule.weights_at_step(s, self.total_steps)
                  for s in sorted({0, self.total_steps // 2, self.total_steps - 1})]
        missing = sorted(d for d in schedule.domains if d not in found and any(w.get(d, 0) > 0 for w in probes))
        if missing:
            raise ValueError(f"the schedule gives weight to domains with no data under {self.root}: "
                             f"{', '.join(missing)} (found: {', '.join(sorted(found)) or 'none'})")
        self.domains = [d for d in schedule.domains if d in found]
        self.samplers = {d: VariableLengthSampler(self.root, tokens_per_batch, curriculum, cycles,
                                                  seed=seed * DOMAIN_SEED_STRIDE + i, rank=rank, world_size=world_size,
                                                  domains=[d], epochs=None)
                         for i, d in enumerate(self.domains)}
        if isinstance(max_repeats, Mapping):
            self.max_repeats = {d: repeat_cap(f"max_repeats of {d!r}", max_repeats.get(d)) for d in self.domains}
        else:
            cap = repeat_cap("max_repeats of every domain", max_repeats)
            self.max_repeats = {d: cap for d in self.domains}
        self.cap_steps = {d: cap_steps(self.max_repeats[d], self.samplers[d].steps_per_epoch) for d in self.domains}
        self._caps = [self.cap_steps[d] for d in self.domains]
        self._draws: list[int] = []  # the domain (index) of every step planned so far
        self._counts = [0] * len(self.domains)  # draws per domain in _draws
        self._full_at: dict[str, int] = {}  # domain -> the step of its last allowed draw
        if any(c is not None for c in self._caps):
            self._extend(self.total_steps)  # a run the caps cannot fill fails here, not mid-training

    def _extend(self, upto: int) -> None:
        """Plan the draws of every step before ``upto``."""
        for s in range(len(self._draws), upto):
            weights = self.schedule.weights_at_step(min(s, self.total_steps - 1), self.total_steps)
            w = [float(weights.get(d, 0.0)) for d in self.domains]
            if sum(w) <= 0:
                raise ValueError(f"step {s}: the schedule gives no weight to any domain with data")
            p = np.array([x if c is None or n < c else 0.0 for x, c, n in zip(w, self._caps, self._counts)])
            if p.sum() <= 0:
                full = ", ".join(f"{d} {self._counts[i]} of {self._caps[i]} steps ({self.max_repeats[d]:g} x "
                                 f"{self.samplers[d].steps_per_epoch})" for i, d in enumerate(self.domains) if w[i] > 0)
                raise ValueError(
                    f"step {s} of {self.total_steps}: every domain the schedule weights now has reached its "
                    f"repetition cap (max_repeats epochs of its batches: {full}), so the caps allow {s} steps of "
                    f"{self.tokens_per_batch} tokens under {self.root}. Raise max_repeats (train.max_repeats "
                    f"overrides the export's mixture), add data, or train on fewer tokens.")
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _DOMAIN_DRAW, s]))
            k = int(rng.choice(len(p), p=p / p.sum()))
            self._draws.append(k)
            self._counts[k] += 1
            if self._counts[k] == self._caps[k]:
                self._full_at[self.domains[k]] = s

    def domain_at(self, step: int) -> str:
        self._extend(step + 1)
        return self.domains[self._draws[step]]

    def iter_from(self, step: int) -> Iterator[dict[str, Any]]:
        self._extend(step)
        done = {d: 0 for d in self.domains}
        for k in self._draws[:step]:
            done[self.domains[k]] += 1
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

    def usage(self, steps: int) -> dict[str, dict[str, Any]]:
        """Per domain, what the steps ``0 .. steps - 1`` took from it, read from the draws alone:
        the sampler's `usage` (steps, tokens, sequences, epochs, available and skipped tokens;
        `mixers.sampler.VariableLengthSampler.usage`) and ``share`` (of the steps), ``max_repeats``, ``cap_steps`` and
        ``full_at_step`` (the step of its last allowed draw; None while under its cap)."""
        self._extend(steps)
        counts = np.bincount(np.asarray(self._draws[:steps], dtype=np.int64), minlength=len(self.domains))
        out = {}
        for d, n in zip(self.domains, counts.tolist()):
            full = self._full_at.get(d)
            out[d] = {**self.samplers[d].usage(n), "share": n / steps if steps else 0.0,
                      "max_repeats": self.max_repeats[d], "cap_steps": self.cap_steps[d],
                      "full_at_step": full if full is not None and full < steps else None}
        return out


def batches(root: str | Path, tokens_per_batch: int, *, total_steps: int, seed: int = 0,
            curriculum: str = "uniform", cycles: int = 1, schedule: Schedule | None = None,
            rank: int = 0, world_size: int = 1, max_repeats: MaxRepeats = None):
    """The endless batch source for an export directory (see the module docstring).

    ``max_repeats``: the repetition cap (see `ScheduledBatches`). With a schedule it holds per
    domain; one pool (no schedule) may pass over its data at most `pool_max_repeats` times, i.e.
    ``total_steps`` may not exceed `cap_steps` of it (a ValueError says so before any batch)."""
    layout = export_layout(root)
    if layout == "concat":
        if schedule is not None:
            raise ValueError("a concat-and-chunk export has no domains apart: it cannot follow a mixture schedule")
        widths = sorted(int(m.group(1)) for c in Path(root).iterdir() if (m := CONCAT_DIR.match(c.name)))
        if len(widths) != 1:
            raise ValueError(f"{root} holds concat datasets of several lengths {widths}: export one per directory")
        width = widths[0]
        if tokens_per_batch % (width * world_size):
            raise ValueError(f"tokens_per_batch {tokens_per_batch} must be a multiple of seq_len {width} x world_size")
        source: Any = ConcatSampler(root, tokens_per_batch // width, seed, rank, world_size, epochs=None)
    elif schedule is not None and export_domains(root):
        return ScheduledBatches(root, schedule, total_steps, tokens_per_batch, curriculum=curriculum,
                                cycles=cycles, seed=seed, rank=rank, world_size=world_size, max_repeats=max_repeats)
    elif schedule is not None:
        raise ValueError(f"{root} was exported without domains apart (export by_domain = true, or with a "
                         "mixture): it cannot follow a mixture schedule")
    else:
        source = VariableLengthSampler(root, tokens_per_batch, curriculum, cycles, seed=seed, rank=rank,
                                       world_size=world_size, epochs=None)
    cap = pool_max_repeats(max_repeats)
    most = cap_steps(cap, source.steps_per_epoch)
    if most is not None and total_steps > most:
        raise ValueError(f"the run needs {total_steps} steps but max_repeats {cap:g} allows {most} "
                         f"({cap:g} epochs of {source.steps_per_epoch} steps) of {root}. Raise max_repeats "
                         "(train.max_repeats overrides the export's mixture), add data, or train on fewer tokens.")
    return source


def usage(source: Any, steps: int, max_repeats: MaxRepeats = None) -> dict[str, dict[str, Any]]:
    """What the first ``steps`` steps of a `batches` source take from the data, per domain for a
    `ScheduledBatches` source, under the one key ``"all"`` for one pool (the same fields, with
    ``share`` 1, its `pool_max_repeats` and ``cap_steps``). Computed from the plan, not from the
    batches, so a resumed run reports the whole run."""
    if isinstance(source, ScheduledBatches):
        return source.usage(steps)
    cap = pool_max_repeats(max_repeats)
    return {"all": {**source.usage(steps), "share": 1.0, "max_repeats": cap,
                    "cap_steps": cap_steps(cap, source.steps_per_epoch)}}


def export_longest(root: str | Path) -> int:
    """The longest input of any batch of a decomposition export: 2**(its largest bucket)."""
    widths = [int(m.group(1)) for p in Path(root).rglob("bucket_*") if (m := BUCKET_DIR.match(p.name))]
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
    """Held-out datasets per domain: ``{domain: [bucket directories]}`` for an export by domain
    (keyed by domain name, not directory: see `export_domain_dirs`), ``{"all": [...]}`` for a
    flat one (buckets and tails; concat windows for a concat export)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"held-out export not found: {root}")
    flat = sorted(c for c in root.iterdir() if c.is_dir() and (is_bucket_dir(c.name) or CONCAT_DIR.match(c.name)))
    if flat:
        return {"all": flat}
    out = {d: sorted(g for g in (root / name).iterdir() if g.is_dir() and is_bucket_dir(g.name))
           for d, name in export_domain_dirs(root).items()}
    if not out:
        raise ValueError(f"{root} holds no held-out datasets (bucket_<i> directories)")
    return out

