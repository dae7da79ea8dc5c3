"""`winnow train-lm`: a reference language model for the perplexity and PreSelect scorers.

It trains with `training/` exactly as `winnow validate` trains its small models:

1. the inputs are read with the `read` stage (bad records counted, not fatal); documents with no
   non-space character are left out; with ``fold = "K/2"`` only the documents of fold K are kept
   (a seeded xxh64 of the text, the same split the perplexity scorer's `folds` uses, so each
   half of a pool is scored by the model trained on the other half: Ankner et al. 2024);
2. a seeded hash of the id holds out ``heldout_fraction`` of the documents (at least one);
3. a byte-level BPE tokenizer of ``vocab_size`` is trained on a seeded sample of the training
   documents (or ``tokenizer`` is used as given);
4. both splits are tokenized and exported concat-and-chunk into windows of ``seq_len`` tokens
   (documents joined by end-of-text, GPT-2's layout: the scorer feeds each document after an
   end-of-text token, which training then has seen), under ``<output>/_data/``;
5. `training.loop.train` trains a model of preset ``size`` for ``tokens`` tokens and evaluates
   it on the held-out windows;
6. ``<output>/lm.pt`` (weights, model config, tokenizer, facts: `filters/lm.py`),
   ``<output>/tokenizer.json`` and ``<output>/lm.json`` (the settings, the documents and tokens
   trained on, the held-out bits per byte, the run's seconds) are written.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError, WinnowError
from core.params import param

SIZES = ("tiny", "small", "base")


@dataclass(frozen=True)
class LmSpec:
    """What `winnow train-lm` trains: the data, the model and the budget."""

    inputs: tuple[str, ...]
    output: str
    size: str = param("tiny", choices=SIZES, help="model preset (tiny ~0.4-1M, small ~5M, base ~23M parameters)")
    tokens: int = param(1_000_000, metavar="N", help="training tokens")
    seed: int = param(0, help="seed of the split, the tokenizer's sample and training")
    vocab_size: int = param(4096, metavar="N", help="vocabulary of the trained tokenizer")
    tokenizer: str | None = param(None, metavar="PATH", help="a tokenizer.json to use instead of training one "
                                  "(it must have the <|endoftext|> token)")
    seq_len: int = param(256, metavar="N", help="training window in tokens (the model's context)")
    tokens_per_batch: int = param(4096, metavar="N", help="tokens per step (a multiple of seq_len)")
    lr: float = param(3e-3, help="peak learning rate (cosine schedule)")
    heldout_fraction: float = param(0.05, metavar="F", flag="--heldout",
                                    help="fraction of documents held out to measure bits per byte")
    fold: str | None = param(None, metavar="K/2", help="train on fold K of 2 only (Ankner et al.'s two folds)")
    threads: int | None = param(None, metavar="N", help="torch CPU threads (default torch's)")

    kind = "lm"   # a class attribute, not a field: what [[train]] reports call it

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("train-lm: give at least one input")
        if self.size not in SIZES:
            raise ConfigError(f"train-lm: size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.seq_len < 8 or self.tokens_per_batch < self.seq_len:
            raise ConfigError("train-lm: seq_len must be >= 8 and tokens_per_batch >= seq_len")
        if self.tokens < self.tokens_per_batch:
            raise ConfigError(f"train-lm: tokens ({self.tokens}) below one batch ({self.tokens_per_batch})")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"train-lm: heldout fraction must be in (0, 1), got {self.heldout_fraction}")
        self.fold_index()

    def fold_index(self) -> int | None:
        if self.fold is None:
            return None
        k, _, n = self.fold.partition("/")
        if n != "2" or k not in ("0", "1"):
            raise ConfigError(f"train-lm: fold must be 0/2 or 1/2, got {self.fold!r}")
        return int(k)


def _docs(spark, spec: LmSpec):
    """(the read documents with a `heldout` column, bad records)."""
    from pyspark.sql import functions as F

    from pipelines.stage import StageContext
    from pipelines.train_sample import _unit_hash, in_fold, read_texts

    docs, removed = read_texts(StageContext(spark=spark, seed=spec.seed), spec.inputs, "lm")
    fold = spec.fold_index()
    if fold is not None:
        docs = docs.where(in_fold(fold))
    docs = docs.withColumn("heldout", _unit_hash("id", spec.seed + 7) < F.lit(spec.heldout_fraction))
    return docs, removed.count()


def train_lm(spark, spec: LmSpec, log=print, data_from: str | None = None) -> dict[str, Any]:
    """Train a reference LM as the module docstring says; returns what `lm.json` holds.
    `data_from`: an LM directory trained on the same inputs, fold, tokenizer settings and seq_len,
    whose split, tokenizer and exported windows are reused (a PreSelect family differs only in its
    token budgets and training seeds): `spec.seed` then seeds only the training, and `lm.json`
    names the directory under ``data_from``."""
    from pyspark.sql import functions as F

    from pipelines.tokenize import load_tokenizer, sample_texts, train_tokenizer

    from .config import config_for_inputs, parse_config
    from .curate import run_curation

    start = time.perf_counter()
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_data"
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = out / "tokenizer.json"
    if data_from is not None:
        src = Path(data_from)
        done = json.loads((src / "lm.json").read_text())
        shutil.copyfile(src / "tokenizer.json", tokenizer)
        return _train_and_save(spark, spec, out, src / "_data", tokenizer, done["documents"]["train"],
                               done["documents"]["heldout"], done["documents"]["bad_records"], done["export_tokens"],
                               start, log, data_from=str(src))
    docs, bad = _docs(spark, spec)
    docs.write.parquet(str(work / "split"))
    split = spark.read.parquet(str(work / "split"))
    counts = {bool(r["heldout"]): int(r["count"]) for r in split.groupBy("heldout").count().collect()}
    n_train, n_held = counts.get(False, 0), counts.get(True, 0)
    if n_train == 0:
        raise WinnowError("train-lm: no documents to train on (empty inputs, or all in the other fold)")
    if n_held == 0:  # a tiny input: hold out the last document by hash, so bits per byte exist
        first = split.orderBy(F.xxhash64("id", F.lit(spec.seed))).select("id").first()["id"]
        split = split.withColumn("heldout", F.col("id") == F.lit(first))
        n_train, n_held = n_train - 1, 1
        if n_train == 0:
            raise WinnowError("train-lm: one document is too little to train and measure on")
    split.where(~F.col("heldout")).drop("heldout").write.parquet(str(work / "train"))
    split.where(F.col("heldout")).drop("heldout").write.parquet(str(work / "heldout"))

    if spec.tokenizer:
        load_tokenizer(spec.tokenizer)  # a bad file or one without <|endoftext|>: one error line
        shutil.copyfile(spec.tokenizer, tokenizer)
    else:
        frame = spark.read.parquet(str(work / "train"))
        train_tokenizer(sample_texts(frame, 20_000, spec.seed), spec.vocab_size).save(str(tokenizer))

    exports = {}
    for part in ("train", "heldout"):
        cfg = config_for_inputs([str(work / part)], str(work / f"export-{part}"), None, None)
        data = cfg.model_dump(mode="json", by_alias=True)
        data.update({"stages": [{"stage": "tokenize", "tokenizer": str(tokenizer)},
                                {"stage": "export", "layout": "concat", "seq_len": spec.seq_len}],
                     "write": {"columns": ["id", "n_tokens"]}, "overwrite": True})
        summary = run_curation(parse_config(data, Path("/"), "train-lm"), spark=spark,
                               start=str(work / part))
        exports[part] = next(r for r in summary.stages if r.stage == "export").stats.get("tokens")
    shutil.rmtree(work / "split", ignore_errors=True)
    return _train_and_save(spark, spec, out, work, tokenizer, n_train, n_held, bad, exports, start, log)


def _train_and_save(spark, spec: LmSpec, out: Path, work: Path, tokenizer: Path, n_train: int, n_held: int,
                    bad: int, exports: dict, start: float, log, data_from: str | None = None) -> dict[str, Any]:
    import torch

    from filters.lm import save_lm
    from training.loop import TrainConfig, train
    from training.model import ModelConfig, TransformerLM

    run = out / "_run"
    shutil.rmtree(run, ignore_errors=True)
    log(f"training a {spec.size} LM on {n_train:,} documents for {spec.tokens:,} tokens")
    tcfg = TrainConfig(data=str(work / "export-train"), output=str(run), tokens=spec.tokens,
                       tokens_per_batch=spec.tokens_per_batch // spec.seq_len * spec.seq_len,
                       model={"size": spec.size}, tokenizer=str(tokenizer), heldout=str(work / "export-heldout"),
                       seed=spec.seed, lr=spec.lr, resume=False, threads=spec.threads, max_repeats=float("inf"))
    result = train(tcfg)
    # the final checkpoint's weights into a fresh model, then the one-file reference LM
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = TransformerLM(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    held = result.get("heldout") or {}
    info = {
        "inputs": list(spec.inputs), "settings": {k: v for k, v in asdict(spec).items() if k not in ("inputs", "output")},
        "documents": {"train": n_train, "heldout": n_held, "bad_records": bad},
        "tokens_trained": result["tokens"], "parameters": result["parameters"],
        "heldout_bpb": held.get("bpb"), "heldout_loss": held.get("loss"),
        "final_loss": result.get("final_loss"), "seconds": round(time.perf_counter() - start, 1),
        "export_tokens": exports,
    }
    if data_from is not None:
        info["data_from"] = data_from
    save_lm(out, model, tokenizer.read_text(encoding="utf-8"), info)
    (out / "lm.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(run, ignore_errors=True)   # the checkpoints: lm.pt holds the weights
    return info
