"""training/: the model, the batch sources, the loop (loss falls, resume is exact), evaluation
in bits per byte, and `winnow validate` end to end on shards exported from the sample data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.curate import run_curation

from .test_flow import DATA, config, pool_slice  # noqa: F401  (pool_slice is a fixture)

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
name = "concat"
layout = "concat"
seq_len = 128
''')
    assert winnow(["validate", str(cfg)]) == 0
    base = json.loads((tmp_path / "out" / "manifest.json").read_text())  # the run up to the base stage
    assert [s["name"] for s in base["stages"]] == ["read", "dedup_exact", "write"]
    out = json.loads((tmp_path / "out" / "validate.json").read_text())  # {variant: {...}}, as issue 6 has it
    assert list(out) == ["random", "concat"]
    for v in out.values():
        assert v["tokens"] == 4096 and v["heldout_loss"] > 0 and v["heldout_bpb"] > 0 and v["seconds"] > 0
        assert set(v["per_domain"]) == {"code", "docs", "fiction", "hq", "reference"} and len(v["seeds_loss"]) == 3
        assert v["seeds"] == [0, 1, 2]
    assert "comparison" not in out["random"] and out["concat"]["compared_with"] == "random"
    verdict = out["concat"]["comparison"]["heldout_loss"]
    assert verdict["verdict"] in ("within noise", "lower", "higher")
    assert verdict["difference"] == pytest.approx(out["concat"]["heldout_loss"] - out["random"]["heldout_loss"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Validation" in report and "| random |" in report and (tmp_path / "out" / "plots" / "validate-loss.png").is_file()
    printed = capsys.readouterr().out
    assert "concat vs random" in printed
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('buckets = "5..7"', 'buckets = "7-5"'))
    assert winnow(["validate", str(bad), "--overwrite"]) == 2
    assert "validate.buckets" in capsys.readouterr().err
