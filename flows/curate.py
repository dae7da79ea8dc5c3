"""The curation flow: read -> configured stages -> write, each stage a Prefect task.

`run_curation(cfg, spark=...)` is the in-process entry point (tests pass their SparkSession);
the CLI calls it too. Stages hand data to each other as Parquet under `<output>/_work/`, which
cuts Spark lineage between stages and gives exact counts from file metadata; `_work` is removed
when the run succeeds. Accounting is checked after every stage: `in + added = kept + removed`
(only `rephrase` adds rows).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
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
from .state import STATE, Decision, RunState, Step, canonical, chain, digest, named_files
from .report import STAGE_HEADER, StageRecord, code_version, report_markdown, stage_table_rows, write_manifest, write_plots

# What every run writes at the top of its output directory (claimed before it is written).
RUN_ENTRIES = ("_work", "removed", "kept", "plots", "manifest.json", "report.md", "report.html")


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


# A stage that fails for a reason that may pass (an I/O error, a lost Spark executor or
# connection) is tried again, up to this many more times, after RETRY_DELAY_SECONDS; an error
# the user must fix (WinnowError) or a bug is not.
TASK_RETRIES = 2
RETRY_DELAY_SECONDS = 10.0
_TRANSIENT_SPARK = re.compile(r"ExecutorLostFailure|FetchFailed|executor lost|Connection (reset|refused)|"
                              r"Broken pipe|RpcTimeoutException|SparkConnectGrpcException")


def transient(exc: BaseException) -> bool:
    """Whether a stage's failure may pass on a second try (see TASK_RETRIES)."""
    if isinstance(exc, WinnowError):
        return False
    if isinstance(exc, (OSError, TimeoutError)):  # ConnectionError is an OSError
        return True
    name = type(exc).__name__
    return name in ("Py4JNetworkError",) or (name in ("Py4JJavaError", "SparkConnectException")
                                             and bool(_TRANSIENT_SPARK.search(str(exc))))


def _retry_if_transient(task, task_run, state) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as raised:  # noqa: BLE001 - the state holds no result: look at what it raised
        exc = raised
    return isinstance(exc, BaseException) and transient(exc)


def _stage_task(label: str, fn: Callable[..., StageRecord]):
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, name=label, cache_policy=NO_CACHE, persist_result=False, retries=TASK_RETRIES,
                retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=_retry_if_transient)


def _attempt() -> int:
    """Which try of the running stage task this is (1 outside a Prefect task run)."""
    try:
        from prefect.runtime import task_run

        return int(task_run.run_count or 1)
    except Exception:  # noqa: BLE001
        return 1


def _run_stage(
    key: str, label: str, stage: str, apply: Callable[..., StageResult], params: Any,
    in_path: str | None, n_in: int | None, work_path: str, then_write: write.WriteParams | None = None,
) -> list[StageRecord]:
    """Run one stage and record it. With `then_write` (the run's write step follows and nothing
    else reads this stage's output), its kept rows go straight to `kept/` instead of through
    `_work/`, and the write step's record comes back too (its seconds are in this stage's: the
    stage's lazy work happens while the rows are written). Every output is written under a
    temporary name in `_work/` and renamed into place, so a run killed half-way leaves no partial
    directory under a final name."""
    live = _LIVE[key]
    spark, output, progress = live["spark"], live["output"], live["progress"]
    claimed = live.setdefault("claimed", {}).setdefault(label, [])

    def own(*paths: str) -> None:
        claim(output, *paths)
        claimed.extend(os.path.relpath(os.path.realpath(p), output) if os.path.isabs(p) else str(p) for p in paths)

    def note(text: str) -> None:
        if hasattr(progress, "stage_note"):
            progress.stage_note(label, text)

    ctx = StageContext(spark=spark, seed=live["seed"], claim=own, output=str(output), note=note if progress else None,
                       claim_lasting=lambda *paths: claim(output, *paths))
    if progress:
        progress.stage_started(label)
    _describe_jobs(spark, f"winnow stage {label}")
    start = time.perf_counter()
    try:
        return _stage_body(live, ctx, label, stage, apply, params, in_path, n_in, work_path, then_write, start)
    finally:
        ctx.release()
        _describe_jobs(spark, None)


