"""`winnow validate`: which mix trains better, on a budget this machine can afford.

A config's ``[validate]`` table names variants: lists of stages applied to a shared base (the
kept documents after the stage ``after``; by default the last stage before the first `select`,
`tokenize`, `decompose` or `export`, or the read documents when there is none). Then:

1. the base: the curation flow up to ``after``, written to ``<output>`` as any run, with that
   stage's output kept at ``<output>/validate/base`` (from `winnow run`: the run's own stage);
2. one tokenizer for every variant (``tokenizer``, or byte-level BPE with ``vocab_size`` trained
   on a seeded sample of the base): ``<output>/validate/tokenizer.json``;
3. the held-out set (``heldout`` inputs; records may carry their domain, ``domain_field``),
   tokenized with it, decomposed into the same buckets with tails kept, exported per domain:
   ``<output>/validate/heldout/``;
4. per variant, a curation run from the base (its stages, then tokenize -> decompose (tails
   dropped and counted) -> export, or the concat-and-chunk export): ``<output>/validate/variants/<name>/``
   (the name through `mixers.dirnames.dir_name`, so any name is one safe directory), with its own manifest
   and report (accounting per stage, as every run);
5. per variant and seed, `training.loop.train` at the same token budget (``tokens``), evaluated
   on the held-out set: ``<output>/validate/runs/<name>/seed_<k>/``;
6. ``<output>/validate.json``, a table in ``<output>/report.md`` and
   ``<output>/plots/validate-loss.png`` (training loss against tokens, every run).

Every step resumes (flows/state.py): the held-out set and each variant are curation runs that
skip their unchanged steps; the tokenizer is retrained only when the base's files, its vocabulary
size or the seed changed (`validate/tokenizer.key`); a (variant, seed) run whose key (its
training settings, the keys of its variant's and the held-out set's last steps, the tokenizer's
hash) matches the one saved beside its `train.json` (`run.key`) is not trained again.

Each variant's mean over its seeds is compared with the first variant's: a difference is called
real only when it is larger than twice its standard error (the seeds' spread, sqrt(s1^2/n1 +
s2^2/n2)); otherwise the table says "within noise".
"""
from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import WinnowError
from mixers.dirnames import dir_name, inside

from .config import RunConfig, base_stage, parse_buckets, parse_config, plans, variant_tail_stages
from .output import claim
from .state import RunState, canonical, digest

# Documents the shared tokenizer trains on: the tokenize stage's own default (`sample_docs`), so a
# variant's tokenizer is the one `winnow export` would train on the same base.
TOKENIZER_SAMPLE_DOCS = 20_000

def _sub_config(cfg: RunConfig, output: Path, stages: list[dict[str, Any]], inputs=None) -> RunConfig:
    data = cfg.model_dump(mode="json", by_alias=True)
    data.update({"output": str(output), "stages": stages, "train": [], "validate": None,
                 "write": {"columns": ["id", "source", "domain", "n_tokens", "dropped_tokens"]}})
    if inputs is not None:
        data["inputs"] = inputs
    data["stages"] = [json.loads(json.dumps(s).replace("{output}", cfg.output)) for s in stages]
    return parse_config(data, Path("/"), "validate")


