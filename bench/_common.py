"""Shared bench helpers: a corpus made from the real sample pool, a Spark session, a timer."""
from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def pool_texts() -> list[dict]:
    from pipelines.read import InputSpec, expand_inputs
    from pipelines.read_kernel import read_file

    tasks = expand_inputs([InputSpec(str(REPO / "data" / "sample" / "pool"), "pool")])
    return [{"id": r["id"], "text": r["text"]} for t in tasks for b in read_file(t) for r in b.to_pylist()]


def make_corpus(copies: int, files: int = 4, gz: bool = True) -> tuple[Path, int]:
    """The pool repeated `copies` times (ids made unique; each copy an exact duplicate of the
    pool), split over `files` JSONL files. Returns (directory, documents)."""
    base = pool_texts()
    out = Path(tempfile.mkdtemp(prefix="winnow-bench-"))
    handles = [
        (gzip.open if gz else open)(out / f"part-{i}.jsonl{'.gz' if gz else ''}", "wt", encoding="utf-8")
        for i in range(files)
    ]
    n = 0
    for c in range(copies):
        for r in base:
            handles[n % files].write(json.dumps({"id": f"{r['id']}-{c}", "text": r["text"]}) + "\n")
            n += 1
    for h in handles:
        h.close()
    return out, n


def spark_session():
    from pipelines.spark import get_spark

    return get_spark("local[*]", app_name="winnow-bench", shuffle_partitions=8)


def timed(fn, repeat: int = 2) -> float:
    """Best wall time of `repeat` runs (the first run also warms the JVM and Python workers)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def report(stage: str, docs: int, ours: float, peers: dict[str, float]) -> None:
    print(f"{stage}: {docs:,} documents, {os.cpu_count()} cores")
    print(f"  winnow {stage:<14} {ours:7.2f} s  {docs / ours:10,.0f} docs/s")
    for name, seconds in peers.items():
        print(f"  {name:<21} {seconds:7.2f} s  {docs / seconds:10,.0f} docs/s   winnow/peer throughput = {seconds / ours:.2f}x")