def _stage_body(live, ctx: StageContext, label: str, stage: str, apply, params, in_path, n_in, work_path,
                then_write, start: float) -> list[StageRecord]:
    spark, output, progress = live["spark"], live["output"], live["progress"]
    schemas = live.setdefault("schemas", {})  # what each Parquet of this run was written from
    df = (_read(spark, in_path, schemas[in_path]) if in_path in schemas else spark.read.parquet(in_path)) if in_path else None
    result = _write_step(output, df, params, ctx) if stage == write.NAME else apply(df, params, ctx)
    removed_path = str(output / "removed" / label)
    removed_frame = write.for_output(result.removed)
    _write_then_rename(output, removed_path, lambda tmp: write.write_parquet(removed_frame, tmp, compression="zstd"))
    fused = then_write is not None and result.stats_after_write is None
    if fused:
        written = _write_step(output, result.kept, then_write, ctx)
        kept = _count(then_write.path)
    elif stage != write.NAME:
        _write_then_rename(output, work_path, lambda tmp: write.write_parquet(result.kept, tmp, compression="zstd"))
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
    added = n_in * (result.outputs_per_input - 1)
    why = live.get("why", {})
    record = StageRecord(
        name=label, stage=stage, n_in=n_in, kept=kept, removed=removed,
        seconds=time.perf_counter() - start,
        removed_path=str(Path("removed") / label) if removed else None, stats=result.stats,
        resume=why.get(label), added=added,
    )
    if n_in + added != kept + removed:
        raise AccountingError(f"stage {label}: in {n_in}" + (f" + added {added}" if added else "")
                              + f" != kept {kept} + removed {removed}")
    attempt = _attempt()
    if attempt > 1:  # a transient failure was retried (the report shows it)
        record.stats["attempts"] = attempt
    if not removed:
        shutil.rmtree(removed_path, ignore_errors=True)
    if progress:
        progress.stage_finished(record)
    records = [record]
    if fused:
        stats = {**written.stats, "written_by": label}
        records.append(StageRecord(name=write.NAME, stage=write.NAME, n_in=kept, kept=kept, removed=0,
                                   seconds=0.0, removed_path=None, stats=stats, resume=why.get(write.NAME)))
        if progress:
            progress.stage_started(write.NAME)
            progress.stage_finished(records[-1])
    return records


def _write_then_rename(output: Path, final: str, write_to: Callable[[str], None]) -> None:
    """`write_to(temporary path under _work)`, then the result renamed to `final` (replacing it)."""
    tmp = output / STATE / f".tmp-{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_to(str(tmp))
        if not tmp.exists():  # Spark writes nothing for an empty frame in some versions
            tmp.mkdir()
        shutil.rmtree(final, ignore_errors=True)
        Path(final).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_step(output: Path, df, params: write.WriteParams, ctx: StageContext) -> StageResult:
    """The write stage into a temporary directory, renamed to `params.path` (`kept/`)."""
    from dataclasses import replace

    box: dict[str, StageResult] = {}
    _write_then_rename(output, params.path, lambda tmp: box.setdefault("r", write.apply(df, replace(params, path=tmp), ctx)))
    result = box["r"]
    result.stats["path"] = params.path
    return result


def _describe_jobs(spark, text: str | None) -> None:
    """Name the Spark jobs that follow (the Spark UI and event log show it); not on Spark Connect."""
    try:
        spark.sparkContext.setJobDescription(text)
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext
        pass


