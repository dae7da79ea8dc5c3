"""Stage `rephrase`: WRAP (Maini et al. 2024, METHODS §5). Each document is cut into chunks of
about 300 tokens, each chunk is rewritten by an LLM in each configured style, and one synthetic
document per (document, style) joins the rewrites in order (`synth.engine`).

- **Rows.** The stage keeps its input (``synthetic = false``; `keep_input`) and adds one row per
  (document, style): the synthetic document (``synthetic = true``), or a removed row with the
  parent's id in ``meta.parent_id`` and the reason when a chunk finally failed. So
  ``in + added = kept + removed`` with ``added = in x styles`` (``in x (styles - 1)`` without
  the input): the flow checks it.
- **Backends** (`synth.backends`): any OpenAI-compatible server (`backend = "openai"`,
  `base_url`, `model`), or a local `transformers` model directory (`backend = "transformers"`,
  `model` = the directory). The API key is read from the environment variable `api_key_env`
  where each task runs; it is never a parameter, so it is in no manifest, state file or log.
- **Concurrency** is the whole run's: the stage runs at most `concurrency` requests at once.
  With `openai` the input is put in as many partitions as tasks run at once (the session's
  default parallelism, or `concurrency` if that is smaller) and each task gets its share
  (shares differ by at most one). With `transformers` one task runs the model (one copy in
  memory), generating batches of up to `concurrency` sequences.
- **Run once.** The rows are computed in one job and kept as a local checkpoint before kept and
  removed are written, so the requests are made once; if an executor holding the checkpoint is
  lost, the stage fails and is retried (the flow's transient-failure retry), and the answer cache
  answers everything asked before.
- **The cache** (`synth.cache`): every answer is kept under its key (model, sampling, prompt
  version and text, style, chunk hash) in `cache` (default `<output>/rephrase_cache`, owned by
  the run: `--overwrite` deletes it; give a directory of your own to keep answers across
  overwrites and runs). A rerun, a resumed run after a crash, or a Spark task retry asks
  nothing twice, whatever the input order. Failures are not cached.
- **Progress** while it runs: requests answered and in flight, tokens/s in and out, retries,
  truncations (the tasks write small files the driver sums once a second). The stats give per
  style: documents, rows kept and removed, requests, cached answers, tokens in and out, retries,
  truncation rate, summed request seconds and wall time (first request to last answer).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import BackendError, ConfigError
from core.params import param
from synth.backends import shown_url
from synth.engine import ON_LENGTH, Job, Rephraser
from synth.wrap import PRESETS, Sampling, prompts_for

from .stage import Columns, StageContext, StageResult

NAME = "rephrase"
# Bumped when this stage's output changes for the same input and parameters (flows/state.py).
VERSION = 1
BACKENDS = ("openai", "transformers")
OUT_BATCH = 256  # rows per Arrow batch handed back to Spark


@dataclass(frozen=True)
class RephraseParams:
    styles: tuple[str, ...] = param(("qa",), metavar="STYLE", flag="--style",
                                    help=f"WRAP style, repeatable: {', '.join(PRESETS)} (the paper's prompts), "
                                    "or a name under `templates` in a config")
    backend: str = param("openai", choices=BACKENDS, metavar="BACKEND",
                         help="openai: any OpenAI-compatible server (vLLM, llama.cpp, SGLang, TGI); "
                         "transformers: a local model directory")
    base_url: str | None = param(None, metavar="URL", help="the server's API root, e.g. http://127.0.0.1:8000/v1")
    model: str | None = param(None, metavar="NAME",
                              help="the served model's name (openai), or the model directory (transformers)")
    api_key_env: str = param("OPENAI_API_KEY", metavar="VAR",
                             help="environment variable that holds the API key (read where each task runs, "
                             "never written anywhere)")
    concurrency: int = param(16, metavar="N", help="requests in flight for the whole run (transformers: "
                             "sequences per generation batch, summed over tasks)")
    max_tokens: int = param(1024, metavar="N", help="most tokens one answer may have")
    temperature: float = param(0.8, metavar="T", help="sampling temperature (0: greedy)")
    top_p: float = param(0.95, metavar="P", help="nucleus sampling mass")
    sampling_seed: int | None = param(None, metavar="N", help="seed sent with every request (servers that "
                                      "honour it, e.g. vLLM, then answer reproducibly)")
    chunk_tokens: int = param(300, metavar="N", help="tokens per chunk (WRAP: about 300)")
    tokenizer: str | None = param(None, metavar="PATH",
                                  help="tokenizer.json (or a model directory) to count chunk tokens; none: "
                                  "the transformers model's own, or 4 characters per token")
    timeout: float = param(120.0, metavar="S", help="seconds one request may take")
    max_attempts: int = param(5, metavar="N", help="tries per request (429, 5xx, timeouts, dropped "
                              "connections, malformed replies) before its (document, style) is removed")
    backoff: float = param(1.0, metavar="S", help="first retry delay; doubles per attempt, with jitter")
    on_length: str = param("remove", choices=ON_LENGTH, metavar="WHAT",
                           help="an answer cut at max_tokens: remove its (document, style) (reason "
                           "truncated), or keep the cut text; both are counted")
    keep_input: bool = param(True, help="keep the input documents beside the synthetic ones")
    cache: str | None = param(None, metavar="DIR",
                              help="answer cache (default <output>/rephrase_cache, deleted by --overwrite)")
    device: str | None = param(None, metavar="DEVICE", help="transformers: cpu, cuda, cuda:1 (default: "
                               "cuda when there is one)")
    templates: dict[str, dict[str, str]] = param(default_factory=dict,
                                                 help="config only: styles of your own, "
                                                 "{name = {user = '... {chunk}', system = '...', version = '...'}}")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", self.api_key_env):
            # the name only: a key typed here by mistake would be recorded with the parameters
            raise ConfigError("rephrase.api_key_env: give the name of an environment variable (letters, digits, _), "
                              "not the key itself")
        if self.backend not in BACKENDS:
            raise ConfigError(f"rephrase.backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.on_length not in ON_LENGTH:
            raise ConfigError(f"rephrase.on_length: {self.on_length!r} is not one of {', '.join(ON_LENGTH)}")
        if not self.styles:
            raise ConfigError("rephrase.styles: give at least one style")
        prompts_for(tuple(self.styles), self.templates)
        self.sampling()
        if self.concurrency < 1 or self.max_attempts < 1 or self.chunk_tokens < 1:
            raise ConfigError("rephrase: concurrency, max_attempts and chunk_tokens must be >= 1")
        if self.timeout <= 0 or self.backoff < 0:
            raise ConfigError("rephrase: timeout must be > 0 and backoff >= 0")
        if not self.model:
            raise ConfigError("rephrase.model: name the served model (openai) or the model directory "
                              "(transformers)")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("rephrase.base_url: the openai backend needs the server's URL, "
                              "e.g. http://127.0.0.1:8000/v1")
        if self.backend == "transformers" and not Path(self.model).is_dir():
            raise ConfigError(f"rephrase.model: {self.model} is not a model directory")

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        seed=self.sampling_seed)

    def cache_dir(self, output: str | None) -> str:
        if self.cache:
            return self.cache
        if output is None:
            raise ConfigError("rephrase.cache: give a cache directory (there is no run output to hold it)")
        return str(Path(output) / "rephrase_cache")

    def lasting(self, output: str) -> list[str]:
        """Paths in the run's output that a rerun of this stage keeps: the answer cache."""
        return [self.cache_dir(output)]

    def job(self, *, cache: str, concurrency: int, progress: str | None = None) -> Job:
        return Job(prompts=tuple(prompts_for(tuple(self.styles), self.templates)), sampling=self.sampling(),
                   model=self.model or "", cache=cache, backend=self.backend, base_url=self.base_url,
                   api_key_env=self.api_key_env, concurrency=concurrency, timeout=self.timeout,
                   max_attempts=self.max_attempts, backoff=self.backoff, device=self.device,
                   chunk_tokens=self.chunk_tokens, tokenizer=self.tokenizer, on_length=self.on_length,
                   keep_input=self.keep_input, progress=progress)


