"""Shared bench helpers: a corpus made from the real sample pool, a Spark session, a timer."""
from __future__ import annotations

import gzip
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


_ALNUM = re.compile(r"[^\W_]+")


def pool_texts() -> list[dict]:
    from pipelines.read import InputSpec, expand_inputs
    from pipelines.read_kernel import read_file

    tasks = expand_inputs([InputSpec(str(REPO / "data" / "sample" / "pool"), "pool")])
    return [{"id": r["id"], "text": r["text"]} for t in tasks for b in read_file(t) for r in b.to_pylist()]


def tag_words(text: str, tag: str) -> str:
    """`text` with `tag` (lowercase letters) glued to the end of every run of letters and digits,
    so every word token of the MinHash normalization gets it: a copy that shares no word token
    (so no shingle) with the original but keeps its length, layout and near-duplicates (the
    token map is one to one, so Jaccard similarities are unchanged, except in scripts written
    without spaces, where the tag is a token of its own)."""
    return _ALNUM.sub(lambda m: m.group(0) + tag, text)


def copy_tag(c: int) -> str:
    """The tag of copy `c`: none for copy 0, then qb, qc, ... (letters only: digits would become 0
    under aggressive normalization)."""
    return "" if c == 0 else "q" + "abcdefghijklmnopqrstuvwxyz"[c % 26] * (c // 26 + 1)


def make_corpus(copies: int, files: int = 4, gz: bool = True, distinct: bool = False) -> tuple[Path, int]:
    """The pool repeated `copies` times (ids made unique), split over `files` JSONL files.
    Each copy is an exact duplicate of the pool, or with `distinct` a word-tagged copy
    (`tag_words`) that duplicates nothing outside itself, so the corpus is `copies` disjoint
    pools with the pool's own near-duplicate structure. Returns (directory, documents)."""
    base = pool_texts()
    out = Path(tempfile.mkdtemp(prefix="winnow-bench-"))
    handles = [
        (gzip.open if gz else open)(out / f"part-{i}.jsonl{'.gz' if gz else ''}", "wt", encoding="utf-8")
        for i in range(files)
    ]
    n = 0
    for c in range(copies):
        for r in base:
            text = tag_words(r["text"], copy_tag(c)) if distinct and c and r["text"] else r["text"]
            handles[n % files].write(json.dumps({"id": f"{r['id']}-{c}", "text": text}) + "\n")
            n += 1
    for h in handles:
        h.close()
    return out, n


def spark_session(master: str = "local[*]"):
    from pipelines.spark import get_spark

    return get_spark(master, app_name="winnow-bench", shuffle_partitions=8)


def cached_corpus(copies: int, cores: int):
    """(spark, a cached DataFrame of the corpus as `read` leaves it, documents): the pool repeated
    `copies` times, read once by the stage, staged as Parquet, repartitioned over 4 x `cores`."""
    from pipelines import read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    corpus, _ = make_corpus(copies, files=4)
    spark = spark_session(f"local[{cores}]")
    ctx = StageContext(spark=spark)
    frame = read.apply(None, ReadParams((InputSpec(str(corpus), "bench"),)), ctx).kept
    staged = str(corpus / "staged.parquet")
    frame.write.mode("overwrite").parquet(staged)
    ctx.release()
    df = spark.read.parquet(staged).repartition(cores * 4).cache()
    return spark, df, df.count()


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


# --- memory of a process tree, from /proc (Linux; no psutil) ------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, CPU seconds of it and its reaped children)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[1] is ppid; utime, stime, cutime, cstime are fields 14-17 of stat (11-14 here)
        cpu = sum(int(x) for x in fields[11:15]) / _TICK
        table[int(entry)] = (int(fields[1]), cmd, cpu)
    return table


def _tree(table: dict[int, tuple[int, str, float]], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def _memory_kib(pid: int, pss: bool) -> int:
    """Resident KiB of `pid`: PSS (shared pages split between sharers) or RSS; 0 if gone."""
    try:
        if pss:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1])
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_hwm_kib(pid: int | None = None) -> int:
    """The peak resident set (VmHWM) of `pid` (this process by default) over its lifetime."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class TreeMemory:
    """Peak memory of this process and its descendants while the `with` block runs, sampled
    from /proc every `interval` seconds in a background thread, and the CPU seconds they used
    (`cpu_seconds`). Three groups:

    - ``driver``:  this Python process (RSS);
    - ``jvm``:     the Spark JVM it started (RSS; in local mode it is also the executor);
    - ``workers``: the Python worker processes under the JVM (pyspark.daemon and its forks),
      summed as PSS, since forks share the daemon's pages; ``worker_max`` is the largest one's RSS.
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = {"driver": 0, "jvm": 0, "workers": 0, "worker_max": 0, "worker_count": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cpu(self) -> dict[int, float]:
        table = _proc_table()
        return {pid: table[pid][2] for pid in _tree(table, os.getpid())}

    def _sample(self) -> None:
        me = os.getpid()
        table = _proc_table()
        now = {"driver": _memory_kib(me, False), "jvm": 0, "workers": 0, "worker_max": 0, "worker_count": 0}
        for pid in _tree(table, me)[1:]:
            cmd = table[pid][1]
            if "java" in cmd.split(" ", 1)[0]:
                now["jvm"] += _memory_kib(pid, False)
            elif "pyspark" in cmd or "python" in cmd:
                now["workers"] += _memory_kib(pid, True)
                now["worker_max"] = max(now["worker_max"], _memory_kib(pid, False))
                now["worker_count"] += 1
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemory":
        self._cpu_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        end = self._cpu()
        # CPU seconds the tree used during the block (a child that exited counts in its parent's
        # reaped-children time; one that existed before counts only its increase)
        self.cpu_seconds = sum(v - self._cpu_start.get(pid, 0.0) for pid, v in end.items())

    def mib(self) -> dict[str, float]:
        return {k: (v / 1024 if k != "worker_count" else v) for k, v in self.peak.items()}
