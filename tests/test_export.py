"""tokenize -> decompose -> export through the flow: bucketed shards every reader opens,
chunks that rebuild their documents, the concat-and-chunk baseline, and a mixture plan."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.curate import run_curation

from .conftest import config

LO, HI = 5, 8


@pytest.fixture(scope="module")
def exported(spark, prefect_server, pool_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    stages = [{"stage": "tokenize", "vocab_size": 1000, "sample_docs": 400},
              {"stage": "decompose", "min_log2": LO, "max_log2": HI},
              {"stage": "export", "shard_rows": 500}]
    summary = run_curation(config(pool_slice["paths"], out, stages=stages, seed=3), spark=spark)
    return out, summary


def test_every_bucket_loads_and_holds_chunks_of_two_to_the_i_plus_one(exported):
    import datasets

    out, summary = exported
    export = next(s for s in summary.stages if s.name == "export").stats
    assert set(export["datasets"]) == {f"bucket_{i}" for i in range(LO, HI + 1)} | {"bucket_tail"}
    for i in range(LO, HI + 1):
        ds = datasets.load_from_disk(str(out / f"bucket_{i}"))
        assert ds.features["tokens"].feature.dtype == "uint16"
        lengths = {len(t) for t in ds["tokens"]}
        assert lengths == {2 ** i + 1}, (i, lengths)
        assert len(ds) == export["datasets"][f"bucket_{i}"]["sequences"]
    tails = datasets.load_from_disk(str(out / "bucket_tail"))
    assert max(len(t) for t in tails["tokens"]) <= 2 ** LO
    shard = sorted((out / f"bucket_{LO}").glob("data-*.arrow"))[0]
    with pa.ipc.open_stream(str(shard)) as reader:
        assert reader.read_all().num_rows <= 500
    assert (out / "tokenizer.json").exists() and export["tokenizer"] == str(out / "tokenizer.json")


def test_chunks_rebuild_their_documents_and_tokens_are_accounted(exported):
    import datasets

    out, summary = exported
    kept = pq.read_table(out / "kept", columns=["id", "tokens", "n_tokens"]).to_pylist()
    docs = {r["id"]: r["tokens"] for r in kept}
    pieces: dict[str, list] = {}
    for name in ["bucket_tail"] + [f"bucket_{i}" for i in range(LO, HI + 1)]:
        for row in datasets.load_from_disk(str(out / name)):
            pieces.setdefault(row["id"], []).append((row["position"], row["start"], row["tokens"]))
    assert set(pieces) == set(docs)  # no chunk crosses or loses a document
    for doc_id, parts in pieces.items():
        parts.sort()
        assert [p for p, _, _ in parts] == list(range(len(parts)))
        assert sum((t for _, _, t in parts), []) == docs[doc_id]  # tail kept: nothing dropped
    export = next(s for s in summary.stages if s.name == "export").stats
    assert sum(g["tokens"] for g in export["datasets"].values()) == sum(r["n_tokens"] for r in kept)
    records = {s.name: s for s in summary.stages}
    assert records["decompose"].kept == records["tokenize"].kept == records["export"].kept  # documents


def test_concat_layout_and_mixture_plan(spark, prefect_server, pool_slice, tmp_path):
    mixture = tmp_path / "mix.json"
    mixture.write_text(json.dumps({"weights": {"docs": 0.5, "fiction": 0.3, "reference": 0.2}, "budget": 20_000,
                                   "max_repeats": 4, "schedule": {"type": "constant", "weights": {"docs": 1.0}}}))
    stages = [{"stage": "tokenize", "vocab_size": 600, "sample_docs": 200},
              {"stage": "decompose", "min_log2": LO, "max_log2": HI, "tail": "drop"},
              {"stage": "export", "mixture": str(mixture)}]
    paths = [p for p in pool_slice["paths"] if "code" not in p.name]
    summary = run_curation(config(paths, tmp_path / "mix", stages=stages), spark=spark)
    export = next(s for s in summary.stages if s.name == "export").stats
    assert all("/bucket_" in name for name in export["datasets"])  # domains kept apart
    targets = {d["domain"]: d["target_tokens"] for d in export["mixture"]["domains"]}
    assert sum(targets.values()) == 20_000 and "domain" in export["mixture_table"]
    decompose = next(s for s in summary.stages if s.name == "decompose")
    assert decompose.stats["dropped_tokens"] > 0 and "bucket_tail" not in {n.split("/")[1] for n in export["datasets"]}
    tokenized = next(s for s in summary.stages if s.name == "tokenize").stats["tokens"]
    in_chunks = sum(b["tokens"] for b in decompose.stats["buckets"].values())
    assert decompose.removed > 0 and decompose.stats["tokens_removed"] > decompose.stats["dropped_tokens"]
    assert in_chunks + decompose.stats["tokens_removed"] == tokenized  # every token in a chunk or counted
    plot = tmp_path / "mix" / "plots" / "export-schedule.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plots/export-schedule.png" in (tmp_path / "mix" / "report.md").read_text()

    seq = 64
    stages = [{"stage": "tokenize", "vocab_size": 600, "sample_docs": 200},
              {"stage": "export", "layout": "concat", "seq_len": seq}]
    summary = run_curation(config(paths, tmp_path / "concat", stages=stages), spark=spark)
    export = next(s for s in summary.stages if s.name == "export").stats
    windows = export["datasets"][f"concat_{seq}"]
    total = pq.read_table(tmp_path / "concat" / "kept", columns=["n_tokens"]).column("n_tokens").to_numpy().sum()
    assert windows["tokens"] == windows["sequences"] * (seq + 1)
    assert windows["tokens"] + export["remainder_tokens"] == total


def test_winnow_export_command(pool_slice, tmp_path, prefect_server, spark, capsys):
    from flows.cli import main as winnow

    from .conftest import pool_records

    out = tmp_path / "shards"
    paths = [str(p) for p in pool_slice["paths"]]
    mixed = tmp_path / "mixed.jsonl"  # records that carry their own domain
    mixed.write_text("".join(json.dumps({"id": r["id"], "text": r["text"], "domain": name.split(".")[0]}) + "\n"
                             for name in ("docs.jsonl.gz", "fiction.jsonl.zst") for r in pool_records(name)[:200]))
    mixture = tmp_path / "mix.json"
    mixture.write_text(json.dumps({"weights": {"docs": 0.6, "fiction": 0.4}, "budget": 5_000, "max_repeats": 2}))
    assert winnow(["export", str(mixed), "--domain-field", "domain", "--output", str(out), "--buckets", "5..7",
                   "--vocab-size", "500", "--mixture", str(mixture)]) == 0
    printed = capsys.readouterr().out
    assert "export: what the mixture yields" in printed and "fiction" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    export = next(s for s in manifest["stages"] if s["name"] == "export")["stats"]
    assert {"docs/bucket_5", "fiction/bucket_6"} <= set(export["datasets"])
    assert winnow(["export", *paths, "--output", str(tmp_path / "flat"), "--buckets", "5..7", "--vocab-size", "500"]) == 0
    manifest = json.loads((tmp_path / "flat" / "manifest.json").read_text())
    export = next(s for s in manifest["stages"] if s["name"] == "export")["stats"]
    assert {"bucket_5", "bucket_6", "bucket_7"} <= set(export["datasets"])
    out = tmp_path / "flat"
    assert pq.read_table(out / "kept").column_names == ["id", "source", "domain", "n_tokens", "dropped_tokens"]
    assert winnow(["export", *paths, "--output", str(tmp_path / "x"), "--buckets", "8-13"]) == 2
    assert "expected LO..HI" in capsys.readouterr().err


def test_the_sampler_reads_the_exported_shards_as_the_manifest_promises(exported):
    from mixers.sampler import VariableLengthSampler

    out, summary = exported
    export = next(s for s in summary.stages if s.name == "export").stats
    ranks = [VariableLengthSampler(out, tokens_per_batch=2 ** HI * 2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    total = ranks[0].epoch_plan()["total"]
    assert total["tokens"] == sum(g["tokens"] for g in export["datasets"].values())  # what the manifest promises
    assert total["tokens"] == total["used_tokens"] + total["leftover_tokens"] + total["skipped_tokens"]
    seen = 0
    for a, b in zip(ranks[0].iter_from(0), ranks[1].iter_from(0)):
        assert a["bucket"] == b["bucket"] and a["step"] == b["step"]
        assert a["tokens"].shape == b["tokens"].shape and a["tokens"].shape[1] == 2 ** a["bucket"] + 1
        assert a["tokens"].shape[0] * 2 * 2 ** a["bucket"] == 2 ** HI * 2  # constant tokens per batch
        seen += (a["tokens"].size + b["tokens"].size)
    assert seen == total["used_tokens"]
