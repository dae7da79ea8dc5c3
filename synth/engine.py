"""The rephrasing loop one Spark task runs over its documents (no Spark object in here: the stage,
`pipelines/rephrase.py`, hands it plain rows and takes plain rows back).

For each document and each style, the document's chunks (`synth.wrap.chunks_to_send`) are asked
of the backend, unless the answer cache already holds them; the answers, cleaned
(`strip_boilerplate`), are joined in order into one synthetic document. The loop keeps a window of
documents in flight, so the backend always has `concurrency` requests to work on, and writes a
small progress file about once a second for the driver to show.

Each input row gives, in this order of precedence:
- itself, unchanged, with ``synthetic = False`` (when the stage keeps its input);
- per style, a synthetic row (``synthetic = True``; `source` ``wrap:<style>``; id
  ``wrap:<style>:<parent id>``; meta: the parent's, plus ``parent_id`` and the ``wrap_*``
  provenance and cost fields), or, when a chunk finally failed, a removed row (``_reason``
  set) with the same id and meta.

Reasons (their kind is the text before the first colon):
- ``no text: ...`` the document has nothing to rephrase;
- ``request failed: chunk K of N: <why>, <n> attempts`` every attempt failed;
- ``truncated: chunk K of N hit max_tokens M`` (with ``on_length = "remove"``, the default);
- ``empty answer: chunk K of N`` nothing was left after the clean-up.
A BackendError (bad key, unknown model) is raised: it stops the run, not one row.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.errors import BackendError

from .backends import Completion, OpenAIBackend, RequestFailed, TransformersBackend
from .cache import AnswerCache
from .wrap import Prompt, Sampling, cache_key, chunks_to_send, strip_boilerplate, token_counter

ON_LENGTH = ("remove", "keep")


@dataclass(frozen=True)
class Job:
    """What a task needs to rephrase: pickled into every Spark task (it holds no secret: the key
    is read from the environment variable `api_key_env` where the task runs)."""

    prompts: tuple[Prompt, ...]
    sampling: Sampling
    model: str
    cache: str
    backend: str = "openai"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16       # in flight (the stage gives each Spark task its share)
    timeout: float = 120.0
    max_attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    device: str | None = None
    chunk_tokens: int = 300
    tokenizer: str | None = None
    on_length: str = "remove"
    keep_input: bool = True
    progress: str | None = None  # a directory for progress files, or None

    def make_backend(self, *, key_required: bool = False):
        if self.backend == "transformers":
            return TransformersBackend(self.model, max_batch=self.concurrency, device=self.device)
        key = os.environ.get(self.api_key_env) or None
        if key_required and key is None:
            raise BackendError(f"rephrase: {self.api_key_env} is set where the run started but not where "
                               "this Spark task runs; give the executors the variable")
        return OpenAIBackend(self.base_url or "", self.model, api_key=key, concurrency=self.concurrency,
                             timeout=self.timeout, max_attempts=self.max_attempts, backoff=self.backoff,
                             max_backoff=self.max_backoff)

    def counter(self):
        tokenizer = self.tokenizer or (self.model if self.backend == "transformers" else None)
        return token_counter(tokenizer)


def synthetic_id(style: str, parent: str) -> str:
    return f"wrap:{style}:{parent}"


@dataclass
class _Tally:
    requests: int = 0
    cached: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: int = 0
    seconds: float = 0.0
    started: float | None = None
    finished: float | None = None

    def add(self, c: Completion, start: float) -> None:
        self.requests += 1
        self.retries += c.retries
        self.tokens_in += c.tokens_in
        self.tokens_out += c.tokens_out
        self.seconds += c.seconds
        self.started = start if self.started is None else min(self.started, start)
        self.finished = time.time()


class _Progress:
    """Writes the task's counters to `<dir>/<pid>-<n>.json` at most once a second."""

    def __init__(self, directory: str | None, stats, counts: dict[str, int]) -> None:
        self.path = Path(directory) / f"{os.getpid()}-{time.monotonic_ns()}.json" if directory else None
        self.stats, self.counts = stats, counts
        self.last = 0.0

    def tick(self, force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self.last < 1.0):
            return
        self.last = time.monotonic()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({**self.stats.as_dict(), **self.counts}))
            os.replace(tmp, self.path)
        except OSError:  # progress is a convenience: never a reason to fail a task
            pass


