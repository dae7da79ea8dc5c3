"""The whole curation chain at 1/16, 1/4 and 1x a million documents, in core-hours per TB of text.

    python bench/bench_scale.py [--sizes 1/16,1/4,1] [--cluster] [--json FILE] [--work /tmp/winnow-scale]
    python bench/bench_scale.py --report --json FILE      # the tables again, from an earlier run's JSON

A benchmark run by hand, never in the test suite (1x is about a million documents and 4.5 GB of
text). Sizes run by separate invocations accumulate in the same --json file.

- **Corpora** (`build_corpus.py`, cached in `--work` between runs): 1/16 = 10 copies of the sample
  pool (about 63k documents with the planted clusters), 1/4 = 40 copies, 1 = 160 copies (about
  1.0M). The input is the corpus's `split/` directory (4 `.jsonl.gz` files). Text bytes are the sum
  of the UTF-8 bytes of the records' `text` fields (cached beside the corpus).
- **Trained once, reused by every size** (timed apart, not in any size's figures): the DCLM
  fastText classifier (`winnow train-scorer dclm`: `data/reference/hq.jsonl.zst` against the
  sample pool, DCLM's settings, one thread; about 180 MB, as in `bench_score.py`) and the
  byte-level BPE tokenizer (8,192 entries, trained on 20,000 documents drawn from the 1/16 corpus,
  as the `tokenize` stage trains its own). The classifier is not trained on the 1/16 corpus: its
  per-copy word tags make 1.66M distinct words, and the model came out at 1.5 GB, loaded by every
  Python worker that scores (10 GB of worker PSS at 1/16 on local[2], more than this shared
  24 GB machine can spare).
- **Each size** is `winnow run CONFIG` in a fresh process, as a user runs it: read -> dedup_exact
  -> dedup_minhash -> score (dclm) -> select (top half by score_dclm) -> tokenize -> decompose
  (2^5..2^10) -> export -> write, on Spark `local[2]` (cores = 2). The config is written next to
  the output (`<work>/scale-<copies>.toml`). While it runs, the process tree is sampled from /proc
  (`_common`'s readers): the driver's Python RSS (and its VmHWM), the JVM's RSS, the Python
  workers' summed PSS and the largest worker's RSS, and the tree's CPU seconds (each process's own
  user + system time, largest value seen). Per-stage seconds and counts come from the run's
  `manifest.json`.
- **Reported** per stage: documents in, seconds, docs/s per core (in / seconds / cores); per size:
  wall seconds of the command (start-up included), CPU seconds, peak memory, and
  core-hours per TB = (wall s x cores / 3600) / (text bytes / 1e12). The anchors' published
  figures are printed beside it: they were measured on other hardware and other corpora.
- `--cluster`: the 1/16 size again on a Spark standalone cluster (a master and two 1-core workers
  on 127.0.0.1, started as `tests/test_cluster.py`'s `StandaloneCluster` does, but with 2.5 GB
  workers and 2 GB executors: the tests' 1 GB workers run out of heap in decompose at this size,
  see `cluster_run`), and its output compared with the local run's: kept ids, and removed ids
  with their reasons, stage by stage.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import _memory_kib, _proc_table, _tree  # noqa: E402

WINNOW = str(Path(sys.executable).with_name("winnow"))
SIZES = {"1/16": 10, "1/4": 40, "1": 160}     # copies of the pool; 160 x ~6,270 = ~1.0M documents
CORES = 2
MASTER = f"local[{CORES}]"
HQ = REPO / "data" / "reference" / "hq.jsonl.zst"
POOL = REPO / "data" / "sample" / "pool"
WORKER_MEMORY, EXECUTOR_MEMORY = "2560m", "2g"   # per standalone worker / executor (see cluster_run)
TOKENIZER_DOCS = 20_000
VOCAB = 8192
ANCHORS = [
    ("data-juicer, Ray MinHash dedup", "540-720 core-hours per TB", "data-juicer's published Ray dedup benchmark"),
    ("datatrove, MinHash signature stage", "305-360 task-hours per TB", "datatrove's published MinHash run"),
    ("NeMo Curator, GPU fuzzy dedup", "about 2 GPU-hours per TB", "NeMo Curator's published fuzzy-dedup figure"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# --- corpora ------------------------------------------------------------------------------------

def text_bytes(split: Path) -> int:
    import orjson

    total = 0
    for path in sorted(split.glob("*.jsonl.gz")):
        with gzip.open(path, "rb") as f:
            for line in f:
                text = orjson.loads(line).get("text")
                if isinstance(text, str):
                    total += len(text.encode("utf-8", "surrogatepass"))
    return total


def corpus(work: Path, copies: int) -> dict:
    out = work / f"corpus-{copies}"
    if not (out / "corpus.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        log(f"building the corpus: {copies} copies of the pool -> {out}")
        start = time.perf_counter()
        subprocess.run([sys.executable, str(BENCH / "build_corpus.py"), "--copies", str(copies), "--out", str(out)],
                       check=True, cwd=BENCH, capture_output=True)
        log(f"  built in {time.perf_counter() - start:.0f} s")
    info = json.loads((out / "corpus.json").read_text())
    cached = out / "scale_bytes.json"
    if not cached.exists():
        cached.write_text(json.dumps({"text_bytes": text_bytes(out / "split")}))
    info["text_bytes"] = json.loads(cached.read_text())["text_bytes"]
    info["split"] = str(out / "split")
    return info


# --- trained once -------------------------------------------------------------------------------

def prepare_models(work: Path, base: dict) -> dict:
    """The DCLM model and the tokenizer every size reuses; trained if missing, times recorded."""
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    dclm, tok = models / "dclm.bin", models / "tokenizer.json"
    times_path = models / "scale_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    if not dclm.exists():
        log("training the DCLM classifier (hq reference against the sample pool)")
        start = time.perf_counter()
        proc = subprocess.run([WINNOW, "train-scorer", "dclm", "--positives", str(HQ), "--negatives", str(POOL),
                               "--output", str(dclm), "--threads", "1", "--seed", "0", "--master", MASTER],
                              cwd=BENCH, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"winnow train-scorer failed:\n{proc.stderr[-3000:]}")
        times["dclm_s"] = round(time.perf_counter() - start, 1)
    if not tok.exists():
        log(f"training the tokenizer ({VOCAB:,} entries, {TOKENIZER_DOCS:,} documents of the 1/16 corpus)")
        import orjson

        from pipelines.tokenize import train_tokenizer

        start = time.perf_counter()
        texts = []
        for path in sorted(Path(base["split"]).glob("*.jsonl.gz")):
            with gzip.open(path, "rb") as f:
                texts.extend(t for t in (orjson.loads(line).get("text") for line in f) if isinstance(t, str))
        sample = random.Random(0).sample(texts, min(TOKENIZER_DOCS, len(texts)))
        del texts
        train_tokenizer(sample, VOCAB).save(str(tok))
        times["tokenizer_s"] = round(time.perf_counter() - start, 1)
    times_path.write_text(json.dumps(times))
    return {"dclm": str(dclm), "tokenizer": str(tok), **times}


# --- the flow config ----------------------------------------------------------------------------

def q(value: str) -> str:
    return json.dumps(value)  # a TOML basic string


def shuffle_partitions(documents: int) -> int:
    """8 up to ~100k documents, then a power of two near one partition per 16k documents."""
    return max(8, 2 ** round(math.log2(max(documents, 1) / 16_000)))


def write_config(path: Path, *, split: str, output: Path, models: dict, master: str, partitions: int,
                 conf: dict[str, str] | None = None, driver_memory: str | None = None) -> Path:
    lines = [
        "# Written by bench/bench_scale.py: the curation chain at scale, scorer and tokenizer trained once.",
        f"output = {q(str(output))}",
        "seed = 1234",
        "",
        "[spark]",
        f"master = {q(master)}",
        f"shuffle_partitions = {partitions}",
    ]
    if driver_memory:
        lines.append(f"driver_memory = {q(driver_memory)}")
    if conf:
        lines.append("conf = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in conf.items()) + " }")
    lines += [
        "",
        "[[inputs]]",
        f"path = {q(split)}",
        'source = "bench"',
        'domain = "web"',
        "",
        '[[stages]]\nstage = "dedup_exact"\nnormalize = "whitespace"',
        "",
        '[[stages]]\nstage = "dedup_minhash"\nthreshold = 0.8\nnum_perm = 256\nngram = 5\ncheck = "signature"',
        "",
        f'[[stages]]\nstage = "score"\nscorers = [{{ kind = "dclm", model = {q(models["dclm"])} }}]',
        "",
        '[[stages]]\nstage = "select"\nscore = "score_dclm"\ntop_fraction = 0.5',
        "",
        f'[[stages]]\nstage = "tokenize"\ntokenizer = {q(models["tokenizer"])}',
        "",
        '[[stages]]\nstage = "decompose"\nmin_log2 = 5\nmax_log2 = 10\ntail = "keep"',
        "",
        '[[stages]]\nstage = "export"',
        "",
        "[write]",
        'columns = ["id", "text", "source", "domain", "meta", "cluster_id", "score_*", "n_tokens"]',
        'compression = "zstd"',
        "max_records_per_file = 100000",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


# --- one command, its process tree sampled ------------------------------------------------------

class CommandTree:
    """Peak memory and CPU seconds of process `root` and its descendants, sampled from /proc
    every `interval` seconds until `stop()`.

    driver: root's RSS (and its VmHWM, the kernel's own peak); jvm: RSS of java processes;
    workers: PSS sum of PySpark's Python workers (pyspark.daemon and its forks), worker_max the
    largest one's RSS; other: RSS of anything else (Prefect's helpers, shells).
    CPU: each process's own utime + stime, the largest seen, summed (a process's last interval
    is missed; children's time is never counted twice)."""

    def __init__(self, root: int, interval: float = 0.5):
        self.root, self.interval = root, interval
        self.peak = {"driver": 0, "driver_hwm": 0, "jvm": 0, "workers": 0, "worker_max": 0, "worker_count": 0,
                     "other": 0}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _own_cpu(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        table = _proc_table()
        if self.root not in table:
            return
        now = {k: 0 for k in self.peak}
        now["driver"] = _memory_kib(self.root, False)
        try:
            with open(f"/proc/{self.root}/status") as f:
                now["driver_hwm"] = next((int(x.split()[1]) for x in f if x.startswith("VmHWM:")), 0)
        except OSError:
            pass
        for pid in _tree(table, self.root):
            cpu = self._own_cpu(pid)
            if cpu is not None:
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)
            if pid == self.root:
                continue
            cmd = table[pid][1]
            if "java" in cmd.split(" ", 1)[0]:
                now["jvm"] += _memory_kib(pid, False)
            elif "pyspark" in cmd:
                now["workers"] += _memory_kib(pid, True)
                now["worker_max"] = max(now["worker_max"], _memory_kib(pid, False))
                now["worker_count"] += 1
            else:
                now["other"] += _memory_kib(pid, False)
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def mib(self) -> dict[str, float]:
        return {k: (round(v / 1024, 1) if k != "worker_count" else v) for k, v in self.peak.items()}


