"""`dedup_minhash` on a real Spark standalone cluster (one master, two 1-core workers, all on
127.0.0.1) gives exactly what it gives in local mode.

The cluster is started with `spark-class` from the pip package (it has no start-master.sh); the
cluster run is a separate driver process (tests/cluster_job.py) because this process already has
its one SparkSession, the local[2] one from conftest, which runs the same code for comparison.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import zstandard

from .cluster_job import process_tree, run as run_dedup
from .conftest import DATA, REPO

POOL = DATA / "sample" / "pool"
SLICE = {"fiction.jsonl.zst": 300, "docs.jsonl.gz": 150}  # input order; first N records of each
WORKERS = 2
START_TIMEOUT = 60   # seconds for the master to come up and both workers to register
JOB_TIMEOUT = 180    # seconds for the cluster driver


# --- the cluster -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def cluster_env(tmp: Path) -> dict[str, str]:
    from pipelines.spark import configure_environment

    configure_environment()  # JAVA_HOME (Java 17), SPARK_LOCAL_IP, PYSPARK_PYTHON unless set
    conf_dir = tmp / "conf"  # empty: no stray spark-defaults.conf or spark-env.sh is picked up
    conf_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_MASTER", "SPARK_WORKER"))}
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(conf_dir),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(tmp / "local"),
        "SPARK_LOG_DIR": str(tmp / "logs"),
        "SPARK_PID_DIR": str(tmp),
        "SPARK_DAEMON_MEMORY": "256m",
        # Master and workers do little but boot: the client compiler alone starts them faster.
        "SPARK_DAEMON_JAVA_OPTS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        # The master's REST submission server (on by default here) would take the fixed port 6066.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    })
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        return f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"--- {path.name}: {e} ---"


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A child in its own process group (so teardown reaches the JVM and everything it forks)."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=log.parent, start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group (it leads one), SIGKILL it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; nothing else of its group may linger
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def master_state(webui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=2) as r:
        return json.load(r)


class StandaloneCluster:
    """A master and WORKERS 1-core workers on 127.0.0.1, each a `spark-class` child in its own
    process group; logs and work dirs under `home`."""

    def __init__(self, home: Path):
        self.home = home
        (home / "logs").mkdir(parents=True)
        self.env = cluster_env(home)
        self.port, self.webui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.deadline = 0.0

    @property
    def logs(self) -> list[Path]:
        return [log for _, log in self.procs]

    @property
    def pgids(self) -> list[int]:
        return [p.pid for p, _ in self.procs]  # each child leads its own group

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.home / "logs" / f"{name}.log"
        self.procs.append((start([str(spark_home() / "bin" / "spark-class"), *args], log, self.env), log))

    def start(self) -> None:
        """Start the master, wait until it is ALIVE, then start the workers (a worker started
        before the master listens only retries ~10 s later)."""
        self.deadline = time.monotonic() + START_TIMEOUT
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.webui_port)])
        self.wait_for(lambda s: s.get("status") == "ALIVE", "the master did not come up")
        for i in range(WORKERS):
            work = self.home / f"worker{i}"
            work.mkdir()
            self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", self.url,
                                       "--host", "127.0.0.1", "--port", "0", "--webui-port", str(free_port()),
                                       "--cores", "1", "--memory", "1g", "--work-dir", str(work)])

    def wait_registered(self) -> dict:
        """Block until the master lists WORKERS alive workers and its log says it registered them."""
        state = self.wait_for(lambda s: s.get("aliveworkers", 0) >= WORKERS,
                              f"{WORKERS} workers did not register with {self.url}")
        master_log = self.home / "logs" / "master.log"
        assert master_log.read_text(errors="replace").count("Registering worker 127.0.0.1:") >= WORKERS, \
            tail(master_log)
        return state

    def wait_for(self, ready, what: str) -> dict:
        """Poll the master's /json/ until `ready(state)`; fail with the logs' tails if a process
        dies or START_TIMEOUT passes."""
        state: dict = {}
        while True:
            dead = [(p, log) for p, log in self.procs if p.poll() is not None]
            if dead:
                pytest.fail(f"{dead[0][1].stem} exited with {dead[0][0].returncode}: {what}\n"
                            + "\n".join(tail(log) for log in self.logs))
            try:
                state = master_state(self.webui_port)
            except OSError:
                state = {}
            if ready(state):
                return state
            if time.monotonic() > self.deadline:
                pytest.fail(f"{what} in {START_TIMEOUT}s (master state: {state or 'unreachable'})\n"
                            + "\n".join(tail(log) for log in self.logs))
            time.sleep(0.2)

    def stop(self) -> None:
        # Executors are in their worker's process group; their Python daemons are not (they
        # setpgid) and exit when their executor does, but a killed run is not left to chance.
        strays = process_tree(set(self.pgids)) - {p.pid for p, _ in self.procs}
        for p, _ in reversed(self.procs):  # workers (and their executors) first, then the master
            stop(p)
        for pid in strays:
            try:
                if b"pyspark" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@pytest.fixture
def standalone_cluster(tmp_path):
    """A started cluster: the master is up and the workers are starting (`wait_registered`)."""
    cluster = StandaloneCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# --- the input: a slice of the sample pool with its planted duplicates ---------------------------

def _read_lines(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    elif path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return [line for line in raw.splitlines() if line.strip()]


def _write_lines(path: Path, lines: list[bytes]) -> None:
    body = b"".join(line + b"\n" for line in lines)
    if path.name.endswith(".gz"):
        body = gzip.compress(body)
    elif path.name.endswith(".zst"):
        body = zstandard.ZstdCompressor().compress(body)
    path.write_bytes(body)


@pytest.fixture
def pool_slice(tmp_path) -> SimpleNamespace:
    """The first records of each SLICE file plus every planted near/exact duplicate of
    data/sample/minhash_truth.jsonl whose survivor is also in these files, and that survivor."""
    prefixes = tuple(name.split(".")[0] + "-" for name in SLICE)
    truth = [json.loads(line) for line in (DATA / "sample" / "minhash_truth.jsonl").read_text().splitlines()]
    planted = {(t["id"], t["survivor"]) for t in truth
               if t["id"].startswith(prefixes) and t["survivor"].startswith(prefixes)}
    wanted = {i for pair in planted for i in pair}
    out = tmp_path / "slice"
    out.mkdir()
    paths = []
    for name, first in SLICE.items():
        lines = _read_lines(POOL / name)
        keep = [line for i, line in enumerate(lines) if i < first or json.loads(line)["id"] in wanted]
        _write_lines(out / name, keep)
        paths.append(out / name)
    return SimpleNamespace(paths=paths, planted=sorted(planted))


# --- the test ----------------------------------------------------------------------------------

@pytest.fixture
def local_result(spark, pool_slice):
    """The local-mode answer, computed on this session's SparkSession in a thread while the
    cluster starts and runs (the fixture is set up before `standalone_cluster`)."""
    with ThreadPoolExecutor(1, thread_name_prefix="local-dedup") as pool:
        yield pool.submit(run_dedup, spark, pool_slice.paths)


def test_dedup_minhash_on_a_standalone_cluster_matches_local_mode(local_result, standalone_cluster, pool_slice,
                                                                  tmp_path):
    cluster = standalone_cluster
    result_path = tmp_path / "cluster-result.json"
    driver_log = cluster.home / "logs" / "driver.log"
    cmd = [sys.executable, str(REPO / "tests" / "cluster_job.py"), "--master", cluster.url,
           "--out", str(result_path), "--executors", str(WORKERS), "--shuffle-partitions", "4",
           "--check-pgids", ",".join(map(str, cluster.pgids))]
    for p in pool_slice.paths:
        cmd += ["--input", str(p)]
    # The driver JVM boots while the workers register; it waits for both executors itself.
    driver = start(cmd, driver_log, cluster.env)
    try:
        cluster.wait_registered()
        try:
            rc = driver.wait(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the cluster driver did not finish in {JOB_TIMEOUT}s\n"
                        + "\n".join(tail(log) for log in [driver_log, *cluster.logs]))
    finally:
        stop(driver)
    assert rc == 0, "\n".join(tail(log, 80) for log in [driver_log, *cluster.logs])
    remote = json.loads(result_path.read_text())
    local = local_result.result(timeout=JOB_TIMEOUT)

    # It really ran on the cluster, spread over both workers' executors, on loopback only.
    assert remote["master"] == cluster.url and remote["executors"] == WORKERS
    if Path("/proc/net/tcp").exists():  # the socket check reads /proc (Linux)
        assert remote["socket_processes"] >= 1 + WORKERS  # driver JVM, executors (+ Python workers)
        assert remote["foreign_sockets"] == []
    assert local["master"].startswith("local") and local["partitions"] != remote["partitions"]
    executor_dirs = sorted(d.name for w in range(WORKERS)
                           for app in (cluster.home / f"worker{w}").iterdir() for d in app.iterdir())
    assert len(executor_dirs) == WORKERS

    # Something was found, and the planted duplicates were part of it.
    assert local["read_errors"] == remote["read_errors"] == 0
    assert local["removed"], "no near-duplicates removed: the slice lost its planted pairs"
    assert local["removed_by"] == ["dedup_minhash"]
    assert all(reason.startswith("near-duplicate of ") for _, reason in local["removed"])
    docs = sum(1 for p in pool_slice.paths for _ in _read_lines(p))
    assert len(local["kept"]) + len(local["removed"]) == docs
    # Input order here is not the pool's (fiction before docs), so a planted pair's survivor may
    # be its other member; either way one of the two must go. MinHash may miss a borderline pair.
    removed_ids = {i for i, _ in local["removed"]}
    found = [pair for pair in pool_slice.planted if removed_ids & set(pair)]
    assert len(pool_slice.planted) >= 100 and len(found) >= 0.9 * len(pool_slice.planted), \
        f"{len(found)} of {len(pool_slice.planted)} planted near-duplicate pairs found"

    # The same answer, row for row and in input order.
    assert remote["kept"] == local["kept"]
    assert remote["removed"] == local["removed"]
    for key in ("bands", "rows", "candidate_pairs", "components", "largest_component", "component_sizes"):
        assert remote["stats"][key] == local["stats"][key], key
