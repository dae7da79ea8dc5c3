"""The rephrase stage (WRAP) against real OpenAI-compatible servers on loopback (tests/llm_server.py):
a tiny causal LM made here, and a model-free echo server with injected faults; the transformers
backend directly; `winnow rephrase` killed with SIGKILL and rerun; an API key planted in the
environment and looked for everywhere."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from core.errors import BackendError
from flows.curate import run_curation
from synth.engine import Job, Rephraser
from synth.wrap import PRESETS, Sampling, cache_key

from .conftest import config
from .llm_server import LLMServer, make_tiny_chat_model

SENTENCES = [
    "The river rose after three days of rain, and the bridge was closed to traffic.",
    "Farmers moved their cattle to the hills while the water covered the lower fields.",
    "By the end of the week the town had opened two shelters in the school and the church.",
    "Engineers later said the old stone piers had held better than the new steel ones.",
]


def doc(i: int, sentences: int = 3, extra: str = "") -> dict:
    text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(sentences))
    return {"id": f"d{i}", "text": f"Document {i}. {text}{extra}", "url": f"https://example.org/{i}"}


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def row(d: dict, i: int) -> dict:
    return {"id": d["id"], "text": d["text"], "source": "s", "domain": "web", "meta": [("url", d["url"])],
            "_file": 0, "_row": i}


def job(tmp_path: Path, server: LLMServer, **kw) -> Job:
    settings = dict(prompts=(PRESETS["qa"],), sampling=Sampling(max_tokens=200), model="tiny",
                    cache=str(tmp_path / "cache"), base_url=server.base_url, concurrency=4, backoff=0.01,
                    timeout=5.0, max_attempts=5)
    settings.update(kw)
    return Job(**settings)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-lm") / "model", seed=0)


def chunk_of(user: str, style: str = "qa") -> str:
    """The chunk inside a preset's user message."""
    prefix = PRESETS[style].user.split("{chunk}")[0]
    assert user.startswith(prefix)
    return user[len(prefix):]


# ---- the stage in a flow, against a tiny LM served over HTTP ----------------------------------

def test_flow_rephrases_with_a_tiny_lm_served_over_http(spark, prefect_server, tiny_model, tmp_path):
    src = write_docs(tmp_path / "in.jsonl", [doc(i) for i in range(6)] + [{"id": "blank", "text": "   "}])
    stage = {"stage": "rephrase", "styles": ["qa", "medium"], "base_url": None, "model": "tiny",
             "max_tokens": 12, "temperature": 0.0, "on_length": "keep", "concurrency": 4}
    with LLMServer(tiny_model) as server:
        stage["base_url"] = server.base_url
        summary = run_curation(config([src], tmp_path / "out", stages=[stage]), spark=spark)
        answered = sum(1 for r in server.requests if r["status"] == 200)
    rec = next(r for r in summary.stages if r.name == "rephrase")
    assert (rec.n_in, rec.added) == (7, 14) and rec.n_in + rec.added == rec.kept + rec.removed
    kept = pads.dataset(summary.output / "kept").to_table().to_pylist()
    real = [r for r in kept if not r["synthetic"]]
    synth = [r for r in kept if r["synthetic"]]
    assert sorted(r["id"] for r in real) == sorted([f"d{i}" for i in range(6)] + ["blank"])
    removed = pads.dataset(summary.output / "removed" / "rephrase").to_table().to_pylist()
    # the blank document has nothing to rephrase, in either style; a tiny random LM may answer
    # nothing for a chunk (an empty answer): both are removed rows with a reason, nothing is lost
    reasons = {r["id"]: r["reason"] for r in removed}
    assert reasons["wrap:qa:blank"].startswith("no text") and reasons["wrap:medium:blank"].startswith("no text")
    assert all(r.split(":")[0] in ("no text", "empty answer") for r in reasons.values())
    assert len(synth) + len(removed) == 14
    for r in synth + removed:
        meta = dict((m["key"], m["value"]) for m in r["meta"])
        style = r["source"].removeprefix("wrap:")
        assert r["id"] == f"wrap:{style}:{meta['parent_id']}" and meta["wrap_style"] == style
        assert meta["wrap_prompt"] == f"wrap-{style}-1" and meta["wrap_model"] == "tiny"
        assert json.loads(meta["wrap_sampling"]) == {"max_tokens": 12, "seed": None, "temperature": 0.0, "top_p": 0.95}
        assert meta.get("url", "").startswith("https://example.org/") or meta["parent_id"] == "blank"
    for r in synth:
        assert r["text"] and r["domain"] == "in"
    per_style = rec.stats["per_style"]
    assert set(per_style) == {"qa", "medium"}
    assert sum(s["requests"] for s in per_style.values()) == answered
    assert all(s["tokens_in"] > 0 and s["tokens_out"] > 0 for s in per_style.values())
    report = (summary.output / "report.md").read_text()
    assert "in + added = kept + removed" in report and "### rephrase: per style" in report
    assert "| rephrase | 7 | 14 |" in report


