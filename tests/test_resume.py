"""Resume keyed by content: a rerun skips unchanged steps, re-runs the first changed one and all
after it, and a run killed with SIGKILL half-way resumes to the same rows and shards."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import re

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from flows.curate import run_curation
from flows.state import Fingerprints, RunState, explain

from .conftest import config

STAGES = [{"stage": "dedup_exact"},
          {"stage": "heuristics", "rules": ["gopher_word_count"], "thresholds": {"min_words": 5}},
          {"stage": "score", "scorers": [{"kind": "heuristics"}]},
          {"stage": "select", "score": "score_heuristics", "top_fraction": 0.9},
          {"stage": "tokenize", "vocab_size": 600, "sample_docs": 300},
          {"stage": "decompose", "min_log2": 5, "max_log2": 7},
          {"stage": "export", "shard_rows": 300, "by_domain": True}]
LABELS = ["read", "dedup_exact", "heuristics", "score", "select", "tokenize", "decompose", "export", "write"]


def _kept(out: Path) -> list[dict]:
    return pads.dataset(out / "kept", format="parquet").to_table().to_pylist()


def _shards(out: Path) -> dict[str, list]:
    """Every export shard's rows, by path under the output."""
    shards = {}
    for f in sorted(out.glob("*/bucket_*/data-*.arrow")):
        with pa.ipc.open_stream(str(f)) as reader:
            shards[str(f.relative_to(out))] = reader.read_all().to_pylist()
    return shards


def _resume(summary) -> dict[str, str]:
    return {r.name: r.resume for r in summary.stages}


@pytest.fixture(scope="module")
def small(pool_slice, tmp_path_factory):
    """Two of the slice's files (a few hundred documents), copied so a test may add to them."""
    src = tmp_path_factory.mktemp("resume-src")
    paths = [Path(shutil.copy(p, src)) for p in pool_slice["paths"][1:3]]
    return paths


@pytest.fixture(scope="module")
def fresh(spark, prefect_server, small, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-fresh") / "out"
    summary = run_curation(config(small, out, stages=STAGES, seed=5), spark=spark)
    return out, summary


def test_a_first_run_runs_every_step_and_saves_a_record_for_each(fresh):
    out, summary = fresh
    assert [r.name for r in summary.stages] == LABELS
    assert _resume(summary)["read"] == "ran: no saved state"
    assert all(v == "ran: after read, which runs" for k, v in _resume(summary).items() if k != "read")
    records = RunState(out).records()
    assert sorted(records) == [f"{i:02d}-{label}" for i, label in enumerate(LABELS)]
    assert records["07-export"]["output"] == "kept" and records["06-decompose"]["output"] == "work"
    assert {c.split("/")[0] for c in records["07-export"]["claimed"]} == {"docs", "fiction"}
    assert records["05-tokenize"]["claimed"] == ["tokenizer.json"]


def test_an_unchanged_rerun_runs_nothing_and_starts_no_spark(fresh, tmp_path):
    out, first = fresh
    copy = tmp_path / "out"
    shutil.copytree(out, copy)  # the state holds no absolute path: a moved output resumes too
    cfg = config([i["path"] for i in json.loads((out / "manifest.json").read_text())["config"]["inputs"]],
                 copy, stages=STAGES, seed=5)
    start = time.perf_counter()
    again = run_curation(cfg)  # no SparkSession given: one would be started only if a step ran
    seconds = time.perf_counter() - start
    assert set(_resume(again).values()) == {"skipped: unchanged"}, _resume(again)
    assert again.manifest["engine"]["name"] == "none" and "spark" not in again.manifest
    assert again.manifest["resume"]["files_hashed"] == 0  # path, size and mtime unchanged: no input read
    assert [(r.n_in, r.kept, r.removed) for r in again.stages] == [(r.n_in, r.kept, r.removed) for r in first.stages]
    assert _kept(copy) == _kept(out) and _shards(copy) == _shards(out)
    assert seconds < 60  # generous: a rerun that started Spark and ran the stages would still pass


def test_a_changed_parameter_reruns_exactly_that_stage_and_those_after_it(spark, fresh, small, tmp_path):
    out, _ = fresh
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    stages = [dict(s) for s in STAGES]
    stages[1] = {**stages[1], "thresholds": {"min_words": 12}}
    changed = run_curation(config(small, copy, stages=stages, seed=5), spark=spark)
    why = _resume(changed)
    assert why["read"] == why["dedup_exact"] == "skipped: unchanged"
    assert why["heuristics"] == "ran: parameters changed: thresholds.min_words 5 -> 12", why
    assert all(why[k] == "ran: after heuristics, which runs" for k in LABELS[3:])
    reference = run_curation(config(small, tmp_path / "ref", stages=stages, seed=5), spark=spark)
    assert _kept(copy) == _kept(tmp_path / "ref") and _shards(copy) == _shards(tmp_path / "ref")
    assert [r.kept for r in changed.stages] == [r.kept for r in reference.stages]
    assert changed.stages[4].stats["threshold"] == reference.stages[4].stats["threshold"]
    assert changed.stages[2].removed > 0 and changed.stages[2].kept < changed.stages[1].kept


def test_a_new_stage_version_or_input_file_reruns_from_there(spark, fresh, small, tmp_path, monkeypatch):
    from pipelines import registry

    out, _ = fresh
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    monkeypatch.setitem(registry.STAGES, "decompose", replace(registry.STAGES["decompose"], version=2))
    bumped = run_curation(config(small, copy, stages=STAGES, seed=5), spark=spark)
    assert _resume(bumped)["tokenize"] == "skipped: unchanged"
    assert _resume(bumped)["decompose"] == "ran: code changed: version 1 -> 2"
    monkeypatch.undo()
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "new-1", "text": "a brand new document " * 10}) + "\n")
    grown = run_curation(config([*small, extra], copy, stages=STAGES, seed=5), spark=spark)
    why = _resume(grown)
    assert why["read"] == "ran: inputs changed: 1 file added", why
    assert grown.stages[0].n_in == bumped.stages[0].n_in + 1
    assert grown.stages[0].kept == bumped.stages[0].kept + 1  # read the new file's document


