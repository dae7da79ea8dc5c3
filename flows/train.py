"""Training scorers from corpora: `winnow train-scorer dclm` and a flow config's [[train]] steps.

Positives and negatives are read with the `read` stage (any format it takes), so bad records are
counted, not fatal. Each side is capped at `max_per_class` documents, chosen by a seeded hash of
the id (deterministic, no driver-side shuffle), and a held-out fraction of each side is kept out
of training to measure ROC-AUC. Training lines stream from Spark to one local file
(`toLocalIterator`, ordered by a seeded hash so the labels are interleaved): fastText trains in
one process from one file, and the sample is bounded, never the whole corpus in memory.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import WinnowError
from filters.dclm import CC, HQ, BigramCounter, DclmScorer, DclmTrainParams, roc_auc, write_training_line
from pipelines.stage import StageContext
from pipelines.train_sample import heldout_rows, labelled_sample, training_rows

SCORE_BATCH = 2_000


@dataclass(frozen=True)
class TrainSpec:
    """One scorer to train: `kind` (only `dclm` is trainable here), where to save it, the data."""

    kind: str
    output: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    max_per_class: int = 200_000      # DCLM: 200k + 200k
    heldout_fraction: float = 0.1
    seed: int = 0
    params: DclmTrainParams = field(default_factory=DclmTrainParams)

    def __post_init__(self) -> None:
        if self.kind != "dclm":
            raise WinnowError(f"train: cannot train a {self.kind!r} scorer (trainable: dclm)")
        if not self.positives or not self.negatives:
            raise WinnowError("train dclm: give both positives and negatives")
        if self.max_per_class < 2:
            raise WinnowError(f"train dclm: max_per_class must be >= 2, got {self.max_per_class}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise WinnowError(f"train dclm: heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def train_dclm(spark, spec: TrainSpec, log=print) -> dict[str, Any]:
    """Train, save to `spec.output`, and return a report (counts, bucket, held-out ROC-AUC)."""
    start = time.perf_counter()
    ctx = StageContext(spark=spark, seed=spec.seed)
    try:
        pos, n_pos, bad_pos = labelled_sample(ctx, spec.positives, HQ, spec.max_per_class, spec.heldout_fraction, spec.seed)
        neg, n_neg, bad_neg = labelled_sample(ctx, spec.negatives, CC, spec.max_per_class, spec.heldout_fraction, spec.seed)
        both = ctx.persist(pos.unionByName(neg))
        counter = BigramCounter()
        counts = {HQ: 0, CC: 0}
        fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="winnow-dclm-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for label, text in training_rows(both, spec.seed):
                    if write_training_line(out, label, text, counter):
                        counts[label] += 1
            if not counts[HQ] or not counts[CC]:
                raise WinnowError(f"train dclm: no training {'positives' if not counts[HQ] else 'negatives'} "
                                  "left (empty inputs, or all held out)")
            bucket = spec.params.bucket or counter.bucket()
            log(f"training fastText on {counts[HQ]:,} positives and {counts[CC]:,} negatives, bucket {bucket:,}")
            scorer = DclmScorer.train_file(tmp, spec.params, bucket=bucket)
        finally:
            os.unlink(tmp)
        Path(spec.output).parent.mkdir(parents=True, exist_ok=True)
        scorer.save(spec.output)
        scores, labels = [], []
        batch: list[tuple[str, str]] = []
        for label, text in heldout_rows(both):
            batch.append((label, text))
            if len(batch) >= SCORE_BATCH:
                scores.append(scorer.score([t for _, t in batch])); labels += [lab == HQ for lab, _ in batch]
                batch = []
        if batch:
            scores.append(scorer.score([t for _, t in batch])); labels += [lab == HQ for lab, _ in batch]
        held = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
        positive = np.array(labels, dtype=bool)
        auc = roc_auc(held, positive)
    finally:
        ctx.release()
    return {
        "kind": "dclm", "output": str(spec.output),
        "positives": {"documents": n_pos, "bad_records": bad_pos, "trained": counts[HQ], "heldout": int(positive.sum())},
        "negatives": {"documents": n_neg, "bad_records": bad_neg, "trained": counts[CC], "heldout": int((~positive).sum())},
        "bucket": bucket, "model_bytes": Path(spec.output).stat().st_size,
        "heldout_roc_auc": None if np.isnan(auc) else round(auc, 4),
        "params": asdict(spec.params), "seconds": round(time.perf_counter() - start, 1),
    }