class Rephraser:
    """Rephrases rows inside one event loop; `run(rows)` yields output rows."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.cache = AnswerCache(job.cache)
        self.count = job.counter()
        self._inflight: dict[str, asyncio.Future] = {}
        self.meta_common = {"wrap_model": job.model, "wrap_sampling": job.sampling.as_json(),
                            "wrap_backend": job.backend}

    async def _chunk(self, backend, prompt: Prompt, chunk: str, tally: _Tally) -> dict[str, Any]:
        key = cache_key(self.job.model, self.job.sampling, prompt, chunk)
        hit = self.cache.get(key)
        if hit is None and key in self._inflight:  # the same chunk asked right now: one request
            hit = await asyncio.shield(self._inflight[key])
        if hit is not None:
            tally.cached += 1
            return hit
        waiting = asyncio.get_running_loop().create_future()
        self._inflight[key] = waiting
        start = time.time()
        try:
            c = await backend.complete(prompt.messages(chunk), self.job.sampling)
            tally.add(c, start)
            answer = {"text": c.text, "finish_reason": c.finish_reason, "tokens_in": c.tokens_in,
                      "tokens_out": c.tokens_out}
            self.cache.put(key, answer)
            waiting.set_result(answer)
            return answer
        except BaseException as exc:
            if isinstance(exc, RequestFailed):
                tally.retries += exc.retries
            waiting.set_exception(exc if isinstance(exc, Exception) else RequestFailed("cancelled"))
            waiting.exception()  # retrieved: a failure nobody else waited for is not an error
            raise
        finally:
            self._inflight.pop(key, None)

    async def _style(self, backend, row: dict[str, Any], prompt: Prompt, chunks: list[str]) -> dict[str, Any]:
        tally = _Tally()
        reason = None
        texts: list[str] = []
        if not chunks:
            reason = "no text: the document is empty or blank"
        else:
            got = await asyncio.gather(*(self._chunk(backend, prompt, c, tally) for c in chunks),
                                       return_exceptions=True)
            for k, answer in enumerate(got, 1):
                where = f"chunk {k} of {len(chunks)}"
                if isinstance(answer, BaseException):
                    if not isinstance(answer, RequestFailed):
                        raise answer
                    reason = reason or f"request failed: {where}: {answer.reason}"
                    continue
                if answer.get("finish_reason") == "length":
                    tally.truncated += 1
                    if self.job.on_length == "remove":
                        reason = reason or f"truncated: {where} hit max_tokens {self.job.sampling.max_tokens}"
                        continue
                text = strip_boilerplate(answer["text"])
                if not text:
                    reason = reason or f"empty answer: {where}"
                    continue
                texts.append(text)
        meta = dict(_meta_items(row.get("meta")))
        meta.update(self.meta_common)
        meta.update({
            "parent_id": row["id"], "wrap_style": prompt.style, "wrap_prompt": prompt.version,
            "wrap_chunks": str(len(chunks)), "wrap_requests": str(tally.requests), "wrap_cached": str(tally.cached),
            "wrap_retries": str(tally.retries), "wrap_tokens_in": str(tally.tokens_in),
            "wrap_tokens_out": str(tally.tokens_out), "wrap_truncated": str(tally.truncated),
            "wrap_seconds": f"{tally.seconds:.3f}",
        })
        if tally.started is not None:
            meta["wrap_started"] = f"{tally.started:.3f}"
            meta["wrap_finished"] = f"{tally.finished:.3f}"
        out = {k: None for k in row}
        out.update({"id": synthetic_id(prompt.style, row["id"]), "source": f"wrap:{prompt.style}",
                    "domain": row.get("domain"), "meta": list(meta.items()), "synthetic": True,
                    "text": None if reason else "\n".join(texts), "_reason": reason})
        for k in ("_file", "_row"):  # the parent's place in input order
            if k in row:
                out[k] = row[k]
        return out

    async def _doc(self, backend, row: dict[str, Any]) -> list[dict[str, Any]]:
        # chunking is CPU work (pysbd): in a thread of its own, so the loop keeps sending and
        # receiving meanwhile (bench/bench_rephrase.py measured it blocking the loop otherwise)
        chunks = await asyncio.get_running_loop().run_in_executor(
            self._chunker, chunks_to_send, row.get("text") or "", self.job.chunk_tokens, self.count)
        try:
            async with asyncio.TaskGroup() as group:  # a fatal error in one style cancels the others
                tasks = [group.create_task(self._style(backend, row, p, chunks)) for p in self.job.prompts]
        except BaseExceptionGroup as group_error:  # the error itself (a BackendError), not its group
            raise group_error.exceptions[0] from None
        return [t.result() for t in tasks]

    def run(self, rows: Iterable[dict[str, Any]], *, key_required: bool = False) -> Iterator[dict[str, Any]]:
        """Output rows for `rows` (a stream): input rows first as read, synthetic and removed rows
        as their documents finish. Raises BackendError when the server refuses the run."""
        loop = asyncio.new_event_loop()
        backend = self.job.make_backend(key_required=key_required)
        self.stats = backend.stats  # what the backend did, for the caller once the rows are out
        counts = {"documents": 0, "rows": 0}
        progress = _Progress(self.job.progress, backend.stats, counts)
        self._chunker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winnow-chunker")
        window = max(4, 2 * self.job.concurrency)
        pending: set[asyncio.Task] = set()
        try:
            loop.run_until_complete(backend.__aenter__())

            def drain(until: int) -> Iterator[dict[str, Any]]:
                nonlocal pending
                while len(pending) > until:
                    done, pending = loop.run_until_complete(
                        asyncio.wait(pending, timeout=1.0, return_when=asyncio.FIRST_COMPLETED))
                    for task in done:
                        for out in task.result():  # a BackendError raises here
                            counts["rows"] += 1
                            yield out
                        counts["documents"] += 1
                    progress.tick()

            for row in rows:
                if self.job.keep_input:
                    yield {**row, "synthetic": False, "_reason": None}
                pending.add(loop.create_task(self._doc(backend, row)))
                yield from drain(window - 1)
            yield from drain(0)
            progress.tick(force=True)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            pending = set()
            loop.run_until_complete(backend.__aexit__(None, None, None))
            loop.close()
            self._chunker.shutdown(wait=False, cancel_futures=True)


def _meta_items(meta: Any) -> Iterable[tuple[str, str]]:
    """A meta value as Arrow gives it (a list of (key, value) pairs) or as a dict."""
    if meta is None:
        return ()
    if isinstance(meta, dict):
        return meta.items()
    return ((k, v) for k, v in meta)


@dataclass
class DryRun:
    """What a run would send, per style: requests, prompt tokens (estimated or counted), the
    answers' tokens expected (about the chunk's own length) and at most (max_tokens each)."""

    per_style: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: dict[str, dict[str, int]]) -> None:
        for style, c in other.items():
            mine = self.per_style.setdefault(style, {})
            for k, v in c.items():
                mine[k] = mine.get(k, 0) + v


def dry_run_counts(texts: Iterable[str | None], job: Job) -> dict[str, dict[str, int]]:
    """Per style: documents, requests, cached (already answered), input and output tokens."""
    cache = AnswerCache(job.cache)
    count = job.counter()
    out = {p.style: {"documents": 0, "requests": 0, "cached": 0, "tokens_in": 0, "tokens_out_expected": 0,
                     "tokens_out_max": 0} for p in job.prompts}
    prompt_overhead = {p.style: count(p.system) + count(p.user.replace("{chunk}", "")) for p in job.prompts}
    for text in texts:
        chunks = chunks_to_send(text or "", job.chunk_tokens, count)
        for p in job.prompts:
            c = out[p.style]
            c["documents"] += 1
            for chunk in chunks:
                if cache.get(cache_key(job.model, job.sampling, p, chunk)) is not None:
                    c["cached"] += 1
                    continue
                n = count(chunk)
                c["requests"] += 1
                c["tokens_in"] += n + prompt_overhead[p.style]
                c["tokens_out_expected"] += min(n, job.sampling.max_tokens)
                c["tokens_out_max"] += job.sampling.max_tokens
    return out
