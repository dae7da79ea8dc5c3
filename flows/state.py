"""A run's saved state: what lets a rerun skip every step whose inputs, parameters and code are
unchanged.

The state lives in `<output>/_work/`, beside each step's kept rows (`NN-<label>/`, Parquet):

- `NN-<label>.json`, the step's **completion record**, written (atomically) only after the step's
  outputs are in place: its key, the parts the key was made from, its `StageRecord`, the schema
  of its kept rows, where those rows are (`work`: `_work/NN-<label>/`; `kept`: the run's
  `kept/`, when the step handed them straight to `write`; none: the local engine keeps no
  intermediate rows) and the paths it claimed in the output directory (export's datasets).
- `fingerprints.json`: path -> size, modification time and xxh3-128 of every file a key was
  made from. A file whose path, size and modification time are unchanged reuses its hash, so
  a rerun reads no input to decide what to do.

A step's **key** hashes its parts: the stage's name and `VERSION` (a constant its module bumps
when its output changes), its parameters (paths under the output directory written as
`{output}/...`, so a moved directory keeps its keys), the run's seed, the fingerprints of the
files its parameters name (a scorer's model, a tokenizer), for `read` the fingerprints of every
input file and the input specs, and the key of the step before it. So a step's key changes when
anything it depends on changes, and every step after a changed one is changed too.

`decide` compares each step with its record: a step runs when it has no record, when its key
differs (the reason names what: "parameters changed: threshold 0.8 -> 0.7", "inputs changed:
1 file added", "code changed: version 1 -> 2", "after dedup_exact, which runs"), or when the rows
it saved are gone; otherwise it is skipped. Nothing in this module touches Spark.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

STATE = "_work"
FORMAT = 1
_PRINTS = "fingerprints.json"


def canonical(value: Any, output: str = "") -> Any:
    """`value` as plain JSON data, the same for equal parameters: dataclasses as dicts of their
    fields, tuples as lists, keys sorted, paths under `output` as `{output}/...`."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name), output) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v, output) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v, output) for v in value]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        if output and (value == output or value.startswith(output.rstrip(os.sep) + os.sep)):
            return "{output}" + value[len(output.rstrip(os.sep)):]
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return repr(value)


