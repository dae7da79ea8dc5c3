"""The training loop: a small LM on `winnow export` shards, evaluated on held-out shards.

`train(TrainConfig(...))` trains for a token budget (``tokens // tokens_per_batch`` steps), logs
loss against tokens to ``<output>/log.jsonl``, checkpoints every ``checkpoint_every`` steps and
at the end (``<output>/checkpoints/step_<n>.pt``: model, optimizer, step, tokens, loss log;
loaded with ``weights_only=True``), and resumes from the last checkpoint when ``resume`` is set,
with the same batches from the next step on (the batch sources are replayed by step number, not
by state). It returns and writes ``<output>/train.json``. The checkpoint holds torch's CPU (and
CUDA) RNG state, restored on resume, so dropout draws the same masks as an uninterrupted run.

- Repetition cap: ``max_repeats`` epochs of each domain's data (`training.data.ScheduledBatches`:
  at most ``floor(max_repeats * steps_per_epoch)`` batches of a domain; a capped domain leaves
  the draw and the others share its weight). It comes from ``TrainConfig.max_repeats`` if set
  (``inf`` lifts every cap), else from the mixture the export planned (its per-domain
  ``max_repeats`` in ``manifest.json``), else there is none. Without a schedule the whole pool
  is capped by the smallest domain cap. A run the caps cannot fill fails before its first step.
- ``train.json`` ``domains``: per domain (``"all"`` for one pool) ``steps``, ``share``,
  ``tokens`` and ``sequences`` trained, ``epochs`` reached, ``available_tokens``,
  ``skipped_tokens`` (``leftover_tokens`` of incomplete batches + skipped ``tail_tokens``, over the
  epochs begun), ``max_repeats``, ``cap_steps`` and ``full_at_step``
  (the samplers' ``usage``, `mixers.sampler`); the domains' ``tokens`` add up to the run's. ``max_repeats_from``
  says where the cap came from (``train.max_repeats``, ``export mixture`` or null).
- Optimizer: AdamW, weight decay on the weight matrices only (not on norms or the tied
  embedding), gradient clipping by global norm, learning rate per step from
  `lr_at`: linear warm-up, then cosine decay to ``min_lr_ratio * lr``, or warmup-stable-decay
  (constant, then a linear decay over the last ``decay_fraction`` of steps).
- Precision and compilation (`Accel`): ``precision = "auto"`` is bf16 autocast on a GPU and fp32
  on CPU; ``"bf16"`` or ``"fp32"`` forces either on any device (bf16 autocast runs on CPU too).
  ``compile = None`` compiles with `torch.compile` on a GPU only; ``True`` compiles anywhere with
  inductor; a string names the backend (``"aot_eager"`` traces with dynamo and AOTAutograd but
  generates no code: how the tests run the compiled path on CPU in seconds). On CPU the run is
  seeded and deterministic (`torch.use_deterministic_algorithms`); on a GPU it is seeded, not
  bit-reproducible.
- Batches: one step is one batch of constant tokens (decomposition) or fixed rows (concat); a
  batch of more than ``micro_batch_tokens`` inputs is split into micro-batches and the gradient
  accumulated, weighted by their tokens, so the step is the same.
- Evaluation (`evaluate`): every held-out row once, loss summed in nats over its predicted
  tokens, per domain and overall, and bits per byte = nats / ln 2 / UTF-8 bytes of the predicted
  tokens (`training.data.token_bytes`; end-of-text has 0 bytes, its loss counts).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from core.values import jsonable
from mixers.exported import dataset_rows
from mixers.mixture import repeat_cap
from mixers.schedule import Schedule

from .data import (batches, export_layout, export_longest, export_max_repeats, export_schedule, heldout_sets,
                   token_bytes, usage)
from .model import TransformerLM, model_config

LR_SCHEDULES = ("cosine", "wsd")
PRECISIONS = ("auto", "bf16", "fp32")

# Most input tokens one forward/backward pass takes (a step's batch is split above it, gradients
# accumulated): 2**14 keeps the activations of the preset models (up to "large") within a few GB,
# and is a multiple of every bucket length up to 2**14, so a bucket's rows split evenly.
MICRO_BATCH_TOKENS = 16384
# Most tokens (rows x padded width) of one evaluation batch: the same memory bound as training's
# micro-batches, since evaluation pads each batch to its longest row.
EVAL_BATCH_TOKENS = MICRO_BATCH_TOKENS
# The seed of `evaluate`'s row sample (`eval_max_tokens`): fixed, so every model of a comparison
# is scored on the same rows.
EVAL_SAMPLE_SEED = 0


@dataclass
class TrainConfig:
    data: str                              # a `winnow export` directory
    output: str                            # where log, checkpoints and train.json go
    tokens: int                            # training budget in input tokens
    tokens_per_batch: int = 8192           # per step, 2**i per sequence of bucket i
    model: dict[str, Any] = field(default_factory=lambda: {"size": "tiny"})
    tokenizer: str | None = None           # default: <data>/tokenizer.json
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    lr_schedule: str = "cosine"            # cosine | wsd
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2            # wsd: the final fraction of steps that decays
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    curriculum: str = "uniform"            # uniform | grow_p2 (decomposition)
    cycles: int = 1
    schedule: dict[str, Any] | str | None = None  # a mixture schedule (Schedule.to_dict), or "export"
    max_repeats: float | None = None       # epochs per domain; None: the export mixture's; inf: no cap
    micro_batch_tokens: int = MICRO_BATCH_TOKENS  # inputs per forward pass; larger batches accumulate
    heldout: str | None = None             # a held-out export directory (same tokenizer)
    eval_every: int = 0                    # steps; 0: only at the end
    eval_max_tokens: int | None = None     # per held-out domain: a fixed sample of rows up to this many tokens
    checkpoint_every: int = 0              # steps; 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = True
    device: str = "auto"                   # auto | cpu | cuda
    precision: str = "auto"                # auto (bf16 on a GPU, fp32 on CPU) | bf16 | fp32
    compile: bool | str | None = None      # None: on a GPU only; True: inductor; or a backend name
    threads: int | None = None             # torch CPU threads (None: torch's default)
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.tokens < self.tokens_per_batch:
            raise ValueError(f"train.tokens {self.tokens} is less than one batch ({self.tokens_per_batch})")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule: expected one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.compile, str) and not self.compile:
            raise ValueError("train.compile: give true, false or a torch.compile backend name")
        for name in ("warmup_fraction", "decay_fraction", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"train.{name}: must be within [0, 1], got {getattr(self, name)}")
        if self.max_repeats is not None and repeat_cap("train.max_repeats", self.max_repeats) == 0:
            raise ValueError("train.max_repeats: expected a number > 0 (inf: no cap), got 0")
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_batch


def lr_at(step: int, steps: int, cfg: TrainConfig) -> float:
    """The learning rate of `step` (0-based) of `steps`."""
    warmup = int(round(cfg.warmup_fraction * steps))
    low = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_schedule == "cosine":
        span = max(1, steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay = max(1, int(round(cfg.decay_fraction * steps)))
    start = steps - decay
    if step < start:
        return cfg.lr
    return cfg.lr - (cfg.lr - low) * (step - start + 1) / decay


def compile_setting(text: str) -> bool | str | None:
    """`TrainConfig.compile` from a command-line word: auto (None), none (False) or a backend."""
    return {"auto": None, "none": False}.get(text, text)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no GPU is available")
    return torch.device(name)


@dataclass(frozen=True)
class Accel:
    """How a run computes on its device: autocast dtype (None: fp32) and torch.compile backend
    (None: eager). `Accel.of(device, precision, compile)` applies the defaults of `TrainConfig`."""

    device: torch.device
    dtype: torch.dtype | None
    backend: str | None

    @classmethod
    def of(cls, device: torch.device, precision: str = "auto", compile: bool | str | None = None) -> "Accel":
        gpu = device.type == "cuda"
        bf16 = precision == "bf16" or (precision == "auto" and gpu)
        if compile is None:
            compile = gpu
        backend = compile if isinstance(compile, str) else ("inductor" if compile else None)
        return cls(device, torch.bfloat16 if bf16 else None, backend)

    def autocast(self):
        """The autocast context of a forward pass (none for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def wrap(self, model: torch.nn.Module):
        """The callable forward: the model itself, or its compiled wrapper (the parameters and the
        state dict stay the model's)."""
        return torch.compile(model, backend=self.backend) if self.backend else model

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": "bf16" if self.dtype is not None else "fp32",
                "compile": self.backend}


