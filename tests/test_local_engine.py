"""The local engine (pipelines/local_engine.py) against the Spark engine: the same runs on the same
inputs (the sample pool, the hostile corpus, repeated ids) give the same kept rows in the same
order, the same removed rows and reasons, the same schemas and the same stage counts."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import WinnowError
from flows.config import parse_config
from flows.curate import run_curation
from pipelines import local_engine
from pipelines.dedup_minhash import DedupMinhashParams

from .conftest import DATA, POOL
from .test_hostile import hostile_corpus


def _table(directory: Path) -> pa.Table:
    files = sorted(directory.rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def _rows(directory: Path) -> list[dict]:
    return _table(directory).to_pylist() if directory.exists() else []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The hostile corpus (without its 50 MB document), two files of the pool with its planted
    near-duplicates, and ids that repeat, one of them as `<id>#1` already (two rounds of re-keying)."""
    home = tmp_path_factory.mktemp("local")
    hostile_corpus(home / "in", home / "target", big=False)
    for name in ("docs.jsonl.gz", "fiction.jsonl.zst"):
        (home / "in" / name).write_bytes((POOL / name).read_bytes())
    texts = [json.loads(line)["text"] for line in gzip.open(POOL / "docs.jsonl.gz", "rt")][:6]
    rows = [{"id": "x", "text": texts[0]}, {"id": "x#1", "text": texts[1]}, {"id": "x", "text": texts[2]},
            {"id": "x", "text": texts[3]}, {"id": 12, "text": texts[4]}, {"id": "12", "text": texts[5]}]
    (home / "in" / "zz-repeats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return home


def _config(inputs: Path, out: Path, engine: str, stages: list[dict], **extra):
    return parse_config({"output": str(out), "engine": engine, "seed": 3,
                         "inputs": [{"path": str(inputs / "in"), "source": "h", "domain": "web",
                                     "domain_field": "domain"}],
                         "stages": stages, **extra}, Path("/"), "local")


def _both(spark, inputs: Path, tmp_path: Path, stages: list[dict], **extra):
    spark_run = run_curation(_config(inputs, tmp_path / "spark", "spark", stages, **extra), spark=spark)
    local_run = run_curation(_config(inputs, tmp_path / "local", "local", stages, **extra))
    return spark_run, local_run


def _same_outputs(a, b, dedup_label: str | None) -> None:
    assert a.manifest["engine"]["name"] == "spark" and b.manifest["engine"]["name"] == "local"
    assert [(s.name, s.n_in, s.kept, s.removed) for s in a.stages] == [(s.name, s.n_in, s.kept, s.removed)
                                                                       for s in b.stages]
    kept_a, kept_b = _table(a.output / "kept"), _table(b.output / "kept")
    assert kept_a.schema.names == kept_b.schema.names
    assert [f.type for f in kept_a.schema] == [f.type for f in kept_b.schema]
    assert kept_a.to_pylist() == kept_b.to_pylist()  # in input order, both
    key = lambda r: (r["file"], r["line"])  # noqa: E731
    assert sorted(_rows(a.output / "removed" / "read"), key=key) == sorted(_rows(b.output / "removed" / "read"), key=key)
    assert a.stages[0].stats.get("removed_by_reason") == b.stages[0].stats.get("removed_by_reason")
    for k in ("files", "skipped_files", "skipped_examples"):
        assert a.stages[0].stats.get(k) == b.stages[0].stats.get(k), k
    if dedup_label:
        by_id = lambda r: r["id"]  # noqa: E731
        removed_a = sorted(_rows(a.output / "removed" / dedup_label), key=by_id)
        removed_b = sorted(_rows(b.output / "removed" / dedup_label), key=by_id)
        assert removed_a == removed_b
        if removed_a:
            ra, rb = _table(a.output / "removed" / dedup_label), _table(b.output / "removed" / dedup_label)
            assert [(f.name, f.type) for f in ra.schema] == [(f.name, f.type) for f in rb.schema]
        sa, sb = a.stages[1].stats, b.stages[1].stats
        for k in ("bands", "rows", "probes", "candidate_pairs", "ambiguous_pairs", "components",
                  "largest_component", "component_sizes", "removed_by_reason"):
            assert sa.get(k) == sb.get(k), k


def test_a_dedup_gives_the_spark_engines_rows(spark, prefect_server, inputs, tmp_path):
    a, b = _both(spark, inputs, tmp_path, [{"stage": "dedup_minhash"}])
    _same_outputs(a, b, "dedup_minhash")
    assert b.stages[1].removed > 10  # the pool's planted near-duplicates
    ids = [r["id"] for r in _rows(b.output / "kept") + _rows(b.output / "removed" / "dedup_minhash")]
    assert len(ids) == len(set(ids)) and {"x", "x#1", "x#1#1", "x#2", "12", "12#1"} <= set(ids)


@pytest.mark.parametrize("stage", [
    {"stage": "dedup_minhash", "per_source": True, "check": "exact", "threshold": 0.7},
    {"stage": "dedup_minhash", "check": "none", "bands": 16, "rows": 8, "probes": 1, "num_perm": 128},
], ids=["per-source-exact", "plain-lsh"])
def test_other_dedup_settings_give_the_spark_engines_rows(spark, prefect_server, inputs, tmp_path, stage):
    a, b = _both(spark, inputs, tmp_path, [stage], write={"max_records_per_file": 100})
    _same_outputs(a, b, "dedup_minhash")
    assert len(list((b.output / "kept").glob("*.parquet"))) > 5  # 100 rows a file at most
    assert max(pq.read_metadata(f).num_rows for f in (b.output / "kept").glob("*.parquet")) <= 100


def test_a_plain_read_and_write_gives_the_spark_engines_rows(spark, prefect_server, inputs, tmp_path):
    a, b = _both(spark, inputs, tmp_path, [], write={"columns": ["id", "text"]})
    _same_outputs(a, b, None)
    assert _table(b.output / "kept").schema.names == ["id", "text"]


def test_a_large_gz_file_in_blocks_gives_the_whole_files_rows(inputs, tmp_path, monkeypatch):
    from pipelines import read

    cfg = lambda out: parse_config({"output": str(out), "engine": "local",  # noqa: E731
                                    "inputs": [{"path": str(POOL / "docs.jsonl.gz"), "source": "d"}],
                                    "stages": [{"stage": "dedup_minhash"}]}, Path("/"), "gz")
    whole = run_curation(cfg(tmp_path / "whole"))
    monkeypatch.setattr(read, "GZ_SPLIT_BYTES", 1)
    monkeypatch.setattr(local_engine, "LOCAL_GZ_BLOCK", 64 << 10)
    monkeypatch.setattr(local_engine, "BIN_DOCS", 7)  # and the check in many bins, each a spill file
    blocks = run_curation(cfg(tmp_path / "blocks"))
    assert blocks.stages[0].stats["gz_files_in_blocks"] == 1
    assert blocks.stages[0].stats["read_tasks"] > 10
    assert blocks.stages[1].stats["ambiguous_pairs"] == whole.stages[1].stats["ambiguous_pairs"]
    assert "gz_files_in_blocks" not in whole.stages[0].stats
    assert _rows(whole.output / "kept") == _rows(blocks.output / "kept")
    assert sorted(_rows(whole.output / "removed" / "dedup_minhash"), key=lambda r: r["id"]) == \
        sorted(_rows(blocks.output / "removed" / "dedup_minhash"), key=lambda r: r["id"])


def test_candidate_pairs_are_the_bucket_kernels(spark):
    """The local engine's per-band candidates against the Spark engine's kernel over sorted rows."""
    from pipelines.minhash_lsh import bucket_pairs_kernel

    rng = np.random.default_rng(7)
    for n, bands, per_source in ((3000, 6, False), (4000, 5, True), (1, 3, False), (0, 2, True)):
        keys = rng.integers(0, 200, size=(n, bands)) + np.arange(bands) * 1000  # a band's keys are its own
        nodes = np.sort(rng.choice(10 ** 12, n, replace=False)).astype(np.int64)
        codes = rng.integers(0, 3, n) if per_source else None
        src, dst = local_engine.candidate_pairs(nodes, keys, codes)
        key, node = keys.ravel(), np.repeat(nodes, bands)
        if per_source:
            code = np.repeat(codes, bands)
            o = np.lexsort((node, code, key))
            batch = pa.record_batch([pa.array(key[o]), pa.array(code[o]), pa.array(node[o])], names=["key", "source", "node"])
        else:
            o = np.lexsort((node, key))
            batch = pa.record_batch([pa.array(key[o], pa.int64()), pa.array(node[o], pa.int64())], names=["key", "node"])
        pairs = list(bucket_pairs_kernel(["source"] if per_source else [])(iter([batch])))
        expected = {(int(s), int(d)) for p in pairs for s, d in zip(p.column("src").to_numpy(), p.column("dst").to_numpy())}
        assert set(zip(src.tolist(), dst.tolist())) == expected
        assert len(src) == len(expected) and bool(np.all(src > dst))


def test_rekeying_follows_the_spark_rule():
    ids = ["a", "a#1", "a", "b", "a", "b", "c"]
    nodes = np.arange(len(ids), dtype=np.int64)
    new = local_engine.rekey_ids(local_engine._id_hashes(ids), nodes, lambda ns: {int(n): ids[n] for n in ns})
    final = [new.get(i, x) for i, x in enumerate(ids)]
    # round 1: a, a#1, a#1, b, a#2, b#1, c; round 2: the second a#1 becomes a#1#1
    assert final == ["a", "a#1", "a#1#1", "b", "a#2", "b#1", "c"]
    assert local_engine.rekey_ids(local_engine._id_hashes(["p", "q"]), np.arange(2), lambda ns: {}) == {}


def test_the_pool_has_as_many_workers_as_the_local_master_has_threads():
    cores = local_engine.workers()
    assert cores >= 1
    assert local_engine.workers("local[*]") == cores and local_engine.workers(None) == cores
    assert local_engine.workers("local[3]") == 3 and local_engine.workers("local[4, 2]") == 4
    assert local_engine.workers("local") == 1


def test_the_engine_is_chosen_from_the_run(tmp_path):
    dedup = [("dedup_minhash", DedupMinhashParams())]
    assert local_engine.choose("auto", "local[*]", dedup, 10)[0] == "local"
    assert local_engine.choose("auto", "local[*]", [], 10)[0] == "local"
    assert local_engine.choose("auto", "spark://h:7077", dedup, 10)[0] == "spark"
    assert local_engine.choose("auto", None, dedup, local_engine.LOCAL_MAX_BYTES + 1)[0] == "spark"
    assert local_engine.choose("auto", None, dedup + [("score", None)], 10)[0] == "spark"
    assert local_engine.choose("auto", None, [("dedup_minhash", DedupMinhashParams(score_column="s"))], 10)[0] == "spark"
    assert local_engine.choose("auto", None, [("dedup_minhash", DedupMinhashParams(against=("w1",)))], 10)[0] == "spark"
    assert local_engine.choose("spark", None, dedup, 10)[0] == "spark"
    assert local_engine.choose("local", None, dedup, local_engine.LOCAL_MAX_BYTES * 4)[0] == "local"
    with pytest.raises(WinnowError, match="engine local: not possible here: the local engine runs read, "
                       "dedup_minhash and write only; this run has heuristics"):
        local_engine.choose("local", None, [("heuristics", None)], 10)
    with pytest.raises(WinnowError, match="a Spark master is given"):
        local_engine.choose("local", "yarn", dedup, 10)
    # two dedups (say per source, then across sources) run on Spark: the local engine runs one
    assert local_engine.choose("auto", None, dedup + dedup, 10)[0] == "spark"
    with pytest.raises(WinnowError, match="one stage between read and write; this run has dedup_minhash, dedup_minhash"):
        local_engine.choose("local", None, dedup + dedup, 10)
    with pytest.raises(WinnowError, match="keeps a stage for validate"):
        local_engine.choose("local", None, dedup, 10, other="the run keeps a stage for validate or resumes one")
    # compressed input counts for the text it holds
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(b"x" * 1000)
    from pipelines.read import InputSpec, expand_inputs
    assert local_engine.text_bytes(expand_inputs([InputSpec(str(gz), "a")])) == 1000 * local_engine.COMPRESSED_RATIO


def test_an_impossible_local_engine_stops_before_the_output_is_touched(tmp_path):
    out = tmp_path / "out"
    cfg = parse_config({"output": str(out), "engine": "local",
                        "inputs": [{"path": str(POOL / "docs.jsonl.gz"), "source": "d"}],
                        "stages": [{"stage": "dedup_exact"}]}, Path("/"), "x")
    with pytest.raises(WinnowError, match="engine local: not possible here"):
        run_curation(cfg)
    assert not out.exists()


def test_minhash_truth_holds_on_the_local_engine(tmp_path):
    """The sample pool's near-duplicate truth (exact shingle Jaccard >= 0.8): the local engine's
    removed rows reach the same precision and recall bar as the Spark stage's test."""
    truth = {json.loads(line)["id"] for line in (DATA / "sample" / "minhash_truth.jsonl").read_text().splitlines()}
    cfg = parse_config({"output": str(tmp_path / "out"), "engine": "local",
                        "inputs": [{"path": str(POOL), "source": "pool"}],
                        "stages": [{"stage": "dedup_minhash"}]}, Path("/"), "truth")
    summary = run_curation(cfg)
    removed = {r["id"] for r in _rows(summary.output / "removed" / "dedup_minhash")}
    hits = len(removed & truth)
    assert hits / len(removed) >= 0.95 and hits / len(truth) >= 0.95, (hits, len(removed), len(truth))
    read_stats, dedup_stats = summary.stages[0].stats, summary.stages[1].stats
    # the pool's start is timed apart from the read; each stage's CPU seconds (workers' and driver's)
    assert read_stats["pool_start_seconds"] > 0 and read_stats["cpu_seconds"] > 0 and dedup_stats["cpu_seconds"] > 0
    assert "write_seconds" not in read_stats  # dedup_minhash writes kept/, not read
    # warm-up files and units are gone; the saved state is a record per step, no rows
    assert sorted(p.name for p in (summary.output / "_work").iterdir()) == [
        "00-read.json", "01-dedup_minhash.json", "02-write.json", "fingerprints.json", "run.json"]
    again = run_curation(cfg)  # unchanged: nothing runs, no pool starts
    assert [r.resume for r in again.stages] == ["skipped: unchanged"] * 3 and again.manifest["engine"]["name"] == "none"
    assert [r.kept for r in again.stages] == [r.kept for r in summary.stages]


def test_a_read_and_write_reports_the_writes_share_of_the_read_stage(tmp_path):
    cfg = parse_config({"output": str(tmp_path / "out"), "inputs": [{"path": str(POOL), "source": "pool"}]},
                       Path("/"), "plain")
    summary = run_curation(cfg)
    assert summary.manifest["engine"]["name"] == "local"
    assert summary.manifest["engine"]["why"].startswith("a read and write of about ")
    read = summary.stages[0]
    assert 0 < read.stats["write_seconds"] <= read.seconds
    assert 0 < read.stats["write_cpu_seconds"] < read.stats["cpu_seconds"]


def test_every_process_gets_jemalloc_unless_the_user_chose_a_pool(tmp_path):
    import os
    import subprocess
    import sys

    probe = ("import os, pyarrow as pa; from pipelines.spark import use_jemalloc; use_jemalloc(); "
             "print(pa.default_memory_pool().backend_name, os.environ['ARROW_DEFAULT_MEMORY_POOL'])")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    run = lambda e: subprocess.run([sys.executable, "-c", probe], env=e, capture_output=True, text=True,  # noqa: E731
                                   check=True, cwd=Path(__file__).parents[1]).stdout.split()
    assert run(env) == ["jemalloc", "jemalloc"]  # pyarrow imported first: this process switched too
    assert run({**env, "ARROW_DEFAULT_MEMORY_POOL": "system"}) == ["system", "system"]


def test_a_run_without_near_duplicates_reports_so_and_draws_no_empty_chart(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"id": "a", "text": "one short document"}) + "\n")
    cfg = parse_config({"output": str(tmp_path / "out"), "inputs": [{"path": str(one), "source": "one"}],
                        "stages": [{"stage": "dedup_minhash"}]}, Path("/"), "one")
    summary = run_curation(cfg)
    assert summary.manifest["engine"]["name"] == "local"  # auto: a dedup of a few bytes
    assert [(s.name, s.n_in, s.kept) for s in summary.stages] == [("read", 1, 1), ("dedup_minhash", 1, 1), ("write", 1, 1)]
    assert summary.stages[1].stats["component_sizes"] == {}
    assert "No near-duplicates: no document is in a component." in (summary.output / "report.md").read_text()
    assert not (summary.output / "plots" / "dedup_minhash-component-sizes.png").exists()


def test_write_columns_that_match_nothing_stop_the_run_before_it_reads(tmp_path):
    from core.errors import ConfigError

    for engine in ("local", "spark"):
        cfg = parse_config({"output": str(tmp_path / engine), "engine": engine,
                            "inputs": [{"path": str(POOL / "docs.jsonl.gz"), "source": "d"}],
                            "write": {"columns": ["score_*"]}}, Path("/"), "x")
        with pytest.raises(ConfigError, match=r"\[write\] columns \['score_\*'\] match none of the columns"):
            run_curation(cfg)
        assert not (tmp_path / engine).exists()


def test_a_run_on_an_output_another_run_holds_is_refused_before_it_writes(tmp_path):
    import signal

    from core.errors import OutputError

    from .test_output import _holder

    out = tmp_path / "out"
    cfg = parse_config({"output": str(out), "inputs": [{"path": str(POOL), "source": "pool"}]}, Path("/"), "lock")
    holder = _holder(out)
    try:
        with pytest.raises(OutputError, match="in use by another Winnow run"):
            run_curation(cfg)
        assert sorted(p.name for p in out.iterdir()) == [".winnow.lock"]  # nothing written, nothing deleted
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_curation(cfg).stages[0].n_in > 0
