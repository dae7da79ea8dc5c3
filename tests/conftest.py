"""Shared fixtures: one SparkSession and one Prefect test server per test session, hermetic homes.

The environment is set at import time, before anything imports Prefect or starts a JVM.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="winnow-tests-"))
os.environ.pop("PREFECT_API_URL", None)
os.environ.update({
    "PREFECT_HOME": str(_HOME / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",
    "HF_HOME": str(_HOME / "hf"),
    "XDG_CACHE_HOME": str(_HOME / "cache"),  # no JVM archive (winnow warm) from the user's cache
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "PYSPARK_PYTHON": sys.executable,
    "PYSPARK_DRIVER_PYTHON": sys.executable,
})

import gzip  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import zstandard  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
sys.path.insert(0, str(DATA))  # data/build_*.py: the sample's own builders, used by some fixtures
POOL = DATA / "sample" / "pool"
FILES = ["code.parquet", "docs.jsonl.gz", "fiction.jsonl.zst", "reference.jsonl.zst"]  # input order
PER_FILE = 300
DUP_PAIRS = 60


@pytest.fixture(scope="session")
def spark():
    from pipelines.spark import get_spark

    # The driver heap is sized from the machine, as for a user's local run (get_spark without
    # driver_memory): Spark's 1g default is exhausted by one 10 MB document, and the suite runs
    # 12 MB (test_dedup_minhash) and 50 MB (test_hostile) documents through this one JVM.
    session = get_spark("local[2]", app_name="winnow-tests", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def ctx(spark):
    from pipelines.stage import StageContext

    context = StageContext(spark=spark, seed=0)
    yield context
    context.release()


@pytest.fixture(scope="session")
def test_home() -> Path:
    return _HOME


# --------------------------------------------------------------------------------------------
# The real sample pool and models made from it, shared by several test files


def read_zst_jsonl(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
        return [json.loads(line) for line in text]


def pool_records(name: str) -> list[dict]:
    from pipelines.read import InputSpec, expand_inputs
    from pipelines.read_kernel import read_file

    (task,) = expand_inputs([InputSpec(str(POOL / name), "s")])
    return [
        {"id": r["id"], "text": r["text"], "meta": dict(r["meta"])}
        for batch in read_file(task) for r in batch.to_pylist()
    ]


def write_like(name: str, records: list[dict], out: Path) -> Path:
    path = out / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(records), path)
        return path
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(body) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(body))
    return path


def config(paths, output, stages=None, **extra):
    """A checked RunConfig over `paths` (source and domain = each file's stem)."""
    from flows.config import parse_config

    data = {
        "output": str(output),
        "inputs": [{"path": str(p), "source": Path(p).name.split(".")[0], "domain": Path(p).name.split(".")[0]}
                   for p in paths],
        "stages": stages if stages is not None else [{"stage": "dedup_exact"}],
        **extra,
    }
    return parse_config(data, Path("/"), "test")


@pytest.fixture(scope="session")
def pool_slice(tmp_path_factory):
    """At most ~1.4k docs of the real pool in its three formats, with some planted exact
    duplicates and their originals (originals come first in input order)."""
    out = tmp_path_factory.mktemp("slice")
    truth = [json.loads(line) for line in (DATA / "sample" / "truth.jsonl").read_text().splitlines()]
    dups = [t for t in truth if t["kind"] == "exact_dup"][:DUP_PAIRS]
    wanted = {t["id"] for t in dups} | {t["of"] for t in dups}
    planted = {t["id"] for t in truth}
    paths, position = [], {}
    for f, name in enumerate(FILES):
        records = pool_records(name)
        keep = [r for i, r in enumerate(records) if i < PER_FILE or r["id"] in wanted]
        paths.append(write_like(name, keep, out))
        position.update({r["id"]: (f, i) for i, r in enumerate(keep)})
    # Each planted group (an original and its copies) that is in the slice keeps its earliest
    # member in input order; every other member present is a duplicate to remove.
    groups: dict[str, set[str]] = {}
    for t in truth:
        if t["kind"] == "exact_dup":
            groups.setdefault(t["of"], {t["of"]}).add(t["id"])
    dup_ids = set()
    for members in groups.values():
        present = sorted((position[m], m) for m in members if m in position)
        dup_ids |= {m for _, m in present[1:]}
    assert len(dup_ids) >= DUP_PAIRS
    return {"paths": paths, "exact_dups": dup_ids, "planted": planted, "docs": len(position)}


@pytest.fixture(scope="session")
def pool_docs(spark, pool_slice, tmp_path_factory):
    """The pool slice read into the document schema, as Parquet (shared by stage tests)."""
    from pipelines import read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    ctx = StageContext(spark)
    specs = [InputSpec(str(p), p.name.split(".")[0]) for p in pool_slice["paths"]]
    path = str(tmp_path_factory.mktemp("pool-docs") / "docs.parquet")
    read.apply(None, ReadParams(specs), ctx).kept.write.parquet(path)
    return spark.read.parquet(path)


@pytest.fixture(scope="session")
def dclm_model(tmp_path_factory) -> Path:
    """DCLM's recipe on the shipped data: the reference set against the raw pool."""
    from build_minhash_truth import pool_documents  # data/ is on sys.path (top of this file)
    from filters.dclm import DclmScorer, DclmTrainParams


    positives = [r["text"] for r in read_zst_jsonl(DATA / "reference" / "hq.jsonl.zst")]
    negatives = [t or "" for _, t in pool_documents()]
    scorer = DclmScorer.train(positives, negatives, DclmTrainParams(threads=1, seed=1))
    path = tmp_path_factory.mktemp("dclm") / "dclm.bin"
    scorer.save(path)
    return path
