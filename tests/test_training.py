"""training/: the model, the batch sources, the loop (loss falls, resume is exact), evaluation
in bits per byte, and `winnow validate` end to end on shards exported from the sample data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.curate import run_curation

from .conftest import DATA, config
from .test_sampler import Counter, make_export

LO, HI = 5, 7


@pytest.fixture(scope="module")
def shards(spark, prefect_server, pool_slice, tmp_path_factory):
    """The pool slice exported per domain, and the held-out split exported with its tokenizer."""
    root = tmp_path_factory.mktemp("training")
    train = root / "train"
    stages = [{"stage": "tokenize", "vocab_size": 600, "sample_docs": 400},
              {"stage": "decompose", "min_log2": LO, "max_log2": HI},
              {"stage": "export", "by_domain": True}]
    run_curation(config(pool_slice["paths"], train, stages=stages, seed=3), spark=spark)
    heldout = root / "heldout"
    cfg = config([DATA / "eval" / "heldout.jsonl.zst"], heldout, stages=[
        {"stage": "tokenize", "tokenizer": str(train / "tokenizer.json")},
        {"stage": "decompose", "min_log2": LO, "max_log2": HI, "tail": "keep"},
        {"stage": "export", "by_domain": True}])
    cfg = cfg.model_copy(update={"inputs": [cfg.inputs[0].model_copy(update={"domain_field": "domain"})]})
    run_curation(cfg, spark=spark)
    return {"train": train, "heldout": heldout, "tokenizer": train / "tokenizer.json"}


def small(**extra):
    from training.loop import TrainConfig

    base = dict(tokens=24 * 512, tokens_per_batch=512, model={"d_model": 32, "n_layers": 1, "n_heads": 2},
                lr=3e-3, threads=1, resume=False)
    return TrainConfig(**{**base, **extra})


def domain_export(root: Path, domains: dict[str, dict], *, mixture: dict | None = None,
                  schedule: dict | None = None, record_dirs: bool = True) -> Path:
    """A small export with domains apart, written without Spark as `pipelines.export` lays it out:
    ``<root>/<dir_name(domain)>/bucket_<i>/`` (``domains``: ``{domain: {"buckets": {i: rows},
    "tails": [lengths]}}``, every token id distinct), a manifest whose export stage holds the
    datasets, the directory map (``record_dirs``), the planned mixture (``mixture``: ``{"weights",
    "budget", "max_repeats"}``, planned with `Mixture.plan` on the stored tokens) and the schedule,
    and a word-level tokenizer covering every id."""
    from tokenizers import Tokenizer, models

    from mixers.dirnames import dir_name
    from mixers.mixture import Mixture

    ids = Counter()
    datasets_table, dirs, available = {}, {}, {}
    for name, spec in domains.items():
        d = dir_name(name)
        groups = make_export(root / d, buckets=spec["buckets"], tails=spec.get("tails"), ids=ids, domain=name)
        for group, rows in groups.items():
            datasets_table[f"{d}/{group}"] = {"sequences": len(rows), "tokens": sum(map(len, rows)), "shards": 2}
        dirs[d] = name
        available[name] = sum(sum(map(len, rows)) for rows in groups.values())
    stats: dict = {"layout": "decomposition", "datasets": datasets_table}
    if record_dirs:
        stats["domain_dirs"] = dirs
    if mixture is not None:
        stats["mixture"] = Mixture(mixture["weights"]).plan(mixture["budget"], available,
                                                            max_repeats=mixture["max_repeats"]).to_dict()
    if schedule is not None:
        stats["schedule"] = schedule
    (root / "manifest.json").write_text(json.dumps(
        {"stages": [{"name": "export", "stage": "export", "stats": stats}]}))
    vocab = {f"t{i}": i for i in range(ids.next)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(root / "tokenizer.json"))
    return root


# small: 9 rows of bucket 3 and 5 of bucket 4 -> with 32 tokens per batch, 2 + 2 = 4 batches an epoch,
# leftovers 1 x 9 + 1 x 17 tokens, a tail of 7 tokens skipped: 81 + 85 + 7 = 173 tokens stored
SMALL = {"buckets": {3: 9, 4: 5}, "tails": [3, 4]}
WEB = {"buckets": {3: 60, 4: 30, 5: 16}}  # 15 + 15 + 16 = 46 batches an epoch
CAPPED = {"type": "constant", "weights": {"small": 0.75, "web": 0.25}}  # small wants 18 of 24 steps


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    """A two-domain export whose planned mixture caps every domain at one epoch."""
    return domain_export(tmp_path_factory.mktemp("two_domains"), {"small": SMALL, "web": WEB}, schedule=CAPPED,
                         mixture={"weights": {"small": 0.75, "web": 0.25}, "budget": 700, "max_repeats": 1})


class Stop(Exception):
    """Raised by `crash_at` to stand for a run that dies mid-training."""


def crash_at(step: int):
    """An `on_step` hook that stops training after `step`."""
    def hook(at, loss):
        if at == step:
            raise Stop
    return hook


def test_attention_is_causal_and_positions_are_configurable():
    from training.model import TransformerLM, attention_flops, model_config

    for positions in ("rope", "learned"):
        torch.manual_seed(0)
        model = TransformerLM(model_config(50, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, positions=positions))
        x = torch.randint(0, 50, (2, 12))
        y = x.clone()
        y[:, 8:] = (y[:, 8:] + 1) % 50  # change the future only
        a, b = model(x), model(y)
        assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6) and not torch.allclose(a[:, 8:], b[:, 8:])
        assert model.embed.weight is not None and model.num_parameters() > 0
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cfg = model_config(50, d_model=16, n_layers=2, n_heads=2)
    assert attention_flops(512, cfg) * 2 == attention_flops(1024, cfg) // 2  # quadratic in length


def test_token_bytes_count_every_byte_of_a_document(shards):
    from tokenizers import Tokenizer

    from training.data import token_bytes

    tok = Tokenizer.from_file(str(shards["tokenizer"]))
    table = token_bytes(shards["tokenizer"])
    for text in ("plain ascii text.", "naïve café — 東京 😀", "def f(x):\n    return x\n"):
        ids = tok.encode(text, add_special_tokens=False).ids + [tok.token_to_id("<|endoftext|>")]
        assert int(table[ids].sum()) == len(text.encode("utf-8"))


def test_loss_falls_on_exported_shards(shards, tmp_path):
    from training.loop import train

    result = train(small(data=str(shards["train"]), output=str(tmp_path / "run"), heldout=str(shards["heldout"]),
                         eval_max_tokens=4000))
    losses = [c[2] for c in result["curve"]]
    assert len(losses) == 24 and result["tokens"] == 24 * 512
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3  # 6.35 -> 5.88 when written
    held = result["heldout"]
    assert set(held["per_domain"]) == {"code", "docs", "fiction", "hq", "reference"}
    assert all(0 < d["bpb"] < 10 and d["tokens"] > 0 for d in held["per_domain"].values())
    assert held["loss"] < np.log(600)  # better than uniform over the vocabulary
    assert (tmp_path / "run" / "train.json").is_file() and len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 24


def test_resume_from_a_checkpoint_gives_the_same_next_losses(shards, tmp_path):
    """With dropout, so every step draws from torch's RNG: a resume that did not restore the RNG
    state of its checkpoint would draw other masks and differ from step 7 on."""
    from training.loop import train

    dropout = {"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1}
    whole = train(small(data=str(shards["train"]), output=str(tmp_path / "whole"), model=dropout))

    cut = small(data=str(shards["train"]), output=str(tmp_path / "cut"), checkpoint_every=6, resume=True,
                model=dropout)
    with pytest.raises(Stop):
        train(cut, on_step=crash_at(9))
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step_00000006.pt"]
    resumed = train(cut)
    assert [c[2] for c in resumed["curve"]] == [c[2] for c in whole["curve"]]  # bit for bit, steps 7.. included
    a = torch.load(tmp_path / "whole" / "checkpoints" / "step_00000024.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "step_00000024.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_gpu_path_bf16_autocast_and_torch_compile_runs_on_cpu(shards, tmp_path):
    """What a GPU run does by default (bf16 autocast, torch.compile across the bucket shapes),
    forced on CPU with the aot_eager backend (dynamo and AOTAutograd trace it; no code is
    generated): the loss falls, the weights and checkpoints stay fp32, evaluation runs under the
    same autocast, and a resumed run repeats the uninterrupted one."""
    from torch._dynamo.utils import counters

    from training.loop import TrainConfig, train

    torch._dynamo.reset()
    counters.clear()
    gpu_like = dict(data=str(shards["train"]), precision="bf16", compile="aot_eager")
    whole = train(small(**gpu_like, output=str(tmp_path / "whole"), heldout=str(shards["heldout"]),
                        eval_max_tokens=2000))
    assert (whole["precision"], whole["compile"], whole["device"]) == ("bf16", "aot_eager", "cpu")
    losses = [c[2] for c in whole["curve"]]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert len({r["bucket"] for r in log}) >= 2  # the compiled forward met several shapes
    assert counters["stats"]["unique_graphs"] >= 1 and counters["frames"]["ok"] >= 1  # dynamo compiled it
    assert all(0 < d["bpb"] < 10 for d in whole["heldout"]["per_domain"].values())
    saved = torch.load(tmp_path / "whole" / "checkpoints" / "step_00000024.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in saved["model"].values()) and saved["cuda_rng"] is None

    cut = small(**gpu_like, output=str(tmp_path / "cut"), checkpoint_every=6, resume=True)
    with pytest.raises(Stop):
        train(cut, on_step=crash_at(9))
    resumed = train(cut)
    assert [c[2] for c in resumed["curve"]] == losses  # bit for bit on CPU, as the eager path
    with pytest.raises(ValueError, match="train.precision"):
        TrainConfig(data="", output="", tokens=512, tokens_per_batch=512, precision="fp16")


def test_scheduled_batches_follow_the_schedule_and_resume(shards):
    from mixers.schedule import Schedule
    from training.data import ScheduledBatches

    schedule = Schedule.from_json({"type": "upsampling", "base": {"docs": 0.5, "fiction": 0.5},
                                   "upsampled": {"code": 1.0}, "fraction": 0.25})
    source = ScheduledBatches(shards["train"], schedule, total_steps=400, tokens_per_batch=1 << HI, seed=1)
    picks = [source.domain_at(s) for s in range(400)]
    assert set(picks[300:]) == {"code"} and "code" not in picks[:300]
    assert 0.4 < picks[:300].count("docs") / 300 < 0.6
    first = [b for _, b in zip(range(40), source.iter_from(0))]
    again = [b for _, b in zip(range(15), source.iter_from(25))]
    for x, y in zip(first[25:], again):
        assert x["step"] == y["step"] and x["domain"] == y["domain"] and np.array_equal(x["tokens"], y["tokens"])
    assert all(b["tokens"].shape[0] * (b["tokens"].shape[1] - 1) == 1 << HI for b in first)  # constant tokens
    with pytest.raises(ValueError, match="no data"):
        ScheduledBatches(shards["train"], Schedule.from_json({"type": "constant", "weights": {"math": 1.0}}), 10, 1 << HI)


def rows_in(batches) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for b in batches for row in b["tokens"]]


def test_a_capped_domain_stops_being_drawn_and_the_others_take_its_share(two_domains):
    """max_repeats counts epochs of a domain's sampler: at most floor(max_repeats * steps_per_epoch)
    batches of it; once there it leaves the draw and the schedule's weights renormalize over the
    rest. The draws up to that point are the uncapped ones, and resuming anywhere is exact."""
    from mixers.schedule import Schedule
    from training.data import ScheduledBatches

    schedule = Schedule.from_json(CAPPED)
    free = ScheduledBatches(two_domains, schedule, total_steps=24, tokens_per_batch=32, seed=1)
    capped = ScheduledBatches(two_domains, schedule, total_steps=24, tokens_per_batch=32, seed=1, max_repeats=1)
    assert capped.samplers["small"].steps_per_epoch == 4 and capped.cap_steps == {"small": 4, "web": 46}
    uncapped_picks = [free.domain_at(s) for s in range(24)]
    picks = [capped.domain_at(s) for s in range(24)]
    assert uncapped_picks.count("small") > 8  # the schedule alone asks for more than the data holds
    full = [s for s in range(24) if picks[:s + 1].count("small") == 4][0]
    assert picks.count("small") == 4 and set(picks[full + 1:]) == {"web"}  # web takes the whole share after
    assert picks[:full + 1] == uncapped_picks[:full + 1]  # the same draws until the cap bites

    first = list(zip(range(24), capped.iter_from(0)))
    small_rows = rows_in(b for _, b in first if b["domain"] == "small")
    assert len(small_rows) == len(set(small_rows)) == 12  # one epoch: no row of small twice
    for start in (2, full, full + 1, 17):  # resume before, at and after the cap: the same batches
        again = ScheduledBatches(two_domains, schedule, 24, 32, seed=1, max_repeats=1)
        for (_, x), y in zip(first[start:], again.iter_from(start)):
            assert (x["step"], x["domain"], x["domain_step"]) == (y["step"], y["domain"], y["domain_step"])
            assert np.array_equal(x["tokens"], y["tokens"])

    used = capped.usage(24)
    assert used["small"]["steps"] == 4 and used["small"]["epochs"] == 1.0 and used["small"]["full_at_step"] == full
    assert sum(u["tokens"] for u in used.values()) == 24 * 32 and used["web"]["share"] == 20 / 24
    small = used["small"]  # one whole epoch: stored = inputs + one target per row + skipped
    assert small["available_tokens"] == 173 and small["skipped_tokens"] == 9 + 17 + 7 == small["leftover_tokens"] + 7
    assert small["tokens"] + small["sequences"] + small["skipped_tokens"] == small["available_tokens"]

    half = ScheduledBatches(two_domains, schedule, 24, 32, seed=1, max_repeats=1.5)  # a fractional cap
    assert half.cap_steps["small"] == 6 and [half.domain_at(s) for s in range(24)].count("small") == 6
    seen = rows_in(b for _, b in zip(range(24), half.iter_from(0)) if b["domain"] == "small")
    # 1.5 epochs: the 12 rows of epoch 0, then the first 2 batches of epoch 1 in its curriculum order
    assert len(seen) == half.samplers["small"].usage(6)["sequences"] > 12
    assert len(set(seen[:12])) == 12 and len(set(seen[12:])) == len(seen) - 12
    per = ScheduledBatches(two_domains, schedule, 24, 32, seed=1, max_repeats={"small": 2, "web": None})
    assert per.cap_steps == {"small": 8, "web": None} and per.usage(24)["small"]["epochs"] == 2.0

    only_small = Schedule.from_json({"type": "constant", "weights": {"small": 1.0}})
    with pytest.raises(ValueError, match=r"step 4 of 10: every domain .* repetition cap .*small 4 of 4 steps"):
        ScheduledBatches(two_domains, only_small, 10, 32, max_repeats=1)


def test_training_holds_the_exports_repetition_cap_and_reports_every_domain(two_domains, tmp_path):
    """The cap of the export's planned mixture holds in a run (and train.max_repeats overrides it);
    train.json counts per domain what was trained, how many epochs and what was skipped; a
    resumed run, with dropout drawing from torch's RNG, repeats the uninterrupted one bit for bit."""
    from training.loop import TrainConfig, train

    run = dict(data=str(two_domains), tokens=24 * 32, tokens_per_batch=32, schedule="export", threads=1,
               model={"d_model": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1}, lr=3e-3, resume=False)
    whole = train(TrainConfig(**run, output=str(tmp_path / "whole"), heldout=str(two_domains)))
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert [r["domain"] for r in log].count("small") == 4  # one epoch of 4 batches, not the schedule's 18
    assert whole["max_repeats_from"] == "export mixture"
    small, web = whole["domains"]["small"], whole["domains"]["web"]
    assert (small["steps"], small["epochs"], small["max_repeats"], small["cap_steps"]) == (4, 1.0, 1.0, 4)
    assert web["steps"] == 20 and web["epochs"] == 20 / 46
    assert small["tokens"] + web["tokens"] == whole["tokens"] == 24 * 32
    assert small["tokens"] + small["sequences"] + small["skipped_tokens"] == small["available_tokens"] == 173
    assert set(whole["heldout"]["per_domain"]) == {"small", "web"}

    cut = TrainConfig(**{**run, "resume": True, "checkpoint_every": 6}, output=str(tmp_path / "cut"))
    with pytest.raises(Stop):
        train(cut, on_step=crash_at(9))
    resumed = train(cut)
    assert [c[2] for c in resumed["curve"]] == [c[2] for c in whole["curve"]]
    assert resumed["domains"] == whole["domains"]  # the whole run's counts, not only the resumed part

    twice = train(TrainConfig(**run, output=str(tmp_path / "twice"), max_repeats=2))
    assert twice["max_repeats_from"] == "train.max_repeats" and twice["domains"]["small"]["epochs"] == 2.0
    pool = train(TrainConfig(**{**run, "schedule": None}, output=str(tmp_path / "pool")))
    assert list(pool["domains"]) == ["all"] and pool["domains"]["all"]["tokens"] == 24 * 32
    with pytest.raises(ValueError, match="max_repeats 0.25 allows 12"):  # one pool: 50 batches an epoch
        train(TrainConfig(**{**run, "schedule": None}, output=str(tmp_path / "short"), max_repeats=0.25))
    with pytest.raises(ValueError, match="train.max_repeats"):
        TrainConfig(**run, output="", max_repeats=0)


