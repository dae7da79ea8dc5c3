"""A hostile corpus through every stage: each record is kept or removed with a reason, every stage
adds up, nothing is written outside the output; and a run is the same on every partitioning."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import zstandard

from core.errors import WinnowError
from flows.config import parse_config
from flows.curate import run_curation
from flows.output import RECORD, read_record
from pipelines.read import InputSpec, expand_inputs
from pipelines.read_kernel import read_file

from .conftest import DATA

PROSE = ("The miller kept a diary of the water levels, the prices of grain and the names of the "
         "travellers who came to the valley to trade. ")
BIG_BYTES = 50 * 1000 * 1000


def _real_text(n_bytes: int) -> str:
    """About n_bytes of real text: the sample pool's documents, repeated, each copy numbered."""
    with gzip.open(DATA / "sample" / "pool" / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
        pool = "\n\n".join(json.loads(line)["text"] for line in fh)
    parts, size, k = [], 0, 0
    while size < n_bytes:
        piece = f"Part {k}.\n{pool}\n"
        parts.append(piece)
        size += len(piece.encode())
        k += 1
    return "".join(parts)


def _pool_texts() -> list[str]:
    """Distinct real documents of 60 to 400 words: one per hostile record, so the records are
    not near-duplicates of each other and each goes on through every stage."""
    planted = {json.loads(line)["id"] for line in (DATA / "sample" / "truth.jsonl").read_text().splitlines()}
    with gzip.open(DATA / "sample" / "pool" / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    return sorted({r["text"] for r in records if r["id"] not in planted and 60 <= len(r["text"].split()) <= 400})


def hostile_corpus(root: Path, target: Path, big: bool = True) -> None:
    """Every kind of bad input the issue lists, in one directory of inputs. `target` is an
    absolute path a record names as its domain: nothing may be created there. `big`: add the
    50 MB document (domain "big")."""
    root.mkdir(parents=True)
    texts = iter(_pool_texts())
    obj = lambda **kw: json.dumps(kw, ensure_ascii=False)  # noqa: E731
    doc = lambda i, extra="", **kw: obj(id=i, text=next(texts) + extra, **kw)  # noqa: E731
    lines = [
        "\ufeff" + doc("bom", " after a byte-order mark"),
        doc("crlf", " with a CRLF line end") + "\r",
        '{"id": "broken", "text": "no closing quote}',
        doc("nul", " NUL \x00 and controls \x01\x07\x1b[31m\x7f here"),
        '{"id": "lone", "text": "lone \\ud800 surrogate escape"}',
        doc("pair", " a real pair \U0001F600 from an escape", domain="docs"),
        obj(id="empty", text=""),
        obj(id="spaces", text="   \n\t  "),
        obj(id="notext", body="where is the text"),
        obj(id="nulltext", text=None),
        obj(id="numtext", text=42),
        obj(id="listtext", text=["a", "list"]),
        "[1, 2, 3]", '"a string"', "17", "null",
        doc("dup"), doc("dup"),
        doc("../../etc/passwd"), doc("a/b/../c"),
        '{"id": 3.5, "text": "a float id"}', '{"id": true, "text": "a boolean id"}',
        '{"id": {"x": 1}, "text": "an object id"}', doc(7),
        doc("dom-up", domain="../../escaped"),
        doc("dom-abs", domain=str(target)),
        doc("dom-kept", domain="kept"),
        doc("dom-bucket", domain="bucket_5"),
        doc("dom-num", domain=5),
        doc("dom-long", domain="d" * 5000),
        doc("dom-nul", domain="a\x00b"),
        doc("meta", meta={"k": [1, {"z": None}], "deep": {"a": {"b": 1e300}}}),
    ]
    (root / "mixed.jsonl").write_bytes("\n".join(lines).encode() + b"\n"
                                       + b'{"id": "latin1", "text": "caf\xe9"}\n'
                                       + b'{"id": "raw-surrogate", "text": "\xed\xa0\x80"}\n')
    if big:
        (root / "big.jsonl").write_text(obj(id="big", text=_real_text(BIG_BYTES), domain="big") + "\n")
    (root / "empty.jsonl").write_text("")
    body = "".join(doc(f"gz{i}") + "\n" for i in range(12)).encode()
    (root / "cut.jsonl.gz").write_bytes(gzip.compress(body)[:-300])
    body = "".join(doc(f"zs{i}") + "\n" for i in range(12)).encode()
    (root / "cut.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body)[:-300])
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": [next(texts), next(texts)],
                             "extra": [1.5, None], "when": pa.array([0, 1], pa.timestamp("s"))}),
                   root / "extra.parquet")
    pq.write_table(pa.table({"id": ["m1"], "body": ["no text column"]}), root / "missing.parquet")
    pq.write_table(pa.table({"id": ["t1", "t2"], "text": [1, 2]}), root / "mistyped.parquet")
    pq.write_table(pa.table({"id": ["b1"], "text": pa.array([b"bytes"], pa.binary())}), root / "binary.parquet")
    import datasets

    datasets.Dataset.from_dict({"content": ["wrong schema", "no text"]}).save_to_disk(str(root / "wrongschema"))
    (root / "notes.txt").write_text("not an input")  # an unknown extension: skipped and counted
    (root / ".hidden.jsonl").write_text(obj(text="hidden"))  # hidden: skipped and counted


