"""Reference language models: one file that a scorer loads, and per-document losses under it.

`winnow train-lm` (flows/train_lm.py) trains a small LM with `training/` and writes a directory;
its ``lm.pt`` holds all a scorer needs: the weights, the model config, the tokenizer (its JSON
text) and facts about training (the held-out bits per byte it reached). One file, so the `score`
stage ships it to the executors as it ships a fastText model. It is read with
``torch.load(weights_only=True)``: tensors, numbers and strings only, no pickled code.

Scoring (`document_nats`) takes each document on its own, never a window over concatenated
documents (which conditions a document on its neighbour; PreSelect's reference code does that,
METHODS §2 pitfalls):

- the ids are ``[eot] + tokens(text)``: the end-of-text token stands for "a new document
  begins", so the document's first token is predicted too and the loss covers all its bytes;
- a document longer than the model's context is cut into strided windows (Hugging Face's
  recipe): the first window predicts its targets, each later one starts ``stride`` tokens on and
  predicts only the targets no earlier window predicted, so every target is predicted once with
  at least ``context - stride`` tokens before it;
- windows are sorted by length and batched up to ``batch_tokens`` (rows x padded width), so
  padding stays small; bf16 autocast on a GPU, fp32 on CPU; inside a Spark task torch runs one
  thread per task, as PySpark's Python workers get OMP_NUM_THREADS = spark.task.cpus (1);
- the result is the document's summed loss in nats; bits per byte = nats / ln 2 / UTF-8 bytes,
  bits per character = nats / ln 2 / characters.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import ScorerError

LM_FILE = "lm.pt"
LM_KIND = "winnow-lm"
FORMAT = 1
EOT = "<|endoftext|>"
BATCH_TOKENS = 8192        # rows x padded width of one forward pass


def lm_file(path: str | Path) -> Path:
    """The model file of a `winnow train-lm` directory, or the file itself."""
    p = Path(path)
    return p / LM_FILE if p.is_dir() else p


def save_lm(path: str | Path, model, tokenizer_json: str, info: dict[str, Any]) -> Path:
    """Write `model` (a training.model.TransformerLM on any device) with its tokenizer and facts
    to `path` (a directory: `<path>/lm.pt`; a file name ending in .pt: that file)."""
    import torch

    p = Path(path)
    out = p if p.suffix == ".pt" else p / LM_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    torch.save({"kind": LM_KIND, "format": FORMAT, "config": model.cfg.to_dict(), "state": state,
                "tokenizer": tokenizer_json, "info": json.dumps(info)}, tmp)
    os.replace(tmp, out)
    return out


@dataclass
class ReferenceLM:
    """A loaded reference LM: model (eval mode, on its device), tokenizer and end-of-text id."""

    model: Any
    tokenizer: Any
    eot_id: int
    info: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def context(self) -> int:
        return int(self.model.cfg.max_seq_len)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch([t or "" for t in texts], add_special_tokens=False)]


def load_lm(path: str | Path, device: str = "auto") -> ReferenceLM:
    """A reference LM from a `winnow train-lm` directory or its lm.pt, checked: every problem is
    one ScorerError line naming the file."""
    import torch
    from tokenizers import Tokenizer

    from training.model import ModelConfig, TransformerLM

    p = lm_file(path)
    if not p.is_file():
        raise ScorerError(f"reference LM not found: {p} (train one with `winnow train-lm`)")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ScorerError(f"{p} is not a reference LM file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict) or raw.get("kind") != LM_KIND:
        raise ScorerError(f"{p} is not a reference LM file (no {LM_KIND!r} header)")
    if raw.get("format") != FORMAT:
        raise ScorerError(f"{p}: reference LM format {raw.get('format')!r}, this Winnow reads {FORMAT}")
    try:
        cfg = ModelConfig(**raw["config"])
        tokenizer = Tokenizer.from_str(raw["tokenizer"])
        info = json.loads(raw.get("info") or "{}")
        model = TransformerLM(cfg)
        model.load_state_dict(raw["state"])
    except (KeyError, TypeError, ValueError, RuntimeError, Exception) as exc:  # noqa: BLE001
        raise ScorerError(f"{p}: damaged reference LM ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise ScorerError(f"{p}: its tokenizer has no {EOT} token")
    if tokenizer.get_vocab_size(with_added_tokens=True) > cfg.vocab_size:
        raise ScorerError(f"{p}: tokenizer has more ids than the model's vocabulary ({cfg.vocab_size})")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model = model.to(dev).eval()
    return ReferenceLM(model, tokenizer, eot, info, str(p))


def windows(n_ids: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Strided windows over a sequence of `n_ids` ids, targets 1..n_ids-1: (start, end, first)
    where the window's inputs are ids[start:end] and its targets ids[start+1:end+1], and it
    predicts (counts) only targets at positions >= first. Every target is counted exactly once."""
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    out: list[tuple[int, int, int]] = []
    last = n_ids - 1          # the last target position
    done = 0                  # targets 1..done are counted
    start = 0
    while done < last:
        end = min(start + context, last)   # inputs start..end-1, targets start+1..end
        out.append((start, end, done + 1))
        done = end
        start += stride
    return out