def test_encoded_domain_directories_are_named_by_their_domain(tmp_path):
    """Schedules, held-out sets, mixture caps and reports name domains, not the directories
    `pipelines.export` writes them to (mixers.dirnames.dir_name)."""
    from mixers.dirnames import dir_name
    from mixers.schedule import Schedule
    from training.data import ScheduledBatches, export_domains, export_max_repeats, heldout_sets

    long = "forum/" + "ü" * 40  # a cut directory name: only the manifest's domain_dirs names it
    weights = {"a/b": 0.5, long: 0.25, "web": 0.25}
    root = domain_export(tmp_path / "export", {"a/b": SMALL, long: SMALL, "web": WEB}, schedule={
        "type": "constant", "weights": weights}, mixture={"weights": weights, "budget": 600, "max_repeats": 1})
    assert (root / "%a%2Fb" / "bucket_3").is_dir() and (root / dir_name(long)).is_dir()
    assert export_domains(root) == sorted(["a/b", long, "web"])
    assert sorted(heldout_sets(root)) == sorted(["a/b", long, "web"])
    assert export_max_repeats(root) == {"a/b": 1.0, long: 1.0, "web": 1.0}
    source = ScheduledBatches(root, Schedule.from_json({"type": "constant", "weights": weights}), 12, 32,
                              max_repeats=export_max_repeats(root))
    drawn = [b["domain"] for _, b in zip(range(12), source.iter_from(0))]
    assert set(drawn) == {"a/b", long, "web"} and drawn.count("a/b") == 4  # a/b's one epoch
    assert set(source.usage(12)) == {"a/b", long, "web"}

    old = domain_export(tmp_path / "old", {"a/b": SMALL, "web": WEB}, record_dirs=False)  # no domain_dirs map
    assert export_domains(old) == ["a/b", "web"]


