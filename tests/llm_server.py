"""A loopback OpenAI-compatible chat server for tests and benchmarks of the LLM rephrase stage.

A stand-in for vLLM, llama.cpp's server or `transformers serve`: FastAPI under uvicorn on
127.0.0.1 (a background thread, or a process) serving `POST /v1/chat/completions` and
`GET /v1/models`, so a client meets real sockets, timeouts and concurrency, with no GPU and no
download. With `model_dir`, a causal LM (e.g. the random one `make_tiny_chat_model` builds in a
fraction of a second, its tokenizer trained on `data/`) answers through its chat template and
`model.generate`, one request at a time. Without it (benchmark mode) the reply is the last user
message's words reversed (or its first words cycled to `echo_tokens` words), sent after
`latency` seconds of `asyncio.sleep`, so many requests can be in flight at once.

Faults (in-process only), popped one per POST from `server.faults` or applied by
`server.fault_when(match, fault, times=N)` rules, which go first: `("status", 503)`,
`("429", retry_after_s)`, `("malformed",)`, `("truncate",)`, `("hang", seconds)`, `("close",)`
(the connection is closed with no response: the uvicorn h11 protocol is subclassed to keep each
connection's transport by client address). Only requests that pass the api-key, request and
model-name checks meet a fault. `server.requests` logs every POST: user, status, headers, fault, time
(monotonic); `server.peak` is the most chat requests it answered at once.

`python -m tests.llm_server --port N [--model DIR] [--latency S] [--echo-tokens N]` prints
`listening on http://127.0.0.1:N/v1` when ready and serves until SIGTERM or SIGINT. Clients
should bypass any HTTP proxy (httpx: `trust_env=False`).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gzip
import io
import json
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import uvicorn
import zstandard
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

REPO = Path(__file__).resolve().parent.parent
TEXT_FILES = [REPO / "data" / "sample" / "pool" / "reference.jsonl.zst",
              REPO / "data" / "sample" / "pool" / "fiction.jsonl.zst"]
SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
FAULT_KINDS = {"status", "429", "malformed", "truncate", "hang", "close"}


def _texts(files: list[Path], budget_chars: int) -> list[str]:
    """Up to budget_chars of text, shared between files: records' "text" from JSON Lines (`.jsonl`,
    `.jsonl.zst`, `.jsonl.gz`), plain contents from other files."""
    out: list[str] = []
    share = budget_chars // max(1, len(files))
    for file in map(Path, files):
        raw, taken, jsonl = file.open("rb"), 0, ".jsonl" in file.suffixes
        stream: Any = (zstandard.ZstdDecompressor().stream_reader(raw) if file.suffix == ".zst"
                       else gzip.GzipFile(fileobj=raw) if file.suffix == ".gz" else raw)
        with raw, io.TextIOWrapper(stream, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                text = json.loads(line).get("text", "") if jsonl and line.strip() else line
                out.append(text[: share - taken])
                taken += len(out[-1])
                if taken >= share:
                    break
    return out


@contextlib.contextmanager
def _quiet_progress():
    """transformers' progress bars (weights written or loaded) off for the duration."""
    from transformers.utils import logging as hf_logging
    was_on, _ = hf_logging.is_progress_bar_enabled(), hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def make_tiny_chat_model(path: str | Path, seed: int = 0, vocab_size: int = 384,
                         text_files: list[str | Path] | None = None) -> Path:
    """Save a random tiny Llama (hidden 32, 2 layers, 2 heads, 2048 positions) and a byte-level
    BPE tokenizer trained on about 300 KB of the repo's sample text (or `text_files`), with
    bos/eos/pad and a chat template, into `path`; loadable offline with the Auto classes.
    The same arguments give the same files."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_texts(list(text_files or TEXT_FILES), 300_000), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", model_max_length=2048)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with _quiet_progress():
        model.save_pretrained(path)
    return path


def _content(message: Any) -> str:
    """A message's text: a plain string, or the text parts of an OpenAI content list."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _options(body: dict) -> dict:
    """A request's generation options with OpenAI's defaults (TypeError or ValueError if malformed)."""
    def get(key: str, kind: type, default: Any = None) -> Any:
        return default if body.get(key) is None else kind(body[key])

    limit = get("max_completion_tokens", int, get("max_tokens", int))
    return {"max_tokens": None if limit is None else max(1, limit), "temperature": get("temperature", float, 1.0),
            "top_p": get("top_p", float, 1.0), "seed": get("seed", int)}


