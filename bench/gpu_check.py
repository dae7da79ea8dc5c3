"""The GPU checks of the training loop, as one short script for a lent GPU machine.

Here (the development machine, with the project's venv):

    .venv/bin/python bench/gpu_check.py --prepare bench/.gpu

builds what the checks read, about 15 MB, with Winnow's own CLI: the sample pool exported as
dataset-decomposition shards (buckets 6..11, a byte-level BPE of 8,192 entries), the held-out
split exported per domain with that tokenizer, and the pool's token ids for `bench_train.py`
(`--save-docs`). `bench/.gpu/` is ignored by git; the device tool carries it.

There (the GPU machine's own python3 with torch; no Spark, no Prefect, no `datasets` needed):

    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --run bench/.gpu --out "$OUT"

runs, in order, writing ``<out>/gpu_check.json`` after every phase (a timeout still returns
what finished):

1. ``env``: torch, CUDA and the GPU's name.
2. ``resume``: `training.loop.train` with the loop's GPU defaults (bf16 autocast, torch.compile)
   for ``--resume-steps`` steps, against the same run stopped after a checkpoint and resumed;
   records whether the losses after the checkpoint are the same and the largest difference (on a
   GPU the run is seeded, not bit-reproducible: atomics in the embedding's backward).
3. ``train``: a ``--tokens`` run with the GPU defaults and the same run eager in fp32: tokens per
   second, training loss and held-out loss and bits per byte per domain of each.
4. ``bench``: `bench/bench_train.py` (decomposition against concat-and-chunk at lengths 512,
   1024, 2048) with the GPU defaults, as `<out>/bench_train.json`.

``--device cpu --quick --compile aot_eager`` runs the same phases here in about 2 minutes (tiny
model, few steps), which is how the script itself is checked before a GPU is spent on it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BUCKETS = "6..11"


def prepare(folder: Path) -> None:
    winnow = [str(Path(sys.executable).with_name("winnow"))]
    export, heldout = folder / "export", folder / "heldout"
    run = lambda *a: subprocess.run([*winnow, *map(str, a)], check=True)  # noqa: E731
    run("export", REPO / "data" / "sample" / "pool", "--output", export, "--vocab-size", 8192,
        "--buckets", BUCKETS, "--tail", "drop", "--overwrite")
    run("export", REPO / "data" / "eval" / "heldout.jsonl.zst", "--output", heldout, "--tokenizer",
        export / "tokenizer.json", "--buckets", BUCKETS, "--tail", "keep", "--by-domain", "--domain-field", "domain",
        "--overwrite")
    sys.path.insert(0, str(REPO / "bench"))
    from bench_train import pool_docs, save_docs

    save_docs(str(folder / "docs.npz"), *pool_docs())
    for sub in (export, heldout):  # the checks read the shards only: leave the Parquet copies behind
        for name in ("kept", "removed", "_work"):
            shutil.rmtree(sub / name, ignore_errors=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"prepared {folder}: {size / 1e6:.1f} MB")


def run_checks(folder: Path, out: Path, args) -> None:
    import torch

    from training.loop import TrainConfig, compile_setting, train

    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="winnow-gpu-check-"))
    compile_ = compile_setting(args.compile)
    base = dict(data=str(folder / "export"), tokens_per_batch=args.tokens_per_batch, model={"size": args.size},
                device=args.device, compile=compile_, lr=2e-3, seed=0)

    def env():
        gpu = torch.cuda.is_available()
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
                "gpu": torch.cuda.get_device_name() if gpu else None, "bf16": bool(gpu and torch.cuda.is_bf16_supported())}

    def resume():
        steps = args.resume_steps
        cfg = dict(base, tokens=steps * args.tokens_per_batch, resume=False)
        whole = train(TrainConfig(**cfg, output=str(work / "resume-whole")))
        every, stop_at = steps // 2, steps // 2 + 2

        class Stop(Exception):
            pass

        def crash(step, loss):
            if step == stop_at:
                raise Stop

        cut = TrainConfig(**{**cfg, "resume": True, "checkpoint_every": every}, output=str(work / "resume-cut"))
        try:
            train(cut, on_step=crash)
        except Stop:
            pass
        resumed = train(cut)
        a = [c[2] for c in whole["curve"]]
        b = [c[2] for c in resumed["curve"]]
        return {"steps": steps, "checkpoint_step": every, "stopped_at": stop_at, "precision": whole["precision"],
                "compile": whole["compile"], "identical": a == b,
                "max_abs_loss_difference": max(abs(x - y) for x, y in zip(a[every:], b[every:])),
                "losses_whole": a, "losses_resumed": b}

    def train_both():
        rows = {}
        for name, extra in (("gpu_defaults", {}), ("eager_fp32", {"precision": "fp32", "compile": False})):
            r = train(TrainConfig(**{**base, **extra}, tokens=args.tokens, resume=False,
                                  output=str(work / f"train-{name}"), heldout=str(folder / "heldout")))
            rows[name] = {k: r[k] for k in ("device", "precision", "compile", "parameters", "steps", "tokens",
                                            "seconds", "tokens_per_second", "final_loss", "heldout")}
        rows["speedup"] = rows["gpu_defaults"]["tokens_per_second"] / rows["eager_fp32"]["tokens_per_second"]
        return rows

    def bench():
        cmd = [sys.executable, str(REPO / "bench" / "bench_train.py"), "--size", args.size, "--docs",
               str(folder / "docs.npz"), "--device", args.device, "--compile", args.compile,
               "--steps", str(args.bench_steps), "--json", str(out / "bench_train.json")]
        if args.quick:
            cmd += ["--lengths", "512", "--tokens-per-batch", "4096"]
        subprocess.run(cmd, check=True)
        return json.loads((out / "bench_train.json").read_text())

    report: dict = {"phases": {}}
    wanted = args.only.split(",") if args.only else None
    for name, fn in (("env", env), ("resume", resume), ("train", train_both), ("bench", bench)):
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # recorded; the later phases still run and say something
            result = {"error": f"{type(exc).__name__}: {exc}"}
        report["phases"][name] = {**result, "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(report["phases"][name])[:2000], flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check done: {out / 'gpu_check.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", metavar="DIR", help="build the inputs (needs the project's venv)")
    ap.add_argument("--run", metavar="DIR", help="run the checks on inputs built by --prepare")
    ap.add_argument("--out", metavar="DIR", default=os.environ.get("OUT", "out/gpu_check"))
    ap.add_argument("--work", metavar="DIR", default=None, help="run directories (default: a new temp dir)")
    ap.add_argument("--only", default=None, help="comma-separated phases: env,resume,train,bench")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default="auto", help="auto (on a GPU only), none, or a torch.compile backend")
    ap.add_argument("--size", default="small")
    ap.add_argument("--tokens", type=int, default=8 * 2**20)
    ap.add_argument("--tokens-per-batch", type=int, default=65536)
    ap.add_argument("--resume-steps", type=int, default=24)
    ap.add_argument("--bench-steps", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny model, few tokens (for CPU)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.tokens, args.tokens_per_batch, args.resume_steps, args.bench_steps = "tiny", 32768, 4096, 8, 3
    if args.prepare:
        prepare(Path(args.prepare))
    if args.run:
        run_checks(Path(args.run), Path(args.out), args)
    if not (args.prepare or args.run):
        ap.error("give --prepare DIR, --run DIR, or both")


if __name__ == "__main__":
    main()