def run_flow(config: Path, output: Path, log_path: Path, env: dict[str, str] | None = None) -> dict:
    """`winnow run CONFIG` in a fresh process; wall, CPU, memory and the manifest."""
    shutil.rmtree(output, ignore_errors=True)      # not timed: a fresh output directory
    load_before = load()
    with open(log_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([WINNOW, "run", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=BENCH, env=env)
        tree = CommandTree(proc.pid)
        rc = proc.wait()
        wall = time.perf_counter() - start
        tree.stop()
    if rc != 0:
        raise SystemExit(f"winnow run {config} failed ({rc}); its output ends:\n"
                         + log_path.read_text(errors="replace")[-4000:])
    manifest = json.loads((output / "manifest.json").read_text())
    return {"wall_s": round(wall, 1), "cpu_s_sampled": round(tree.cpu_seconds, 1),
            "memory_mib": tree.mib(), "load_before": load_before, "load_after": load(),
            "stages": [{"name": s["name"], "in": s["in"], "kept": s["kept"], "removed": s["removed"],
                        "seconds": round(s["seconds"], 2)} for s in manifest["stages"]],
            "spark": manifest.get("spark", {}), "log": str(log_path)}


def core_hours_per_tb(wall_s: float, cores: int, text_bytes: int) -> float:
    return (wall_s * cores / 3600) / (text_bytes / 1e12)


DEDUP_STAGES = ("read", "dedup_exact", "dedup_minhash")


def dedup_core_hours_per_tb(r: dict) -> float:
    """The part the anchors measure: read + exact + fuzzy dedup stage seconds x cores, per TB."""
    seconds = sum(s["seconds"] for s in r["stages"] if s["name"] in DEDUP_STAGES)
    return core_hours_per_tb(seconds, CORES, r["text_bytes"])


# --- the standalone cluster: same output as local mode ------------------------------------------

def outcome(output: Path) -> dict:
    """Kept ids, and (id, reason) of removed rows per stage, of a finished run."""
    import pyarrow.dataset as ds

    kept = sorted(ds.dataset(output / "kept", format="parquet").to_table(columns=["id"]).column("id").to_pylist())
    removed = {}
    for stage_dir in sorted(p for p in (output / "removed").iterdir() if p.is_dir()):
        t = ds.dataset(stage_dir, format="parquet").to_table(columns=["id", "reason"])
        removed[stage_dir.name] = sorted(zip(t.column("id").to_pylist(), t.column("reason").to_pylist()))
    return {"kept": kept, "removed": removed}


def compare(local: dict, remote: dict) -> dict:
    out = {"kept_local": len(local["kept"]), "kept_cluster": len(remote["kept"]),
           "kept_equal": local["kept"] == remote["kept"], "removed": {}}
    for stage in sorted(set(local["removed"]) | set(remote["removed"])):
        a, b = set(local["removed"].get(stage, [])), set(remote["removed"].get(stage, []))
        out["removed"][stage] = {"local": len(a), "cluster": len(b), "equal": a == b,
                                 "only_local": sorted(a - b)[:5], "only_cluster": sorted(b - a)[:5]}
    out["equal"] = out["kept_equal"] and all(v["equal"] for v in out["removed"].values())
    return out


def cluster_run(work: Path, info: dict, models: dict, local_output: Path) -> dict:
    environ = dict(os.environ)
    sys.path.insert(0, str(REPO))
    from tests import test_cluster as tc  # noqa: E402  (its conftest sets test env vars; restored below)

    class Cluster(tc.StandaloneCluster):
        """The tests' cluster with workers of WORKER_MEMORY instead of 1g (same start sequence)."""

        def start(self) -> None:
            self.deadline = time.monotonic() + tc.START_TIMEOUT
            self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(self.port), "--webui-port", str(self.webui_port)])
            self.wait_for(lambda st: st.get("status") == "ALIVE", "the master did not come up")
            for i in range(tc.WORKERS):
                (self.home / f"worker{i}").mkdir()
                self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                                           "--port", "0", "--webui-port", str(tc.free_port()), "--cores", "1",
                                           "--memory", WORKER_MEMORY, "--work-dir", str(self.home / f"worker{i}")])

    WORKERS = tc.WORKERS
    home = work / "cluster"
    shutil.rmtree(home, ignore_errors=True)
    cluster = Cluster(home)
    env = dict(cluster.env)
    for key in ("PREFECT_HOME", "HF_HOME", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "PREFECT_LOGGING_LEVEL"):
        if key in environ:
            env[key] = environ[key]
        else:
            env.pop(key, None)
    try:
        start = time.perf_counter()
        cluster.start()
        cluster.wait_registered()
        log(f"cluster up at {cluster.url} in {time.perf_counter() - start:.0f} s")
        executor_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        conf = {
            "spark.executorEnv.PYTHONPATH": executor_path,
            "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
            "spark.pyspark.python": sys.executable,
            # With the tests' 1g workers the 1/16 chain does not finish: at 768m (tests/cluster_job.py)
            # decompose's persisted frame ran the executors out of heap (exit 52, OutOfMemoryError
            # in ColumnBuilder.ensureFreeSpace); at 1g with 1,000-row cache batches, reading
            # tokenize's _work Parquet (two ~70 MB files, a row group each) did (OutOfMemoryError
            # in VectorIoBridge.readVectoredRanges). Neither setting changes the output.
            "spark.executor.memory": EXECUTOR_MEMORY,
            "spark.sql.inMemoryColumnarStorage.batchSize": "1000",
            "spark.executor.cores": "1",
            "spark.cores.max": str(WORKERS),
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
        }
        output = work / f"out-{info['copies']}-cluster"
        config = write_config(work / f"scale-{info['copies']}-cluster.toml", split=info["split"], output=output,
                              models=models, master=cluster.url,
                              partitions=shuffle_partitions(info["documents"]), conf=conf)
        result = run_flow(config, output, work / f"run-{info['copies']}-cluster.log", env=env)
    finally:
        cluster.stop()
    result["master"] = cluster.url
    result["comparison"] = compare(outcome(local_output), outcome(output))
    return result


