"""tests/llm_server.py: the loopback OpenAI-compatible server (tiny model or echo mode), its
faults as a client sees them, and its process mode."""
from __future__ import annotations

import asyncio
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.llm_server import LLMServer, make_tiny_chat_model

REPO = Path(__file__).resolve().parent.parent


def _client(**kw) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=kw.pop("timeout", 30), **kw)


def _chat(text: str, model: str = "tiny", **extra) -> dict:
    return {"model": model, "messages": [{"role": "system", "content": "Rephrase the text."},
                                         {"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_chat_model(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def model_server(tiny_model):
    with LLMServer(tiny_model) as server:
        yield server


def test_the_tiny_model_is_deterministic_and_loads_offline(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    again = make_tiny_chat_model(tmp_path / "again")
    other = make_tiny_chat_model(tmp_path / "other", seed=1)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_model / "model.safetensors").read_bytes()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert len(tokenizer) == 384 == model.config.vocab_size
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "<s><|system|>\nBe brief.</s>\n<|user|>\nHello there</s>\n<|assistant|>\n"
    assert not tokenizer.apply_chat_template(messages, tokenize=False).endswith("<|assistant|>\n")
    assert len(tokenizer("the quick brown fox")["input_ids"]) < len("the quick brown fox")  # merges learnt


def test_a_chat_completion_from_the_tiny_model(model_server):
    with _client() as client:
        assert client.get(f"{model_server.base_url}/models").json()["data"][0]["id"] == "tiny"
        reply = client.post(f"{model_server.base_url}/chat/completions",
                            json=_chat("The cat sat on the mat.", temperature=0, max_tokens=12))
        assert reply.status_code == 200
        body = reply.json()
        assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"]
        choice = body["choices"][0]
        assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        greedy = client.post(f"{model_server.base_url}/chat/completions",
                             json=_chat("The cat sat on the mat.", temperature=0, max_tokens=12)).json()
        assert greedy["choices"][0]["message"] == choice["message"]
        sampled = [client.post(f"{model_server.base_url}/chat/completions",
                               json=_chat("A dog.", temperature=1.0, top_p=0.9, seed=7, max_tokens=8)).json()
                   for _ in range(2)]
        assert sampled[0]["choices"] == sampled[1]["choices"]


def test_max_tokens_ends_a_generation_with_finish_reason_length(model_server):
    with _client() as client:
        for key in ("max_tokens", "max_completion_tokens"):
            body = client.post(f"{model_server.base_url}/chat/completions",
                               json=_chat("Say something long.", temperature=0, **{key: 3})).json()
            assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"


def test_a_wrong_model_is_404_and_a_missing_api_key_is_401():
    with LLMServer(api_key="sekret") as server, _client() as client:
        url = f"{server.base_url}/chat/completions"
        missing = client.post(url, json=_chat("hello"))
        assert missing.status_code == 401 and set(missing.json()["error"]) >= {"message", "type", "code"}
        assert client.post(url, json=_chat("hello"), headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": "Bearer sekret"}
        wrong = client.post(url, json=_chat("hello", model="gpt-9"), headers=auth)
        assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
        assert client.post(url, json=_chat("hello"), headers=auth).status_code == 200
        assert client.get(f"{server.base_url}/models").status_code == 401
    assert [r["status"] for r in server.requests] == [401, 401, 404, 200]
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sekret"
    assert server.answered("hello") == 1


def test_each_fault_is_seen_by_the_client():
    with LLMServer() as server, _client() as client:
        url = f"{server.base_url}/chat/completions"
        server.faults.extend([("status", 503), ("429", 2), ("malformed",), ("truncate",), ("hang", 2), ("close",)])
        failed = client.post(url, json=_chat("one two three four"))
        assert failed.status_code == 503 and failed.json()["error"]["type"] == "server_error"
        limited = client.post(url, json=_chat("one two three four"))
        assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
        malformed = client.post(url, json=_chat("one two three four"))
        assert malformed.status_code == 200
        with pytest.raises(ValueError):
            malformed.json()
        cut = client.post(url, json=_chat("one two three four")).json()
        assert cut["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "four three"},
                                     "finish_reason": "length"}
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post(url, json=_chat("one two three four"), timeout=0.3)
        assert time.monotonic() - started < 1.5
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(url, json=_chat("one two three four"))
        fine = client.post(url, json=_chat("one two three four")).json()
        assert fine["choices"][0]["message"]["content"] == "four three two one"
        assert fine["choices"][0]["finish_reason"] == "stop" and fine["usage"]["completion_tokens"] == 4

        server.fault_when("POISON", ("status", 500))
        server.fault_when(lambda text: text.startswith("flaky"), ("close",), times=1)
        assert all(client.post(url, json=_chat("a POISON pill")).status_code == 500 for _ in range(3))
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(url, json=_chat("flaky one"))
        assert client.post(url, json=_chat("flaky one")).status_code == 200
    assert [r["status"] for r in server.requests] == [503, 429, 200, 200, "hang", "closed", 200,
                                                      500, 500, 500, "closed", 200]
    assert [r["fault"] for r in server.requests[:7]] == ["status", "429", "malformed", "truncate", "hang",
                                                         "close", None]
    assert server.answered("one two three four") == 2  # the truncated and the last; not the malformed
    assert server.answered("a POISON pill") == 0 and server.answered("flaky one") == 1


def test_echo_mode_serves_concurrent_requests_while_sleeping():
    latency, n = 0.5, 20

    async def burst(url: str) -> list[dict]:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            replies = await asyncio.gather(*(client.post(url, json=_chat(f"doc {i} has words", max_tokens=3))
                                             for i in range(n)))
        return [r.json() for r in replies]

    with LLMServer(latency=latency) as server:
        started = time.monotonic()
        bodies = asyncio.run(burst(f"{server.base_url}/chat/completions"))
        elapsed = time.monotonic() - started
    assert elapsed < n * latency / 4, elapsed
    assert [b["choices"][0]["message"]["content"] for b in bodies] == [f"words has {i}" for i in range(n)]
    assert all(b["choices"][0]["finish_reason"] == "length" for b in bodies)
    assert bodies[0]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

    with LLMServer(echo_tokens=5) as server, _client() as client:
        body = client.post(f"{server.base_url}/chat/completions", json=_chat("alpha beta")).json()
        assert body["choices"][0]["message"]["content"] == "alpha beta alpha beta alpha"


def test_the_process_mode_answers_and_stops_on_sigterm():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.llm_server", "--port", str(port), "--echo-tokens", "2"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the server printed nothing in 30 s"
        assert proc.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}/v1"
        with _client() as client:
            body = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=_chat("x y z")).json()
        assert body["choices"][0]["message"]["content"] == "x y"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