def _curate(key: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The body of the Prefect flow `winnow-curate`: each step run or skipped as decided."""
    live = _LIVE[key]
    output: Path = live["output"]
    progress = live["progress"]
    plan: _Plan = live["plan"]
    start: str | None = live.get("start")
    schemas = live.setdefault("schemas", {})
    records: list[StageRecord] = []
    in_path: str | None = start
    first_in = _count(start) if start else None
    keep = live.get("keep")
    cleared = False
    i = 0
    while i < len(plan.steps):
        label, stage, apply, params = plan.steps[i]
        step, decision = plan.keys[i], plan.decisions[i]
        work_path = str(plan.state.work_path(step))
        kept_for_later = bool(keep and keep[0] == label)
        if not decision.run:
            record = _saved_record(decision)
            records.append(record)
            if decision.saved.get("schema"):
                from pyspark.sql.types import StructType

                schemas[work_path] = StructType.fromJson(json.loads(decision.saved["schema"]))
            if progress:
                _skipped(progress, record)
            i += 1
        else:
            if not cleared:  # what this and every later step saved or wrote goes first
                plan.state.clear_from(plan.keys, i, also=plan.stale_entries(i))
                cleared = True
            n_in = records[-1].kept if records else first_in
            # the last stage before write hands its rows straight to it, unless validate keeps them
            then_write = plan.steps[i + 1][3] if i + 2 == len(plan.steps) and not kept_for_later else None
            done = _stage_task(label, _run_stage)(key, label, stage, apply, params, in_path, n_in, work_path, then_write)
            for j, record in enumerate(done):
                where = "kept" if stage == write.NAME or len(done) > 1 or j else "work"
                schema = schemas.get(work_path) if where == "work" else None
                plan.state.save(plan.keys[i + j], record.as_json(), output=where,
                                schema=schema.json() if schema is not None else None,
                                claimed=live.get("claimed", {}).get(record.name, ()))
            records.extend(done)
            i += len(done)
        in_path = work_path
        if kept_for_later:  # a stage's output that a later step (validate) starts from
            _copy_kept(output, work_path, keep[1])
    live["records"] = records
    try:
        from prefect.artifacts import create_link_artifact, create_table_artifact

        create_link_artifact(key="winnow-output", link=output.as_uri(), link_text=str(output),
                             description="Winnow output directory")
        create_table_artifact(
            key="winnow-stages",
            table=[dict(zip(STAGE_HEADER, row)) for row in stage_table_rows(records)],
            description=f"Winnow stages for {output}",
        )
    except Exception:  # noqa: BLE001 - an artifact is a convenience, never a reason to fail a run
        pass
    return [r.as_json() for r in records]


def _copy_kept(output: Path, rows: str, target: str) -> None:
    """A copy of a step's saved rows at `target` (validate's base), replacing what was there."""
    claim(output, target)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(rows, target)


def _saved_record(decision: Decision) -> StageRecord:
    """A skipped step's record as its run saved it, marked skipped."""
    body = dict(decision.saved["record"])
    body["n_in"] = body.pop("in")
    body.pop("resume", None)
    return StageRecord(**body, resume=decision.text())


def _skipped(progress, record: StageRecord) -> None:
    if hasattr(progress, "stage_skipped"):
        progress.stage_skipped(record)
    else:
        progress.stage_started(record.name)
        progress.stage_finished(record)


def check_train_outputs(cfg: RunConfig, ours: set[str] = frozenset()) -> None:
    """A [[train]] model file that exists is replaced only when overwriting (as train-scorer), or
    when it is this output's own (`ours`: models an earlier run into this output trained)."""
    for spec in train_specs(cfg):
        path = os.path.realpath(spec.output)
        if Path(spec.output).exists() and not cfg.overwrite and path not in ours:
            raise WinnowError(f"[[train]] output {os.path.normpath(spec.output)} exists; "
                              "pass --overwrite to replace it")


# Bumped when a [[train]] model changes for the same data and parameters.
TRAIN_VERSION = 1


@dataclass
class _Train:
    """A [[train]] entry with its key, and the report of the model an earlier run trained with
    the same key when that model file is still unchanged (then it is reused, not retrained)."""

    spec: Any
    key: str
    saved: dict[str, Any] | None


def _train_plans(cfg: RunConfig, state: RunState, output: Path) -> list[_Train]:
    from pipelines.read import InputSpec, expand_inputs_and_skips

    from .train import model_file, train_inputs

    out = []
    for i, spec in enumerate(train_specs(cfg)):
        tasks, _ = expand_inputs_and_skips([InputSpec(path=p, source="train") for p in train_inputs(spec)])
        prints = state.prints.get(t.path for t in tasks)
        # reference LMs a preselect entry reads (their lm.pt, when they exist before the run)
        models = [os.path.join(m, "lm.pt") for m in getattr(spec, "models", ()) if os.path.isfile(os.path.join(m, "lm.pt"))]
        prints.update(state.prints.get(models) if models else {})
        key = digest({"version": TRAIN_VERSION, "spec": canonical(spec, str(output)),
                      "files": {canonical(p, str(output)): h["xxh3_128"] for p, h in prints.items()}})
        saved = state.load_train(i)
        model = os.path.realpath(model_file(spec))
        ok = saved is not None and saved.get("key") == key and os.path.isfile(model) and \
            state.prints.get([model])[model]["xxh3_128"] == saved.get("model")
        out.append(_Train(spec, key, saved if ok else None))
    return out


