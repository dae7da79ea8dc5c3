"""Training scorers from corpora: `winnow train-scorer KIND` and a flow config's [[train]] steps.

Any kind whose module registers a `LabelledTrainer` (filters/registry.py) trains here from
positives and negatives: dclm, dfn, and preselect when it is given labels. Reference LMs
(flows/train_lm.py) and PreSelect from reference LMs (flows/preselect.py) train elsewhere;
`train_any` runs any [[train]] entry. Positives and negatives are read with the `read` stage (any format
it takes), so bad records are counted, not fatal. Each side is capped at `max_per_class`
documents, chosen by a seeded hash of the id (deterministic, no driver-side shuffle), and a
held-out fraction of each side is kept out of training to measure ROC-AUC. Training lines stream
from Spark to one local file (`toLocalIterator`, ordered by a seeded hash so the labels are
interleaved): fastText trains in one process from one file, and the sample is bounded, never the
whole corpus in memory.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ConfigError, WinnowError
from core.params import param
from filters import registry
from filters.dclm import roc_auc
from pipelines.stage import StageContext
from pipelines.train_sample import heldout_rows, labelled_sample, training_rows

SCORE_BATCH = 2_000   # held-out texts scored per call: large enough to amortize the call, small in memory


@dataclass(frozen=True)
class TrainSpec:
    """One scorer to train: its kind, where to save it, the data, and the kind's own parameters
    (an instance of its trainer's parameter class; None: that class's defaults)."""

    kind: str
    output: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    max_per_class: int = param(200_000, metavar="N", help="documents per label at most, chosen by a seeded "
                               "hash of the id (DCLM trains on 200k + 200k; Li et al. 2024, App. J.1)")
    heldout_fraction: float = param(0.1, metavar="F", flag="--heldout",
                                    help="fraction of each side held out to measure ROC-AUC")
    seed: int = param(0, help="seed of the sample, the held-out split and the trainer")
    params: Any = None

    def __post_init__(self) -> None:
        trainer = registry.trainer(self.kind)  # an unknown or untrainable kind: one line
        if self.params is None:
            object.__setattr__(self, "params", trainer.params())
        elif not isinstance(self.params, trainer.params):
            raise ConfigError(f"train {self.kind}: params must be a {trainer.params.__name__}")
        if not self.positives or not self.negatives:
            raise ConfigError(f"train {self.kind}: give both positives and negatives")
        if self.max_per_class < 2:
            raise ConfigError(f"train {self.kind}: max_per_class must be >= 2, got {self.max_per_class}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"train {self.kind}: heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def _score_heldout(scorer, rows, positive_label: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the held-out rows and whether each is a positive."""
    scores, labels, batch = [], [], []

    def flush() -> None:
        scores.append(scorer.score([t for _, t in batch]))
        labels.extend(label == positive_label for label, _ in batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= SCORE_BATCH:
            flush()
    if batch:
        flush()
    held = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    return held, np.array(labels, dtype=bool)


def train_scorer(spark, spec: TrainSpec, log=print) -> dict[str, Any]:
    """Train, save to `spec.output`, and return a report (counts, the model's facts, held-out ROC-AUC)."""
    trainer = registry.trainer(spec.kind)
    pos_label, neg_label = trainer.positive, trainer.negative
    start = time.perf_counter()
    ctx = StageContext(spark=spark, seed=spec.seed)
    try:
        pos, n_pos, bad_pos = labelled_sample(ctx, spec.positives, pos_label, spec.max_per_class,
                                              spec.heldout_fraction, spec.seed)
        neg, n_neg, bad_neg = labelled_sample(ctx, spec.negatives, neg_label, spec.max_per_class,
                                              spec.heldout_fraction, spec.seed)
        both = ctx.persist(pos.unionByName(neg))
        counts = {pos_label: 0, neg_label: 0}
        fd, tmp = tempfile.mkstemp(suffix=".txt", prefix=f"winnow-{spec.kind}-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for label, text in training_rows(both, spec.seed):
                    line = trainer.to_line(text)
                    if line.strip():  # a text with no words makes no training line
                        out.write(f"{label} {line}\n")
                        counts[label] += 1
            if not counts[pos_label] or not counts[neg_label]:
                raise WinnowError(f"train {spec.kind}: no training {'positives' if not counts[pos_label] else 'negatives'} "
                                  "left (empty inputs, or all held out)")
            log(f"training {spec.kind} on {counts[pos_label]:,} positives and {counts[neg_label]:,} negatives")
            scorer = trainer.fit(tmp, spec.params)
        finally:
            os.unlink(tmp)
        Path(spec.output).parent.mkdir(parents=True, exist_ok=True)
        scorer.save(spec.output)
        held, positive = _score_heldout(scorer, heldout_rows(both), pos_label)
        auc = roc_auc(held, positive)
    finally:
        ctx.release()
    return {
        "kind": spec.kind, "output": str(spec.output),
        "positives": {"documents": n_pos, "bad_records": bad_pos, "trained": counts[pos_label],
                      "heldout": int(positive.sum())},
        "negatives": {"documents": n_neg, "bad_records": bad_neg, "trained": counts[neg_label],
                      "heldout": int((~positive).sum())},
        "model": trainer.describe(scorer), "model_bytes": Path(spec.output).stat().st_size,
        "heldout_roc_auc": None if np.isnan(auc) else round(auc, 4),
        "params": asdict(spec.params), "seconds": round(time.perf_counter() - start, 1),
    }


def model_file(spec: Any) -> str:
    """The file a [[train]] entry's model is in (a reference LM: its directory's lm.pt)."""
    from .train_lm import LmSpec

    return os.path.join(spec.output, "lm.pt") if isinstance(spec, LmSpec) else spec.output


def train_inputs(spec: Any) -> tuple[str, ...]:
    """The corpora a [[train]] entry reads (their fingerprints key its reuse)."""
    from .preselect import PreselectSpec
    from .train_lm import LmSpec

    if isinstance(spec, LmSpec):
        return spec.inputs
    if isinstance(spec, PreselectSpec):
        return spec.seed_docs + spec.lm_data + (spec.ability_data,)
    return spec.positives + spec.negatives


def train_any(spark, spec: Any, log=print) -> dict[str, Any]:
    """Train a [[train]] entry of any kind; the report has `kind`, `output`, `summary` (what it
    was trained on, one line), `heldout` (its held-out measure, one line), `model` (facts),
    `model_bytes` and `seconds`, plus the kind's own fields."""
    from .preselect import PreselectSpec, train_preselect
    from .train_lm import LmSpec, train_lm

    if isinstance(spec, LmSpec):
        info = train_lm(spark, spec, log=log)
        bpb = info["heldout_bpb"]
        return {**info, "kind": "lm", "output": spec.output,
                "summary": f"{info['documents']['train']:,} documents, {info['tokens_trained']:,} tokens",
                "heldout": "bits per byte " + (f"{bpb:.4f}" if bpb is not None else "none"),
                "model": {"parameters": info["parameters"], "size": spec.size},
                "model_bytes": Path(model_file(spec)).stat().st_size}
    if isinstance(spec, PreselectSpec):
        rep = train_preselect(spark, spec, log=log)
        trained = rep["labels"]["trained"]
        return {**rep, "summary": f"{len(rep['models'])} reference LMs, {rep['seed_documents']:,} seed documents, "
                f"{sum(trained.values()):,} labelled",
                "heldout": f"accuracy {rep['heldout_accuracy']}, ROC-AUC {rep['heldout_roc_auc']}",
                "model_bytes": Path(spec.output).stat().st_size}
    rep = train_scorer(spark, spec, log=log)
    return {**rep, "summary": f"{rep['positives']['trained']:,} positives, {rep['negatives']['trained']:,} negatives",
            "heldout": f"ROC-AUC {rep['heldout_roc_auc']}"}