# --- report -------------------------------------------------------------------------------------

def fmt_mib(x: float) -> str:
    return f"{x:,.0f} MiB"


def markdown(results: dict, extrapolated: dict | None) -> str:
    sizes = list(results)
    lines = []
    head = "| stage | " + " | ".join(f"{s}: in | {s}: s | {s}: docs/s per core" for s in sizes) + " |"
    lines += [head, "|---|" + "---:|" * (3 * len(sizes))]
    names = [s["name"] for s in results[sizes[0]]["stages"]]
    for name in names:
        cells = []
        for size in sizes:
            st = next((s for s in results[size]["stages"] if s["name"] == name), None)
            if st is None:
                cells += ["-", "-", "-"]
                continue
            # 0 s: the stage before wrote kept/ itself (its seconds hold the write)
            rate = f"{st['in'] / st['seconds'] / CORES:,.0f}" if st["seconds"] > 0 else "in the stage before"
            cells += [f"{st['in']:,}", f"{st['seconds']:.1f}", rate]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for size in sizes:
        r = results[size]
        outside = r["wall_s"] - sum(s["seconds"] for s in r["stages"])
        cells += ["", f"{outside:.1f}", ""]
    lines.append("| (outside stages: JVM, Spark session, Prefect, fingerprints) | " + " | ".join(cells) + " |")
    lines += ["", "| size | documents | text GB | wall s | CPU s | load avg (1 min, before/after) | docs/s per core "
              "(whole run) | driver peak (Python RSS) | JVM peak RSS | workers peak (PSS sum) | largest worker RSS "
              "| core-hours per TB (wall x 2 cores) | CPU-hours per TB (CPU s) | dedup part: core-hours per TB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        r = results[size]
        m = r["memory_mib"]
        cpu_tb = r["cpu_s_sampled"] / 3600 / (r["text_bytes"] / 1e12)
        loads = f"{r['load_before'].split(' / ')[0]} / {r['load_after'].split(' / ')[0]}"
        lines.append(f"| {size} | {r['documents']:,} | {r['text_bytes'] / 1e9:.2f} | {r['wall_s']:.0f} | "
                     f"{r['cpu_s_sampled']:.0f} | {loads} | {r['documents'] / r['wall_s'] / CORES:,.0f} | "
                     f"{fmt_mib(max(m['driver'], m['driver_hwm']))} | {fmt_mib(m['jvm'])} | {fmt_mib(m['workers'])} | "
                     f"{fmt_mib(m['worker_max'])} | **{r['core_hours_per_tb']:,.0f}** | {cpu_tb:,.0f} | "
                     f"{dedup_core_hours_per_tb(r):,.0f} |")
    if extrapolated:
        lines.append(f"| 1 (extrapolated, not run) | {extrapolated['documents']:,} | "
                     f"{extrapolated['text_bytes'] / 1e9:.2f} | ~{extrapolated['wall_s']:.0f} | - | - | - | - | - | - | - | "
                     f"~{extrapolated['core_hours_per_tb']:,.0f} | - | - |")
    lines += ["", "Core-hours per TB = wall s x 2 cores / 3600 / (UTF-8 text bytes / 1e12), start-up included; "
              "CPU-hours per TB uses the process tree's CPU seconds instead; the dedup part counts only the read, "
              "dedup_exact and dedup_minhash stage seconds (what the anchors' figures cover)."]
    lines += ["", "| anchor (published; other hardware, other corpora, dedup only) | figure |", "|---|---|"]
    lines += [f"| {name} | {figure} |" for name, figure, _ in ANCHORS]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1/16,1/4,1", help="comma-separated, of 1/16, 1/4, 1 (default all)")
    parser.add_argument("--cluster", action="store_true", help="also the 1/16 size on a standalone cluster, "
                        "its output compared with local mode's")
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    parser.add_argument("--work", default="/tmp/winnow-scale", help="corpora, models and outputs (cached)")
    parser.add_argument("--report", action="store_true", help="run nothing: print the tables from --json")
    args = parser.parse_args()
    sizes = [] if args.report else [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.report and not (args.json and Path(args.json).exists()):
        raise SystemExit("--report prints the tables of an earlier run: give its --json FILE")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size {unknown[0]!r}; known: {', '.join(SIZES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    print(f"bench_scale: {os.cpu_count()} CPUs, Spark {MASTER}, load average at start {load()} (1/5/15 min)",
          flush=True)

    if args.report:
        models = json.loads(Path(args.json).read_text()).get("models", {})
    else:
        models = prepare_models(work, corpus(work, SIZES["1/16"]))
        print(f"trained once, reused by every size: DCLM model ({models.get('dclm_s', 'cached')} s), "
              f"tokenizer ({models.get('tokenizer_s', 'cached')} s)", flush=True)

    report: dict = {"machine": {"cpus": os.cpu_count(), "cores_used": CORES}, "models": models, "sizes": {}}
    if args.json and Path(args.json).exists():  # sizes measured by an earlier invocation stay in the file
        earlier = json.loads(Path(args.json).read_text())
        report["sizes"].update(earlier.get("sizes", {}))
        if "cluster" in earlier:
            report["cluster"] = earlier["cluster"]

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")

    for size in sizes:
        info = corpus(work, SIZES[size])
        copies = info["copies"]
        output = work / f"out-{copies}"
        config = write_config(work / f"scale-{copies}.toml", split=info["split"], output=output, models=models,
                              master=MASTER, partitions=shuffle_partitions(info["documents"]))
        log(f"size {size}: {info['documents']:,} documents, {info['text_bytes'] / 1e9:.2f} GB of text; "
            f"winnow run {config}")
        r = run_flow(config, output, work / f"run-{copies}.log")
        r.update(documents=info["documents"], text_bytes=info["text_bytes"], copies=copies,
                 shuffle_partitions=shuffle_partitions(info["documents"]),
                 core_hours_per_tb=round(core_hours_per_tb(r["wall_s"], CORES, info["text_bytes"]), 1))
        report["sizes"][size] = r
        m = r["memory_mib"]
        print(f"size {size}: {info['documents']:,} documents in {r['wall_s']:.0f} s, CPU {r['cpu_s_sampled']:.0f} s; "
              f"driver peak {max(m['driver'], m['driver_hwm']):,.0f} MiB, JVM {m['jvm']:,.0f} MiB, "
              f"workers {m['workers']:,.0f} MiB (PSS, {m['worker_count']} at most); "
              f"{r['core_hours_per_tb']:,.0f} core-hours per TB; load average {r['load_before']} -> {r['load_after']}",
              flush=True)
        save()

    if args.cluster and not args.report:
        info = corpus(work, SIZES["1/16"])
        local_output = work / f"out-{info['copies']}"
        if not (local_output / "manifest.json").exists():
            raise SystemExit("--cluster compares with the local 1/16 run: run --sizes 1/16 first (or with it)")
        log(f"size 1/16 on a standalone cluster (master + 2 one-core {WORKER_MEMORY} workers on 127.0.0.1)")
        try:
            c = cluster_run(work, info, models, local_output)
        except SystemExit as exc:  # a failed cluster run is a result too
            report["cluster"] = {"failed": str(exc)[-3000:]}
            save()
            raise
        report["cluster"] = c
        cmp = c["comparison"]
        print(f"cluster 1/16 ({c['master']}): {c['wall_s']:.0f} s; same output as local mode: "
              f"{'YES' if cmp['equal'] else 'NO'} (kept {cmp['kept_local']:,} local, {cmp['kept_cluster']:,} cluster; "
              + ", ".join(f"{k} {v['local']:,}/{v['cluster']:,}{'' if v['equal'] else ' DIFFER'}"
                          for k, v in cmp["removed"].items()) + ")", flush=True)
        save()

    order = [s for s in SIZES if s in report["sizes"]]
    results = {s: report["sizes"][s] for s in order}
    extrapolated = None
    if "1" not in results and "1/4" in results:
        # From the 1/4 run alone: its stage seconds x 4, its time outside the stages kept. (A line
        # through 1/16 and 1/4 would do if both ran on an equally quiet machine; this one is shared.)
        b = results["1/4"]
        scale = SIZES["1"] / SIZES["1/4"]
        stages = sum(s["seconds"] for s in b["stages"])
        docs, text = round(b["documents"] * scale), round(b["text_bytes"] * scale)
        wall = (b["wall_s"] - stages) + stages * scale
        extrapolated = {"documents": docs, "text_bytes": text, "wall_s": round(wall),
                        "core_hours_per_tb": round(core_hours_per_tb(wall, CORES, text), 1),
                        "method": "the 1/4 run's stage seconds x 4 plus its time outside the stages"}
        report["extrapolated_1x"] = extrapolated
        save()
    print()
    print(markdown(results, extrapolated))
    print()
    print("Anchors are published figures measured on other hardware and other corpora, for dedup alone "
          "(Winnow's figure is the whole chain, start-up included):")
    for name, figure, source in ANCHORS:
        print(f"  {name}: {figure} ({source})")
    if "cluster" in report and "failed" in report["cluster"]:
        print("\n1/16 on the standalone cluster FAILED:\n" + report["cluster"]["failed"][-1500:])
    elif "cluster" in report:
        c = report["cluster"]
        cmp = c["comparison"]
        print(f"\n1/16 on the standalone cluster ({c['master']}, 2 one-core executors): wall {c['wall_s']:.0f} s; "
              f"same kept ids and same removed ids and reasons as local mode: {'yes' if cmp['equal'] else 'NO'}")
        print(f"  kept: {cmp['kept_local']:,} local, {cmp['kept_cluster']:,} cluster, equal: {cmp['kept_equal']}")
        for stage, v in cmp["removed"].items():
            print(f"  removed by {stage}: {v['local']:,} local, {v['cluster']:,} cluster, equal: {v['equal']}"
                  + ("" if v["equal"] else f" (only local: {v['only_local']}, only cluster: {v['only_cluster']})"))
    print(f"\nload average at the end {load()} (1/5/15 min)")


if __name__ == "__main__":
    main()