def _train_and_check(trains: list[_Train], state: RunState, stage_plans: list, spark, progress,
                     output: Path) -> list[dict[str, Any]]:
    """Train the [[train]] scorers (reusing unchanged ones), then load every configured scorer:
    before any input is read."""
    from pipelines.score import check_scorers

    from .train import model_file, train_any

    reports = []
    ran = False   # once an entry is trained, every later one is too: it may read the new model
    for i, t in enumerate(trains):
        name = f"train {t.spec.kind}"
        if t.saved is not None and not ran:
            report = {**t.saved["report"], "resume": "skipped: unchanged"}
            reports.append(report)
            if progress:
                progress.stage_started(name)
                if hasattr(progress, "training_finished"):
                    progress.training_finished(name, report)
            continue
        claim(output, t.spec.output)  # recorded when it is inside the output directory
        if progress:
            progress.stage_started(name)
        before = state.load_train(i)
        why = ("no saved state" if before is None else "data or parameters changed" if before.get("key") != t.key
               else "an earlier [[train]] entry was trained" if ran and t.saved is not None
               else "the model file changed or is gone")
        report = train_any(spark, t.spec, log=lambda *a: None)
        ran = True
        model = os.path.realpath(model_file(t.spec))
        state.save_train(i, {"key": t.key, "model": state.prints.get([model])[model]["xxh3_128"],
                             "path": os.path.realpath(t.spec.output), "report": report})
        reports.append({**report, "resume": f"ran: {why}"})
        if progress and hasattr(progress, "training_finished"):
            progress.training_finished(name, report)
    for p in stage_plans:
        if p.name == "score":
            check_scorers(p.params.specs(str(output)))
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

    A run into a directory an earlier run wrote resumes it: every step whose key (flows/state.py)
    is unchanged is skipped, the first changed one and all after it run; `cfg.overwrite` discards
    the saved state first. `start`: the Parquet output of an earlier run's stage to begin from
    instead of reading the inputs (the inputs, [[train]] and input fingerprints are then
    skipped). `keep`: (stage label, directory): a copy of that stage's kept rows, with every
    column, is left in the directory. A second run on the same output while this one runs is
    refused (`output.locked`)."""
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


# Input files to hash that hold more bytes than this are hashed by Spark tasks, not the driver.
DRIVER_HASH_BYTES = 1 << 30


class _Session:
    """The run's SparkSession, started on first use: a rerun with nothing to do starts none."""

    def __init__(self, spark, cfg: RunConfig):
        self.spark, self.cfg, self.given = spark, cfg, spark is not None

    def get(self):
        if self.spark is None:
            from pipelines.spark import get_spark

            prefect_ready = _start_prefect()  # its API starts while the JVM does
            c = self.cfg.spark
            self.spark = get_spark(c.master, shuffle_partitions=c.shuffle_partitions,
                                   driver_memory=c.driver_memory, conf=c.conf)
            prefect_ready.join()
        return self.spark


@dataclass
class _Plan:
    """The steps of a run, their keys and run-or-skip decisions, and the saved state."""

    steps: list[tuple[str, str, Callable[..., StageResult], Any]]
    keys: list[Step]
    decisions: list[Decision]
    state: RunState
    entries: list[str]       # the ownership record's entries when the run started
    lasting: set[str]        # entries a step that runs never removes: the state, trained models

    def stale_entries(self, first: int) -> set[str]:
        """Entries an earlier run wrote that no step before `first` (all skipped) claimed: the
        kept rows, plots, report, validate and export outputs of what is about to be redone."""
        claimed = {Path(c).parts[0] for d in self.decisions[:first] for c in (d.saved or {}).get("claimed") or ()}
        return set(self.entries) - self.lasting - claimed - {STATE, "removed"}


