"""What Winnow owns in an output directory, and nothing more.

Before Winnow writes anything into an output directory it writes a record there,
`.winnow-owned.json`, listing the top-level entries it has written or is about to write
(``kept``, ``removed``, ``manifest.json``, an export's ``bucket_8`` or ``code``, ...). Every writer
claims its entry first (`claim`), so the record is never behind the directory: a run that dies
half-way leaves a record that covers what it wrote.

`prepare(output, overwrite)`:
- a directory that does not exist, or is empty: created, and an empty record written;
- a directory with a record and no entries listed: used as it is;
- a directory with a record listing entries: kept as it is, for the run to resume from its saved
  state (`flows/state.py`: a step that runs removes what it and later steps wrote, and only
  entries the record lists); with `overwrite`, exactly the listed entries are deleted first,
  the saved state with them (each checked to be one name inside the directory; a symbolic link
  is removed, never followed), the record is emptied, and anything else is left alone;
- a non-empty directory without a record: refused, with or without `overwrite`. Winnow cannot
  prove that anything in it is its own (`--output ~ --overwrite` deletes nothing).

A path a user chooses on purpose outside the output (a `[[train]]` model elsewhere) is not
recorded: it is the user's, and it is refused if it exists unless overwriting.

`locked(output)`: one run at a time in an output directory. A run holds an exclusive `flock` on
`<output>/.winnow.lock` from before `prepare` to its end; a second run on the same directory is
refused in one line naming the first (its pid and start). The kernel drops the lock when the
holder dies, even by SIGKILL, so a crashed run never leaves the directory locked; the file is
removed when the run ends, and a stale one is ignored. Re-entrant within a process (the CLI
locks around a run and its validation, and the run locks again). No lock file is written into
a directory Winnow would refuse (not empty, no record), so `prepare` refuses it untouched.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from core.errors import OutputError, PathEscapes
from mixers.dirnames import inside

RECORD = ".winnow-owned.json"
LOCK = ".winnow.lock"
FORMAT = 1
_HELD: set[Path] = set()  # the outputs this process holds the lock of


def record_path(output: str | os.PathLike) -> Path:
    return Path(output) / RECORD


def read_record(output: str | os.PathLike) -> list[str] | None:
    """The entries the record lists, or None when the directory has no record."""
    path = record_path(output)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        if data.get("owner") != "winnow" or not isinstance(entries, list) or not all(
                isinstance(e, str) for e in entries):
            raise ValueError("not a Winnow record")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise OutputError(f"{path} is not a readable Winnow ownership record ({exc}); "
                          "remove the output directory by hand") from None
    return entries


def _write_record(output: Path, entries: Iterable[str]) -> None:
    path = record_path(output)
    tmp = output / f".tmp-{uuid.uuid4().hex}-{RECORD}"
    body = {"owner": "winnow", "format": FORMAT,
            "note": "entries Winnow wrote here; --overwrite deletes these and nothing else",
            "entries": sorted(set(entries))}
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _entry(output: Path, name: str) -> Path:
    """A listed entry as a path, refusing anything that is not one name inside `output`."""
    if not name or name in (".", "..", RECORD, LOCK) or "/" in name or "\0" in name:
        raise OutputError(f"{record_path(output)} lists {name!r}, which is not an entry of the directory; "
                          "remove the output directory by hand")
    path = output / name
    if not path.is_symlink():
        try:
            inside(output, name)
        except PathEscapes as exc:
            raise OutputError(str(exc)) from None
    return path


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _empty(out: Path) -> bool:
    """No entry but a lock file (the run's own, or one a killed run left)."""
    return not out.exists() or all(p.name == LOCK for p in out.iterdir())


def _not_winnows(out: Path) -> OutputError:
    return OutputError(f"output directory {out} is not empty and was not written by Winnow (no {RECORD}); "
                       "choose a new or empty directory (--overwrite only replaces Winnow's own outputs)")


def _directory(output: str | os.PathLike) -> Path:
    """`output` resolved, refused if it exists and is not a directory."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    return out.resolve()


def prepare(output: str | os.PathLike, overwrite: bool) -> Path:
    """Make `output` a directory Winnow owns and may write into (see the module docstring)."""
    out = _directory(output)
    if _empty(out):
        out.mkdir(parents=True, exist_ok=True)
        _write_record(out, [])
        return out
    entries = read_record(out)
    if entries is None:
        raise _not_winnows(out)
    targets = [_entry(out, e) for e in entries]  # all checked before anything is deleted
    if not overwrite:  # the run resumes what is there
        return out
    for target in targets:
        _remove(target)
    _write_record(out, [])
    return out


def claim(output: str | os.PathLike, *paths: str | os.PathLike) -> None:
    """Record the top-level entries of `paths` (names or paths under `output`) before they are
    written. Paths outside `output` are the user's and are not recorded."""
    out = Path(output).resolve()
    names = set()
    for p in paths:
        p = Path(p)
        if p.is_absolute():  # compared as the directory it will be written in really is
            p = Path(os.path.realpath(p.parent)) / p.name
            if not p.is_relative_to(out):
                continue
            p = p.relative_to(out)
        if p.parts:
            names.add(p.parts[0])
    if not names:
        return
    entries = read_record(out)
    if entries is None:
        raise OutputError(f"{out} has no ownership record: prepare the output directory before writing into it")
    for name in names:
        _entry(out, name)
    if not names <= set(entries):
        _write_record(out, set(entries) | names)


@contextmanager
def locked(output: str | os.PathLike) -> Iterator[Path]:
    """Hold `output`'s run lock for the block (see the module docstring)."""
    import fcntl

    out = _directory(output)
    if out in _HELD:  # held by this process already: the outer block releases it
        yield out
        return
    if not _empty(out) and not record_path(out).is_file():
        raise _not_winnows(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputError(f"output directory {out} is in use by another Winnow run ({holder}); "
                              "wait for it to end or choose another output") from None
        try:  # the file may have been removed by the run that held it just now: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, started {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n".encode())
    _HELD.add(out)
    try:
        yield out
    finally:
        _HELD.discard(out)
        try:
            os.unlink(path)  # while still locked: a run waiting on this file retries on the next
        except FileNotFoundError:
            pass
        os.close(fd)