def columns(params: RephraseParams) -> Columns:
    return Columns(requires=("id", "text", "source", "domain", "meta"), adds=("synthetic",))


def outputs_per_input(params: RephraseParams) -> int:
    """Rows each input document becomes (kept or removed): one per style, plus itself if kept."""
    return len(params.styles) + (1 if params.keep_input else 0)


def _kernel(job: Job, tasks: int, arrow_schema: pa.Schema, key_required: bool):
    """The task's rows through `Rephraser`, with this task's share of the run's concurrency."""
    total = job.concurrency

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from dataclasses import replace

        from pyspark import TaskContext

        part = TaskContext.get().partitionId() if TaskContext.get() is not None else 0
        share = total // tasks + (1 if part % tasks < total % tasks else 0)
        mine = replace(job, concurrency=max(1, share))

        def rows():
            for batch in batches:
                yield from batch.to_pylist()

        out: list[dict[str, Any]] = []
        with contextlib.closing(Rephraser(mine).run(rows(), key_required=key_required)) as produced:
            for row in produced:
                out.append(row)
                if len(out) >= OUT_BATCH:
                    yield pa.RecordBatch.from_pylist(out, schema=arrow_schema)
                    out = []
        if out:
            yield pa.RecordBatch.from_pylist(out, schema=arrow_schema)

    return kernel