def test_transformers_backend_batches_and_the_cache_answers_a_rerun(tiny_model, tmp_path):
    rows = [row(doc(i, sentences=2), i) for i in range(5)]
    j = Job(prompts=(PRESETS["qa"], PRESETS["easy"]), sampling=Sampling(max_tokens=8, temperature=0.0),
            model=str(tiny_model), cache=str(tmp_path / "cache"), backend="transformers", concurrency=4,
            on_length="keep")
    first = Rephraser(j)
    out = list(first.run(iter(rows)))
    synth = [o for o in out if o["synthetic"]]
    assert len(out) == 15 and len(synth) == 10
    assert first.stats.requests == 10 and first.stats.batches < 10  # sequences generated together
    metas = [dict(o["meta"]) for o in synth]
    assert sum(int(m["wrap_requests"]) for m in metas) == 10 and all(int(m["wrap_tokens_in"]) > 0 for m in metas)
    assert all(m["wrap_backend"] == "transformers" for m in metas)
    again = list(Rephraser(j).run(iter(reversed(rows))))  # another order: the same answers, none asked
    metas = [dict(o["meta"]) for o in again if o["synthetic"]]
    assert sum(int(m["wrap_requests"]) for m in metas) == 0 and sum(int(m["wrap_cached"]) for m in metas) == 10
    assert sorted((o["id"], o["text"]) for o in again if o["synthetic"]) == sorted((o["id"], o["text"]) for o in synth)


# ---- faults -----------------------------------------------------------------------------------

def test_faults_are_retried_and_only_what_finally_failed_is_removed(tmp_path):
    rows = [row(doc(i, sentences=1), i) for i in range(8)] + [row({"id": "poison", "text": "POISON pill text.",
                                                                    "url": "u"}, 8)]
    with LLMServer(latency=0.01) as server:
        server.fault_when("POISON", ("status", 500))  # every attempt
        # a chunk too long for the model's context: that request's own failure, not the run's
        server.fault_when("Document 5.", ("status", 400, "This model's maximum context length is 2048 tokens."))
        for fault in [("status", 500), ("status", 502), ("malformed",), ("close",), ("hang", 3.0), ("429", 1)]:
            server.faults.append(fault)
        j = job(tmp_path, server, timeout=0.5, max_attempts=8, concurrency=1)
        r = Rephraser(j)
        out = list(r.run(iter(rows)))
        poison_requests = sum(1 for q in server.requests if "POISON" in q["user"])
        log = list(server.requests)
    kept = [o for o in out if o["synthetic"] and o["_reason"] is None]
    removed = [o for o in out if o["_reason"] is not None]
    assert len(out) == 9 + 9  # the input rows, and one row per document for the one style
    assert [o["id"] for o in removed] == ["wrap:qa:d5", "wrap:qa:poison"]
    assert removed[0]["_reason"].startswith("request failed: chunk 1 of 1: rejected, HTTP 400: This model's maximum")
    removed = removed[1:]
    assert removed[0]["_reason"] == "request failed: chunk 1 of 1: HTTP 500, 8 attempts"
    assert dict(removed[0]["meta"])["parent_id"] == "poison" and dict(removed[0]["meta"])["wrap_retries"] == "7"
    assert poison_requests == 8
    assert len(kept) == 7 and all(o["text"] for o in kept)
    # six injected faults, each costing one attempt, plus the poison document's seven retries
    assert sum(int(dict(o["meta"])["wrap_retries"]) for o in out if o["synthetic"]) == 6 + 7
    # the 429's Retry-After: 1 was waited for before that chunk was asked again (backoff: 10 ms)
    limited = next(i for i, q in enumerate(log) if q["status"] == 429)
    retry = next(q for q in log[limited + 1:] if q["user"] == log[limited]["user"])
    assert retry["time"] - log[limited]["time"] >= 1.0


def test_truncated_answers_are_counted_and_removed_or_kept(tmp_path):
    rows = [row(doc(i, sentences=1), i) for i in range(3)]
    with LLMServer(latency=0.0) as server:
        server.fault_when("Document 1.", ("truncate",))
        out = list(Rephraser(job(tmp_path, server)).run(iter(rows)))
        kept_too = list(Rephraser(job(tmp_path, server, on_length="keep")).run(iter(rows)))
    removed = {o["id"]: o["_reason"] for o in out if o["_reason"]}
    assert removed == {"wrap:qa:d1": "truncated: chunk 1 of 1 hit max_tokens 200"}
    truncated = [o for o in kept_too if o["id"] == "wrap:qa:d1"][0]
    assert truncated["_reason"] is None and truncated["text"] and dict(truncated["meta"])["wrap_truncated"] == "1"
    assert dict(truncated["meta"])["wrap_cached"] == "1"  # the cut answer was cached, not asked again


