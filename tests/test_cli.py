"""The `winnow` command as a user runs it: a handful of subprocess tests (each JVM costs seconds)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads

WINNOW = [sys.executable, "-m", "flows.cli"]


def run(args, cwd, env_home):
    env = dict(os.environ, PREFECT_HOME=str(env_home / "prefect-cli"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(WINNOW + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_help_explains_every_option(tmp_path):
    top = run(["--help"], tmp_path, tmp_path)
    assert top.returncode == 0 and "run" in top.stdout
    sub = run(["run", "--help"], tmp_path, tmp_path)
    for option in ("--input", "--output", "--master", "--overwrite", "--domain", "CONFIG"):
        assert option in sub.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('output = "out"\ncolour = "red"\n[[inputs]]\npath = "x.jsonl"\nsource = "x"\n')
    cases = [
        (["run", str(cfg)], "unknown key 'colour'"),
        (["run", str(tmp_path / "missing.toml")], "config file not found"),
        (["run", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")], "input path does not exist"),
        (["run", "--input", str(cfg)], "give a CONFIG, or --input PATH and --output DIR"),
    ]
    for args, message in cases:
        proc = run(args, tmp_path, tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("winnow: error:") and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_run_with_input_override_writes_the_output_layout(tmp_path):
    src = tmp_path / "web.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["alpha beta", "alpha  beta", "gamma"]) + "{broken\n"
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text('output = "ignored"\n[[inputs]]\npath = "x.jsonl"\nsource = "x"\n'
                   '[[stages]]\nstage = "dedup_exact"\n[spark]\nmaster = "local[1]"\nshuffle_partitions = 2\n')
    out = tmp_path / "out"
    proc = run(["run", str(cfg), "--input", str(src), "--output", str(out), "--domain", "web"], tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dedup_exact" in proc.stdout and "in = kept + removed" in proc.stdout
    kept = pads.dataset(out / "kept").to_table().to_pylist()
    assert [(r["text"], r["source"], r["domain"]) for r in kept] == [("alpha beta", "web", "web"), ("gamma", "web", "web")]
    assert pads.dataset(out / "removed" / "read").count_rows() == 1
    assert pads.dataset(out / "removed" / "dedup_exact").count_rows() == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"in": 4, "kept": 2, "removed": 2}
    assert "| dedup_exact | 3 | 2 | 1 |" in (out / "report.md").read_text()
    again = run(["run", str(cfg), "--input", str(src), "--output", str(out)], tmp_path, tmp_path)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
