"""`winnow rephrase` against a plain asyncio script, both against the loopback LLM server (issue 18).

    .venv/bin/python bench/bench_rephrase.py [DOCS] [--latency S] [--concurrency 8,32,128]
                                             [--echo-tokens N] [--runs 2] [--first]

The input is DOCS documents of the real sample pool (default 400, spread evenly over the pool so
every domain is in it; `--first` takes the pool's first DOCS, which are all code) as one JSONL
file. Not timed: the request bodies Winnow sends for style qa (`chunks_to_send` with its default
300-token limit and 4-characters-a-token estimate, `PRESETS["qa"]`, `OpenAIBackend._body` with
`Sampling()`'s defaults), written to REQUESTS.jsonl for the peer.

The server is `tests.llm_server` as a process in echo mode: every answer is `--echo-tokens` words
after `--latency` seconds of asyncio.sleep, so the best a client can do is concurrency / latency
requests per second. At each concurrency both whole commands are timed as subprocesses (best of
`--runs`, alternating):

- `winnow rephrase CORPUS -o OUT --style qa --base-url URL --model tiny --concurrency C
  --overwrite --master local[2]` (the overwrite deletes the answer cache, so every chunk is asked
  again), which reads, chunks, asks, writes and reports, and starts the JVM and Prefect first;
- `python bench/peer_asyncio_rephrase.py REQUESTS.jsonl --base-url URL --concurrency C --out ...`,
  which only sends the ready-made bodies.

Besides the whole commands it reports the rephrase stage alone: requests sent over the stage's
per-style `wall_seconds` in manifest.json (first request to last answer), against the peer's own
sending loop (the requests/s it prints, without its interpreter's start).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, pool_texts

PY = str(REPO / ".venv" / "bin" / "python")
WINNOW = str(REPO / ".venv" / "bin" / "winnow")
STYLE = "qa"


def build_inputs(work: Path, docs: int, first: bool) -> tuple[Path, Path, int, int]:
    """corpus.jsonl and REQUESTS.jsonl in `work`; returns their paths, documents and requests."""
    from synth.backends import OpenAIBackend
    from synth.wrap import PRESETS, Sampling, chunks_to_send

    pool = pool_texts()
    if first:
        picked = pool[:docs]
    else:
        step = max(1, len(pool) // docs)
        picked = pool[::step][:docs]
    corpus, requests = work / "corpus.jsonl", work / "REQUESTS.jsonl"
    backend = OpenAIBackend("http://127.0.0.1:1/v1", "tiny")  # only for its request body
    sampling, prompt = Sampling(), PRESETS[STYLE]
    n = 0
    with open(corpus, "w", encoding="utf-8") as c, open(requests, "w", encoding="utf-8") as r:
        for doc in picked:
            c.write(json.dumps({"id": doc["id"], "text": doc["text"]}, ensure_ascii=False) + "\n")
            for chunk in chunks_to_send(doc["text"] or ""):
                r.write(json.dumps(backend._body(prompt.messages(chunk), sampling), ensure_ascii=False) + "\n")
                n += 1
    return corpus, requests, len(picked), n


def start_server(latency: float, echo_tokens: int, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [PY, "-m", "tests.llm_server", "--port", "0", "--latency", str(latency), "--echo-tokens", str(echo_tokens)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("listening on "):
                return proc, line.split()[-1]
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    stop_server(proc)
    raise RuntimeError(f"the loopback server did not start (see {log})")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def round_trip(url: str, body: dict, repeat: int = 5) -> float:
    """Median seconds of one request on a kept-alive connection, after one to open it: with the
    server's latency, the most a client gets is concurrency / this."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for i in range(repeat + 1):
            start = time.perf_counter()
            client.post("/chat/completions", json=body).raise_for_status()
            if i:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def timed_command(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Wall seconds of `cmd` until it exits, and its stdout; raises on a non-zero exit. Output goes
    to files, not pipes: a process the command leaves behind (Prefect's ephemeral server) would
    hold a pipe open after the command has returned to the user's shell."""
    with open(log, "w") as out, open(log.with_suffix(".err"), "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        code = proc.wait()
        seconds = time.perf_counter() - start
    stdout = log.read_text()
    if code != 0:
        tail = "\n".join((stdout + log.with_suffix(".err").read_text()).splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {code} (log {log}):\n{tail}")
    return seconds, stdout


def left_behind(prefect_home: str) -> dict[int, str]:
    """Processes still running with this bench's PREFECT_HOME (started by a Winnow command of
    this bench, which has exited): pid -> the start of its command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"PREFECT_HOME={prefect_home}".encode() in environ:
            found[int(entry)] = cmdline[:160]
    return found


def end_left_behind(prefect_home: str, grace: float = 3.0) -> list[str]:
    """What `left_behind` still finds after `grace` seconds, terminated (then killed); returns
    their command lines."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and left_behind(prefect_home):
        time.sleep(0.2)
    found = left_behind(prefect_home)
    for pid in found:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and left_behind(prefect_home):
        time.sleep(0.2)
    for pid in left_behind(prefect_home):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return list(found.values())


def stage_figures(out: Path) -> dict:
    """The rephrase stage's per-style figures, and every stage's seconds (`seconds`)."""
    manifest = json.loads((out / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["stage"] == "rephrase")
    style = stage["stats"]["per_style"][STYLE]
    return {**style, "seconds": {s["name"]: s["seconds"] for s in manifest["stages"]}}


def code_state() -> str:
    """The commit, and a hash of the files the command runs that matter here: a benchmark whose
    code changed under it (a shared working tree) says so."""
    import hashlib

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("synth/*.py"), *REPO.glob("pipelines/*.py"), *REPO.glob("flows/*.py"),
                        REPO / "tests" / "llm_server.py"]):
        digest.update(path.read_bytes())
    return f"{head} (files {digest.hexdigest()[:10]})"


def peer_figures(stdout: str) -> dict[str, float]:
    words = stdout.split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("docs", nargs="?", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", default="8,32,128")
    ap.add_argument("--echo-tokens", type=int, default=100)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--first", action="store_true", help="the pool's first DOCS documents (all code)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="winnow-bench-rephrase-"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_HOME": str(work / "prefect"), "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    t = time.perf_counter()
    corpus, requests, docs, n = build_inputs(work, args.docs, args.first)
    print(f"{docs} documents, {n} requests (style {STYLE}), inputs built in {time.perf_counter() - t:.1f} s "
          f"(not timed); latency {args.latency} s, {args.echo_tokens} tokens an answer, {os.cpu_count()} cores, "
          f"best of {args.runs}", flush=True)

    code_at_start = code_state()
    print(f"code: {code_at_start}", flush=True)
    server, url = start_server(args.latency, args.echo_tokens, work / "server.log")
    rows = []
    leftovers: list[str] = []
    try:
        with open(requests, encoding="utf-8") as fh:
            rtt = round_trip(url, json.loads(fh.readline()))
        print(f"one request on a kept-alive connection: {rtt:.3f} s (latency {args.latency} s), so at most "
              "concurrency / that requests/s", flush=True)
        for c in levels:
            best_w = best_p = None
            for run in range(args.runs):
                out = work / "out"
                cmd = [WINNOW, "rephrase", str(corpus), "-o", str(out), "--style", STYLE, "--base-url", url,
                       "--model", "tiny", "--concurrency", str(c), "--overwrite", "--master", "local[2]"]
                w_seconds, _ = timed_command(cmd, env, work / f"winnow-{c}-{run}.log")
                leftovers += end_left_behind(env["PREFECT_HOME"])
                stage = stage_figures(out)
                assert stage["chunks"] == n, f"winnow chunked {stage['chunks']} requests, the peer has {n}"
                assert stage["requests"] + stage["cached"] == n and stage["kept"] == docs, stage
                if best_w is None or w_seconds < best_w[0]:
                    best_w = (w_seconds, stage)
                answers = work / "answers.jsonl"
                cmd = [PY, str(REPO / "bench" / "peer_asyncio_rephrase.py"), str(requests), "--base-url", url,
                       "--concurrency", str(c), "--out", str(answers)]
                seconds, stdout = timed_command(cmd, env, work / f"peer-{c}-{run}.log")
                peer = peer_figures(stdout)
                assert peer["requests"] == n and peer["failed"] == 0, stdout
                if best_p is None or seconds < best_p[0]:
                    best_p = (seconds, peer)
                print(f"  C={c} run {run + 1}: winnow {w_seconds:.1f} s (stage {stage['wall_seconds']:.1f} s), "
                      f"peer {seconds:.1f} s (loop {peer['seconds']:.1f} s)", flush=True)
            rows.append((c, best_w, best_p))
    finally:
        stop_server(server)
        leftovers += end_left_behind(env["PREFECT_HOME"])
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if code_state() != code_at_start:
        print(f"WARNING: the code changed while the bench ran ({code_at_start} -> {code_state()}): "
              "the figures mix two versions")
    print(f"\nrequests per level: {n} ({docs} documents); ideal = concurrency / latency")
    head = ("| C | ideal req/s | C / round trip | winnow s (whole) | req/s | out tok/s | peer s (whole) | req/s | out tok/s "
            "| winnow/peer whole | stage req/s (per-style wall s) | peer loop req/s | stage/peer loop |")
    print(head)
    print("|" + "---:|" * (head.count("|") - 1))
    for c, (ws, st), (ps, pf) in rows:
        sent = st["requests"]
        stage_rate = sent / st["wall_seconds"] if st["wall_seconds"] else float("nan")
        print(f"| {c} | {c / args.latency:,.0f} | {c / rtt:,.0f} | {ws:.1f} | {n / ws:,.1f} | {st['tokens_out'] / ws:,.0f} "
              f"| {ps:.1f} | {n / ps:,.1f} | {pf['tokens_out'] / ps:,.0f} | {ps / ws:.2f}x "
              f"| {stage_rate:,.1f} ({sent}, {st['wall_seconds']:.1f} s) | {pf['requests/s']:,.1f} "
              f"| {stage_rate / pf['requests/s']:.2f}x |")
    print("\nwhole: the commands' wall time, start-up included (Winnow: JVM, Spark, Prefect, read, write, "
          "report). stage: Winnow's rephrase stage from its first request to its last answer, against the "
          "peer's sending loop. Ratios above 1: Winnow faster.")
    print("\nwhere Winnow's whole command goes (best run; stage seconds from manifest.json):")
    print("| C | whole s | read s | rephrase stage s | of it, first request to last answer s | write s | "
          "the rest (interpreter, Prefect, JVM start, report) s |")
    print("|" + "---:|" * 7)
    for c, (ws, st), _ in rows:
        sec = st["seconds"]
        print(f"| {c} | {ws:.1f} | {sec.get('read', 0):.1f} | {sec.get('rephrase', 0):.1f} | {st['wall_seconds']:.1f} "
              f"| {sec.get('write', 0):.1f} | {ws - sum(sec.values()):.1f} |")
    if leftovers:
        print(f"  {len(leftovers)} process(es) still ran 3 s after a Winnow command had exited; the bench ended "
              "them (not timed):")
        for cmdline in sorted(set(leftovers)):
            print(f"    {leftovers.count(cmdline)} x {cmdline[:120]}")
    for c, (_, st), _ in rows:
        if st["cached"]:
            print(f"  C={c}: winnow answered {st['cached']} repeated chunks from its cache (sent {st['requests']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
