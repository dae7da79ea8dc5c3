"""`winnow serve` on a real Prefect server (started here on loopback, SQLite in a temporary
PREFECT_HOME): a config with an interval schedule is served, a scheduled run completes and
writes its output, `winnow runs` lists it, and everything started is stopped."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads

WINNOW = [sys.executable, "-m", "flows.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int, wait: float) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_served_schedule_runs_on_a_real_prefect_server_and_winnow_runs_lists_it(pool_slice, tmp_path):
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1")  # default 60: runs are planned once a minute
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    served = None
    out = tmp_path / "out"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the Prefect server did not start"
            time.sleep(0.5)
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        cfg = tmp_path / "weekly.toml"
        cfg.write_text(f'output = "{out}"\n[schedule]\ninterval = 3\n\n[[inputs]]\npath = "{pool_slice["paths"][2]}"\n'
                       'source = "fiction"\n\n[[stages]]\nstage = "dedup_minhash"\n')
        log = open(tmp_path / "serve.log", "w")
        served = subprocess.Popen([*WINNOW, "serve", str(cfg)], env=env, cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        listed = []
        while time.monotonic() < deadline and served.poll() is None:
            if (out / "manifest.json").exists():
                proc = subprocess.run([*WINNOW, "runs", "--json"], env=env, capture_output=True, text=True, timeout=60)
                assert proc.returncode == 0, proc.stderr[-2000:]
                listed = [r for r in json.loads(proc.stdout) if r["flow"] == "winnow-scheduled" and r["state"] == "Completed"]
                if listed:
                    break
            time.sleep(1)
        assert listed, (tmp_path / "serve.log").read_text()[-3000:]
        assert listed[0]["output"] == str(out) and listed[0]["seconds"] > 0
        assert {"winnow-output", "winnow-report", "winnow-report-html"} <= set(listed[0]["artifacts"])
        assert "winnow-dedup-minhash-component-sizes" in listed[0]["artifacts"]  # a plot, as an image
        assert pads.dataset(out / "kept").count_rows() > 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["in"] == manifest["counts"]["kept"] + manifest["counts"]["removed"]
    finally:
        if served is not None:
            _stop(served, signal.SIGINT, 30)  # Ctrl-C: serve stops cleanly
        _stop(server, signal.SIGTERM, 30)
    assert served.returncode in (0, -signal.SIGINT, 130), (tmp_path / "serve.log").read_text()[-3000:]
