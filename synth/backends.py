"""The LLM backends that answer rephrasing requests, behind one coroutine:
``await backend.complete(messages, sampling) -> Completion``.

- `OpenAIBackend`: any server that speaks the OpenAI chat-completions API (vLLM, SGLang,
  llama.cpp's server, TGI, `transformers serve`, a hosted API). Requests are async (httpx); at
  most `concurrency` are in flight. The server applies the model's chat template.
  - Retried, with exponential backoff and jitter (``backoff * 2**k`` seconds, times a random
    factor in [0.5, 1.5], at most `max_backoff`): HTTP 408, 409, 425, 429 (waiting what its
    ``Retry-After`` says when it says, up to 10 minutes, plus up to 20% jitter so the requests
    it stopped do not all return at once), 5xx, a timeout (`timeout` seconds for the whole
    request), a dropped or refused connection or any other transport error, a reply that is not
    the API's JSON. After `max_attempts` tries the request fails (`RequestFailed`, a one-line
    reason) and the caller counts it.
  - Not retried, and fatal for the run (`core.errors.BackendError`, one line with the server's
    own message): 400, 401, 403, 404, 413, 422. They mean a wrong model name, a bad key or a
    setting the server refuses, which every other request would hit too. Except: a 400, 413 or
    422 whose message says the prompt or answer does not fit the model's context (vLLM's
    "maximum context length", llama.cpp's "exceed_context_size") is that request's own failure,
    not retried (`RequestFailed`, reason ``rejected``).
  - The key is read from an environment variable by the caller and sent only in the
    ``Authorization`` header; it is in no message, log line or exception text.
- `TransformersBackend`: a local model directory, loaded with `transformers`, generating in
  batches on CPU or GPU. Requests that arrive together are batched (up to `max_batch`, the same
  sampling settings), left-padded, and generated in a worker thread so the event loop keeps
  taking requests. The tokenizer's chat template formats the messages; a tokenizer without one
  gets WRAP's own Vicuna format (``SYSTEM: ...\\nUSER: ...\\nASSISTANT:``).

Both count what they do in `stats` (requests, in flight, retries, truncations, tokens), which the
engine reports as progress.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import BackendError

from .wrap import Sampling

FATAL_STATUS = (400, 401, 403, 404, 413, 422)
RETRY_STATUS = (408, 409, 425, 429)
CLIENT_CONNECTIONS = 32   # connections per httpx client (see OpenAIBackend.__aenter__)
MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is waited for this long
_CONTEXT = re.compile(r"context (?:length|size|window)|exceeds? |too long|too many tokens", re.I)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop", "length", or what the server said
    tokens_in: int
    tokens_out: int
    retries: int = 0
    seconds: float = 0.0


class RequestFailed(Exception):
    """A request that failed every attempt; `reason` is one line for the removed row."""

    def __init__(self, reason: str, retries: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retries = retries


@dataclass
class Stats:
    requests: int = 0      # answered
    in_flight: int = 0
    retries: int = 0
    failed: int = 0
    truncated: int = 0     # answers with finish_reason "length"
    tokens_in: int = 0
    tokens_out: int = 0
    batches: int = 0       # generation batches (transformers)
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response, secret: str | None = None) -> str:
    """The server's error message, one line, at most 200 characters, with the key (if a gateway
    echoes it back) masked."""
    try:
        body = response.json()
        msg = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(msg, dict):
            msg = msg.get("message") or msg.get("detail") or json.dumps(msg)
    except Exception:  # noqa: BLE001 - not JSON: its text
        msg = response.text
    msg = str(msg)
    if secret:
        msg = msg.replace(secret, "***")
    return " ".join(msg.split())[:200] or response.reason_phrase


def shown_url(url: str) -> str:
    """A URL without user, password or query (they may hold credentials): for reports."""
    import httpx

    try:
        u = httpx.URL(url)
        return str(u.copy_with(username=None, password=None, query=None, fragment=None))
    except Exception:  # noqa: BLE001 - not a URL: shown as nothing
        return "<unparsable URL>"


class OpenAIBackend:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 16,
                 timeout: float = 120.0, max_attempts: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise BackendError(f"rephrase.base_url: {base_url!r} is not an http(s) URL")
        if not model:
            raise BackendError("rephrase.model: name the model the server serves")
        if max_attempts < 1 or concurrency < 1 or timeout <= 0:
            raise BackendError("rephrase: max_attempts and concurrency must be >= 1 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stats = Stats()
        self._clients: list = []
        self._turn = 0
        self._sem: asyncio.Semaphore | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def __aenter__(self) -> "OpenAIBackend":
        import httpx

        # httpcore's pool scans all its connections and waiting requests for every request, which
        # costs more than the requests past a few dozen connections (bench/bench_rephrase.py):
        # the connections are spread over clients of at most CLIENT_CONNECTIONS each
        n = -(-self.concurrency // CLIENT_CONNECTIONS)
        per = -(-self.concurrency // n)
        self._clients = [httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
        ) for _ in range(n)]
        self._sem = asyncio.Semaphore(self.concurrency)
        return self

    async def __aexit__(self, *exc) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients = []

    def check(self) -> None:
        """On the driver, before any task starts: the server answers, the key is accepted and
        the model is served (GET /models). A server without /models is not held against it."""
        import httpx

        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=min(self.timeout, 30.0))
        except httpx.HTTPError as exc:
            raise BackendError(f"rephrase: no answer from {shown_url(self.base_url)} ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise BackendError(f"rephrase: {shown_url(self.base_url)} refused the key (HTTP {r.status_code}: "
                               f"{_server_message(r, self._key)}); set it in the variable named by --api-key-env")
        if r.status_code != 200:
            return
        try:
            served = [m.get("id") for m in r.json().get("data", []) if isinstance(m, dict)]
        except Exception:  # noqa: BLE001 - a listing we cannot read is no evidence either way
            return
        if served and self.model not in served:
            raise BackendError(f"rephrase: model {self.model!r} is not served at {shown_url(self.base_url)} "
                               f"(it serves: {', '.join(map(str, served[:10]))})")

    def _body(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": sampling.max_tokens,
                                "temperature": sampling.temperature, "top_p": sampling.top_p}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER) * random.uniform(1.0, 1.2)
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        import httpx

        assert self._clients and self._sem is not None, "use `async with backend:`"
        body = self._body(messages, sampling)
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            retry_after = None
            async with self._sem:
                self.stats.in_flight += 1
                start = time.perf_counter()
                try:
                    self._turn = (self._turn + 1) % len(self._clients)
                    async with asyncio.timeout(self.timeout):  # the whole request, not each read
                        r = await self._clients[self._turn].post("/chat/completions", json=body)
                except (TimeoutError, httpx.TimeoutException):
                    r, reason = None, f"timeout after {self.timeout:g} s"
                except httpx.RequestError as exc:  # transport, decoding, redirects
                    r, reason = None, f"connection error ({type(exc).__name__})"
                finally:
                    self.stats.in_flight -= 1
                seconds = time.perf_counter() - start
            if r is not None:
                if r.status_code in FATAL_STATUS:
                    message = _server_message(r, self._key)
                    if r.status_code in (400, 413, 422) and _CONTEXT.search(message):
                        self.stats.failed += 1  # this request does not fit: its own failure
                        raise RequestFailed(f"rejected, HTTP {r.status_code}: {message}", retries=attempt - 1)
                    raise BackendError(f"rephrase: {shown_url(self.base_url)} rejected the request "
                                       f"(HTTP {r.status_code}: {message})")
                if r.status_code == 200:
                    try:
                        return self._completion(r, attempt - 1, seconds)
                    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                        reason = "malformed response (not the chat-completions JSON)"
                else:
                    reason = f"HTTP {r.status_code}"
                    if r.status_code == 429 or r.status_code == 503:
                        retry_after = _retry_after(r.headers.get("retry-after"))
                    elif r.status_code not in RETRY_STATUS and r.status_code < 500:
                        raise BackendError(f"rephrase: {shown_url(self.base_url)} answered HTTP {r.status_code} "
                                           f"({_server_message(r, self._key)})")
            if attempt < self.max_attempts:
                self.stats.retries += 1
                await asyncio.sleep(self._delay(attempt, retry_after))
        self.stats.failed += 1
        raise RequestFailed(f"{reason}, {self.max_attempts} attempts", retries=self.max_attempts - 1)

    def _completion(self, r, retries: int, seconds: float) -> Completion:
        data = r.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise ValueError("content is not a string")
        usage = data.get("usage") or {}
        done = Completion(text=text, finish_reason=str(choice.get("finish_reason") or "stop"),
                          tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0), retries=retries, seconds=seconds)
        self.stats.requests += 1
        self.stats.tokens_in += done.tokens_in
        self.stats.tokens_out += done.tokens_out
        self.stats.truncated += done.finish_reason == "length"
        return done


_LOADED: dict[tuple[str, str], tuple] = {}  # (model dir, device) -> (model, tokenizer): one per process


def vicuna_prompt(messages: list[dict[str, str]]) -> str:
    """WRAP's own format, for a tokenizer without a chat template."""
    parts = []
    for m in messages:
        role = {"system": "SYSTEM", "user": "USER", "assistant": "ASSISTANT"}.get(m["role"], m["role"].upper())
        parts.append(f"{role}: {m['content']}")
    return "\n".join(parts) + "\nASSISTANT:"


