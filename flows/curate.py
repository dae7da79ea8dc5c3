"""The curation flow: read -> configured stages -> write, each stage a Prefect task.

`run_curation(cfg, spark=...)` is the in-process entry point (tests pass their SparkSession);
the CLI calls it too. Stages hand data to each other as Parquet under `<output>/_work/`, which
cuts Spark lineage between stages and gives exact counts from file metadata; `_work` is removed
when the run succeeds. Accounting is checked after every stage: `in = kept + removed`.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from core.errors import AccountingError, ConfigError, WinnowError
from pipelines import READ_COLUMNS, STAGES, check_columns, read, write
from pipelines.stage import StageContext, StageResult, removed_by_reason

from .config import RunConfig, input_specs, plans, train_specs, write_params
from .output import claim, locked, prepare
from .report import STAGE_HEADER, StageRecord, code_version, report_markdown, stage_table_rows, write_manifest, write_plots

# What every run writes at the top of its output directory (claimed before it is written).
RUN_ENTRIES = ("_work", "removed", "kept", "plots", "manifest.json", "report.md")


class Progress(Protocol):
    def stage_started(self, name: str) -> None: ...
    def stage_finished(self, record: StageRecord) -> None: ...


@dataclass
class RunSummary:
    output: Path
    stages: list[StageRecord]
    manifest: dict[str, Any]


# Live objects (SparkSession, progress display) cannot be flow parameters: Prefect stores
# parameters as JSON. The flow takes a key into this table instead.
_LIVE: dict[str, dict[str, Any]] = {}


def _count(path: str) -> int:
    """Rows of a Parquet directory this run wrote (on the output's file system), summed from its
    files' footers on the driver: no Spark job, and no schema inference."""
    import pyarrow.parquet as pq

    root = Path(path)
    files = [root] if root.is_file() else [
        f for f in root.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in f.relative_to(root).parts)
    ]
    return sum(pq.read_metadata(f).num_rows for f in files)


def _read(spark, path: str, schema):
    """The Parquet this run wrote from a frame of `schema`: read with it, not inferred (a job)."""
    return spark.read.schema(schema).parquet(path)


def _stage_task(label: str, fn: Callable[..., StageRecord]):
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, name=label, cache_policy=NO_CACHE, persist_result=False)


def _run_stage(
    key: str, label: str, stage: str, apply: Callable[..., StageResult], params: Any,
    in_path: str | None, n_in: int | None, work_path: str, then_write: write.WriteParams | None = None,
) -> list[StageRecord]:
    """Run one stage and record it. With `then_write` (the run's write step follows and nothing
    else reads this stage's output), its kept rows go straight to `kept/` instead of through
    `_work/`, and the write step's record comes back too (its seconds are in this stage's: the
    stage's lazy work happens while the rows are written)."""
    live = _LIVE[key]
    spark, output, progress = live["spark"], live["output"], live["progress"]
    ctx = StageContext(spark=spark, seed=live["seed"], claim=lambda *paths: claim(output, *paths),
                       output=str(output))
    if progress:
        progress.stage_started(label)
    _describe_jobs(spark, f"winnow stage {label}")
    start = time.perf_counter()
    schemas = live.setdefault("schemas", {})  # what each Parquet of this run was written from
    df = (_read(spark, in_path, schemas[in_path]) if in_path in schemas else spark.read.parquet(in_path)) if in_path else None
    result = apply(df, params, ctx)
    removed_path = str(output / "removed" / label)
    removed_frame = write.for_output(result.removed)
    write.write_parquet(removed_frame, removed_path, compression="zstd")
    fused = then_write is not None and result.stats_after_write is None
    if fused:
        written = write.apply(result.kept, then_write, ctx)
        kept = _count(then_write.path)
    elif stage != write.NAME:
        write.write_parquet(result.kept, work_path, compression="zstd")
        schemas[work_path] = result.kept.schema
        kept = _count(work_path)
        result.finish(_read(spark, work_path, result.kept.schema), _read(spark, removed_path, removed_frame.schema))
    else:
        kept = _count(result.stats["path"])
    ctx.release()
    removed = _count(removed_path)
    if removed:  # per kind of reason (pipelines.stage): a few rows, whatever the stage
        result.stats["removed_by_reason"] = removed_by_reason(_read(spark, removed_path, removed_frame.schema))
    if n_in is None:  # `read` starts the run: everything it saw is kept or removed
        n_in = kept + removed
    record = StageRecord(
        name=label, stage=stage, n_in=n_in, kept=kept, removed=removed,
        seconds=time.perf_counter() - start,
        removed_path=str(Path("removed") / label) if removed else None, stats=result.stats,
    )
    if n_in != kept + removed:
        raise AccountingError(f"stage {label}: in {n_in} != kept {kept} + removed {removed}")
    if not removed:
        shutil.rmtree(removed_path, ignore_errors=True)
    if progress:
        progress.stage_finished(record)
    records = [record]
    if fused:
        stats = {**written.stats, "written_by": label}
        records.append(StageRecord(name=write.NAME, stage=write.NAME, n_in=kept, kept=kept, removed=0,
                                   seconds=0.0, removed_path=None, stats=stats))
        if progress:
            progress.stage_started(write.NAME)
            progress.stage_finished(records[-1])
    _describe_jobs(spark, None)
    return records


