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
        [r.name, f"{r.n_in:,}", f"{r.kept:,}", f"{r.removed:,}", f"{r.seconds:.1f}"] for r in records
    ]


STAGE_HEADER = ["stage", "in", "kept", "removed", "seconds"]


def report_markdown(records: list[StageRecord], manifest: dict[str, Any]) -> str:
    lines = ["# Winnow run report", ""]
    lines.append(f"- started: {manifest['started_at']}  ")
    lines.append(f"- finished: {manifest['finished_at']}  ")
    lines.append(f"- output: `{manifest['output']}`  ")
    lines.append(f"- code: winnow {manifest['code_version'].get('winnow')}"
                 + (f", commit {manifest['code_version']['git_commit'][:12]}" if "git_commit" in manifest["code_version"] else ""))
    lines += ["", "## Stages", "", "Every stage satisfies `in = kept + removed` (documents).", ""]
    lines.append("| " + " | ".join(STAGE_HEADER) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(STAGE_HEADER) - 1)) + "|")
    for row in stage_table_rows(records):
        lines.append("| " + " | ".join(row) + " |")
    details = [r for r in records if r.stats]
    if details:
        lines += ["", "## Stage details", ""]
        for r in details:
            stats = ", ".join(f"{k} = {v}" for k, v in r.stats.items())
            lines.append(f"- **{r.name}**: {stats}")
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