def _steps(cfg: RunConfig, output: Path, stage_plans: list, start: str | None) -> list:
    steps = [] if start else [(read.NAME, read.NAME, read.apply, read.ReadParams(input_specs(cfg)))]
    steps += [(p.label, p.name, STAGES[p.name].apply, p.params) for p in stage_plans]
    steps.append((write.NAME, write.NAME, write.apply, write_params(cfg, str(output))))
    return steps


def _keys(cfg: RunConfig, output: Path, steps: list, state: RunState, first_files: dict[str, dict],
          models: set[str]) -> list[Step]:
    """Each step's key parts (flows/state.py): stage, version, parameters, seed, the files its
    parameters name (outside the output, or a [[train]] model), and for the first step its input
    files' fingerprints."""
    out_s = str(output)
    result = []
    for i, (label, stage, _, params) in enumerate(steps):
        canon = canonical(params, out_s)
        version = read.VERSION if stage == read.NAME else write.VERSION if stage == write.NAME else STAGES[stage].version
        parts: dict[str, Any] = {"stage": stage, "version": version, "params": canon, "seed": cfg.seed}
        named = [f for f in named_files(canon, out_s)
                 if f in models or not (f == out_s or f.startswith(out_s + os.sep))]
        if named:
            parts["files"] = {canonical(p, out_s): h["xxh3_128"] for p, h in state.prints.get(named).items()}
        against = list(getattr(params, "against", ()) or ())  # earlier outputs a dedup reads
        if against:
            from pipelines.against import files as files_under

            found = files_under(against)
            parts["against"] = {canonical(p, out_s): h["xxh3_128"] for p, h in state.prints.get(found).items()}
        if i == 0:
            parts["inputs"] = {canonical(p, out_s): h["xxh3_128"] for p, h in first_files.items()}
        result.append(Step(i, label, stage, parts))
    return chain(result)


def _hasher(session: _Session, engine: str) -> Callable[[list[str]], list[dict]]:
    """Hash files in the driver, or by Spark tasks when they are many bytes and Spark runs."""
    from types import SimpleNamespace

    from pipelines.read_kernel import file_fingerprint

    def hash_files(paths: list[str]) -> list[dict]:
        size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
        if engine == "spark" and size > DRIVER_HASH_BYTES:
            ctx = StageContext(spark=session.get(), seed=0)
            return read.fingerprints(ctx, [SimpleNamespace(path=p) for p in paths])
        return [file_fingerprint(p) for p in paths]

    return hash_files


def _start_files(start: str) -> list[str]:
    root = Path(start)
    return sorted(str(p) for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))