def _expected_records(root: Path) -> int:
    """Records the read stage must account for: what the kernel yields for each input file."""
    return sum(b.num_rows for task in expand_inputs([InputSpec(str(root), "x")]) for b in read_file(task))


def _tree(root: Path, out: Path) -> list[str]:
    """Every path under `root` but the output directory, what it holds and the folders above it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if out not in p.parents and p != out and p not in out.parents)


def hostile_config(inputs: Path, out: Path, dclm_model: Path, select: dict | None = None):
    """The small config of the issue: read -> dedup_exact -> dedup_minhash -> heuristics -> score
    -> select -> tokenize -> decompose -> export, records' own domains, no [[train]]."""
    return parse_config({
        "output": str(out), "seed": 5,
        "inputs": [{"path": str(inputs), "source": "hostile", "domain": "web", "domain_field": "domain"}],
        "stages": [
            {"stage": "dedup_exact"},
            {"stage": "dedup_minhash"},
            # judges the 50 MB document (too many words) and one odd one; the rest go on
            {"stage": "heuristics", "domains": ["big", "docs"]},
            {"stage": "score", "scorers": [{"kind": "dclm", "model": str(dclm_model)}, {"kind": "langid"},
                                           {"kind": "heuristics"}]},
            select or {"stage": "select", "score": "score_dclm", "threshold": 0.0},  # keeps all: scores are >= 0
            {"stage": "tokenize", "vocab_size": 600, "sample_docs": 200},
            {"stage": "decompose", "min_log2": 3, "max_log2": 9},
            {"stage": "export", "by_domain": True, "shard_rows": 1000},
        ],
    }, Path("/"), "hostile")


