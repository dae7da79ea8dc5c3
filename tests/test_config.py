from pathlib import Path

import pytest

from core.errors import ConfigError
from flows.config import load_config, parse_config, plans, with_overrides
from pipelines.dedup_exact import DedupExactParams

BASE = {"output": "out", "inputs": [{"path": "in.jsonl", "source": "s"}]}


def cfg(**extra):
    return parse_config({**BASE, **extra}, Path("/base"), "c.toml")


def test_minimal_config_gets_defaults_and_resolves_paths():
    c = cfg()
    assert c.spark.master == "local[*]"
    assert c.seed == 0
    assert c.inputs[0].path == "/base/in.jsonl"
    assert c.inputs[0].domain == "default"
    assert c.output == "/base/out"


@pytest.mark.parametrize("data, message", [
    ({**BASE, "ouput": "x"}, "c.toml: unknown key 'ouput'"),
    ({**BASE, "seed": "1"}, "c.toml: 'seed': Input should be a valid integer"),
    ({"inputs": BASE["inputs"]}, "c.toml: missing key 'output'"),
    ({**BASE, "inputs": [{"path": "x"}]}, "c.toml: missing key 'inputs[0].source'"),
    ({**BASE, "inputs": [{"path": "x", "source": "s", "colour": 1}]}, "c.toml: unknown key 'inputs[0].colour'"),
    ({**BASE, "inputs": [{"path": "x", "source": "s", "format": "csv"}]}, "'inputs[0].format': 'csv' is not one of"),
    ({**BASE, "spark": {"shuffle_partitions": 0}}, "'spark.shuffle_partitions': Input should be greater than or equal to 1"),
    ({**BASE, "stages": [{"normalize": "none"}]}, "missing key 'stages[0].stage'"),
    ({**BASE, "stages": [{"stage": "minhash"}]}, "'stages[0].stage': unknown stage 'minhash'"),
    ({**BASE, "stages": [{"stage": "dedup_exact", "threshold": 1}]}, "unknown key 'stages[0].threshold' for stage dedup_exact"),
    ({**BASE, "stages": [{"stage": "dedup_exact", "per_source": "yes"}]}, "'stages[0].per_source': Input should be a valid boolean"),
    ({**BASE, "stages": [{"stage": "dedup_exact", "normalize": "lower"}]}, "dedup_exact.normalize: 'lower' is not one of"),
    ({**BASE, "write": {"compression": "lz5"}}, "write.compression: 'lz5' is not one of"),
])
def test_bad_configs_give_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("/base"), "c.toml")
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_stage_plans_carry_typed_params_and_unique_labels():
    c = cfg(stages=[{"stage": "dedup_exact", "normalize": "aggressive"}, {"stage": "dedup_exact"}])
    p = plans(c)
    assert [x.label for x in p] == ["dedup_exact", "dedup_exact-2"]
    assert p[0].params == DedupExactParams(normalize="aggressive", per_source=False)


def test_load_config_reports_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("output = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_demo_config_is_valid():
    c = load_config(Path(__file__).parent.parent / "data" / "configs" / "demo.toml")
    assert [p.name for p in plans(c)] == ["dedup_exact", "dedup_minhash", "heuristics", "score", "select",
                                          "tokenize", "decompose", "export"]
    assert c.train and c.train[0].output.startswith("{output}")
    assert len(c.inputs) >= 4


def test_input_override_replaces_inputs_with_stem_as_source(tmp_path):
    c = with_overrides(cfg(), inputs=[str(tmp_path / "web.2024.jsonl.gz")], domain="web", master="local[1]")
    assert [(i.source, i.domain) for i in c.inputs] == [("web", "web")]
    assert c.spark.master == "local[1]"


def test_the_command_line_overrides_overwrite_true_in_a_config_both_ways(tmp_path):
    from flows.cli import build_parser
    from flows.config import parse_config, with_overrides

    cfg = parse_config({"output": "out", "overwrite": True, "inputs": [{"path": "x.jsonl", "source": "x"}]},
                       tmp_path, "test")
    for argv, expected in ((["run", "c.toml"], True), (["run", "c.toml", "--no-overwrite"], False),
                           (["run", "c.toml", "--overwrite"], True)):
        args = build_parser().parse_args(argv)
        assert with_overrides(cfg, overwrite=args.overwrite).overwrite is expected, argv
    off = cfg.model_copy(update={"overwrite": False})
    assert with_overrides(off, overwrite=build_parser().parse_args(["run", "--overwrite"]).overwrite).overwrite


def test_a_schedule_takes_one_cron_or_interval_and_a_real_time_zone():
    import datetime as dt

    from flows.config import dated

    base = {"output": "out/{date}", "inputs": [{"path": "x.jsonl", "source": "x"}]}
    cfg = parse_config({**base, "schedule": {"cron": "0 3 * * 1", "timezone": "Europe/Paris"}}, Path("/"), "c")
    assert cfg.schedule.cron == "0 3 * * 1" and cfg.schedule.timezone == "Europe/Paris"
    assert parse_config({**base, "schedule": {"interval": 3600}}, Path("/"), "c").schedule.interval == 3600
    for bad, says in (({}, "exactly one of cron and interval"), ({"cron": "0 3 * *", "interval": 5}, "exactly one"),
                      ({"cron": "every monday"}, "not a cron expression"), ({"interval": 0}, "greater than 0"),
                      ({"interval": 5, "timezone": "Mars/Olympus"}, "not a time zone name"),
                      ({"interval": 5, "every": 1}, "every")):
        with pytest.raises(ConfigError, match=says):
            parse_config({**base, "schedule": bad}, Path("/"), "c")
    assert dated(cfg, dt.datetime(2026, 12, 7, 3, tzinfo=dt.timezone.utc)).output == "/out/2026-12-07"