def _run_locked(cfg: RunConfig, output: Path, files, skipped, stage_plans, engine: str, why: str, spark,
                progress: Progress | None, start: str | None, keep: tuple[str, str] | None) -> RunSummary:
    from pipelines.spark import session_settings

    from .output import read_record

    prepare(output, cfg.overwrite)  # refuses before it deletes anything; --overwrite discards the state
    state = RunState(output)
    entries = read_record(output) or []
    session = _Session(spark, cfg)
    started = dt.datetime.now(dt.timezone.utc)
    trains = [] if start else _train_plans(cfg, state, output)
    models = {os.path.realpath(t.spec.output) for t in trains}
    if not start:  # before anything is written
        listed = {m for m in models if m.startswith(str(output) + os.sep)
                  and Path(os.path.relpath(m, output)).parts[0] in entries}  # under an entry Winnow wrote
        check_train_outputs(cfg, ours=listed | state.trained())
    claim(output, *RUN_ENTRIES)
    state.save_run({"config": cfg.model_dump(mode="json", by_alias=True), "start": start,
                    "keep": keep[0] if keep else None})
    lasting = {Path(os.path.relpath(m, output)).parts[0] for m in models if m.startswith(str(output) + os.sep)}
    if keep:  # validate follows and keeps its own state: what is unchanged there is reused
        lasting.add(Path(os.path.relpath(keep[1], output)).parts[0])
    for p in stage_plans:  # what a stage keeps across reruns of itself (rephrase's answer cache)
        for path in getattr(p.params, "lasting", lambda _out: ())(str(output)):
            if os.path.realpath(path).startswith(str(output) + os.sep):
                lasting.add(Path(os.path.relpath(os.path.realpath(path), output)).parts[0])
    training = []
    if trains:  # before the keys: a model trained now is part of the score stage's key
        need = any(t.saved is None for t in trains)
        training = _train_and_check(trains, state, [], session.get() if need else None, progress, output)
    first = _start_files(start) if start else sorted({f.path for f in files})
    prints = state.prints.get(first, _hasher(session, engine))
    steps = _steps(cfg, output, stage_plans, start)
    keys = _keys(cfg, output, steps, state, prints, models)
    decisions = state.decide(keys, need_rows={i for i, s in enumerate(steps) if keep and keep[0] == s[0]})
    if engine == "local" and any(d.run for d in decisions):  # one job: every step runs
        decisions = [d if d.run else Decision(True, "the local engine runs its steps as one job") for d in decisions]
    state.save_prints()
    plan = _Plan(steps, keys, decisions, state, entries, lasting)
    fingerprints = [prints[p] for p in first] if not start else []
    if not any(d.run for d in decisions):
        return _nothing_to_do(cfg, output, plan, started, training, fingerprints, progress, keep, start)
    for p in stage_plans:  # a bad model fails before any data is read
        if p.name == "score":
            from pipelines.score import check_scorers

            check_scorers(p.params.specs(str(output)))
    if engine == "local":
        return _run_local(cfg, files, skipped, stage_plans, output, progress, why, plan, fingerprints)
    spark = session.get()
    key = uuid.uuid4().hex
    _LIVE[key] = {"cfg": cfg, "plan": plan, "spark": spark, "output": output, "progress": progress,
                  "seed": cfg.seed, "start": start, "keep": keep,
                  "why": {k.label: d.text() for k, d in zip(plan.keys, plan.decisions)}}
    try:
        _flow()(key, cfg.model_dump(mode="json"))
        records: list[StageRecord] = _LIVE[key]["records"]
    finally:
        _LIVE.pop(key, None)
    extra = {"spark": session_settings(spark), **({"started_from": start} if start else {})}
    return _finish(cfg, output, started, records, training, fingerprints, {"name": "spark", "why": why}, extra, state)


def _nothing_to_do(cfg: RunConfig, output: Path, plan: _Plan, started, training, fingerprints, progress,
                   keep: tuple[str, str] | None, start: str | None) -> RunSummary:
    """Every step unchanged: the saved records, a new manifest and report; no Spark, no Prefect."""
    records = [_saved_record(d) for d in plan.decisions]
    for r in records:
        if progress:
            _skipped(progress, r)
    if keep:
        i = next(i for i, s in enumerate(plan.steps) if s[0] == keep[0])
        _copy_kept(output, str(plan.state.work_path(plan.keys[i])), keep[1])
    engine = {"name": "none", "why": "every step was unchanged since the saved run; nothing ran"}
    return _finish(cfg, output, started, records, training, fingerprints, engine,
                   {"started_from": start} if start else {}, plan.state)


