"""End to end: `winnow run` on a slice of the real sample pool, in process (shared Spark and Prefect)."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pyarrow.dataset as pads
import pytest

from core.errors import WinnowError
from flows.curate import run_curation

from .conftest import config



@pytest.fixture(scope="session")
def slice_run(spark, prefect_server, pool_slice, tmp_path_factory):
    """`winnow run CONFIG` in process (it reuses the test session's Spark and Prefect server)."""
    from flows.cli import main

    home = tmp_path_factory.mktemp("run")
    inputs = "".join(
        f'[[inputs]]\npath = "{Path(p).name}"\nsource = "{Path(p).name.split(".")[0]}"\n'
        f'domain = "{Path(p).name.split(".")[0]}"\n\n'
        for p in pool_slice["paths"]
    )
    cfg = Path(pool_slice["paths"][0]).parent / "slice.toml"
    cfg.write_text(f'output = "ignored"\nseed = 7\n\n{inputs}[[stages]]\nstage = "dedup_exact"\n')
    output = home / "out"
    assert main(["run", str(cfg), "--output", str(output)]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    return SimpleNamespace(output=output, manifest=manifest), pool_slice


def test_planted_exact_duplicates_all_removed_and_nothing_else(slice_run):
    summary, sl = slice_run
    removed = pads.dataset(summary.output / "removed" / "dedup_exact").to_table().to_pylist()
    assert {r["id"] for r in removed} == sl["exact_dups"]
    assert all(r["reason"] == f"exact duplicate of {r['duplicate_of']}" for r in removed)


def test_output_loads_with_datasets_pyarrow_and_duckdb(slice_run):
    import datasets
    import duckdb

    summary, sl = slice_run
    kept_dir = summary.output / "kept"
    table = pads.dataset(kept_dir).to_table()
    ds = datasets.load_dataset("parquet", data_files=str(kept_dir / "*.parquet"), split="train",
                               cache_dir=str(summary.output.parent / "hf-cache"))
    assert len(ds) == table.num_rows == summary.manifest["counts"]["kept"]
    assert set(ds.column_names) == {"id", "text", "source", "domain", "meta"}
    n = duckdb.sql(f"select count(*) from read_parquet('{kept_dir}/*.parquet')").fetchone()[0]
    assert n == table.num_rows
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids))
    first = ds[0]
    assert first["source"] == "code" and isinstance(first["meta"], list)


def test_kept_rows_are_in_input_order(slice_run):
    summary, _ = slice_run
    sources = pads.dataset(summary.output / "kept").to_table().column("source").to_pylist()
    order = ["code", "docs", "fiction", "reference"]
    assert [order.index(s) for s in sources] == sorted(order.index(s) for s in sources)