def document_nats(lm: ReferenceLM, texts: Sequence[str], stride: int | None = None,
                  batch_tokens: int = BATCH_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """Per document: (summed next-token loss in nats, number of predicted tokens). A text with no
    tokens has loss 0 over 0 tokens."""
    import torch
    from torch.nn import functional as F

    context = lm.context
    stride = stride or max(1, context // 2)
    stride = min(stride, context)
    ids = [np.asarray([lm.eot_id] + t, dtype=np.int64) for t in lm.encode(texts)]
    pieces: list[tuple[int, int, int, int]] = []    # (doc, start, end, first)
    for d, seq in enumerate(ids):
        pieces += [(d, s, e, f) for s, e, f in windows(len(seq), context, stride)]
    pieces.sort(key=lambda x: x[2] - x[1])
    nats = np.zeros(len(ids), dtype=np.float64)
    counted = np.zeros(len(ids), dtype=np.int64)
    device = lm.device
    gpu = device.type == "cuda"
    i = 0
    with torch.no_grad():
        while i < len(pieces):
            width = pieces[i][2] - pieces[i][1]
            j = i
            while j < len(pieces) and (j - i + 1) * (pieces[j][2] - pieces[j][1]) <= max(batch_tokens, width):
                j += 1
            group = pieces[i:j]
            width = max(e - s for _, s, e, _ in group)
            x = np.zeros((len(group), width + 1), dtype=np.int64)
            keep = np.zeros((len(group), width), dtype=bool)
            for k, (d, s, e, f) in enumerate(group):
                x[k, : e - s + 1] = ids[d][s:e + 1]
                keep[k, f - s - 1: e - s] = True      # target at position p is column p - s - 1
            xt = torch.from_numpy(x).to(device)
            with (torch.autocast("cuda", dtype=torch.bfloat16) if gpu else _null()):
                logits = lm.model(xt[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), xt[:, 1:].reshape(-1),
                                   reduction="none").reshape(len(group), width)
            loss = (loss * torch.from_numpy(keep).to(device)).sum(dim=1).double().cpu().numpy()
            for k, (d, s, e, f) in enumerate(group):
                nats[d] += loss[k]
                counted[d] += e - f + 1
            i = j
    return nats, counted


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bits_per(texts: Sequence[str], nats: np.ndarray, unit: str) -> np.ndarray:
    """Bits per UTF-8 byte (`unit` "byte") or per character ("char") of each text; NaN for an
    empty text."""
    sizes = np.array([len((t or "").encode("utf-8")) if unit == "byte" else len(t or "") for t in texts],
                     dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = nats / math.log(2) / sizes
    out[sizes == 0] = np.nan
    return out