def _error(status: int, message: str, code: str | None = None, headers: dict | None = None):
    kind = ("server_error" if status >= 500 else "rate_limit_error" if status == 429
            else "authentication_error" if status == 401 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


class LLMServer:
    """An OpenAI-compatible chat server on 127.0.0.1 in a background thread; a context manager."""

    def __init__(self, model_dir: str | Path | None = None, *, latency: float = 0.0,
                 echo_tokens: int | None = None, api_key: str | None = None,
                 served_name: str = "tiny", port: int = 0, default_max_tokens: int = 64):
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.latency, self.echo_tokens, self.api_key = latency, echo_tokens, api_key
        self.served_name, self.port, self.default_max_tokens = served_name, port, default_max_tokens
        self.faults: collections.deque = collections.deque()  # append/extend/popleft are thread-safe
        self.requests: list[dict] = []  # appended under self._lock
        self.in_flight = self.peak = 0  # chat requests being answered now, and the most at once
        self._lock, self._generate_lock = threading.Lock(), threading.Lock()
        self._rules: list[list] = []  # [predicate, fault, remaining or None]
        self._transports: dict[tuple, asyncio.Transport] = {}  # client (host, port) -> transport
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.model = self.tokenizer = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fault_when(self, match: str | Callable[[str], bool], fault: tuple, times: int | None = None) -> None:
        """Apply `fault` to the first `times` requests (all if None) whose last user message
        contains `match` (a string) or satisfies it (a predicate)."""
        if str(fault[0]) not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}")
        predicate = (lambda text: match in text) if isinstance(match, str) else match
        with self._lock:
            self._rules.append([predicate, fault, times])

    def answered(self, user_text: str) -> int:
        """How many well-formed 200 answers (malformed ones excluded) went to this user text."""
        with self._lock:
            return sum(1 for r in self.requests
                       if r["user"] == user_text and r["status"] == 200 and r["fault"] != "malformed")

    def _next_fault(self, user: str) -> tuple | None:
        with self._lock:
            for rule in self._rules:
                if rule[2] != 0 and rule[0](user):
                    if rule[2] is not None:
                        rule[2] -= 1
                    return rule[1]
        return self.faults.popleft() if self.faults else None  # popleft is atomic; a test only appends

    def _generate(self, messages: list[dict], max_new: int, temperature: float, top_p: float,
                  seed: int | None) -> tuple[str, int, int, str]:
        import torch
        tok, model = self.tokenizer, self.model
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        max_new = max(1, min(max_new, model.config.max_position_embeddings // 2))
        ids = ids[:, -(model.config.max_position_embeddings - max_new):]  # keep the prompt's end
        options = ({"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
                   if temperature > 0 else {"do_sample": False})
        with self._generate_lock, torch.no_grad(), torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:  # the caller's torch RNG is left as it was
                torch.manual_seed(seed)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **options)
        new = out[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id) + 1]
        finish = "stop" if len(new) < max_new or new[-1] == tok.eos_token_id else "length"
        return tok.decode(new, skip_special_tokens=True), ids.shape[1], len(new), finish

    def _echo(self, messages: list[dict], user: str, max_tokens: int | None) -> tuple[str, int, int, str]:
        words = user.split()
        if self.echo_tokens is not None:
            words = words or ["echo"]
            reply = [words[i % len(words)] for i in range(self.echo_tokens)]
        else:
            reply = words[::-1]
        finish = "length" if max_tokens is not None and len(reply) > max_tokens else "stop"
        reply = reply[:max_tokens]
        prompt_tokens = sum(len(_content(m).split()) for m in messages)
        return " ".join(reply), prompt_tokens, len(reply), finish

    async def _complete(self, messages: list[dict], user: str, options: dict, truncate: bool) -> dict:
        limit = options["max_tokens"]
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.model is None:
            text, prompt_n, completion_n, finish = self._echo(messages, user, limit)
            if truncate:  # the first half of the answer's words
                words = text.split()[: completion_n // 2]
                text, completion_n = " ".join(words), len(words)
        else:
            limit = limit or self.default_max_tokens
            plain = [{"role": str(m.get("role", "user")), "content": _content(m)} for m in messages]
            text, prompt_n, completion_n, finish = await asyncio.to_thread(
                self._generate, plain, max(1, limit // 2) if truncate else limit, options["temperature"],
                options["top_p"], options["seed"])
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": self.served_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if truncate else finish}],
                "usage": {"prompt_tokens": prompt_n, "completion_tokens": completion_n,
                          "total_tokens": prompt_n + completion_n}}

    def _app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        def authorised(request: Request) -> bool:
            return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

        @app.get("/v1/models")
        async def list_models(request: Request):
            if not authorised(request):
                return _error(401, "Incorrect API key provided.", "invalid_api_key")
            return {"object": "list", "data": [{"id": self.served_name, "object": "model",
                                                "created": 0, "owned_by": "winnow-tests"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                return await answer(request)
            finally:
                with self._lock:
                    self.in_flight -= 1

        async def answer(request: Request):
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            messages = body.get("messages") if isinstance(body, dict) else None
            users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
            entry = {"user": _content(users[-1]) if users else "", "status": None,
                     "headers": {k.lower(): v for k, v in request.headers.items()}, "fault": None,
                     "time": time.monotonic()}
            with self._lock:
                self.requests.append(entry)

            def sent(response: Response, status: int | str | None = None) -> Response:
                entry["status"] = response.status_code if status is None else status
                return response

            if not authorised(request):
                return sent(_error(401, "Incorrect API key provided.", "invalid_api_key"))
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                return sent(_error(400, "'messages' must be a non-empty list of message objects."))
            if body.get("model") != self.served_name:
                return sent(_error(404, f"The model {body.get('model')!r} does not exist.", "model_not_found"))
            if body.get("stream"):
                return sent(_error(400, "stream=true is not supported by this test server."))
            try:
                options = _options(body)
            except (TypeError, ValueError) as exc:
                return sent(_error(400, f"Bad request parameter: {exc}"))
            fault = self._next_fault(entry["user"])
            kind = None if fault is None else str(fault[0])
            entry["fault"] = kind
            if kind == "close":
                entry["status"] = "closed"
                transport = self._transports.get(tuple(request.scope["client"]))
                if transport is not None:
                    transport.close()
                for _ in range(3):  # let connection_lost run: uvicorn then ignores the response below
                    await asyncio.sleep(0)
                return Response(status_code=500)
            arg = fault[1] if fault is not None and len(fault) > 1 else None
            if kind == "status":
                message = fault[2] if len(fault) > 2 else f"Injected fault: HTTP {arg or 500}."
                return sent(_error(int(arg or 500), message))
            if kind == "429":
                seconds = 1 if arg is None else arg
                value = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
                return sent(_error(429, "Rate limit reached (injected).", "rate_limit_exceeded",
                                   {"Retry-After": value}))
            if kind == "malformed":
                return sent(Response('{"choices": [', status_code=200, media_type="application/json"))
            if kind == "hang":
                entry["status"] = "hang"
                deadline = time.monotonic() + float(3600 if arg is None else arg)
                while time.monotonic() < deadline and not self._server.should_exit:
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            elif kind not in (None, "truncate"):
                return sent(_error(500, f"Unknown injected fault {fault!r}."))
            answer = await self._complete(messages, entry["user"], options, truncate=kind == "truncate")
            return sent(JSONResponse(answer), "hang" if kind == "hang" else None)

        return app

    def start(self) -> LLMServer:
        if self._thread is not None:
            return self
        if self.model_dir is not None and self.model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            with _quiet_progress():
                self.model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        transports = self._transports

        class Protocol(H11Protocol):  # remembers each connection's transport, for the "close" fault
            def connection_made(self, transport):  # type: ignore[override]
                super().connection_made(transport)
                transports[self.client] = transport

            def connection_lost(self, exc):
                transports.pop(self.client, None)
                super().connection_lost(exc)

        sock = socket.create_server(("127.0.0.1", self.port))  # bound now: the port is known and kept
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), http=Protocol, loop="asyncio", ws="none", lifespan="off",
                                log_config=None, log_level="warning", access_log=False,
                                timeout_keep_alive=30, timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"llm-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the LLM test server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
            self._thread = None

    __enter__ = start

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.llm_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--model", help="a model directory; without it, replies echo the user's words")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--echo-tokens", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--served-name", default="tiny")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with LLMServer(args.model, latency=args.latency, echo_tokens=args.echo_tokens, api_key=args.api_key,
                   served_name=args.served_name, port=args.port) as server:
        print(f"listening on {server.base_url}", flush=True)
        while not stopping.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