def _slots(spark) -> int:
    try:
        return max(1, int(spark.sparkContext.defaultParallelism))
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: ask the conf
        return max(1, int(spark.conf.get("spark.default.parallelism", "2")))


def spread(df: DataFrame, spark, concurrency: int, backend: str = "openai") -> tuple[DataFrame, int]:
    """`df` in exactly as many partitions as tasks that may run at once, and that number: the
    tasks split `concurrency` between them (`_kernel`), so the run never has more in flight.
    The transformers backend runs in one task (one copy of the model)."""
    tasks = 1 if backend == "transformers" else min(_slots(spark), concurrency)
    try:
        parts = df.rdd.getNumPartitions()
    except Exception:  # noqa: BLE001 - Spark Connect: no RDD; spread anyway
        parts = 0
    if parts > tasks:
        df = df.coalesce(tasks)
    elif parts < tasks:
        df = df.repartition(tasks)
    return df, tasks


class _Watcher:
    """Sums the tasks' progress files once a second and shows them through `note`."""

    def __init__(self, directory: str, note) -> None:
        self.dir, self.note = Path(directory), note
        self.stop = threading.Event()
        self.start = time.time()
        self.thread = threading.Thread(target=self._run, name="winnow-rephrase-progress", daemon=True)
        self.thread.start()

    def totals(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for path in self.dir.glob("*.json"):
            try:
                body = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for k, v in body.items():
                if isinstance(v, (int, float)) and k != "started":
                    total[k] = total.get(k, 0) + v
        return total

    def line(self) -> str:
        t = self.totals()
        secs = max(time.time() - self.start, 1e-9)
        return (f"{int(t.get('requests', 0)):,} requests, {int(t.get('in_flight', 0))} in flight, "
                f"{t.get('tokens_in', 0) / secs:,.0f} tok/s in, {t.get('tokens_out', 0) / secs:,.0f} tok/s out, "
                f"{int(t.get('retries', 0))} retries, {int(t.get('truncated', 0))} truncated, "
                f"{int(t.get('documents', 0)):,} documents done")

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.note(self.line())
            except Exception:  # noqa: BLE001 - a display, never a reason to fail
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def check_backend(params: RephraseParams) -> bool:
    """On the driver, before any task: the server answers, accepts the key and serves the model
    (openai), or the directory holds a model config (transformers). Returns whether a key is set."""
    key = os.environ.get(params.api_key_env) or None
    if params.backend == "openai":
        params.job(cache="", concurrency=1).make_backend().check()
    else:
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(params.model)
        except Exception as exc:  # noqa: BLE001 - whatever transformers raises is the directory's
            raise BackendError(f"rephrase: {params.model} is not a transformers model directory "
                               f"({type(exc).__name__})") from None
    return key is not None


def apply(df: DataFrame, params: RephraseParams, ctx: StageContext) -> StageResult:
    key_set = check_backend(params)
    cache = params.cache_dir(ctx.output)
    if ctx.output is not None and params.cache is None:
        ctx.own_lasting(cache)  # the run owns it (--overwrite deletes it); a resumed run keeps it
    Path(cache).mkdir(parents=True, exist_ok=True)
    progress = None
    if ctx.output is not None:
        progress = str(Path(ctx.output) / "_work" / f"rephrase-progress-{uuid.uuid4().hex[:8]}")
    spread_df, tasks = spread(df, ctx.spark, params.concurrency, params.backend)
    job = params.job(cache=cache, concurrency=params.concurrency, progress=progress)
    schema = T.StructType(list(df.schema.fields) + [T.StructField("synthetic", T.BooleanType(), False),
                                                    T.StructField("_reason", T.StringType())])
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)
    if progress is not None and ctx.note is not None:
        watcher = _Watcher(progress, ctx.note)
        ctx.on_release(watcher.close)
    started = time.time()
    # one job makes every request; kept and removed are then read from its checkpoint
    out = spread_df.mapInArrow(_kernel(job, tasks, arrow_schema, key_set), schema).localCheckpoint(eager=True)
    kept = out.where(F.col("_reason").isNull()).drop("_reason")
    removed = out.where(F.col("_reason").isNotNull()).select(
        *df.columns, "synthetic", F.lit(NAME).alias("removed_by"), F.col("_reason").alias("reason"))
    stats: dict[str, Any] = {
        "styles": ", ".join(f"{p.style} ({p.version})" for p in job.prompts), "backend": params.backend,
        "model": params.model, "sampling": params.sampling().as_json(), "concurrency": params.concurrency,
        "tasks": tasks, "cache": cache, "on_length": params.on_length, "keep_input": params.keep_input,
    }
    if params.backend == "openai":
        stats["base_url"] = shown_url(params.base_url or "")

    def after_write(kept_rows: DataFrame, removed_rows: DataFrame) -> dict[str, Any]:
        return {"per_style": per_style(kept_rows, removed_rows), "wall_seconds": round(time.time() - started, 3)}

    return StageResult(kept, removed, stats, stats_after_write=after_write,
                       outputs_per_input=outputs_per_input(params))