def run_validate(cfg: RunConfig, spark=None, progress=None, base: str | None = None) -> dict[str, Any]:
    """Steps 2-6 of the module docstring from `base` (Parquet), or steps 1-6 when it is None.
    `spark`: the session to use; None: one is started only when a step needs it (a rerun with
    nothing to do starts none)."""
    from pipelines.tokenize import sample_texts, train_tokenizer
    from training.loop import TrainConfig, train

    from .curate import run_curation

    v = cfg.validate_
    if v is None:
        raise WinnowError("the config has no [validate] table")
    output = Path(cfg.output).resolve()
    root = output / "validate"
    if base is None:
        label = base_stage(cfg)
        stages = []
        for raw, p in zip(cfg.stages, plans(cfg)):
            if label is None:
                break
            stages.append(raw)
            if p.label == label:
                break
        # the run up to the base stage writes the output directory itself (kept/, models/,
        # manifest.json, report.md), so `{output}` means the same in it and in the variants
        sub = cfg.model_copy(update={"stages": stages, "validate_": None})
        run_curation(sub, spark=spark, progress=progress, keep=(label or "read", str(root / "base")))
        base = str(root / "base")
    claim(output, root, output / "validate.json", output / "plots")
    root.mkdir(parents=True, exist_ok=True)

    tokenizer = str(root / "tokenizer.json")
    if v.tokenizer:
        shutil.copyfile(v.tokenizer, tokenizer)
    else:
        key = digest({"base": _files_key(Path(base)), "vocab_size": v.vocab_size, "seed": cfg.seed,
                      "sample_docs": TOKENIZER_SAMPLE_DOCS, "version": RUN_VERSION})
        mark = root / "tokenizer.key"
        if not (Path(tokenizer).is_file() and mark.is_file() and mark.read_text().strip() == key):
            mark.unlink(missing_ok=True)
            if spark is None:
                from pipelines.spark import get_spark

                c = cfg.spark
                spark = get_spark(c.master, shuffle_partitions=c.shuffle_partitions, driver_memory=c.driver_memory,
                                  conf=c.conf)
            frame = spark.read.parquet(base)
            train_tokenizer(sample_texts(frame, TOKENIZER_SAMPLE_DOCS, cfg.seed), v.vocab_size).save(tokenizer)
            mark.write_text(key + "\n")
    lo, hi = parse_buckets(v.buckets, "validate.buckets")
    heldout = root / "heldout"
    run_curation(_sub_config(cfg, heldout, [
        {"stage": "tokenize", "tokenizer": tokenizer},
        {"stage": "decompose", "min_log2": lo, "max_log2": hi, "tail": "keep"},
        {"stage": "export", "by_domain": True}], inputs=[h.model_dump() for h in v.heldout]), spark=spark,
        progress=progress)

    results: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for variant in v.variants:
        data = inside(root, "variants", dir_name(variant.name))
        summary = run_curation(_sub_config(cfg, data, variant.stages + variant_tail_stages(variant, v, tokenizer)),
                               spark=spark, progress=progress, start=base)
        export = next(r for r in summary.stages if r.stage == "export").stats
        tcfgs = []
        for seed in v.seeds:
            extra = dict(v.train)
            if variant.layout == "concat":
                extra.setdefault("tokens_per_batch", max(1, v.tokens_per_batch // variant.seq_len) * variant.seq_len)
            if v.parallel > 1:   # the cores shared among the runs trained at once
                cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
                extra.setdefault("threads", max(1, cores // v.parallel))
            tcfgs.append(TrainConfig(data=str(data),
                                     output=str(inside(root, "runs", dir_name(variant.name), f"seed_{seed}")),
                                     tokens=v.tokens, **{"tokens_per_batch": v.tokens_per_batch, **extra},
                                     model=dict(v.model), tokenizer=tokenizer, heldout=str(heldout),
                                     eval_max_tokens=v.eval_max_tokens, seed=seed, resume=False,
                                     schedule=variant.schedule))
        runs[variant.name] = _train_seeds(tcfgs, v.parallel, output, data, heldout, tokenizer, progress,
                                          [f"train {variant.name} seed {seed}" for seed in v.seeds])
        results[variant.name] = {**_summarize(runs[variant.name], summary, export), "seeds": list(v.seeds)}
    out = _compare(results, [x.name for x in v.variants])
    (output / "validate.json").write_text(json.dumps(out, indent=2) + "\n")
    plot = _plot(runs, output / "plots" / "validate-loss.png")
    _append_report(output / "report.md", out, plot)
    from .report_html import write_html_from_manifest

    write_html_from_manifest(output)  # with the validation section
    return out


# Bumped when a (variant, seed) run's result changes for the same data and settings.
RUN_VERSION = 1


def _files_key(root: Path) -> str:
    """A key of a Parquet directory's files (names and xxh3-128 of their bytes)."""
    from pipelines.read_kernel import file_fingerprint

    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    return digest([[str(p.relative_to(root)), file_fingerprint(str(p))["xxh3_128"]] for p in files])


def _last_key(run_output: Path) -> str | None:
    """The key of a curation run's last step (it covers every step before it)."""
    records = RunState(run_output).records()
    return records[max(records)]["key"] if records else None


def _train_seeds(tcfgs: list, parallel: int, output: Path, data: Path, heldout: Path, tokenizer: str, progress,
                 names: list[str]) -> list[dict]:
    """Each seed's run (`_train_or_reuse`), in seed order. With ``parallel > 1`` up to that many
    train at once, each in its own spawned process, for machines with more cores than one small
    model's training keeps busy (on 2 cores two one-thread runs side by side took as long as two
    two-thread runs one after the other); their progress shows when each ends."""
    if parallel <= 1 or len(tcfgs) <= 1:
        return [_train_or_reuse(t, output, data, heldout, tokenizer, progress, n) for t, n in zip(tcfgs, names)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(parallel, len(tcfgs)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_or_reuse, t, output, data, heldout, tokenizer, None, n)
                   for t, n in zip(tcfgs, names)]
        results = []
        for future, tcfg, name in zip(futures, tcfgs, names):
            results.append(future.result())
            if progress is not None and hasattr(progress, "run_started"):
                progress.run_started(name, tcfg.steps)
                progress.run_advanced(name, tcfg.steps, "done (trained beside the other seeds)")
    return results


def _train_or_reuse(tcfg, output: Path, data: Path, heldout: Path, tokenizer: str, progress, name: str) -> dict:
    """`training.loop.train`, or the saved result of an earlier identical run (`run.key`)."""
    from pipelines.read_kernel import file_fingerprint
    from training.loop import train

    key = digest({"version": RUN_VERSION, "config": canonical(tcfg, str(output)), "data": _last_key(data),
                  "heldout": _last_key(heldout), "tokenizer": file_fingerprint(tokenizer)["xxh3_128"]})
    run = Path(tcfg.output)
    mark, started, result = run / "run.key", run / "started.key", run / "train.json"
    if mark.is_file() and result.is_file() and mark.read_text().strip() == key:
        if progress is not None and hasattr(progress, "run_started"):
            progress.run_started(name, 1)
            progress.run_advanced(name, 1, "skipped, unchanged")
        return json.loads(result.read_text())
    # the same run killed half-way resumes from its last checkpoint; any other starts clean
    same = started.is_file() and started.read_text().strip() == key
    if not same:
        shutil.rmtree(run, ignore_errors=True)
    mark.unlink(missing_ok=True)
    run.mkdir(parents=True, exist_ok=True)
    started.write_text(key + "\n")
    out = train(replace(tcfg, resume=same), on_step=_progress_hook(progress, name, tcfg.steps))
    mark.write_text(key + "\n")
    return out


def _progress_hook(progress, name: str, steps: int):
    if progress is None or not hasattr(progress, "run_started"):
        return None
    progress.run_started(name, steps)
    return lambda step, loss: progress.run_advanced(name, step, f"step {step:,}/{steps:,}  loss {loss:.3f}")


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _summarize(runs: list[dict[str, Any]], summary, export: dict[str, Any]) -> dict[str, Any]:
    loss, loss_sd = _mean_std([r["heldout"]["loss"] for r in runs])
    bpb, bpb_sd = _mean_std([r["heldout"]["bpb"] for r in runs])
    domains = sorted(runs[0]["heldout"]["per_domain"])
    per_domain = {}
    for d in domains:
        dl, dl_sd = _mean_std([r["heldout"]["per_domain"][d]["loss"] for r in runs])
        db, db_sd = _mean_std([r["heldout"]["per_domain"][d]["bpb"] for r in runs])
        per_domain[d] = {"loss": dl, "loss_std": dl_sd, "bpb": db, "bpb_std": db_sd,
                         "seeds_loss": [r["heldout"]["per_domain"][d]["loss"] for r in runs]}
    return {
        "heldout_loss": loss, "heldout_loss_std": loss_sd, "heldout_bpb": bpb, "heldout_bpb_std": bpb_sd,
        "per_domain": per_domain, "tokens": runs[0]["tokens"],
        "seconds": round(sum(r["seconds"] for r in runs) / len(runs), 2),
        "parameters": runs[0]["parameters"],
        "documents": summary.stages[-1].kept,
        "data_tokens": sum(g["tokens"] for g in export.get("datasets", {}).values()),
        "seeds_loss": [r["heldout"]["loss"] for r in runs],
    }


def _verdict(a: list[float], b: list[float]) -> dict[str, Any]:
    ma, sa = _mean_std(a)
    mb, sb = _mean_std(b)
    se = math.sqrt(sa * sa / len(a) + sb * sb / len(b))
    diff = mb - ma
    return {"difference": diff, "standard_error": se,
            "verdict": "within noise" if abs(diff) <= 2 * se else ("lower" if diff < 0 else "higher")}


def _compare(results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`results` with every variant after the first compared with the first (`compared_with`,
    `comparison`), on the overall held-out loss and per domain."""
    first = names[0]
    out = {first: results[first]}
    for name in names[1:]:
        a, b = results[first], results[name]
        out[name] = {**b, "compared_with": first, "comparison": {
            "heldout_loss": _verdict(a["seeds_loss"], b["seeds_loss"]),
            "per_domain": {d: _verdict(a["per_domain"][d]["seeds_loss"], b["per_domain"][d]["seeds_loss"])
                           for d in a["per_domain"] if d in b["per_domain"]},
        }}
    return out


def report_lines(variants: dict[str, Any]) -> list[str]:
    """The report's Validation section for the contents of validate.json."""
    domains = sorted({d for r in variants.values() for d in r["per_domain"]})
    first = next(iter(variants.values()))
    lines = ["", "## Validation", "",
             f"{len(first['seeds'])} seeds per variant, {first['tokens']:,} training tokens each; held-out loss "
             "(nats per token) and bits per byte as mean ± standard deviation over seeds.", "",
             "| variant | documents | data tokens | held-out loss | held-out bpb | "
             + " | ".join(f"{d} bpb" for d in domains) + " | seconds per run |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(domains) + "---:|"]
    for name, r in variants.items():
        cells = [f"{r['per_domain'][d]['bpb']:.3f} ± {r['per_domain'][d]['bpb_std']:.3f}" if d in r["per_domain"]
                 else "-" for d in domains]
        lines.append(f"| {name} | {r['documents']:,} | {r['data_tokens']:,} | {r['heldout_loss']:.4f} ± "
                     f"{r['heldout_loss_std']:.4f} | {r['heldout_bpb']:.4f} ± {r['heldout_bpb_std']:.4f} | "
                     + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    for name, r in variants.items():
        if "comparison" not in r:
            continue
        c = r["comparison"]
        h = c["heldout_loss"]
        per = "; ".join(f"{d} {v['difference']:+.4f} ({v['verdict']})" for d, v in c["per_domain"].items())
        lines += ["", f"- **{name} vs {r['compared_with']}**: held-out loss {h['difference']:+.4f} ± {h['standard_error']:.4f} "
                      f"({h['verdict']}); per domain: {per}"]
    lines += ["", "![training loss of every run](plots/validate-loss.png)"]
    return lines


def _append_report(path: Path, out: dict[str, Any], plot: Path | None) -> None:
    text = path.read_text() if path.exists() else "# Winnow validate\n"
    marker = "\n## Validation\n"
    if marker in text:
        text = text[:text.index(marker)] + "\n"
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(report_lines(out)) + "\n")


def _plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    for k, (name, rs) in enumerate(runs.items()):
        for j, r in enumerate(rs):
            xs = [c[1] for c in r["curve"]]
            ys = [c[2] for c in r["curve"]]
            ax.plot(xs, ys, color=colors[k % len(colors)], alpha=0.8, linewidth=1,
                    label=name if j == 0 else None)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title("validate: training loss per variant (one line per seed)")
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
