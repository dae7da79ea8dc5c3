"""The ownership record: --overwrite deletes what Winnow wrote and nothing else (no Spark here)."""
from __future__ import annotations

import json
import os

import pytest

from core.errors import OutputError
from flows.output import RECORD, claim, prepare, read_record


def test_a_new_or_empty_directory_gets_a_record_before_anything_else(tmp_path):
    out = prepare(tmp_path / "new" / "out", overwrite=False)
    assert sorted(os.listdir(out)) == [RECORD] and read_record(out) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(empty, overwrite=False)
    assert read_record(empty) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_winnow_did_not_write_is_refused_even_with_overwrite(tmp_path, overwrite):
    home = tmp_path / "home"  # `--output ~ --overwrite`
    (home / "models").mkdir(parents=True)
    (home / "models" / "mine.bin").write_bytes(b"precious")
    (home / "kept").mkdir()
    (home / "code" / "bucket_8").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    with pytest.raises(OutputError, match="not empty and was not written by Winnow"):
        prepare(home, overwrite=overwrite)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before


def test_overwrite_deletes_exactly_the_listed_entries(tmp_path):
    out = prepare(tmp_path / "out", overwrite=False)
    claim(out, out / "kept" / "part-0.parquet", "manifest.json", out / "code", "bucket_8")
    for d in ("kept", "code", "bucket_8"):
        (out / d).mkdir()
        (out / d / "x").write_text("winnow")
    (out / "manifest.json").write_text("{}")
    (out / "models").mkdir()  # the user's, added after the run, under a name Winnow also uses
    (out / "models" / "mine.bin").write_text("user")
    (out / "notes.txt").write_text("user")
    assert read_record(out) == ["bucket_8", "code", "kept", "manifest.json"]
    prepare(out, overwrite=False)  # without --overwrite the run resumes: nothing is deleted here
    assert sorted(os.listdir(out)) == [RECORD, "bucket_8", "code", "kept", "manifest.json", "models", "notes.txt"]
    prepare(out, overwrite=True)
    assert sorted(os.listdir(out)) == [RECORD, "models", "notes.txt"]
    assert (out / "models" / "mine.bin").read_text() == "user" and read_record(out) == []
    prepare(out, overwrite=False)  # a record with nothing listed: usable without --overwrite


def test_a_listed_symlink_is_removed_not_followed_and_a_forged_record_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    out = prepare(tmp_path / "out", overwrite=False)
    claim(out, "kept")
    (out / "kept").symlink_to(outside, target_is_directory=True)
    prepare(out, overwrite=True)
    assert (outside / "keep.txt").exists() and not os.path.lexists(out / "kept")

    for entries in (["../outside"], ["/"], [".."], ["a/b"]):
        (out / RECORD).write_text(json.dumps({"owner": "winnow", "format": 1, "entries": entries}))
        with pytest.raises(OutputError, match="remove the output directory by hand"):
            prepare(out, overwrite=True)
        assert (outside / "keep.txt").exists()
    (out / RECORD).write_text("not json")
    with pytest.raises(OutputError, match="not a readable Winnow ownership record"):
        prepare(out, overwrite=True)


def test_claims_outside_the_output_are_not_recorded(tmp_path):
    out = prepare(tmp_path / "out", overwrite=False)
    claim(out, tmp_path / "elsewhere" / "model.bin", out / "models" / "dclm.bin", out / "a" / ".." / "b")
    assert read_record(out) == ["b", "models"]
    with pytest.raises(OutputError, match="no ownership record"):
        claim(tmp_path, "kept")


# --- one run at a time -------------------------------------------------------------------------

def _holder(out) -> "subprocess.Popen":
    """Another process holding `out`'s run lock until it is killed."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, time; from flows.output import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_locked_output_is_refused_and_a_killed_holder_frees_it(tmp_path):
    import signal

    from flows.output import LOCK, locked

    out = tmp_path / "out"
    holder = _holder(out)
    try:
        with pytest.raises(OutputError, match=r"in use by another Winnow run \(pid \d+, started .* UTC\)"):
            with locked(out):
                pass
        assert str(holder.pid) in (out / LOCK).read_text()
    finally:
        holder.send_signal(signal.SIGKILL)  # as a run killed in the middle
        holder.wait()
    assert (out / LOCK).exists()  # left by the killed run: not locked any more
    with locked(out):  # the kernel dropped the dead run's lock
        prepare(out, overwrite=False)  # a lock file alone is not an entry: the directory counts as empty
        with locked(out):  # re-entrant within a process
            pass
        assert (out / LOCK).exists()
    assert sorted(os.listdir(out)) == [RECORD]  # the lock file goes with the run


def test_no_lock_file_is_written_into_a_directory_winnow_would_refuse(tmp_path):
    from flows.output import locked

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty and was not written by Winnow"):
        with locked(home):
            pass
    assert os.listdir(home) == ["notes.txt"]


def test_overwrite_never_lists_or_deletes_the_lock(tmp_path):
    from flows.output import LOCK, locked

    out = tmp_path / "out"
    with locked(out):
        prepare(out, overwrite=False)
        claim(out, "kept")
        (out / "kept").mkdir()
        prepare(out, overwrite=True)
        assert sorted(os.listdir(out)) == sorted([RECORD, LOCK])
    (out / RECORD).write_text(json.dumps({"owner": "winnow", "format": 1, "entries": [LOCK]}))
    with pytest.raises(OutputError, match="not an entry"):
        prepare(out, overwrite=True)
