"""The JVM class-data-sharing archive: built by `build_jvm_archive` (what `winnow warm` runs),
mapped by later sessions, ignored when unsafe or turned off."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from pipelines import spark as ps

from .conftest import REPO

BUILD = "from pipelines.spark import build_jvm_archive; print(build_jvm_archive(lambda s: s.range(5).count()))"


def test_an_archive_is_built_mapped_and_refused_when_unsafe_or_off(tmp_path, monkeypatch):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(ps.ARCHIVE_ENV, raising=False)
    assert ps._archive_options() == ""  # none built yet: the JVM starts as before

    built = subprocess.run([sys.executable, "-c", BUILD], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    path = ps.jvm_archive_path()
    assert built.stdout.strip().splitlines()[-1] == str(path)
    assert path.is_file() and path.stat().st_size > 10 << 20
    assert "[warning]" not in built.stdout + built.stderr  # the recording's notes stay quiet
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert not [p for p in path.parent.iterdir() if p != path]  # no partial file left behind
    assert f"-XX:SharedArchiveFile={path}" in ps._archive_options()
    # what `warm` checks before installing an archive: a truncated one crashes the JVM, and is
    # refused without a crash report left in the working directory
    truncated = tmp_path / "truncated.jsa"
    truncated.write_bytes(path.read_bytes()[:4096])
    assert ps.archive_maps(path)
    monkeypatch.chdir(tmp_path)
    assert not ps.archive_maps(truncated)
    assert not list(tmp_path.glob("hs_err*"))

    # a command started with it runs as before, with no JVM notes in its output
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"words of document {('alpha', 'beta')[i % 2]} here"}) + "\n"
                              for i in range(6)))
    run = subprocess.run([sys.executable, "-m", "flows.cli", "dedup", str(corpus), "--output", str(tmp_path / "out")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "warning" not in (run.stdout + run.stderr).lower()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"in": 6, "kept": 2, "removed": 4}

    monkeypatch.setenv(ps.ARCHIVE_ENV, "0")
    assert ps._archive_options() == ""
    monkeypatch.delenv(ps.ARCHIVE_ENV)
    os.chmod(path.parent, 0o777)  # another user could have replaced it: not used
    assert ps._archive_options() == ""