def _optimizer(model: TransformerLM, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    plain = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embed")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda")


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / "checkpoints").glob("step_*.pt"))


def _save(output: Path, state: dict[str, Any], keep: int) -> Path:
    folder = output / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{state['step']:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in _checkpoints(output)[:-keep]:
        old.unlink()
    return path


def _vocab_size(tokenizer: str) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer).get_vocab_size(with_added_tokens=True)


def _micro_batches(tokens: np.ndarray, limit: int) -> list[np.ndarray]:
    rows, width = tokens.shape
    per = max(1, limit // max(1, width - 1))
    return [tokens[i:i + per] for i in range(0, rows, per)]


def train(cfg: TrainConfig, log: Callable[[str], None] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer = cfg.tokenizer or str(Path(cfg.data) / "tokenizer.json")
    if not Path(tokenizer).is_file():
        raise ValueError(f"tokenizer not found: {tokenizer} (give train.tokenizer)")
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)

    steps = cfg.steps
    layout = export_layout(cfg.data)
    schedule = cfg.schedule
    if schedule == "export":
        schedule = export_schedule(cfg.data)
        if schedule is None:
            raise ValueError(f"train.schedule = 'export' but {cfg.data}/manifest.json plans no schedule")
    elif isinstance(schedule, dict):
        schedule = Schedule.from_json(schedule)
    if cfg.max_repeats is not None:
        max_repeats, caps_from = cfg.max_repeats, "train.max_repeats"
    else:
        max_repeats = export_max_repeats(cfg.data)
        caps_from = "export mixture" if max_repeats is not None else None
    source = batches(cfg.data, cfg.tokens_per_batch, total_steps=steps, seed=cfg.seed, curriculum=cfg.curriculum,
                     cycles=cfg.cycles, schedule=schedule, max_repeats=max_repeats)
    longest = getattr(source, "seq_len", None) or export_longest(cfg.data)
    mcfg = model_config(_vocab_size(tokenizer), **{"max_seq_len": longest, **cfg.model})
    model = TransformerLM(mcfg).to(device)
    optimizer = _optimizer(model, cfg, device)

    start, tokens_seen, curve = 0, 0, []
    found = _checkpoints(output) if cfg.resume else []
    if found:
        # to the CPU first: the RNG states must stay CPU byte tensors; load_state_dict moves the
        # weights and the optimizer moments to the parameters' device
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, tokens_seen, curve = int(state["step"]), int(state["tokens"]), [list(x) for x in state["curve"]]
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if log:
            log(f"resumed from {found[-1]} at step {start}")
    accel = Accel.of(device, cfg.precision, cfg.compile)
    runner = accel.wrap(model)
    heldout = None
    if cfg.heldout:
        heldout = (heldout_sets(cfg.heldout), token_bytes(tokenizer))
    evals: list[dict[str, Any]] = []
    log_path = output / "log.jsonl"
    model.train()
    clock = time.perf_counter()
    tokens_at_start = tokens_seen
    it = source.iter_from(start)
    step = start
    with open(log_path, "a") as log_file:
        while step < steps:
            batch = next(it)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, cfg)
            data = batch["tokens"]
            total = data.shape[0] * (data.shape[1] - 1)
            loss_sum = 0.0
            optimizer.zero_grad(set_to_none=True)
            for part in _micro_batches(data, cfg.micro_batch_tokens):
                x = torch.from_numpy(np.ascontiguousarray(part)).to(device, non_blocking=True)
                with accel.autocast():
                    loss = lm_loss(runner, x)
                weight = part.shape[0] * (part.shape[1] - 1) / total
                (loss * weight).backward()
                loss_sum += float(loss.detach()) * weight
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            tokens_seen += total
            step += 1
            curve.append([step, tokens_seen, loss_sum])
            if on_step is not None:
                on_step(step, loss_sum)
            if cfg.log_every and step % cfg.log_every == 0:
                log_file.write(json.dumps({"step": step, "tokens": tokens_seen, "loss": loss_sum,
                                           "lr": lr_at(step - 1, steps, cfg), "grad_norm": float(norm),
                                           "bucket": batch.get("bucket"), "domain": batch.get("domain")}) + "\n")
            if heldout and cfg.eval_every and step % cfg.eval_every == 0 and step < steps:
                evals.append({"step": step, "tokens": tokens_seen,
                              **evaluate(model, *heldout, accel=accel, max_tokens=cfg.eval_max_tokens)})
                model.train()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps:
                _save(output, _state(model, optimizer, step, tokens_seen, curve, mcfg, device), cfg.keep_checkpoints)
    seconds = time.perf_counter() - clock
    _save(output, _state(model, optimizer, step, tokens_seen, curve, mcfg, device), cfg.keep_checkpoints)
    result: dict[str, Any] = {
        "steps": steps, "tokens": tokens_seen, "layout": layout, "parameters": model.num_parameters(),
        "model": mcfg.to_dict(), **accel.describe(), "seconds": round(seconds, 2),
        "tokens_per_second": round((tokens_seen - tokens_at_start) / max(seconds, 1e-9), 1),
        "final_loss": curve[-1][2] if curve else None, "curve": curve, "evals": evals,
        "max_repeats_from": caps_from, "domains": usage(source, step, max_repeats),
        "config": jsonable(asdict(cfg)),
    }
    if heldout:
        result["heldout"] = evaluate(model, *heldout, accel=accel, max_tokens=cfg.eval_max_tokens)
    (output / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def lm_loss(forward, x: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a (B, T+1) batch through `forward` (the model, or its
    `torch.compile`d wrapper, whose attribute methods would run uncompiled)."""
    from torch.nn import functional as F

    logits = forward(x[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def _state(model, optimizer, step: int, tokens: int, curve: list, mcfg, device: torch.device) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "tokens": tokens,
            "curve": curve, "model_config": mcfg.to_dict(), "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


@torch.no_grad()
def evaluate(model: TransformerLM, sets: dict[str, list[Path]], bytes_of: np.ndarray, *,
             accel: Accel | None = None, max_tokens: int | None = None,
             batch_tokens: int = EVAL_BATCH_TOKENS) -> dict[str, Any]:
    """Loss (nats per predicted token) and bits per byte on held-out datasets, per domain and
    over all of them. Rows longer than the model's context are cut into windows of it. With
    `max_tokens`, each domain is cut to a seeded random sample of its rows of at most that many
    tokens (at least one row), the same for every model. `accel` gives the autocast of training
    (default: the model's device with its defaults); the model runs eagerly: its batches are
    padded to every width, which would make a compiled model recompile."""
    accel = accel or Accel.of(next(model.parameters()).device)
    device = accel.device
    was_training = model.training
    model.eval()
    context = model.cfg.max_seq_len
    per: dict[str, dict[str, float]] = {}
    for domain, dirs in sets.items():
        nats = 0.0
        predicted = 0
        nbytes = 0
        stored = [row for d in dirs for row in dataset_rows(d)]  # views of the memory-mapped shards
        if max_tokens is not None:  # a seeded sample of rows, whatever bucket they are in
            order = np.random.default_rng(EVAL_SAMPLE_SEED).permutation(len(stored))
            sizes = np.array([len(stored[k]) for k in order])
            stored = [stored[k] for k in order[: int(np.searchsorted(np.cumsum(sizes), max_tokens, side="right")) or 1]]
        rows: list[np.ndarray] = []
        for row in stored:
            for lo in range(0, max(1, len(row) - 1), context):
                piece = row[lo:lo + context + 1]
                if len(piece) >= 2:
                    rows.append(piece.astype(np.int64))
        rows.sort(key=len)
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and (j - i + 1) * len(rows[j]) <= max(batch_tokens, len(rows[j])):
                j += 1
            group = rows[i:j]
            width = max(len(r) for r in group)
            arr = np.zeros((len(group), width), dtype=np.int64)
            mask = np.zeros((len(group), width), dtype=bool)
            for k, r in enumerate(group):
                arr[k, :len(r)] = r
                mask[k, :len(r)] = True
            x = torch.from_numpy(arr).to(device)
            m = torch.from_numpy(mask).to(device)
            with accel.autocast():
                losses = model.loss(x, m, reduction="sum")
            nats += float(losses)
            targets = arr[:, 1:][mask[:, 1:]]
            predicted += int(targets.size)
            nbytes += int(bytes_of[targets].sum())
            i = j
        per[domain] = {"loss": nats / max(predicted, 1), "bpb": nats / math.log(2) / max(nbytes, 1),
                       "tokens": predicted, "bytes": nbytes, "nats": nats}
    total_nats = sum(v["nats"] for v in per.values())
    total_tokens = sum(v["tokens"] for v in per.values())
    total_bytes = sum(v["bytes"] for v in per.values())
    if was_training:
        model.train()
    return {"loss": total_nats / max(total_tokens, 1), "bpb": total_nats / math.log(2) / max(total_bytes, 1),
            "tokens": total_tokens, "bytes": total_bytes,
            "per_domain": {d: {k: v[k] for k in ("loss", "bpb", "tokens", "bytes")} for d, v in per.items()}}