def test_winnow_validate_end_to_end(spark, prefect_server, pool_slice, tmp_path, capsys):
    from flows.cli import main as winnow

    cfg = tmp_path / "validate.toml"
    inputs = "\n".join(f'[[inputs]]\npath = "{p}"\nsource = "{Path(p).name.split(".")[0]}"\n'
                       f'domain = "{Path(p).name.split(".")[0]}"\n' for p in pool_slice["paths"])
    cfg.write_text(f'''output = "{tmp_path / 'out'}"
seed = 7
{inputs}
[[stages]]
stage = "dedup_exact"

[validate]
seeds = [0, 1, 2]
tokens = 4096
tokens_per_batch = 512
buckets = "5..7"
vocab_size = 400
eval_max_tokens = 3000
model = {{ d_model = 32, n_layers = 1, n_heads = 2 }}
train = {{ threads = 1 }}
heldout = [{{ path = "{DATA / 'eval' / 'heldout.jsonl.zst'}", source = "heldout", domain_field = "domain" }}]

[[validate.variants]]
name = "random"
stages = [{{ stage = "select", random_fraction = 0.5 }}]

[[validate.variants]]
name = "../concat"                # a name, not a path: its directories are encoded
layout = "concat"
seq_len = 128
''')
    assert winnow(["validate", str(cfg)]) == 0
    base = json.loads((tmp_path / "out" / "manifest.json").read_text())  # the run up to the base stage
    assert [s["name"] for s in base["stages"]] == ["read", "dedup_exact", "write"]
    out = json.loads((tmp_path / "out" / "validate.json").read_text())  # {variant: {...}}, as issue 6 has it
    assert list(out) == ["random", "../concat"]
    assert sorted(p.name for p in (tmp_path / "out" / "validate" / "variants").iterdir()) == ["%..%2Fconcat", "random"]
    assert not (tmp_path / "out" / "validate" / "concat").exists() and (tmp_path / "out" / "validate" / "runs" / "%..%2Fconcat" / "seed_0").is_dir()
    for v in out.values():
        assert v["tokens"] == 4096 and v["heldout_loss"] > 0 and v["heldout_bpb"] > 0 and v["seconds"] > 0
        assert set(v["per_domain"]) == {"code", "docs", "fiction", "hq", "reference"} and len(v["seeds_loss"]) == 3
        assert v["seeds"] == [0, 1, 2]
    assert "comparison" not in out["random"] and out["../concat"]["compared_with"] == "random"
    verdict = out["../concat"]["comparison"]["heldout_loss"]
    assert verdict["verdict"] in ("within noise", "lower", "higher")
    assert verdict["difference"] == pytest.approx(out["../concat"]["heldout_loss"] - out["random"]["heldout_loss"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Validation" in report and "| random |" in report and (tmp_path / "out" / "plots" / "validate-loss.png").is_file()
    printed = capsys.readouterr().out
    assert "../concat vs random" in printed
    runs = tmp_path / "out" / "validate" / "runs"
    trained = {p: p.stat().st_mtime_ns for p in runs.rglob("train.json")}
    assert len(trained) == 6
    assert winnow(["validate", str(cfg)]) == 0  # unchanged: every step and (variant, seed) run reused
    assert json.loads((tmp_path / "out" / "validate.json").read_text()) == out
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("train.json")} == trained
    assert "skipped, unchanged" in capsys.readouterr().out
    # [validate] parallel = 2: the seeds train in two spawned processes, to the same results
    from dataclasses import replace

    from flows.validate import _train_seeds
    from training.loop import TrainConfig

    root = tmp_path / "out" / "validate"
    one = TrainConfig(data=str(root / "variants" / "random"), output="", tokens=4096, tokens_per_batch=512,
                      model={"d_model": 32, "n_layers": 1, "n_heads": 2}, tokenizer=str(root / "tokenizer.json"),
                      heldout=str(root / "heldout"), eval_max_tokens=3000, resume=False, threads=1)
    done = {}
    for parallel in (1, 2):
        tcfgs = [replace(one, seed=k, output=str(tmp_path / f"p{parallel}" / f"seed_{k}")) for k in (0, 1)]
        done[parallel] = _train_seeds(tcfgs, parallel, tmp_path / "out", root / "variants" / "random",
                                      root / "heldout", str(root / "tokenizer.json"), None, ["a", "b"])
    assert [r["seed"] if "seed" in r else r["config"]["seed"] for r in done[2]] == [0, 1]
    assert [(r["final_loss"], r["heldout"]["loss"]) for r in done[2]] == \
        [(r["final_loss"], r["heldout"]["loss"]) for r in done[1]]
    assert done[1][0]["final_loss"] != done[1][1]["final_loss"]
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('buckets = "5..7"', 'buckets = "7-5"'))
    assert winnow(["validate", str(bad), "--overwrite"]) == 2
    assert "validate.buckets" in capsys.readouterr().err
