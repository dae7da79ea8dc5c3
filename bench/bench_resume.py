"""An unchanged re-run of the demo against a fresh run of it, as a user types them:
`winnow run data/configs/demo.toml --output OUT --overwrite` (everything from nothing: training
the DCLM classifier, every stage, the validation models) and then the same command without
`--overwrite`, which resumes OUT and finds nothing to do. The peer is the fresh run itself: what
a user without saved state pays for every scheduled run whose inputs did not change.

It also checks that the rerun ran nothing (`manifest.json` `resume.ran` is empty, `engine` is
none) and left `kept/` and `validate.json` as they were.

Usage: bench/bench_resume.py [--reruns N] [--output DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO


def _winnow(args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"winnow {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(str(f.relative_to(p.parent)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    out = Path(args.output or tempfile.mkdtemp(prefix="winnow-bench-resume-")) / "demo"
    config = str(REPO / "data" / "configs" / "demo.toml")
    fresh = _winnow(["run", config, "--output", str(out), "--overwrite"])
    watched = [out / "kept", out / "validate.json"]
    before = _digest(watched)
    reruns = []
    for _ in range(args.reruns):
        reruns.append(_winnow(["run", config, "--output", str(out)]))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["resume"]["ran"] == [] and manifest["engine"]["name"] == "none", manifest["resume"]
        assert _digest(watched) == before, "the rerun changed kept/ or validate.json"
    best = min(reruns)
    print(f"demo, fresh run (--overwrite): {fresh:.1f} s")
    print(f"demo, unchanged rerun: best {best:.2f} s, all {', '.join(f'{r:.2f}' for r in reruns)} s "
          f"(skipped: {', '.join(manifest['resume']['skipped'])})")
    print(f"rerun vs fresh: {fresh / best:.0f}x faster")


if __name__ == "__main__":
    main()