def digest(value: Any) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def named_files(params: Any, output: str) -> list[str]:
    """The existing regular files a step's canonical parameters name (a model, a tokenizer; for a
    reference LM directory from `winnow train-lm`, its lm.pt)."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v and len(v) < 4096:
            path = v.replace("{output}", output)
            try:
                if os.path.isfile(path):
                    found.add(os.path.abspath(path))
                elif os.path.isfile(os.path.join(path, "lm.pt")):  # a reference LM directory
                    found.add(os.path.abspath(os.path.join(path, "lm.pt")))
            except (OSError, ValueError):  # a string that is no path at all
                pass

    walk(params)
    return sorted(found)


def _atomic_json(path: Path, body: Any) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Fingerprints:
    """Size and xxh3-128 of files, reusing a saved hash while path, size and mtime are unchanged."""

    def __init__(self, saved: dict[str, dict[str, Any]] | None = None):
        self.saved = dict(saved or {})
        self.fresh = 0  # files hashed by this run

    @staticmethod
    def _stat(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def get(self, paths: Iterable[str], hasher: Callable[[list[str]], list[dict]] | None = None) -> dict[str, dict]:
        """path -> {"path", "bytes", "xxh3_128"} for every path; the ones not known are hashed
        by `hasher` (a list of paths -> file_fingerprint records; default: in this process)."""
        out: dict[str, dict] = {}
        missing: list[str] = []
        stats: dict[str, tuple[int, int]] = {}
        for p in sorted(set(paths)):
            stats[p] = self._stat(p)  # before hashing: a file changed while hashed is hashed again next time
            known = self.saved.get(p)
            if known and (known["bytes"], known["mtime_ns"]) == stats[p]:
                out[p] = {"path": p, "bytes": known["bytes"], "xxh3_128": known["xxh3_128"]}
            else:
                missing.append(p)
        if missing:
            if hasher is None:
                from pipelines.read_kernel import file_fingerprint

                hashed = [file_fingerprint(p) for p in missing]
            else:
                hashed = hasher(missing)
            for r in hashed:
                p = r["path"]
                out[p] = {"path": p, "bytes": r["bytes"], "xxh3_128": r["xxh3_128"]}
                if stats[p][0] == r["bytes"]:
                    self.saved[p] = {"bytes": r["bytes"], "mtime_ns": stats[p][1], "xxh3_128": r["xxh3_128"]}
            self.fresh += len(missing)
        return out


@dataclass
class Step:
    """One step of a run as the state sees it: its position, label, stage and key parts."""

    index: int
    label: str
    stage: str
    parts: dict[str, Any]
    key: str = ""

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.label}"


@dataclass
class Decision:
    run: bool
    why: str
    saved: dict[str, Any] | None = None  # the completion record of a skipped step

    def text(self) -> str:
        return f"{'ran' if self.run else 'skipped'}: {self.why}"


def chain(steps: list[Step]) -> list[Step]:
    """Fill each step's key: its parts and the key of the step before it."""
    before = ""
    for s in steps:
        s.parts = {**s.parts, "after": before}
        s.key = digest(s.parts)
        before = s.key
    return steps


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted names (`inputs[0].domain`, `scorers[1].model`)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def explain(old: dict[str, Any], new: dict[str, Any], earlier_ran: str | None) -> str:
    """Why a step whose key changed must run, in a few words."""
    if earlier_ran:
        return f"after {earlier_ran}, which runs"
    if old.get("stage") != new.get("stage"):
        return f"a different stage at this position ({old.get('stage')} before)"
    if old.get("version") != new.get("version"):
        return f"code changed: version {old.get('version')} -> {new.get('version')}"
    if old.get("inputs") != new.get("inputs"):
        a, b = old.get("inputs") or {}, new.get("inputs") or {}
        added, gone = len(set(b) - set(a)), len(set(a) - set(b))
        changed = sum(1 for p in set(a) & set(b) if a[p] != b[p])
        bits = [f"{n} file{'s' if n != 1 else ''} {what}" for n, what in
                ((added, "added"), (changed, "changed"), (gone, "removed")) if n]
        return "inputs changed: " + ", ".join(bits or ["their specs"])
    if old.get("params") != new.get("params") or old.get("seed") != new.get("seed"):
        a, b = _flat({"seed": old.get("seed"), **(old.get("params") or {})}), \
            _flat({"seed": new.get("seed"), **(new.get("params") or {})})
        diffs = [f"{k} {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return "parameters changed: " + "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    if old.get("against") != new.get("against"):
        return "the earlier outputs it deduplicates against changed"
    if old.get("files") != new.get("files"):
        a, b = old.get("files") or {}, new.get("files") or {}
        names = sorted(os.path.basename(p) for p in set(a) | set(b) if a.get(p) != b.get(p))
        return "files it reads changed: " + ", ".join(names[:3])
    return "its key changed"


class RunState:
    """The saved state of an output directory (`<output>/_work`)."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.dir = self.output / STATE
        self.prints = Fingerprints(self._load(self.dir / _PRINTS) or {})

    @staticmethod
    def _load(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def records(self) -> dict[str, dict[str, Any]]:
        """name (`NN-label`) -> completion record, for the records this format can read."""
        out = {}
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("[0-9][0-9]-*.json")):
                body = self._load(p)
                if isinstance(body, dict) and body.get("format") == FORMAT and "key" in body:
                    out[p.stem] = body
        return out

    def save_prints(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(self.dir / _PRINTS, self.prints.saved)

    def save_run(self, body: dict[str, Any]) -> None:
        """The config a run started with (`winnow status` compares the state against it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(self.dir / "run.json", {"format": FORMAT, **body})

    def load_run(self) -> dict[str, Any] | None:
        body = self._load(self.dir / "run.json")
        return body if isinstance(body, dict) and body.get("format") == FORMAT else None

    def load_train(self, i: int) -> dict[str, Any] | None:
        body = self._load(self.dir / f"train-{i}.json")
        return body if isinstance(body, dict) and body.get("format") == FORMAT else None

    def save_train(self, i: int, body: dict[str, Any]) -> None:
        """A [[train]] entry's record: its key, the model's hash and path, the training report."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(self.dir / f"train-{i}.json", {"format": FORMAT, **body})

    def trained(self) -> set[str]:
        """The model files earlier runs into this output trained ([[train]])."""
        out = set()
        if self.dir.is_dir():
            for p in self.dir.glob("train-*.json"):
                body = self._load(p)
                if isinstance(body, dict) and isinstance(body.get("path"), str):
                    out.add(body["path"])
        return out

    def work_path(self, step: Step) -> Path:
        return self.dir / step.name

    def decide(self, steps: list[Step], need_rows: set[int] = frozenset()) -> list[Decision]:
        """Run or skip, and why, for each step (see the module docstring). `need_rows`: steps
        whose kept rows a later step reads from `_work` (validate), so they must be there."""
        saved = self.records()
        out: list[Decision] = []
        ran: str | None = None
        for i, s in enumerate(steps):
            rec = saved.get(s.name)
            if rec is None:
                d = Decision(True, f"after {ran}, which runs" if ran else "no saved state")
            elif rec["key"] != s.key:
                d = Decision(True, explain(rec.get("parts") or {}, s.parts, ran))
            elif ran:  # the same key cannot follow a step that runs (its key is in this one's)
                d = Decision(True, f"after {ran}, which runs")
            elif i in need_rows and rec.get("output") != "work":
                d = Decision(True, "a later step reads its rows, which were not saved")
            else:
                d = self._still_there(rec, s)
            out.append(d)
            if d.run and ran is None:
                ran = s.label
        # the first step that runs reads the rows of the step before it: saved ones only
        while True:
            first = next((i for i, d in enumerate(out) if d.run), None)
            if not first or out[first - 1].saved.get("output") == "work":
                return out
            where = out[first - 1].saved.get("output")
            out[first - 1] = Decision(True, f"{steps[first].label} needs its rows, which were "
                                      + ("written to kept/ only" if where == "kept" else "not saved (local engine)"))
            for j in range(first, len(out)):
                out[j] = Decision(True, f"after {steps[first - 1].label}, which runs")

    def _still_there(self, rec: dict[str, Any], s: Step) -> Decision:
        where = rec.get("output")
        if where == "work" and not self.work_path(s).is_dir():
            return Decision(True, "its saved rows are gone")
        if s.stage == "write" and not (self.output / "kept").is_dir():
            return Decision(True, "kept/ is gone")
        removed = (rec.get("record") or {}).get("removed_path")
        if removed and not (self.output / removed).is_dir():
            return Decision(True, f"its removed rows ({removed}/) are gone")
        return Decision(False, "unchanged", rec)

    def clear_from(self, steps: list[Step], first: int, also: Iterable[str] = ()) -> None:
        """Before step `first` runs: remove what it and every later step saved or wrote (their
        records first, so a run killed half-way never leaves a record over missing rows),
        `removed/` of every label that is not a step before `first`, and the top-level entries
        `also` (the output's entries the skipped steps do not own: they are redone)."""
        keep = {s.name for s in steps[:first]}
        saved = self.records()
        for name, rec in saved.items():
            if name in keep:
                continue
            (self.dir / f"{name}.json").unlink(missing_ok=True)
            for claimed in rec.get("claimed") or []:
                _remove_inside(self.output, claimed)
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.is_dir() and p.name[:2].isdigit() and p.name not in keep or p.name.startswith(".tmp-"):
                    _remove(p)
        labels = {s.label for s in steps[:first]}
        removed = self.output / "removed"
        if removed.is_dir():
            for p in removed.iterdir():
                if p.name not in labels:
                    _remove(p)
        for name in {"kept", "plots", *also}:
            if name and "/" not in name and name not in (".", "..", STATE, "removed"):
                _remove(self.output / name)

    def save(self, step: Step, record: dict[str, Any], *, output: str | None, schema: str | None = None,
             claimed: Iterable[str] = ()) -> None:
        """The step's completion record: written last, once its outputs are in place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(self.dir / f"{step.name}.json", {
            "format": FORMAT, "key": step.key, "parts": step.parts, "label": step.label, "stage": step.stage,
            "record": record, "output": output, "schema": schema, "claimed": sorted(set(claimed)),
        })


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _remove_inside(output: Path, rel: str) -> None:
    """Remove a path a stage claimed, if it still lies inside the output directory."""
    from mixers.dirnames import inside

    try:
        target = inside(output, rel)
    except Exception:  # noqa: BLE001 - a record naming a path outside is not followed
        return
    if target != output.resolve():
        _remove(target)


def disk_bytes(path: Path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total
