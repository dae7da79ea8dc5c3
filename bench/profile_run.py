"""Where a `winnow` command's time goes, job by job, from Spark's own event log.

    python bench/profile_run.py CONFIG.toml [--output DIR]      # a flow config, as `winnow run` takes
    python bench/profile_run.py --dedup FILE [--output DIR]      # what `winnow dedup FILE` runs

Runs the flow in this process with `spark.eventLog.enabled` (the log goes to a temporary
directory), then reads the log and prints one row per Spark job: the Winnow stage it ran in, the
line of Winnow code that started it, its wall time, tasks, and the bytes it read, shuffled and
wrote; then the totals per stage, the time outside Spark jobs, and the whole command's time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))


def events(log_dir: Path):
    """The JSON events of Spark's event log (Spark 4 writes a directory of `events_*` files,
    zstd-compressed unless spark.eventLog.compress is false)."""
    import io

    import zstandard

    for path in sorted(log_dir.rglob("events_*")):
        with open(path, "rb") as raw:
            stream = zstandard.ZstdDecompressor().stream_reader(raw) if path.suffix == ".zstd" else raw
            for line in io.TextIOWrapper(stream, encoding="utf-8"):
                if line.strip():
                    yield json.loads(line)


def jobs_of(log_dir: Path) -> list[dict]:
    """One dict per job: id, call site, start/end (ms), tasks and byte counts of its stages."""
    jobs: dict[int, dict] = {}
    stage_job: dict[int, int] = {}
    for e in events(log_dir):
        kind = e["Event"]
        if kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            infos = e.get("Stage Infos") or [{}]
            site = props.get("callSite.short") or infos[-1].get("Stage Name", "")
            jobs[e["Job ID"]] = {"id": e["Job ID"], "site": site, "start": e["Submission Time"], "end": None,
                                 "tasks": 0, "read": 0, "shuffle_read": 0, "shuffle_write": 0, "written": 0,
                                 "stage": (props.get("spark.job.description") or "").removeprefix("winnow stage ")
                                 or "(outside stages)"}
            for s in e.get("Stage IDs", []):
                stage_job[s] = e["Job ID"]
        elif kind == "SparkListenerJobEnd" and e["Job ID"] in jobs:
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
        elif kind == "SparkListenerTaskEnd":
            job = jobs.get(stage_job.get(e["Stage ID"], -1))
            metrics = e.get("Task Metrics") or {}
            if job is None or not metrics:
                continue
            job["tasks"] += 1
            job["read"] += (metrics.get("Input Metrics") or {}).get("Bytes Read", 0)
            sr = metrics.get("Shuffle Read Metrics") or {}
            job["shuffle_read"] += sr.get("Remote Bytes Read", 0) + sr.get("Local Bytes Read", 0)
            job["shuffle_write"] += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
            job["written"] += (metrics.get("Output Metrics") or {}).get("Bytes Written", 0)
    return sorted(jobs.values(), key=lambda j: j["start"])


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("--dedup", metavar="FILE", help="profile `winnow dedup FILE` instead of a config")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from flows.cli import _quiet_environment

    _quiet_environment(False)
    from flows.config import config_for_inputs, load_config, with_overrides
    from flows.curate import run_curation

    log_dir = Path(tempfile.mkdtemp(prefix="winnow-eventlog-"))
    output = args.output or tempfile.mkdtemp(prefix="winnow-profile-")
    if args.dedup:
        cfg = config_for_inputs([args.dedup], str(Path(output).resolve()))
        cfg = cfg.model_copy(update={"stages": [{"stage": "dedup_minhash", "threshold": 0.8}]})
    else:
        cfg = load_config(args.config)
    conf = {**cfg.spark.conf, "spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{log_dir}"}
    cfg = with_overrides(cfg.model_copy(update={"spark": cfg.spark.model_copy(update={"conf": conf})}),
                         output=output, overwrite=True)
    start = time.time()
    summary = run_curation(cfg)
    whole = time.time() - start
    from pyspark.sql import SparkSession

    SparkSession.getActiveSession().stop()  # flushes the event log

    windows = [(r.name, r.seconds) for r in summary.stages]
    jobs = jobs_of(log_dir)
    print("| job | winnow stage | Spark operation | seconds | tasks | MB read | MB shuffled (w/r) | MB written |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    per_stage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    in_jobs = 0.0
    for j in jobs:
        seconds = ((j["end"] or j["start"]) - j["start"]) / 1000
        in_jobs += seconds
        label = j["stage"]
        totals = per_stage[label]
        totals[0] += seconds
        totals[1] += 1
        totals[2] += j["shuffle_write"]
        totals[3] += j["read"]
        print(f"| {j['id']} | {label} | {j['site']} | {seconds:.2f} | {j['tasks']} | {mb(j['read'])} "
              f"| {mb(j['shuffle_write'])}/{mb(j['shuffle_read'])} | {mb(j['written'])} |")
    print()
    print("| winnow stage | stage seconds | jobs | seconds in jobs | MB shuffled |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in windows + [("(outside stages)", float("nan"))]:
        t = per_stage.get(name, [0.0, 0, 0, 0])
        print(f"| {name} | {seconds:.1f} | {t[1]} | {t[0]:.1f} | {mb(t[2])} |")
    print()
    print(f"whole run_curation: {whole:.1f} s; in Spark jobs: {in_jobs:.1f} s; stages: "
          f"{sum(s for _, s in windows):.1f} s")


if __name__ == "__main__":
    main()