def test_manifest_and_report_account_for_every_document(slice_run):
    summary, sl = slice_run
    manifest = json.loads((summary.output / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [s["name"] for s in stages] == ["read", "dedup_exact", "write"]
    for s in stages:
        assert s["in"] == s["kept"] + s["removed"]
    for before, after in zip(stages, stages[1:]):
        assert after["in"] == before["kept"]
    assert manifest["counts"]["in"] == manifest["counts"]["kept"] + manifest["counts"]["removed"]
    assert manifest["counts"]["removed"] == len(sl["exact_dups"])
    assert [Path(f["path"]).name for f in manifest["inputs"]] == sorted(Path(p).name for p in sl["paths"])
    assert all(len(f["xxh3_128"]) == 32 and f["bytes"] > 0 for f in manifest["inputs"])
    assert manifest["code_version"]["winnow"]
    assert manifest["config"]["stages"] == [{"stage": "dedup_exact"}] and manifest["config"]["seed"] == 7
    report = (summary.output / "report.md").read_text()
    assert "| dedup_exact |" in report and "in + added = kept + removed" in report
    assert stages[1]["stats"]["removed_by_reason"] == {"exact duplicate": len(sl["exact_dups"])}
    assert f"| exact duplicate | {len(sl['exact_dups']):,} |" in report
    work = summary.output / "_work"  # the saved state a rerun resumes from: a record per step, no temporaries
    assert sorted(p.name for p in work.glob("[0-9]*.json")) == ["00-read.json", "01-dedup_exact.json", "02-write.json"]
    assert not list(work.glob(".tmp-*"))


def test_malformed_inputs_become_removed_rows_and_the_run_completes(spark, prefect_server, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "g1", "text": "fine"}\n{"id": "g1", "text": "same id"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": \n{"text": "\xff"}\n{"title": "x"}\n{"text": 3}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    body = "".join(json.dumps({"text": f"line {i} " * 30}) + "\n" for i in range(300)).encode()
    cut = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(body)
    cut.write_bytes(whole[: len(whole) // 2])
    summary = run_curation(config([good, bad, empty, cut], tmp_path / "out", stages=[]), spark=spark)
    removed = pads.dataset(summary.output / "removed" / "read").to_table().to_pylist()
    reasons = sorted(r["reason"].split(" at ")[0].split(" ")[0] for r in removed)
    assert reasons == ["'text'", "empty", "invalid", "malformed", "no", "unreadable"]
    read = summary.stages[0]
    # counted per kind of reason (pipelines.stage), not per file or line
    assert read.stats["removed_by_reason"] == {
        "'text' is int, not a string": 1, "empty file": 1, "invalid utf-8": 1, "malformed json": 1,
        "no 'text' field": 1, "unreadable file": 1}
    assert "### read: removed documents by reason" in (summary.output / "report.md").read_text()
    assert read.n_in == read.kept + read.removed
    kept_ids = pads.dataset(summary.output / "kept").to_table().column("id").to_pylist()
    assert {"g1", "g1#1"} <= set(kept_ids)
    assert len(kept_ids) == len(set(kept_ids))


def test_a_foreign_directory_is_refused_and_a_winnow_one_resumes_or_is_overwritten(spark, prefect_server, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "x"}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me.txt").write_text("user file")
    (out / "models").mkdir()
    for overwrite in (False, True):  # not Winnow's directory: refused either way, nothing deleted
        with pytest.raises(WinnowError, match="not empty and was not written by Winnow"):
            run_curation(config([src], out, stages=[], overwrite=overwrite), spark=spark)
    (out / "keep-me.txt").unlink()
    (out / "models").rmdir()
    run_curation(config([src], out, stages=[]), spark=spark)
    (out / "keep-me.txt").write_text("user file")  # added by the user after the run
    again = run_curation(config([src], out, stages=[]), spark=spark)  # resumes: nothing to do
    assert [r.resume for r in again.stages] == ["skipped: unchanged"] * 2
    assert (out / "keep-me.txt").read_text() == "user file"
    summary = run_curation(config([src], out, stages=[], overwrite=True), spark=spark)
    assert [r.resume for r in summary.stages] == ["ran: no saved state", "ran: after read, which runs"]
    assert summary.manifest["counts"]["kept"] == 1
    assert (out / "keep-me.txt").read_text() == "user file"
    # every top-level entry of the run is in the record, and nothing else of Winnow's is there
    from flows.output import RECORD, read_record

    assert set(os.listdir(out)) - {RECORD, "keep-me.txt"} <= set(read_record(out))


def test_an_existing_train_output_is_refused_unless_overwriting(spark, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "x"}\n')
    model = tmp_path / "elsewhere" / "dclm.bin"
    model.parent.mkdir()
    model.write_bytes(b"the user's model")
    train = [{"kind": "dclm", "output": str(model), "positives": [str(src)]}]
    with pytest.raises(WinnowError, match=r"\[\[train\]\] output .*dclm.bin exists; pass --overwrite"):
        run_curation(config([src], tmp_path / "out", stages=[], train=train), spark=spark)
    assert model.read_bytes() == b"the user's model"
    assert os.listdir(tmp_path / "out") == [".winnow-owned.json"]  # refused before anything was written


class _NoSpark:
    """A stand-in SparkSession that fails on any use: the run must not get that far."""

    def __getattr__(self, name):
        raise AssertionError(f"Spark was used ({name}) before the stages' columns were checked")


@pytest.mark.parametrize("stages, message", [
    ([{"stage": "select", "score": "score_dclm", "top_fraction": 0.5}],
     "stage select: needs column score_dclm, which no stage before it adds (a `score` stage with a scorer "
     "named dclm adds it; columns before it: id, text, source, domain, meta)"),
    ([{"stage": "decompose"}, {"stage": "tokenize"}],
     "stage decompose: needs column tokens, which no stage before it adds (a `tokenize` stage adds it; "),
    ([{"stage": "tokenize"}, {"stage": "export"}],
     "stage export: needs column chunks, which no stage before it adds (a `decompose` stage adds it; "),
    ([{"stage": "dedup_minhash", "score_column": "score_q"}],
     "stage dedup_minhash: needs column score_q, which no stage before it adds"),
    ([{"stage": "tokenize"}, {"stage": "tokenize"}],
     "stage tokenize-2: adds column tokens, which stage tokenize adds before it"),
    ([{"stage": "score", "scorers": [{"kind": "heuristics"}]}, {"stage": "score", "scorers": [{"kind": "heuristics"}]}],
     "stage score-2: adds column score_heuristics, which stage score adds before it"),
])
def test_a_wrong_order_of_stages_is_refused_in_one_line_before_anything_is_read(tmp_path, stages, message):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "x"}\n')
    with pytest.raises(WinnowError) as err:
        run_curation(config([src], tmp_path / "out", stages=stages), spark=_NoSpark())
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before the output directory was touched


def test_a_reason_is_counted_by_its_kind():
    from pipelines.stage import reason_kind

    assert [reason_kind(r) for r in (
        "exact duplicate of doc-7", "near-duplicate of a:b", "gopher_word_count: 3 words < 50",
        "no chunk: 40 tokens, fewer than the smallest bucket's 257 (tail = drop)",
        "malformed json at data/x.jsonl line 3: Expecting value (column 1)",
        "'text' is int, not a string, at x.jsonl line 2", "unreadable file at x.gz after line 9: EOFError: x",
        "score_dclm below the cut: 0.12 < 0.5 (top 0.1 of documents)", "score_dclm is null", "plain")] == [
        "exact duplicate", "near-duplicate", "gopher_word_count", "no chunk", "malformed json",
        "'text' is int, not a string", "unreadable file", "score_dclm below the cut", "score_dclm is null", "plain"]


def test_check_columns_returns_the_columns_after_the_last_stage():
    from pipelines import READ_COLUMNS, check_columns
    from pipelines.decompose import DecomposeParams
    from pipelines.select import SelectParams
    from pipelines.tokenize import TokenizeParams

    plans = [("select", "select", SelectParams(random_fraction=0.5, mark=True)),
             ("tokenize", "tokenize", TokenizeParams()), ("decompose", "decompose", DecomposeParams())]
    assert check_columns(plans, READ_COLUMNS)[-5:] == ["selected", "tokens", "n_tokens", "chunks", "dropped_tokens"]
    # a run that starts from an earlier stage's output starts from its columns
    assert check_columns(plans[2:], [*READ_COLUMNS, "tokens"])[-2:] == ["chunks", "dropped_tokens"]
