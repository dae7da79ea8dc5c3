"""The scorer registry: each scorer module joins it with one `register(ScorerKind(...))` call at
its foot, and `filters/__init__.py` imports every scorer module once, so the registry is full
whenever `filters` is imported. Nothing here imports a scorer, so there is no import cycle.

A new scorer is one new file in `filters/`: its scorer class, a `build(spec)` that turns a
`ScorerSpec` into a loaded and checked scorer, and, when it can be trained from labelled texts, a
`LabelledTrainer` (its parameter dataclass, whose `core.params.param` fields become the flags of
`winnow train-scorer KIND` and the keys of a [[train]] entry's `params` table). Then one line in
`filters/__init__.py` imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from core.errors import ScorerError


@dataclass(frozen=True)
class LabelledTrainer:
    """How a kind trains as a binary classifier over labelled text lines.

    `flows/train.py` samples positives and negatives with Spark, writes one
    ``<label> <to_line(text)>`` line per document (labels interleaved) to one local file and
    calls `fit(path, params)`; then it scores the held-out documents for ROC-AUC.
    """

    params: type                                  # frozen dataclass; its defaults are the paper's
    positive: str                                 # label of the positives in the training file
    negative: str
    to_line: Callable[[str], str]                 # a text as one training line (no newline)
    fit: Callable[[str, Any], Any]                # (training file, params) -> scorer
    describe: Callable[[Any], dict[str, Any]]     # facts about a trained scorer for the report
    summary: str                                  # one paragraph for `winnow train-scorer KIND --help`


@dataclass(frozen=True)
class ScorerKind:
    """One kind of scorer: its name, a one-line summary, how to build it from a spec, and (if
    trainable) its trainer."""

    kind: str
    summary: str
    build: Callable[[Any], Any]                   # ScorerSpec -> Scorer, fully checked
    trainer: LabelledTrainer | None = None
    # The files the `score` stage ships to the executors: {value as the spec writes it (its model
    # or an option's string): the file to ship}. None: the spec's `model`, when it is a file.
    model_files: Callable[[Any], dict[str, str]] | None = None


_KINDS: dict[str, ScorerKind] = {}


def register(kind: ScorerKind) -> ScorerKind:
    if kind.kind in _KINDS and _KINDS[kind.kind] is not kind:
        raise ValueError(f"scorer kind {kind.kind!r} is registered twice")
    _KINDS[kind.kind] = kind
    return kind


def kinds() -> tuple[str, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS)


def trainable() -> tuple[str, ...]:
    return tuple(k for k, v in _KINDS.items() if v.trainer is not None)


def get(kind: str) -> ScorerKind:
    """The registered kind, or a one-line ScorerError listing the known ones."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ScorerError(f"unknown scorer {kind!r} (known: {', '.join(_KINDS)})") from None


def trainer(kind: str) -> LabelledTrainer:
    found = get(kind).trainer
    if found is None:
        raise ScorerError(f"a {kind!r} scorer cannot be trained (trainable: {', '.join(trainable()) or 'none'})")
    return found
