"""The `winnow` command as a user runs it: a handful of subprocess tests (each JVM costs seconds)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads

WINNOW = [sys.executable, "-m", "flows.cli"]


def run(args, cwd, env_home):
    env = dict(os.environ, PREFECT_HOME=str(env_home / "prefect-cli"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(WINNOW + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_help_explains_every_option(tmp_path):
    top = run(["--help"], tmp_path, tmp_path)
    assert top.returncode == 0 and "run" in top.stdout
    sub = run(["run", "--help"], tmp_path, tmp_path)
    for option in ("--input", "--output", "--master", "--overwrite", "--domain", "CONFIG"):
        assert option in sub.stdout


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_flags_come_from_the_parameter_classes():
    """Every flag built from a parameter field shows that field's own help and default, so the
    command line cannot disagree with the class; each stage's verb exposes its parameters."""
    from core.params import HELP, described
    from filters import registry
    from flows.cli import EXPORT_FLAGS, build_parser
    from flows.options import flag_name
    from flows.train import TrainSpec
    from pipelines import STAGES

    verbs = dict(_subparsers(build_parser()))
    expected = {"dedup": [(STAGES["dedup_minhash"].params, None)],
                "export": [(STAGES[stage].params, fields) for stage, fields in EXPORT_FLAGS]}
    trainers = dict(_subparsers(verbs["train-scorer"]))
    assert set(trainers) == set(registry.trainable()) == {"dclm", "preselect", "dfn"}
    for kind, parser in trainers.items():
        verbs[f"train-scorer {kind}"] = parser
        expected[f"train-scorer {kind}"] = [(TrainSpec, None), (registry.trainer(kind).params, None)]
    from flows.preselect import PreselectSpec
    from flows.train_lm import LmSpec

    expected["train-scorer preselect"].append(
        (PreselectSpec, tuple(f.name for f in described(PreselectSpec) if f.name != "seed")))
    expected["train-lm"] = [(LmSpec, None)]
    for verb, classes in expected.items():
        flags = {a.dest: a for a in verbs[verb]._actions}
        for cls, only in classes:
            for f in described(cls):
                if only is not None and f.name not in only:
                    continue
                action = flags[f.name]
                assert flag_name(f) in action.option_strings, (verb, f.name)
                assert f"{f.metadata[HELP]} (default " in action.help, (verb, f.name)
                assert action.default is None, (verb, f.name)  # not given: the class (or config) decides
    threshold = {a.dest: a for a in verbs["dedup"]._actions}["threshold"]
    assert threshold.help.endswith("(default 0.8)") and STAGES["dedup_minhash"].params().threshold == 0.8


def test_verbs_turn_flags_into_stage_entries():
    from flows.cli import build_parser, dedup_stage, export_stages

    parser = build_parser()
    args = parser.parse_args(["dedup", "x.jsonl", "-o", "out", "--threshold", "0.7", "--check", "exact",
                              "--per-source"])
    assert dedup_stage(args) == {"stage": "dedup_minhash", "threshold": 0.7, "check": "exact", "per_source": True}
    args = parser.parse_args(["dedup", "x.jsonl", "-o", "out", "--against", "w1/kept", "--against", "/w2/kept"])
    assert dedup_stage(args) == {"stage": "dedup_minhash", "against": [str(Path("w1/kept").resolve()), "/w2/kept"]}
    args = parser.parse_args(["export", "x.jsonl", "-o", "out", "--buckets", "5..9", "--seed", "3",
                              "--mixture", "m.json"])
    stages = export_stages(args)
    assert [s["stage"] for s in stages] == ["tokenize", "decompose", "export"]
    assert stages[0] == {"stage": "tokenize", "seed": 3}
    assert stages[1] == {"stage": "decompose", "seed": 3, "min_log2": 5, "max_log2": 9}
    assert stages[2] == {"stage": "export", "mixture": str(Path("m.json").resolve())}
    concat = export_stages(parser.parse_args(["export", "x", "-o", "o", "--layout", "concat"]))
    assert [s["stage"] for s in concat] == ["tokenize", "export"]


def test_user_errors_are_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('output = "out"\ncolour = "red"\n[[inputs]]\npath = "x.jsonl"\nsource = "x"\n')
    cases = [
        (["run", str(cfg)], "unknown key 'colour'"),
        (["run", str(tmp_path / "missing.toml")], "config file not found"),
        (["run", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")], "input path does not exist"),
        (["run", "--input", str(cfg)], "give a CONFIG, or --input PATH and --output DIR"),
    ]
    for args, message in cases:
        proc = run(args, tmp_path, tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("winnow: error:") and message in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_run_with_input_override_writes_the_output_layout(tmp_path):
    src = tmp_path / "web.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["alpha beta", "alpha  beta", "gamma"]) + "{broken\n"
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text('output = "ignored"\n[[inputs]]\npath = "x.jsonl"\nsource = "x"\n'
                   '[[stages]]\nstage = "dedup_exact"\n[spark]\nmaster = "local[1]"\nshuffle_partitions = 2\n')
    out = tmp_path / "out"
    proc = run(["run", str(cfg), "--input", str(src), "--output", str(out), "--domain", "web"], tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dedup_exact" in proc.stdout and "in + added = kept + removed" in proc.stdout
    # Spark's start-up lines are gone (the JVM's incubator notice, the log-level banner)
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    kept = pads.dataset(out / "kept").to_table().to_pylist()
    assert [(r["text"], r["source"], r["domain"]) for r in kept] == [("alpha beta", "web", "web"), ("gamma", "web", "web")]
    assert pads.dataset(out / "removed" / "read").count_rows() == 1
    assert pads.dataset(out / "removed" / "dedup_exact").count_rows() == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"in": 4, "kept": 2, "removed": 2}
    assert "| dedup_exact | 3 | 0 | 2 | 1 |" in (out / "report.md").read_text()
    # the same run again resumes with nothing to do; another domain re-runs every step from read
    same = run(["run", str(cfg), "--input", str(src), "--output", str(out), "--domain", "web"], tmp_path, tmp_path)
    assert same.returncode == 0 and same.stdout.count("skipped, unchanged") == 3, same.stdout
    again = run(["run", str(cfg), "--input", str(src), "--output", str(out)], tmp_path, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(ran: parameters changed" in again.stdout, again.stdout
    assert "| read | ran: parameters changed: inputs[0].domain web -> default |" in (out / "report.md").read_text()
    assert pads.dataset(out / "kept").to_table().column("domain").to_pylist() == ["default", "default"]