def test_overwrite_discards_the_saved_state(spark, fresh, small, tmp_path):
    out, _ = fresh
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    again = run_curation(config(small, copy, stages=STAGES, seed=5, overwrite=True), spark=spark)
    assert _resume(again)["read"] == "ran: no saved state"


def test_a_run_killed_mid_stage_resumes_to_the_same_rows_and_shards(spark, fresh, small, tmp_path):
    """SIGKILL to the whole run (driver, JVM, Prefect server) while a stage after dedup_exact is
    writing; the rerun skips the finished stages and ends with what an uninterrupted run wrote."""
    out, first = fresh
    killed = tmp_path / "out"
    toml = tmp_path / "run.toml"
    inputs = "".join(f'[[inputs]]\npath = "{p}"\nsource = "{p.name.split(".")[0]}"\ndomain = "{p.name.split(".")[0]}"\n\n'
                     for p in small)
    stages = _stage_tables()
    toml.write_text(f'output = "{killed}"\nseed = 5\n[spark]\nmaster = "local[2]"\nshuffle_partitions = 2\n\n'
                    f"{inputs}{stages}")
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(toml)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    work = killed / "_work"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (work / "01-dedup_exact.json").exists() and any(work.glob(".tmp-*")):
                break  # a later stage is writing its output
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (killed / "manifest.json").exists()
    done = set(RunState(killed).records())
    assert {"00-read", "01-dedup_exact"} <= done and "08-write" not in done
    resumed = run_curation(config(small, killed, stages=STAGES, seed=5), spark=spark)
    why = _resume(resumed)
    skipped = [k for k, v in why.items() if v == "skipped: unchanged"]
    assert skipped == [k for k in LABELS if f"{LABELS.index(k):02d}-{k}" in done], why
    assert "read" in skipped and "dedup_exact" in skipped and why["write"].startswith("ran: ")
    assert not list(work.glob(".tmp-*"))
    assert _kept(killed) == _kept(out) and _shards(killed) == _shards(out)
    assert [(r.n_in, r.kept, r.removed) for r in resumed.stages] == [(r.n_in, r.kept, r.removed) for r in first.stages]


