"""`winnow dedup` end to end against the plain datasketch script, as a user times them: whole
commands on one `.jsonl.gz` file, start-up included, run alternately in one session.

    python bench/bench_dedup_e2e.py [--copies 4 16] [--runs 2] [--engines auto spark] [--work /tmp/winnow-e2e]

For each size it builds the corpus once (`build_corpus.py`: `copies` x the sample pool, words
tagged per copy, plus planted near-duplicate clusters), then times `peer_datasketch.py` (128
permutations, threshold 0.8, word 5-grams) and `winnow dedup --threshold 0.8` (Winnow's defaults
otherwise: 256 permutations, the signature check) on it, `runs` times each, alternating, once per
engine: `auto` is the plain command (the local engine at these sizes), `spark` adds
`--engine spark`. The fixed cost is `winnow dedup` on a one-document file (on Spark: JVM, Spark
session, Prefect, the first Spark jobs and Python workers; locally: the interpreter, imports and
the process pool); the per-document cost is (time - fixed cost) / documents. Prints a table and
the ratio peer / winnow (above 1: Winnow is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WINNOW = str(Path(sys.executable).with_name("winnow"))


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BENCH)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def corpus(work: Path, copies: int) -> tuple[Path, dict]:
    out = work / f"corpus-{copies}"
    if not (out / "corpus.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, str(BENCH / "build_corpus.py"), "--copies", str(copies), "--out", str(out)],
                       check=True, cwd=BENCH, capture_output=True)
    return out / "one" / "corpus.jsonl.gz", json.loads((out / "corpus.json").read_text())


def winnow_dedup(path: Path, out: Path, engine: str = "auto") -> list[str]:
    return [WINNOW, "dedup", str(path), "--output", str(out), "--threshold", "0.8", "--overwrite", "--engine", engine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["auto", "spark"], choices=["auto", "local", "spark"])
    parser.add_argument("--work", default="/tmp/winnow-e2e")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    tiny = work / "one-document.jsonl"
    tiny.write_text(json.dumps({"id": "a", "text": "one short document"}) + "\n")
    fixed_s = {}
    for engine in args.engines:
        fixed = [timed(winnow_dedup(tiny, work / "out-tiny", engine)) for _ in range(args.runs)]
        fixed_s[engine] = min(fixed)
        print(f"fixed cost of `winnow dedup --engine {engine}` (one document): {fixed_s[engine]:.1f} s "
              f"(runs: {', '.join(f'{x:.1f}' for x in fixed)})")
    print()
    head = "| corpus | documents | MB of text | datasketch script s |"
    rule = "|---|---:|---:|---:|"
    for engine in args.engines:
        head += f" winnow dedup --engine {engine} s | ratio (script / winnow) | per-document ms |"
        rule += "---:|---:|---:|"
    print(head)
    print(rule)
    for copies in args.copies:
        path, info = corpus(work, copies)
        peer: list[float] = []
        ours: dict[str, list[float]] = {e: [] for e in args.engines}
        for _ in range(args.runs):
            peer.append(timed([sys.executable, str(BENCH / "peer_datasketch.py"), str(path)]))
            for engine in args.engines:
                ours[engine].append(timed(winnow_dedup(path, work / f"out-{copies}-{engine}", engine)))
        p = min(peer)
        row = f"| {copies}x pool | {info['documents']:,} | {info['characters'] / 1e6:.0f} | {p:.1f} |"
        for engine in args.engines:
            w = min(ours[engine])
            per_doc = (w - fixed_s[engine]) / info["documents"] * 1000
            row += f" {w:.1f} | {p / w:.2f}x | {per_doc:.2f} |"
        print(row, flush=True)
        runs = ", ".join(f"{e} {[round(x, 1) for x in ours[e]]} (median ratio "
                         f"{statistics.median(peer) / statistics.median(ours[e]):.2f})" for e in args.engines)
        print(f"<!-- runs: script {[round(x, 1) for x in peer]}, {runs} -->", flush=True)


if __name__ == "__main__":
    main()