class TransformersBackend:
    def __init__(self, model_dir: str, *, max_batch: int = 8, device: str | None = None) -> None:
        self.model_dir = model_dir
        self.max_batch = max(1, max_batch)
        self.device = device
        self.stats = Stats()
        self._queue: list[tuple[list[dict[str, str]], Sampling, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._model = self._tok = None

    def check(self) -> None:
        self._load()

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (self.model_dir, device)
        if key not in _LOADED:  # a Python worker that runs a second task reuses the model
            _LOADED.clear()
            _LOADED[key] = self._read(device)
        self._model, self._tok = _LOADED[key]
        self.device = device

    def _read(self, device: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.model_dir)
            model = AutoModelForCausalLM.from_pretrained(self.model_dir)
        except Exception as exc:  # noqa: BLE001 - whatever transformers raises, it is the directory's
            raise BackendError(f"rephrase: cannot load a causal LM from {self.model_dir} "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
        if device.startswith("cuda") and model.dtype == torch.float32 and torch.cuda.is_bf16_supported():
            model = model.to(torch.bfloat16)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return model.to(device).eval(), tok

    async def __aenter__(self) -> "TransformersBackend":
        self._load()
        self._wake = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def complete(self, messages: list[dict[str, str]], sampling: Sampling) -> Completion:
        assert self._wake is not None, "use `async with backend:`"
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((messages, sampling, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let requests that arrive together join the batch
            if not self._queue:
                self._wake.clear()
                continue
            first = self._queue[0][1]
            batch = [item for item in self._queue if item[1] == first][: self.max_batch]
            for item in batch:
                self._queue.remove(item)
            if not self._queue:
                self._wake.clear()
            self.stats.in_flight += len(batch)
            self.stats.batches += 1
            start = time.perf_counter()
            try:
                done = await loop.run_in_executor(None, self._generate, [m for m, _, _ in batch], first)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the loop
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(RequestFailed(f"generation error ({type(exc).__name__}: "
                                                        f"{' '.join(str(exc).split())[:120]})"))
                self.stats.failed += len(batch)
                continue
            finally:
                self.stats.in_flight -= len(batch)
            seconds = time.perf_counter() - start
            for (_, _, fut), c in zip(batch, done):
                c.seconds = seconds
                self.stats.requests += 1
                self.stats.tokens_in += c.tokens_in
                self.stats.tokens_out += c.tokens_out
                self.stats.truncated += c.finish_reason == "length"
                if not fut.done():
                    fut.set_result(c)

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return vicuna_prompt(messages)

    def _generate(self, batch: list[list[dict[str, str]]], sampling: Sampling) -> list[Completion]:
        import torch

        tok, model = self._tok, self._model
        enc = tok([self._prompt(m) for m in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": tok.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [tok.eos_token_id])
        results = []
        for i in range(len(batch)):
            new = out[i, width:].tolist()
            cut = next((j for j, t in enumerate(new) if t in eos), None)
            ids = new if cut is None else new[:cut]
            if cut is None:  # no end-of-text: padding after it is not output either
                while ids and ids[-1] == tok.pad_token_id and tok.pad_token_id not in eos:
                    ids.pop()
            finish = "length" if cut is None and len(new) >= sampling.max_tokens else "stop"
            results.append(Completion(text=tok.decode(ids, skip_special_tokens=True), finish_reason=finish,
                                      tokens_in=int(enc["attention_mask"][i].sum()),
                                      tokens_out=len(ids) + (cut is not None)))
        return results