@pytest.fixture(scope="module")
def hostile_run(spark, prefect_server, dclm_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile")
    target = home / "absolute-target"
    hostile_corpus(home / "in", target)
    out = home / "deep" / "er" / "out"
    before = _tree(home, out)
    summary = run_curation(hostile_config(home / "in", out, dclm_model), spark=spark)
    return {"home": home, "out": out, "target": target, "before": before, "summary": summary}


def test_every_hostile_record_is_kept_or_removed_with_a_reason(hostile_run):
    summary, out = hostile_run["summary"], hostile_run["out"]
    read = summary.stages[0]
    assert read.n_in == _expected_records(hostile_run["home"] / "in")
    for stage in summary.stages:
        assert stage.n_in == stage.kept + stage.removed, stage.name
    removed = []
    for stage in summary.stages:
        if stage.removed:
            rows = pads.dataset(out / "removed" / stage.name).to_table(columns=["id", "removed_by", "reason"])
            removed += rows.to_pylist()
    kept = pads.dataset(out / "kept").to_table(columns=["id", "domain"]).to_pylist()
    ids = [r["id"] for r in removed] + [r["id"] for r in kept]
    assert len(ids) == len(set(ids)) == read.n_in  # no record lost, none twice
    assert all(r["reason"] and r["removed_by"] for r in removed)
    reasons = {r["id"]: r["reason"] for r in removed}
    by_reason = " | ".join(sorted(reasons.values()))
    for expected in ("malformed json", "invalid utf-8", "lone surrogate escape", "no 'text' field",
                     "'text' is int", "'text' is list", "is a JSON list, not an object", "'id' is float",
                     "'id' is bool", "'id' is dict", "empty file at empty.jsonl", "unreadable file at cut.jsonl.gz",
                     "unreadable file at cut.jsonl.zst", "'text' is bytes"):
        assert expected in by_reason, expected
    # the odd documents that are valid went on through every stage
    kept_ids = {r["id"] for r in kept}
    assert {"bom", "crlf", "nul", "dom-up", "dom-abs", "dom-kept", "dom-long", "dom-nul", "meta"} <= kept_ids
    assert {"dup", "dup#1", "../../etc/passwd", "a/b/../c", "7"} <= kept_ids | set(reasons)
    domains = {r["id"]: r["domain"] for r in kept}
    assert domains["dom-up"] == "../../escaped" and domains["dom-num"] == "web"  # a number is no domain


def test_nothing_is_written_outside_the_output(hostile_run):
    home, out = hostile_run["home"], hostile_run["out"]
    assert _tree(home, out) == hostile_run["before"]
    assert not hostile_run["target"].exists() and not (out.parent / "escaped").exists()
    # every top-level entry is recorded as Winnow's, and every path stays inside
    assert set(os.listdir(out)) - {RECORD} <= set(read_record(out))
    real = out.resolve()
    assert all(p.resolve().is_relative_to(real) for p in out.rglob("*"))
    export = next(s for s in hostile_run["summary"].stages if s.name == "export").stats
    names = set(export["domain_dirs"].values())
    assert {"../../escaped", str(hostile_run["target"]), "kept", "bucket_5", "d" * 5000, "a\x00b"} <= names
    for directory, domain in export["domain_dirs"].items():
        assert "/" not in directory and (out / directory).is_dir()
    assert not (out / "kept" / "bucket_3").exists()  # the domain "kept" did not land in kept/


def test_the_50_mb_document_is_read_deduplicated_and_judged(hostile_run):
    summary, out = hostile_run["summary"], hostile_run["out"]
    removed = pads.dataset(out / "removed" / "heuristics").to_table(columns=["id", "reason"]).to_pylist()
    reason = next(r["reason"] for r in removed if r["id"] == "big")
    assert reason.startswith("gopher_word_count:") and "> 100000" in reason, reason
    assert summary.manifest["spark"]["driver_memory"]  # sized from the machine, recorded


def test_a_directory_with_no_inputs_stops_before_reading_with_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    with pytest.raises(WinnowError, match=r"holds no JSONL or Parquet file.*skipped 2 files"):
        expand_inputs([InputSpec(str(tmp_path / "in"), "x")])


# ----------------------------------------------------------------------------------------------
# Determinism: the same config and seed give the same kept rows in the same order, the same
# shards and the same manifest counts, with any number of shuffle partitions.


def _snapshot(out: Path) -> dict:
    import datasets

    manifest = json.loads((out / "manifest.json").read_text())
    shards = {}
    for state in sorted(out.glob("*/bucket_*/state.json")):
        rows = datasets.load_from_disk(str(state.parent)).to_list()
        shards[str(state.parent.relative_to(out))] = sorted((r["id"], r["position"], r["tokens"]) for r in rows)
    return {
        "kept": pq.read_table(out / "kept").to_pylist(),  # in the written order
        "counts": [(s["name"], s["in"], s["kept"], s["removed"]) for s in manifest["stages"]],
        "shards": shards,
        "tokenizer": (out / "tokenizer.json").read_text(),
    }


def test_the_same_seed_gives_the_same_output_on_any_partitioning(spark, prefect_server, dclm_model, tmp_path):
    hostile_corpus(tmp_path / "in", tmp_path / "target", big=False)
    select = {"stage": "select", "random_fraction": 0.7}  # seeded: the same 70% on every partitioning
    runs = []
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        for i, partitions in enumerate((2, 2, 7)):
            spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
            run_curation(hostile_config(tmp_path / "in", tmp_path / f"run{i}", dclm_model, select), spark=spark)
            runs.append(_snapshot(tmp_path / f"run{i}"))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    assert len(runs[0]["shards"]) > 3 and 10 < len(runs[0]["kept"]) < 30
    assert runs[0] == runs[1]
    assert runs[0] == runs[2]
    # byte for byte with the same partitioning: the shard files themselves
    files = lambda out: {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("data-*.arrow")}  # noqa: E731
    assert files(tmp_path / "run0") == files(tmp_path / "run1")
