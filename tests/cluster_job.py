"""Run `read` + `dedup_minhash` on some input files and write what was kept and removed as JSON.

Used by tests/test_cluster.py twice over the same code path: in process on the test session's
local SparkSession (`run`), and as a separate driver process against a standalone cluster
(``python tests/cluster_job.py --master spark://127.0.0.1:PORT --input A --input B --out R``).

The output is ``{"kept": [id, ...] in input order, "removed": [[id, reason], ...] in input order,
"stats": {...}, "master": ..., "executors": N}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))


def input_specs(paths):
    """One InputSpec per file, source and domain from the file stem (as `winnow run --input`)."""
    from pipelines.read import InputSpec

    return tuple(InputSpec(path=str(p), source=Path(p).name.split(".")[0], domain=Path(p).name.split(".")[0])
                 for p in paths)


def run(spark, paths) -> dict:
    """`read` then `dedup_minhash` (default parameters) on `paths`; the result as plain data."""
    from pyspark.sql import functions as F

    from pipelines import dedup_minhash, read
    from pipelines.stage import StageContext

    ctx = StageContext(spark=spark, seed=0)
    try:
        got = read.apply(None, read.ReadParams(input_specs(paths)), ctx)
        unreadable = got.removed.count()
        result = dedup_minhash.apply(got.kept, dedup_minhash.DedupMinhashParams(), ctx)
        kept = result.kept.select("id", "_file", "_row").orderBy("_file", "_row").collect()
        removed = (
            result.removed.select("id", "reason", "removed_by", "_file", "_row")
            .orderBy("_file", "_row").collect()
        )
        stats = {k: v for k, v in result.stats.items() if k != "component_sizes"}
        stats["component_sizes"] = {str(k): v for k, v in result.stats["component_sizes"].items()}
        return {
            "kept": [r["id"] for r in kept],
            "removed": [[r["id"], r["reason"]] for r in removed],
            "removed_by": sorted({r["removed_by"] for r in removed}),
            "read_errors": unreadable,
            "stats": stats,
            "master": spark.sparkContext.master,
            "executors": _executor_count(spark),
            "partitions": int(spark.conf.get("spark.sql.shuffle.partitions")),
        }
    finally:
        ctx.release()


def process_tree(pgids) -> set[int]:
    """Every process in the given process groups and every descendant of one (PySpark's Python
    daemons move to process groups of their own). Linux /proc; empty elsewhere."""
    parent: dict[int, int] = {}
    members: set[int] = set()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # after "(comm)"
        except OSError:
            continue
        pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
        parent[pid] = ppid
        if pgrp in pgids:
            members.add(pid)
    for pid in list(parent):
        p, hops = parent.get(pid), 0
        while p and p not in members and hops < 64:
            p, hops = parent.get(p), hops + 1
        if p in members:
            members.add(pid)
    return members


def _socket_inodes(pgids) -> dict[str, int]:
    """socket inode -> pid for every process of `process_tree(pgids)`."""
    inodes: dict[str, int] = {}
    for pid in process_tree(set(pgids)):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    return inodes


def _address(hex_addr: str):
    import ipaddress

    host = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word of the address in host (little-endian) byte order
    host = b"".join(host[i:i + 4][::-1] for i in range(0, len(host), 4))
    ip = ipaddress.ip_address(host)
    return getattr(ip, "ipv4_mapped", None) or ip


def foreign_sockets(pgids) -> list[str]:
    """Bound or connected TCP/UDP sockets of the processes in `pgids` whose local address is not
    loopback: anything listed could carry traffic off the machine. Empty where /proc is missing."""
    inodes = _socket_inodes(set(pgids)) if Path("/proc/net/tcp").exists() else {}
    bad = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode not in inodes:
                continue
            addr, port = local.split(":")
            if int(port, 16) == 0:  # created, never bound
                continue
            ip = _address(addr)
            if not ip.is_loopback:
                bad.append(f"{table} {ip}:{int(port, 16)} -> {remote} (pid {inodes[inode]})")
    return bad


def _executor_count(spark) -> int:
    """Executors registered with the driver (the driver's own block manager not counted)."""
    sc = spark.sparkContext
    if sc.master.startswith("local"):
        return 0
    return max(0, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)


def wait_for_executors(spark, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        have = _executor_count(spark)
        if have >= n or time.monotonic() > deadline:
            return have
        time.sleep(0.2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", required=True)
    parser.add_argument("--input", action="append", required=True, help="input file (repeat, input order)")
    parser.add_argument("--out", required=True, help="where the JSON result goes")
    parser.add_argument("--executors", type=int, default=2, help="wait for this many executors first")
    parser.add_argument("--shuffle-partitions", type=int, default=4)
    parser.add_argument("--check-pgids", default="",
                        help="comma-separated process groups (the cluster's) whose sockets must all be "
                             "on loopback; checked, with this driver's, before the session stops")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="reliable checkpoints for connected components (default: localCheckpoint)")
    args = parser.parse_args(argv)

    from pipelines.spark import configure_environment, get_spark

    configure_environment()
    executor_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    conf = {
        # The executors' Python workers must import `pipelines` (the UDFs and Arrow kernels are
        # pickled by reference to their module); the venv's editable install would also do, but a
        # checkout that is not the installed one must win.
        "spark.executorEnv.PYTHONPATH": executor_path,
        "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
        "spark.pyspark.python": sys.executable,
        "spark.executor.memory": "768m",
        "spark.executor.cores": "1",
        "spark.cores.max": str(args.executors),
        # Hold the first job until every executor is there, so the work is really spread.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "30s",
        # Dozens of small jobs: the client compiler alone halves the wall time of this run on two
        # busy cores (C2 compiles compete with the work). Prepended to get_spark's extra options.
        "spark.driver.defaultJavaOptions": "-XX:TieredStopAtLevel=1",
        "spark.executor.defaultJavaOptions": "-XX:TieredStopAtLevel=1",
    }
    conf.update(kv.split("=", 1) for kv in args.conf)
    spark = get_spark(args.master, app_name="winnow-cluster-test",
                      shuffle_partitions=args.shuffle_partitions, conf=conf)
    try:
        if args.checkpoint_dir:
            spark.sparkContext.setCheckpointDir(args.checkpoint_dir)
        have = wait_for_executors(spark, args.executors, timeout=60)
        if have < args.executors:
            print(f"only {have} of {args.executors} executors registered", file=sys.stderr)
            return 3
        started = time.monotonic()
        result = run(spark, args.input)
        result["seconds"] = round(time.monotonic() - started, 1)
        result["checkpoint_dir"] = spark.sparkContext.getCheckpointDir()
        # Executors (children of the workers) and their Python workers are alive now.
        pgids = {int(g) for g in args.check_pgids.split(",") if g} | {os.getpgid(0)}
        result["foreign_sockets"] = foreign_sockets(pgids)
        result["socket_processes"] = len(set(_socket_inodes(pgids).values()))
        Path(args.out).write_text(json.dumps(result))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