def test_a_wrong_model_or_key_fails_at_once_with_one_line(tmp_path):
    with LLMServer(api_key="sk-right") as server:
        with pytest.raises(BackendError, match="refused the key"):
            job(tmp_path, server).make_backend().check()
        os.environ["WINNOW_TEST_KEY"] = "sk-right"
        try:
            with pytest.raises(BackendError, match="model 'nope' is not served .*it serves: tiny"):
                job(tmp_path, server, model="nope", api_key_env="WINNOW_TEST_KEY").make_backend().check()
            # past the check (a server without /models): the 404 stops the run, nothing is retried
            with pytest.raises(BackendError, match="HTTP 404"):
                list(Rephraser(job(tmp_path, server, model="nope", api_key_env="WINNOW_TEST_KEY")).run(
                    iter([row(doc(0), 0)])))
        finally:
            del os.environ["WINNOW_TEST_KEY"]
        assert len(server.requests) == 1


# ---- the command: dry run, SIGKILL and rerun, the key nowhere ---------------------------------

def _winnow(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=env["HOME"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_winnow_rephrase_killed_and_rerun_asks_nothing_twice_and_writes_no_key(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    key = f"sk-planted-{uuid.uuid4().hex}"
    docs = [doc(i, sentences=2) for i in range(40)]
    src = write_docs(tmp_path / "in.jsonl", docs)
    out = tmp_path / "out"
    home = tmp_path / "home"
    home.mkdir()
    # the runs report to the session's Prefect test server (no database to create per run); their
    # flow runs, parameters and artifacts are read back from it below
    env = {**os.environ, "OPENAI_API_KEY": key, "PREFECT_HOME": str(home / "prefect"), "HOME": str(home),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    with LLMServer(latency=0.25, api_key=key) as server:
        args = ["rephrase", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "tiny",
                "--concurrency", "2", "--max-attempts", "2", "--master", "local[2]"]
        first = _winnow(args, env)
        deadline = time.time() + 90
        while time.time() < deadline and len(list((out / "rephrase_cache").glob("??/??/*.json"))) < 6:
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)
        first_out, _ = first.communicate(timeout=30)
        answered = {p.stem for p in (out / "rephrase_cache").glob("??/??/*.json")}
        assert 6 <= len(answered) < 40, "the first run was killed half-way"
        seen = len(server.requests)

        second = _winnow(args, env)
        second_out, _ = second.communicate(timeout=180)
        assert second.returncode == 0, second_out
        asked_again = [q for q in server.requests[seen:]
                       if cache_key("tiny", Sampling(), PRESETS["qa"], chunk_of(q["user"])) in answered]
        assert not asked_again
        assert all(q["headers"].get("authorization") == f"Bearer {key}" for q in server.requests)
    kept = pads.dataset(out / "kept").to_table().to_pylist()
    assert len(kept) == 40 and all(r["synthetic"] and r["source"] == "wrap:qa" for r in kept)
    assert not (out / "removed" / "rephrase").exists()
    # the key: in no output file, log line or Prefect artifact (the Prefect home holds the flow
    # runs, their parameters and artifacts in its database)
    for text in (first_out, second_out):
        assert key not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
            if path.suffix == ".parquet":  # compressed: look at the values
                assert key not in str(pq.read_table(path).to_pylist()), path
    with get_client(sync_client=True) as client:
        recorded = [a.model_dump(mode="json") for a in client.read_artifacts()]
        recorded += [r.model_dump(mode="json") for r in client.read_flow_runs()]
    assert any(a.get("key") == "winnow-stages" for a in recorded), "the runs' artifacts were read"
    assert key not in json.dumps(recorded)


# ---- into training shards: synthetic documents mixed 1:1 with the real ones ------------------

def test_synthetic_documents_export_as_their_own_part_mixed_by_synthetic_ratio(spark, prefect_server, tmp_path):
    src = write_docs(tmp_path / "in.jsonl", [doc(i, sentences=4) for i in range(30)])
    mixture = tmp_path / "mix.json"
    mixture.write_text(json.dumps({"weights": {"in": 1.0}, "budget": 3000, "max_repeats": 8}))
    with LLMServer(echo_tokens=60) as server:
        stages = [{"stage": "rephrase", "base_url": server.base_url, "model": "tiny", "concurrency": 8},
                  {"stage": "tokenize", "vocab_size": 300, "sample_docs": 60},
                  {"stage": "decompose", "min_log2": 3, "max_log2": 6},
                  {"stage": "export", "mixture": str(mixture)}]
        summary = run_curation(config([src], tmp_path / "out", stages=stages), spark=spark)
    records = {s.name: s for s in summary.stages}
    assert (records["rephrase"].n_in, records["rephrase"].added, records["rephrase"].kept) == (30, 30, 60)
    assert records["tokenize"].n_in == 60  # the next stage gets the real and the synthetic documents
    export = records["export"].stats
    parts = {name.split("/")[0] for name in export["datasets"]}
    assert parts == {"in", "in.synthetic"}
    asked = {d["domain"]: d["weight_asked"] for d in export["mixture"]["domains"]}
    assert asked == {"in": 0.5, "in.synthetic": 0.5} and export["synthetic_ratio"] == 1.0


def test_progress_files_are_summed_into_one_line(tmp_path):
    from pipelines.rephrase import _Watcher

    (tmp_path / "a.json").write_text(json.dumps({"requests": 10, "in_flight": 3, "retries": 1, "truncated": 0,
                                                 "tokens_in": 500, "tokens_out": 400, "documents": 4,
                                                 "started": 1.0}))
    (tmp_path / "b.json").write_text(json.dumps({"requests": 5, "in_flight": 2, "retries": 0, "truncated": 2,
                                                 "tokens_in": 100, "tokens_out": 50, "documents": 2}))
    (tmp_path / ".b.json.tmp").write_text("{")  # half-written: not read
    lines: list[str] = []
    watcher = _Watcher(str(tmp_path), lines.append)
    try:
        line = watcher.line()
    finally:
        watcher.close()
    assert line.startswith("15 requests, 5 in flight, ") and "1 retries, 2 truncated, 6 documents done" in line


def test_the_run_never_has_more_requests_in_flight_than_its_concurrency(spark, prefect_server, tmp_path):
    src = write_docs(tmp_path / "in.jsonl", [doc(i, sentences=1) for i in range(40)])
    with LLMServer(latency=0.05) as server:
        stage = {"stage": "rephrase", "base_url": server.base_url, "model": "tiny", "concurrency": 3,
                 "styles": ["qa", "easy"]}
        summary = run_curation(config([src], tmp_path / "out", stages=[stage]), spark=spark)
        peak = server.peak
    rec = next(r for r in summary.stages if r.name == "rephrase")
    assert rec.kept == 40 + 80 and rec.stats["tasks"] == 2  # local[2]: two tasks, shares 2 and 1
    assert 2 <= peak <= 3


def test_the_transformers_backend_through_the_stage_runs_one_task(spark, prefect_server, tiny_model, tmp_path):
    src = write_docs(tmp_path / "in.jsonl", [doc(i, sentences=1) for i in range(4)])
    stage = {"stage": "rephrase", "backend": "transformers", "model": str(tiny_model), "max_tokens": 6,
             "temperature": 0.0, "on_length": "keep", "concurrency": 4}
    summary = run_curation(config([src], tmp_path / "out", stages=[stage]), spark=spark)
    rec = next(r for r in summary.stages if r.name == "rephrase")
    assert rec.stats["tasks"] == 1 and rec.n_in + rec.added == rec.kept + rec.removed == 8
    assert rec.stats["per_style"]["qa"]["requests"] == 4


def test_a_fatal_answer_inside_a_spark_task_is_one_line_from_the_cli(spark, prefect_server, tmp_path, capsys):
    from flows.cli import main

    src = write_docs(tmp_path / "in.jsonl", [doc(i, sentences=1) for i in range(3)])
    with LLMServer() as server:  # /models answers, so the driver's check passes; every chat is refused
        server.fault_when(lambda _text: True, ("status", 403))
        code = main(["rephrase", str(src), "-o", str(tmp_path / "out"), "--base-url", server.base_url,
                     "--model", "tiny"])
    # (in this process Spark's and Prefect's own log lines go to stderr too; the CLI's is the last)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("winnow:")]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("winnow: error: rephrase: http://127.0.0.1:") and "HTTP 403" in err[0]


def test_dry_run_sends_nothing_and_a_wrong_model_is_one_line(spark, tmp_path, capsys, monkeypatch):
    from flows.cli import main

    key = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    src = write_docs(tmp_path / "in.jsonl", [doc(i, sentences=2) for i in range(40)])
    with LLMServer(api_key=key) as server:
        args = ["rephrase", str(src), "-o", str(tmp_path / "out"), "--base-url", server.base_url]
        assert main(args + ["--model", "tiny", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "first request, style qa" in out and "dry run: nothing sent" in out
        assert '"max_tokens": 1024' in out and "qa\t40\t40\t0\t" in out  # 40 documents, 40 requests, none cached
        assert not server.requests and not (tmp_path / "out").exists()  # nothing sent, nothing written
        assert main(args + ["--model", "nope"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"winnow: error: rephrase: model 'nope' is not served at {server.base_url} (it serves: tiny)"]
        assert not server.requests
    assert key not in out and key not in "".join(err)