def status(output: str | os.PathLike, cfg: RunConfig | None = None) -> dict[str, Any]:
    """Each step's saved state in `output` against `cfg` (default: the config the last run
    there started with): done, stale (and why) or missing, with the rows it kept and the disk
    its saved rows hold. Runs nothing; reads only input files whose size or mtime changed."""
    from .config import parse_config
    from .output import read_record
    from .state import disk_bytes

    out = Path(output).resolve()
    if not out.is_dir() or read_record(out) is None:
        raise WinnowError(f"{out} is not an output directory Winnow wrote")
    state = RunState(out)
    run = state.load_run()
    if cfg is None:
        if run is None:
            raise WinnowError(f"{out} holds no saved run state (written by a run of this Winnow version)")
        cfg = parse_config(run["config"], Path("/"), str(state.dir / "run.json"))
    start = run.get("start") if run else None
    files = [] if start else read.expand_inputs_and_skips(input_specs(cfg))[0]
    stage_plans = plans(cfg)
    models = {os.path.realpath(t.output) for t in train_specs(cfg)} if not start else set()
    first = _start_files(start) if start and Path(start).is_dir() else sorted({f.path for f in files})
    prints = state.prints.get(first)
    keys = _keys(cfg, out, _steps(cfg, out, stage_plans, start), state, prints, models)
    saved = state.records()
    need = {k.index for k in keys if run and run.get("keep") == k.label}
    steps = []
    for step, d in zip(keys, state.decide(keys, need_rows=need)):
        rec = saved.get(step.name)
        where = [state.work_path(step), out / "removed" / step.label] + ([out / "kept"] if step.stage == write.NAME else []) \
            + [out / c for c in (rec or {}).get("claimed") or ()]
        steps.append({
            "step": step.label,
            "state": "missing" if rec is None else "stale" if d.run else "done",
            "why": d.why.replace(", which runs", "") if rec is not None and d.run else "",
            "kept": (rec or {}).get("record", {}).get("kept"),
            "disk_bytes": sum(disk_bytes(p) for p in where),
        })
    return {"output": str(out), "steps": steps, "state_bytes": disk_bytes(state.dir), "output_bytes": disk_bytes(out)}


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
            prints: list[dict], engine: dict[str, Any], extra: dict[str, Any], state: RunState) -> RunSummary:
    """manifest.json, report.md and the plots of a finished run, whichever engine ran it."""
    manifest = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "output": str(output),
        "code_version": code_version(),
        "counts": {"in": records[0].n_in, "kept": records[-1].kept,
                   "removed": sum(r.removed for r in records),
                   # rows stages made (rephrase): then in + added = kept + removed for the run too
                   **({"added": sum(r.added for r in records)} if any(r.added for r in records) else {})},
        "stages": [r.as_json() for r in records],
        "training": training,
        "inputs": prints,
        "engine": engine,
        "resume": {"ran": [r.name for r in records if r.resume and r.resume.startswith("ran")],
                   "skipped": [r.name for r in records if r.resume and r.resume.startswith("skipped")],
                   "files_hashed": state.prints.fresh},
        **extra,
        "config": cfg.model_dump(mode="json", by_alias=True),
    }
    write_plots(records, output)
    write_manifest(output / "manifest.json", manifest)
    (output / "report.md").write_text(report_markdown(records, manifest))
    from .report_html import write_html

    write_html(output, records, manifest)
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
               progress: Progress | None, why: str, plan: _Plan, fingerprints: list[dict]) -> RunSummary:
    """The run on the local engine (no JVM, no Prefect server): same outputs, manifest and report.
    It runs its steps as one job, so it keeps no intermediate rows: a rerun skips all or none."""
    from pipelines import local_engine

    started = dt.datetime.now(dt.timezone.utc)
    wp = write_params(cfg, str(output))
    dedup = (stage_plans[0].label, stage_plans[0].params) if stage_plans else None
    plan.state.clear_from(plan.keys, 0, also=plan.stale_entries(0))
    reasons = {k.label: d.text() for k, d in zip(plan.keys, plan.decisions)}

    def say(name: str, stage) -> None:
        if progress is None:
            return
        if stage is None:
            progress.stage_started(name)
        else:
            record = _record(stage)
            record.resume = reasons.get(record.name)
            progress.stage_finished(record)

    n = local_engine.workers(cfg.spark.master)
    try:
        stages = local_engine.run(files, skipped, dedup, output, wp.compression, wp.max_records_per_file,
                                  tuple(wp.columns), progress=say, n_workers=n)
    finally:
        shutil.rmtree(output / STATE / "local", ignore_errors=True)
    records = [_record(s) for s in stages]
    for r in records:
        if r.n_in != r.kept + r.removed:
            raise AccountingError(f"stage {r.name}: in {r.n_in} != kept {r.kept} + removed {r.removed}")
    if [r.name for r in records] != [k.label for k in plan.keys]:
        raise AssertionError(f"local engine steps {[r.name for r in records]} != {[k.label for k in plan.keys]}")
    for r, step, d in zip(records, plan.keys, plan.decisions):
        r.resume = d.text()
        plan.state.save(step, r.as_json(), output="kept" if r.stage == write.NAME else None)
    return _finish(cfg, output, started, records, [], fingerprints, {"name": "local", "why": why, "workers": n}, {},
                   plan.state)


def _record(stage) -> StageRecord:
    return StageRecord(name=stage.name, stage=stage.stage, n_in=stage.n_in, kept=stage.kept,
                       removed=stage.removed, seconds=stage.seconds,
                       removed_path=str(Path("removed") / stage.name) if stage.removed and stage.stage != "write" else None,
                       stats=stage.stats)