def _describe_jobs(spark, text: str | None) -> None:
    """Name the Spark jobs that follow (the Spark UI and event log show it); not on Spark Connect."""
    try:
        spark.sparkContext.setJobDescription(text)
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext
        pass


def _curate(key: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The body of the Prefect flow `winnow-curate`."""
    live = _LIVE[key]
    cfg: RunConfig = live["cfg"]
    output: Path = live["output"]
    work = output / "_work"
    start: str | None = live.get("start")
    steps: list[tuple[str, str, Callable[..., StageResult], Any]] = [] if start else [
        (read.NAME, read.NAME, read.apply, read.ReadParams(input_specs(cfg)))
    ]
    steps += [(p.label, p.name, STAGES[p.name].apply, p.params) for p in live["plans"]]
    steps.append((write.NAME, write.NAME, write.apply, write_params(cfg, str(output))))
    records: list[StageRecord] = []
    in_path: str | None = start
    first_in = _count(start) if start else None
    keep = live.get("keep")
    i = 0
    while i < len(steps):
        label, stage, apply, params = steps[i]
        work_path = str(work / f"{i:02d}-{label}")
        n_in = records[-1].kept if records else first_in
        kept_for_later = bool(keep and keep[0] == label)
        # the last stage before write hands its rows straight to it, unless validate keeps them
        then_write = steps[i + 1][3] if i + 2 == len(steps) and not kept_for_later else None
        done = _stage_task(label, _run_stage)(key, label, stage, apply, params, in_path, n_in, work_path, then_write)
        records.extend(done)
        i += len(done)
        in_path = work_path
        if kept_for_later:  # a stage's output that a later step (validate) starts from
            claim(output, keep[1])
            Path(keep[1]).parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(keep[1], ignore_errors=True)
            shutil.copytree(work_path, keep[1])
    live["records"] = records
    try:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(
            key="winnow-stages",
            table=[dict(zip(STAGE_HEADER, row)) for row in stage_table_rows(records)],
            description=f"Winnow stages for {output}",
        )
    except Exception:  # noqa: BLE001 - an artifact is a convenience, never a reason to fail a run
        pass
    return [r.as_json() for r in records]


def check_train_outputs(cfg: RunConfig) -> None:
    """A [[train]] model file that exists is replaced only when overwriting (as train-scorer)."""
    for spec in train_specs(cfg):
        if Path(spec.output).exists() and not cfg.overwrite:
            raise WinnowError(f"[[train]] output {os.path.normpath(spec.output)} exists; "
                              "pass --overwrite to replace it")


def _train_and_check(cfg: RunConfig, stage_plans: list, spark, progress) -> list[dict[str, Any]]:
    """Train the [[train]] scorers, then load every configured scorer: before any input is read."""
    from pipelines.score import check_scorers

    from .train import train_scorer

    reports = []
    for spec in train_specs(cfg):
        claim(cfg.output, spec.output)  # recorded when it is inside the output directory
        if progress:
            progress.stage_started(f"train {spec.kind}")
        report = train_scorer(spark, spec, log=lambda *a: None)
        reports.append(report)
        if progress and hasattr(progress, "training_finished"):
            progress.training_finished(f"train {spec.kind}", report)
    output = str(Path(cfg.output).resolve())
    for p in stage_plans:
        if p.name == "score":
            check_scorers(p.params.specs(output))
    return reports


def _start_columns(start: str | None) -> list[str]:
    """The columns the first configured stage gets: the read documents', or those of the Parquet
    a run starts from (its schema, from the file footers)."""
    if not start:
        return list(READ_COLUMNS)
    import pyarrow.dataset as pads

    return list(pads.dataset(start, format="parquet").schema.names)


def _start_prefect() -> threading.Thread:
    """Reach Prefect's API in a thread: in ephemeral mode (no PREFECT_API_URL) that starts the
    local server, about 5 s, which then overlaps the JVM's start instead of following it. A
    failure here is left to the flow run, which reports it."""

    def hello() -> None:
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                client.hello()
        except Exception:  # noqa: BLE001 - the flow run meets and reports the same failure
            pass

    thread = threading.Thread(target=hello, name="winnow-prefect-start", daemon=True)
    thread.start()
    return thread


def _flow():
    from prefect import flow

    return flow(_curate, name="winnow-curate", persist_result=False, log_prints=False,
                validate_parameters=False)


def run_curation(cfg: RunConfig, spark=None, progress: Progress | None = None, *, start: str | None = None,
                 keep: tuple[str, str] | None = None) -> RunSummary:
    """Run the configured flow to completion and write manifest.json and report.md.

    `start`: the Parquet output of an earlier run's stage to begin from instead of reading the
    inputs (the inputs, [[train]] and fingerprints are then skipped). `keep`: (stage label,
    directory): a copy of that stage's kept rows, with every column, is left in the directory.
    A second run on the same output while this one runs is refused (`output.locked`)."""
    output = Path(cfg.output).resolve()
    # a missing input or unknown format fails here, before Spark starts
    files, skipped = read.expand_inputs_and_skips(input_specs(cfg)) if not start else ([], [])
    # so does a stage that needs a column no stage before it adds
    stage_plans = plans(cfg)
    final = check_columns([(p.label, p.name, p.params) for p in stage_plans], _start_columns(start))
    _check_write_columns(cfg, final)
    engine, why = _engine(cfg, stage_plans, files, spark, start, keep)  # refuses an impossible engine = local
    with locked(output):  # one run at a time in an output directory
        return _run_locked(cfg, output, files, skipped, stage_plans, engine, why, spark, progress, start, keep)


def _run_locked(cfg: RunConfig, output: Path, files, skipped, stage_plans, engine: str, why: str, spark,
                progress: Progress | None, start: str | None, keep: tuple[str, str] | None) -> RunSummary:
    from pipelines.spark import get_spark, session_settings

    prepare(output, cfg.overwrite)  # refuses before it deletes anything
    if not start:
        check_train_outputs(cfg)
    claim(output, *RUN_ENTRIES)
    if engine == "local":
        return _run_local(cfg, files, skipped, stage_plans, output, progress, why)
    if spark is None:
        prefect_ready = _start_prefect()  # its API starts while the JVM does
        spark = get_spark(cfg.spark.master, shuffle_partitions=cfg.spark.shuffle_partitions,
                          driver_memory=cfg.spark.driver_memory, conf=cfg.spark.conf)
        prefect_ready.join()
    started = dt.datetime.now(dt.timezone.utc)
    training = [] if start else _train_and_check(cfg, stage_plans, spark, progress)
    key = uuid.uuid4().hex
    _LIVE[key] = {"cfg": cfg, "plans": stage_plans, "spark": spark, "output": output, "progress": progress,
                  "seed": cfg.seed, "start": start, "keep": keep}
    try:
        _flow()(key, cfg.model_dump(mode="json"))
        records: list[StageRecord] = _LIVE[key]["records"]
        ctx = StageContext(spark=spark, seed=cfg.seed)
        prints = read.fingerprints(ctx, files) if files else []
    finally:
        _LIVE.pop(key, None)
    shutil.rmtree(output / "_work", ignore_errors=True)
    extra = {"spark": session_settings(spark), **({"started_from": start} if start else {})}
    return _finish(cfg, output, started, records, training, prints, {"name": "spark", "why": why}, extra)


def _check_write_columns(cfg: RunConfig, columns: list[str]) -> None:
    """[write] columns that match none of the columns the run ends with would write rows with no
    columns: one ConfigError line before anything is read."""
    from fnmatch import fnmatchcase

    patterns = cfg.write.columns
    shown = [c for c in columns if not c.startswith("_")]
    if patterns and not any(fnmatchcase(c, p) for c in shown for p in patterns):
        raise ConfigError(f"[write] columns {list(patterns)} match none of the columns the run writes "
                          f"({', '.join(shown)})")


def _finish(cfg: RunConfig, output: Path, started: dt.datetime, records: list[StageRecord], training: list,
            prints: list[dict], engine: dict[str, Any], extra: dict[str, Any]) -> RunSummary:
    """manifest.json, report.md and the plots of a finished run, whichever engine ran it."""
    manifest = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "output": str(output),
        "code_version": code_version(),
        "counts": {"in": records[0].n_in, "kept": records[-1].kept,
                   "removed": sum(r.removed for r in records)},
        "stages": [r.as_json() for r in records],
        "training": training,
        "inputs": prints,
        "engine": engine,
        **extra,
        "config": cfg.model_dump(mode="json", by_alias=True),
    }
    write_plots(records, output)
    write_manifest(output / "manifest.json", manifest)
    (output / "report.md").write_text(report_markdown(records, manifest))
    return RunSummary(output=output, stages=records, manifest=manifest)


def _engine(cfg: RunConfig, stage_plans: list, files: list, spark, start: str | None,
            keep: tuple[str, str] | None) -> tuple[str, str]:
    """(engine, why) of this run (`pipelines.local_engine.choose`): a run given a SparkSession, one
    that starts from an earlier stage's output or keeps one for validate, runs on Spark."""
    from pipelines.local_engine import choose, text_bytes

    if cfg.engine == "auto" and (spark is not None or start or keep):
        return "spark", "a SparkSession is given" if spark is not None else "the run resumes or keeps a stage"
    other = ("the run trains a scorer ([[train]])" if cfg.train else
             "the run keeps a stage for validate or resumes one" if start or keep or cfg.validate_ is not None else None)
    return choose(cfg.engine, cfg.spark.master, [(p.name, p.params) for p in stage_plans], text_bytes(files), other)


def _run_local(cfg: RunConfig, files: list, skipped: list[str], stage_plans: list, output: Path,
               progress: Progress | None, why: str) -> RunSummary:
    """The run on the local engine (no JVM, no Prefect server): same outputs, manifest and report."""
    from pipelines import local_engine
    from pipelines.read_kernel import file_fingerprint

    started = dt.datetime.now(dt.timezone.utc)
    wp = write_params(cfg, str(output))
    dedup = (stage_plans[0].label, stage_plans[0].params) if stage_plans else None

    def say(name: str, stage) -> None:
        if progress is None:
            return
        if stage is None:
            progress.stage_started(name)
        else:
            progress.stage_finished(_record(stage))

    n = local_engine.workers(cfg.spark.master)
    try:
        stages = local_engine.run(files, skipped, dedup, output, wp.compression, wp.max_records_per_file,
                                  tuple(wp.columns), progress=say, n_workers=n)
    finally:
        shutil.rmtree(output / "_work", ignore_errors=True)
    records = [_record(s) for s in stages]
    for r in records:
        if r.n_in != r.kept + r.removed:
            raise AccountingError(f"stage {r.name}: in {r.n_in} != kept {r.kept} + removed {r.removed}")
    prints = sorted((file_fingerprint(p) for p in sorted({f.path for f in files})), key=lambda r: r["path"])
    return _finish(cfg, output, started, records, [], prints, {"name": "local", "why": why, "workers": n}, {})


def _record(stage) -> StageRecord:
    return StageRecord(name=stage.name, stage=stage.stage, n_in=stage.n_in, kept=stage.kept,
                       removed=stage.removed, seconds=stage.seconds,
                       removed_path=str(Path("removed") / stage.name) if stage.removed and stage.stage != "write" else None,
                       stats=stage.stats)