_NUMBERS = ("wrap_chunks", "wrap_requests", "wrap_cached", "wrap_retries", "wrap_tokens_in", "wrap_tokens_out",
            "wrap_truncated", "wrap_seconds")


def per_style(kept: DataFrame, removed: DataFrame) -> dict[str, dict[str, Any]]:
    """Per style, from the written rows: documents, kept and removed, requests, cached, tokens in
    and out, retries, truncation rate, request seconds and wall time. One aggregation."""
    def frame(df: DataFrame, was_kept: bool) -> DataFrame:
        meta = df["meta"]
        if isinstance(df.schema["meta"].dataType, T.ArrayType):  # removed/ holds meta as entries
            meta = F.map_from_entries(meta)
        return df.where(F.col("synthetic")).select(
            meta["wrap_style"].alias("style"), F.lit(1 if was_kept else 0).alias("kept"),
            *[meta[k].cast("double").alias(k) for k in _NUMBERS],
            meta["wrap_started"].cast("double").alias("start"), meta["wrap_finished"].cast("double").alias("end"))

    both = frame(kept, True).unionByName(frame(removed, False))
    rows = both.groupBy("style").agg(
        F.count(F.lit(1)).alias("documents"), F.sum("kept").alias("kept"),
        *[F.sum(k).alias(k) for k in _NUMBERS], F.min("start").alias("start"), F.max("end").alias("end"),
    ).collect()
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: str(r["style"])):
        answers = (r["wrap_requests"] or 0) + (r["wrap_cached"] or 0)
        out[str(r["style"])] = {
            "documents": int(r["documents"]), "kept": int(r["kept"]), "removed": int(r["documents"] - r["kept"]),
            "chunks": int(r["wrap_chunks"] or 0), "requests": int(r["wrap_requests"] or 0),
            "cached": int(r["wrap_cached"] or 0), "retries": int(r["wrap_retries"] or 0),
            "tokens_in": int(r["wrap_tokens_in"] or 0), "tokens_out": int(r["wrap_tokens_out"] or 0),
            "truncated": int(r["wrap_truncated"] or 0),
            "truncation_rate": round((r["wrap_truncated"] or 0) / answers, 4) if answers else 0.0,
            "request_seconds": round(r["wrap_seconds"] or 0.0, 3),
            "wall_seconds": round(r["end"] - r["start"], 3) if r["start"] is not None else 0.0,
        }
    return out


__all__ = ["NAME", "RephraseParams", "apply", "columns", "per_style"]


def dry_run(docs: DataFrame, params: RephraseParams, cache: str) -> dict[str, Any]:
    """What a run over `docs` would send, sending nothing: per style, documents, requests,
    answers already cached, prompt tokens, and answer tokens expected (about each chunk's own
    length) and at most (max_tokens each); and the first request of each style, as it would go
    (a Spark job that returns one small row per partition)."""
    from synth.engine import DryRun, dry_run_counts

    job = params.job(cache=cache, concurrency=1)

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        def texts():
            for batch in batches:
                yield from batch.column(0).to_pylist()

        yield pa.RecordBatch.from_pylist([{"counts": json.dumps(dry_run_counts(texts(), job))}])

    total = DryRun()
    for row in docs.select("text").mapInArrow(kernel, "counts string").collect():
        total.add(json.loads(row["counts"]))
    first = docs.where(F.length(F.trim("text")) > 0).select("text").limit(1).collect()
    examples = {}
    if first:
        from synth.wrap import chunks_to_send

        chunk = (chunks_to_send(first[0]["text"], job.chunk_tokens, job.counter()) or [""])[0]
        backend = job.make_backend() if params.backend == "openai" else None
        for p in job.prompts:
            body = backend._body(p.messages(chunk), job.sampling) if backend else {
                "model": job.model, "messages": p.messages(chunk), **json.loads(job.sampling.as_json())}
            examples[p.style] = body
    return {"per_style": total.per_style, "first_request": examples}
