"""The run's manifest.json and report.md: small dicts and text, no Spark."""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class StageRecord:
    name: str                 # label: the stage name, or name-2 when a stage repeats
    stage: str                # registry name
    n_in: int
    kept: int
    removed: int
    seconds: float
    removed_path: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None  # "ran: <why>" or "skipped: unchanged" (flows/state.py)
    added: int = 0            # rows the stage made beyond its input (rephrase's synthetic documents)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["in"] = d.pop("n_in")
        return d


def code_version() -> dict[str, Any]:
    out: dict[str, Any] = {"winnow": metadata.version("winnow")}
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5,
            )
            out["git_dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def stage_table_rows(records: list[StageRecord]) -> list[list[str]]:
    return [
        [r.name, f"{r.n_in:,}", f"{r.added:,}", f"{r.kept:,}", f"{r.removed:,}", f"{r.seconds:.1f}"] for r in records
    ]


STAGE_HEADER = ["stage", "in", "added", "kept", "removed", "seconds"]
STYLE_HEADER = ["style", "documents", "kept", "removed", "requests", "cached", "tokens in", "tokens out", "retries",
                "truncated", "wall s", "tokens/s out"]


def style_table_rows(per_style: dict[str, dict[str, Any]]) -> list[list[str]]:
    """rephrase's per-style figures (pipelines.rephrase.per_style) as table rows."""
    rows = []
    for style, s in per_style.items():
        wall = s.get("wall_seconds") or 0.0
        rows.append([style, f"{s['documents']:,}", f"{s['kept']:,}", f"{s['removed']:,}", f"{s['requests']:,}",
                     f"{s['cached']:,}", f"{s['tokens_in']:,}", f"{s['tokens_out']:,}", f"{s['retries']:,}",
                     f"{s['truncation_rate']:.2%}", f"{wall:.1f}", f"{s['tokens_out'] / wall:,.0f}" if wall else ""])
    return rows
ACCOUNTING = "in + added = kept + removed"


def report_markdown(records: list[StageRecord], manifest: dict[str, Any]) -> str:
    lines = ["# Winnow run report", ""]
    lines.append(f"- started: {manifest['started_at']}  ")
    lines.append(f"- finished: {manifest['finished_at']}  ")
    lines.append(f"- output: `{manifest['output']}`  ")
    lines.append(f"- code: winnow {manifest['code_version'].get('winnow')}"
                 + (f", commit {manifest['code_version']['git_commit'][:12]}" if "git_commit" in manifest["code_version"] else ""))
    lines += ["", "## Stages", "", f"Every stage satisfies `{ACCOUNTING}` (documents; only `rephrase` adds).", ""]
    lines.append("| " + " | ".join(STAGE_HEADER) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(STAGE_HEADER) - 1)) + "|")
    for row in stage_table_rows(records):
        lines.append("| " + " | ".join(row) + " |")
    if any(r.resume for r in records):
        lines += ["", "## Resume", "",
                  "A step is skipped when its key (inputs' contents, its parameters and those of every step "
                  "before it, its code version) matches the saved run's; `winnow status OUTPUT` shows the same "
                  "without running anything.", "", "| stage | decision |", "|---|---|"]
        lines += [f"| {r.name} | {r.resume or ''} |" for r in records]
    details = [r for r in records if r.stats]
    if details:
        lines += ["", "## Stage details", ""]
        for r in details:
            stats = ", ".join(f"{k} = {v}" for k, v in r.stats.items() if not isinstance(v, dict))
            lines.append(f"- **{r.name}**: {stats}")
        for r in details:
            sizes = r.stats.get("component_sizes")
            if sizes is None:
                continue
            lines += ["", f"### {r.name}: near-duplicate component sizes", ""]
            if not sizes:  # nothing to tabulate or plot
                lines.append("No near-duplicates: no document is in a component.")
                continue
            lines += ["| component size | components | documents | removed |", "|---:|---:|---:|---:|"]
            for size, count in sorted((int(k), int(v)) for k, v in sizes.items()):
                lines.append(f"| {size:,} | {count:,} | {size * count:,} | {(size - 1) * count:,} |")
            plot = plot_name(r.name)
            lines += ["", f"![component sizes of {r.name}](plots/{plot})"]
        for r in details:
            quantiles = r.stats.get("score_quantiles")
            if not quantiles:
                continue
            qs = sorted({q for qv in quantiles.values() for q in qv}, key=float)
            lines += ["", f"### {r.name}: score quantiles", ""]
            lines.append("| score | " + " | ".join(f"q{q}" for q in qs) + " |")
            lines.append("|---|" + "---:|" * len(qs))
            for col, qv in quantiles.items():
                lines.append(f"| {col} | " + " | ".join(f"{qv[q]:.4g}" if q in qv else "" for q in qs) + " |")
            for col in quantiles:
                lines += ["", f"![{col} histogram](plots/{histogram_name(r.name, col)})"]
        for r in details:
            groups = r.stats.get("groups")   # select with `by`: each group's share and cut
            if not isinstance(groups, dict) or not groups:
                continue
            cols = [c for c in ("cut", "lower_edge", "upper_edge") if any(c in g for g in groups.values())]
            lines += ["", f"### {r.name}: per {r.stats.get('by', 'group')}", "",
                      "| " + " | ".join([str(r.stats.get("by", "group")), "documents", "kept", *cols]) + " |",
                      "|---|---:|---:|" + "---:|" * len(cols)]
            for name, g in groups.items():
                cells = [str(name).replace("|", "\\|"), f"{g.get('documents', 0):,}", f"{g.get('kept', 0):,}"]
                cells += ["" if g.get(c) is None else f"{g[c]:.4g}" for c in cols]
                lines.append("| " + " | ".join(cells) + " |")
        for r in details:
            per_style = r.stats.get("per_style")   # rephrase: requests, tokens and time per style
            if not isinstance(per_style, dict) or not per_style:
                continue
            lines += ["", f"### {r.name}: per style", "",
                      "Requests sent (cached answers are not sent again), tokens as the server counted them, "
                      "retries, the share of answers cut at max_tokens, and wall time from the style's first "
                      "request to its last answer.", "",
                      "| " + " | ".join(STYLE_HEADER) + " |", "|---|" + "---:|" * (len(STYLE_HEADER) - 1)]
            lines += ["| " + " | ".join(row) + " |" for row in style_table_rows(per_style)]
        for r in details:
            by_reason = r.stats.get("removed_by_reason")
            if not by_reason:
                continue
            lines += ["", f"### {r.name}: removed documents by reason", "",
                      "| reason | removed |", "|---|---:|"]
            lines += ["| " + kind.replace("|", "\\|") + f" | {n:,} |" for kind, n in by_reason.items()]
        for r in details:
            for key, title in (("buckets", "sequences and tokens per bucket"), ("datasets", "training shards")):
                table = r.stats.get(key)
                if not isinstance(table, dict):
                    continue
                lines += ["", f"### {r.name}: {title}", "", "| " + ("bucket" if key == "buckets" else "dataset")
                          + " | sequences | tokens |", "|---|---:|---:|"]
                lines += [f"| {name} | {v['sequences']:,} | {v['tokens']:,} |" for name, v in table.items()]
            if r.stats.get("mixture_table"):
                lines += ["", f"### {r.name}: what the mixture yields", "", "```", r.stats["mixture_table"].rstrip(), "```"]
            if r.stats.get("schedule"):
                lines += ["", f"### {r.name}: domain weights over training", "",
                          f"![schedule of {r.name}](plots/{schedule_name(r.name)})"]
    training = manifest.get("training") or []
    if training:
        lines += ["", "## Trained models", ""]
        lines += ["| kind | model | trained on | MB | held-out | seconds | model facts |",
                  "|---|---|---|---:|---|---:|---|"]
        for t in training:
            facts = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                              for k, v in t.get("model", {}).items() if isinstance(v, (int, float, str)))
            summary = t.get("summary") or (f"{t['positives']['trained']:,} positives, "
                                           f"{t['negatives']['trained']:,} negatives")
            held = t.get("heldout") if isinstance(t.get("heldout"), str) else f"ROC-AUC {t.get('heldout_roc_auc')}"
            lines.append(f"| {t['kind']} | `{t['output']}` | {summary} | {t['model_bytes'] / 1e6:.1f} | {held} "
                         f"| {t['seconds']} | {facts} |")
    removed = [r for r in records if r.removed_path]
    if removed:
        lines += ["", "## Removed rows", ""]
        for r in removed:
            lines.append(f"- {r.name}: {r.removed:,} rows in `{r.removed_path}`")
    lines += ["", "## Inputs", "", "| path | bytes | xxh3-128 |", "|---|---:|---|"]
    for f in manifest["inputs"]:
        lines.append(f"| `{f['path']}` | {f['bytes']:,} | `{f['xxh3_128']}` |")
    return "\n".join(lines) + "\n"


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")