def test_status_says_what_a_rerun_would_skip_and_redo_without_running_it(fresh, small, tmp_path, capsys):
    from flows.cli import main

    out, _ = fresh
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    assert main(["status", str(copy), "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert [(s["step"], s["state"]) for s in state["steps"]] == [(k, "done") for k in LABELS]
    assert all(s["disk_bytes"] > 0 for s in state["steps"]) and state["state_bytes"] > 0
    edited = tmp_path / "src"
    shutil.copytree(small[0].parent, edited)
    moved = [edited / p.name for p in small]
    toml = tmp_path / "c.toml"
    inputs = "".join(f'[[inputs]]\npath = "{p}"\nsource = "{p.name.split(".")[0]}"\ndomain = "{p.name.split(".")[0]}"\n\n'
                     for p in moved)
    toml.write_text(f"seed = 5\noutput = \"{copy}\"\n{inputs}" + _stage_tables())
    assert main(["status", str(copy), "--config", str(toml), "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert steps[0] == {**steps[0], "state": "stale", "why": "inputs changed: 2 files added, 2 files removed"}
    assert [s["why"] for s in steps[1:]] == ["after read"] * (len(LABELS) - 1)
    assert main(["status", str(copy), "--config", str(toml)]) == 0
    assert "stale" in capsys.readouterr().out
    before = sorted(p.name for p in copy.rglob("*"))
    main(["status", str(copy)])
    assert sorted(p.name for p in copy.rglob("*")) == before  # nothing written


def _toml(v) -> str:
    """A TOML value: inline tables and arrays of them, JSON for the scalars."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v)


def _stage_tables() -> str:
    return "".join("[[stages]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in st.items()) + "\n" for st in STAGES)


def test_fingerprints_reuse_a_hash_while_path_size_and_mtime_are_unchanged(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    prints = Fingerprints()
    first = prints.get([str(f)])[str(f)]
    again = Fingerprints(prints.saved)
    assert again.get([str(f)])[str(f)] == first and again.fresh == 0
    f.write_text("two")  # the size is the same; the mtime moves
    os.utime(f, ns=(1, 1))
    changed = Fingerprints(prints.saved)
    assert changed.get([str(f)])[str(f)]["xxh3_128"] != first["xxh3_128"] and changed.fresh == 1


def test_explain_names_what_changed():
    base = {"stage": "select", "version": 1, "seed": 1, "params": {"top_fraction": 0.1, "score": "s"}, "inputs": None}
    assert explain(base, {**base, "params": {"top_fraction": 0.2, "score": "s"}}, None) == \
        "parameters changed: top_fraction 0.1 -> 0.2"
    assert explain(base, {**base, "version": 2}, None) == "code changed: version 1 -> 2"
    assert explain(base, base, "dedup_exact") == "after dedup_exact, which runs"
    a = {**base, "inputs": {"x": "1", "y": "2"}}
    assert explain(a, {**base, "inputs": {"x": "1", "y": "3", "z": "4"}}, None) == "inputs changed: 1 file added, 1 file changed"
    assert explain({**base, "files": {"/m/model.bin": "1"}}, {**base, "files": {"/m/model.bin": "2"}}, None) == \
        "files it reads changed: model.bin"


def test_incremental_dedup_removes_copies_of_an_earlier_outputs_documents_and_emits_none_of_them(
        spark, small, pool_slice, tmp_path):
    """Week 1 curates one file; week 2 adds a file of exact and near copies of week 1's kept
    documents and a file of new ones, deduplicated `against` week 1's kept/: the copies are
    removed naming the earlier document, nothing of week 1 is emitted again, the new ones stay."""
    week1 = run_curation(config(small[:1], tmp_path / "week1", stages=[]), spark=spark)
    earlier = _kept(tmp_path / "week1")
    long_docs = [r for r in earlier if len(r["text"].split()) > 300][:20]
    short = [r for r in earlier if r not in long_docs][:20]
    assert len(long_docs) == 20 and len(short) == 20
    copies = tmp_path / "copies.jsonl"
    with open(copies, "w") as f:
        for i, r in enumerate(short):  # exact copies (whitespace aside)
            f.write(json.dumps({"id": f"exact-{i}", "text": "  " + r["text"] + "\n"}) + "\n")
        for i, r in enumerate(long_docs):  # one word changed in 300+: Jaccard of 5-gram shingles > 0.95
            words = r["text"].split(" ")
            words[len(words) // 2] = "zebra"
            f.write(json.dumps({"id": f"near-{i}", "text": " ".join(words)}) + "\n")
    against = [str(tmp_path / "week1" / "kept")]
    stages = [{"stage": "dedup_exact", "against": against}, {"stage": "dedup_minhash", "against": against}]
    week2 = run_curation(config([copies, small[1]], tmp_path / "week2", stages=stages), spark=spark)
    removed = {s: {r["id"]: r for r in pads.dataset(tmp_path / "week2" / "removed" / s).to_table().to_pylist()}
               for s in ("dedup_exact", "dedup_minhash")}
    original = {f"exact-{i}": r["id"] for i, r in enumerate(short)} | {f"near-{i}": r["id"] for i, r in enumerate(long_docs)}
    got = {i: r["duplicate_of"] for s in removed.values() for i, r in s.items() if r["reason"].startswith("earlier ")}
    assert {i: got[i] for i in original} == original
    assert set(got) - set(original) <= pool_slice["planted"]  # the pool's own planted cross-file copies
    assert all(removed["dedup_exact"][f"exact-{i}"]["reason"] == f"earlier exact duplicate of {short[i]['id']}"
               for i in range(20))
    assert all(removed["dedup_minhash"][f"near-{i}"]["reason"] == f"earlier near-duplicate of {long_docs[i]['id']}"
               for i in range(20))
    kept = {r["id"] for r in _kept(tmp_path / "week2")}
    assert not kept & {r["id"] for r in earlier}  # week 1's documents are not emitted again
    fresh = {r["id"] for r in pads.dataset(tmp_path / "week2" / "kept").to_table().to_pylist()}
    assert fresh and all(not i.startswith(("exact-", "near-")) for i in fresh)
    stats = {r.name: r.stats for r in week2.stages}
    assert stats["dedup_exact"]["earlier_duplicates"] + stats["dedup_minhash"]["earlier_duplicates"] == len(got)
    assert stats["dedup_exact"]["removed_by_reason"]["earlier exact duplicate"] >= 20
    assert stats["dedup_minhash"]["removed_by_reason"]["earlier near-duplicate"] >= 20
    assert week1.stages[-1].kept == len(earlier)


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=120)


def test_the_html_report_loads_in_a_browser_with_every_image_and_no_empty_section(fresh):
    """report.html in a real headless browser (Debian's Chromium, installed by `make test`'s
    set-up): it loads from the file alone, every image in it loaded, no section is empty, and a
    screenshot is saved beside it."""
    assert BROWSER, "no chromium on PATH: `make test` installs it (scripts/ensure-chromium.sh)"
    out, _ = fresh
    page = out / "report.html"
    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) >= 5, body  # funnel, removals, histogram, buckets, domains
    assert 'data-broken="[]"' in body and 'data-empty="[]"' in body, body
    for section in ("stages", "funnel", "removals", "scores", "tokens", "resume"):
        assert f'<section id="{section}">' in dom.stdout
    assert "the dashed line is the cut select kept" in page.read_text()  # the cut drawn on its score
    shot = out.parent / "report.png"
    taken = _chromium("--window-size=1100,3000", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]


def test_the_html_report_says_which_side_of_each_cut_select_kept():
    from flows.report import StageRecord
    from flows.report_html import _select_cuts

    def sel(**stats):
        return StageRecord(name="select", stage="select", n_in=10, kept=5, removed=5, seconds=0.1, stats=stats)

    assert _select_cuts([sel(score="score_dclm", threshold=0.5, order="high")])["score_dclm"] == \
        ([0.5], "the dashed line is the cut select kept at or above (0.5)")
    lines, said = _select_cuts([sel(score="score_ccnet", threshold=2.25, order="low")])["score_ccnet"]
    assert lines == [2.25] and "at or below" in said
    lines, said = _select_cuts([sel(score="score_ankner", lower_edge=1.5, upper_edge=2.0, band=[0.45, 0.55])])[
        "score_ankner"]
    assert lines == [1.5, 2.0] and "edges of the band" in said
    lines, said = _select_cuts([sel(score="score_dclm", by="domain", groups={"code": {"cut": 0.2}})])["score_dclm"]
    assert lines == [] and "each domain apart" in said
    assert _select_cuts([sel(random=True)]) == {}


def test_report_md_tabulates_a_stratified_selects_groups():
    from flows.report import StageRecord, report_markdown

    r = StageRecord(name="select", stage="select", n_in=10, kept=5, removed=5, seconds=0.1,
                    stats={"score": "score_dclm", "by": "domain", "groups": {
                        "code": {"documents": 4, "kept": 1, "cut": 0.25}, "a|b": {"documents": 6, "kept": 4}}})
    manifest = {"started_at": "t0", "finished_at": "t1", "output": "out", "code_version": {"winnow": "0"}, "inputs": []}
    md = report_markdown([r], manifest)
    assert "### select: per domain" in md and "| domain | documents | kept | cut |" in md
    assert "| code | 4 | 1 | 0.25 |" in md and "| a\\|b | 6 | 4 |  |" in md


def test_a_transient_stage_failure_is_retried_and_counted_and_a_user_error_is_not(spark, small, tmp_path,
                                                                                 monkeypatch):
    from core.errors import WinnowError
    from flows import curate
    from pipelines import registry

    monkeypatch.setattr(curate, "RETRY_DELAY_SECONDS", 0)
    spec = registry.STAGES["dedup_exact"]
    calls = []

    def flaky(error):
        def apply(df, params, ctx):
            calls.append(1)
            if len(calls) == 1:
                raise error
            return spec.apply(df, params, ctx)
        return apply

    monkeypatch.setitem(registry.STAGES, "dedup_exact", replace(spec, apply=flaky(OSError("disk hiccup"))))
    summary = run_curation(config(small[:1], tmp_path / "a", stages=[{"stage": "dedup_exact"}]), spark=spark)
    assert len(calls) == 2 and summary.stages[1].stats["attempts"] == 2
    assert "attempts = 2" in (tmp_path / "a" / "report.md").read_text()
    calls.clear()
    monkeypatch.setitem(registry.STAGES, "dedup_exact", replace(spec, apply=flaky(WinnowError("fix your config"))))
    with pytest.raises(WinnowError, match="fix your config"):
        run_curation(config(small[:1], tmp_path / "b", stages=[{"stage": "dedup_exact"}]), spark=spark)
    assert len(calls) == 1
    assert curate.transient(ConnectionResetError()) and not curate.transient(ValueError("a bug"))


def test_an_unchanged_train_step_reuses_its_model(spark, small, tmp_path):
    """[[train]] whose data, parameters and model file are unchanged is not trained again, and
    the score stage that uses the model is skipped with it."""
    from .conftest import DATA

    train = [{"kind": "dclm", "output": "{output}/models/dclm.bin", "positives": [str(DATA / "reference" / "hq.jsonl.zst")],
              "params": {"threads": 1}}]  # all of both sides: fewer examples can make fastText diverge
    stages = [{"stage": "score", "scorers": [{"kind": "dclm", "model": "{output}/models/dclm.bin"}]}]
    out = tmp_path / "out"
    first = run_curation(config(small[:1], out, stages=stages, train=train), spark=spark)
    model = out / "models" / "dclm.bin"
    stamp = model.stat().st_mtime_ns
    again = run_curation(config(small[:1], out, stages=stages, train=train), spark=spark)
    assert first.manifest["training"][0]["resume"] == "ran: no saved state"
    assert again.manifest["training"][0]["resume"] == "skipped: unchanged"
    assert model.stat().st_mtime_ns == stamp and again.manifest["engine"]["name"] == "none"
    retrain = [{**train[0], "params": {"threads": 1, "epoch": 4, "lr": 0.05}}]  # all the data again: stable
    changed = run_curation(config(small[:1], out, stages=stages, train=retrain), spark=spark)
    assert changed.manifest["training"][0]["resume"] == "ran: data or parameters changed"
    assert _resume(changed)["read"] == "skipped: unchanged"  # the new model re-runs only what reads it
    assert _resume(changed)["score"] == "ran: files it reads changed: dclm.bin"