def plot_name(label: str) -> str:
    return f"{label}-component-sizes.png"


def histogram_name(label: str, column: str) -> str:
    from mixers.dirnames import dir_name

    return dir_name(f"{label}-{column}-histogram.png")  # a column is named after a scorer


def schedule_name(label: str) -> str:
    return f"{label}-schedule.png"


def write_plots(records: list[StageRecord], output: Path) -> list[Path]:
    """A log-log plot of the component-size distribution of each stage that reports one, a
    histogram of every score a stage reports, and the domain weights over training of each
    mixture schedule."""
    written = []
    for r in records:
        if r.stats.get("schedule"):
            from mixers.schedule import Schedule

            schedule = Schedule.from_json(r.stats["schedule"])
            written.append(schedule.plot(output / "plots" / schedule_name(r.name),
                                         title=f"{r.name}: {schedule.kind} schedule"))
    for r in records:
        for col, hist in (r.stats.get("score_histograms") or {}).items():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            edges, counts = hist["edges"], hist["counts"]
            fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
            if counts:
                ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge",
                       color="#4c72b0", edgecolor="white")
            ax.set_xlabel(col)
            ax.set_ylabel("documents")
            ax.set_title(f"{r.name}: {col} ({sum(counts):,} documents)")
            fig.tight_layout()
            path = output / "plots" / histogram_name(r.name, col)
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    for r in records:
        sizes = r.stats.get("component_sizes")
        if not sizes:  # None, or no component: the report says so, an empty chart would not
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pairs = sorted((int(k), int(v)) for k, v in sizes.items())
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if pairs:
            ax.bar([str(k) for k, _ in pairs], [v for _, v in pairs], color="#4c72b0")
            ax.set_yscale("log")
        ax.set_xlabel("documents in component")
        ax.set_ylabel("components")
        ax.set_title(f"{r.name}: near-duplicate components ({sum(v for _, v in pairs):,})")
        fig.tight_layout()
        path = output / "plots" / plot_name(r.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
