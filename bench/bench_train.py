"""Training throughput: Dataset Decomposition batches against concat-and-chunk at the same tokens
per batch, for maximum lengths 512, 1024 and 2048, and the attention FLOPs each spends.

Usage: bench/bench_train.py [--size small] [--tokens-per-batch 8192] [--steps 12] [--json FILE]
                            [--device auto|cpu|cuda] [--precision auto|bf16|fp32] [--compile auto|none|BACKEND]
                            [--docs FILE.npz | --save-docs FILE.npz]

- Data: the sample pool (5,645 documents), tokenized with byte-level BPE (8,192 entries, trained on
  the pool), end-of-text appended. `--save-docs` writes those token ids to an .npz and `--docs`
  reads them back, so the bench runs where neither Spark nor the pool's readers are installed
  (a GPU machine: `bench/gpu_check.py`).
- Dataset Decomposition at maximum length L = 2**m: buckets m-5..m (six, as the paper's 8..13),
  `mixers.decomposition.decompose` per document (seed 0, tails dropped); every step is one bucket,
  drawn with probability proportional to the bucket's tokens (the uniform curriculum), of
  ``tokens_per_batch / 2**i`` rows of ``2**i + 1`` tokens.
- Concat-and-chunk: `mixers.decomposition.concat_and_chunk` windows of L + 1 tokens,
  ``tokens_per_batch / L`` rows per step.
- Each step is what `training.loop.train` does: forward, loss, backward, clip, AdamW, on
  `training.model.TransformerLM` (preset `--size`, context L), with the loop's defaults
  (`training.loop.Accel`): `torch.compile` and bf16 autocast on a GPU, eager fp32 on CPU, unless
  `--precision` / `--compile` say otherwise. Timed: `--steps` steps after 3 warm-up steps (when
  compiling, warm-up also covers every bucket shape, so compilation is not timed); tokens/s counts
  input tokens.
- Attention FLOPs per step: `training.model.attention_flops` summed over the rows of the step
  (forward; 2·T²·d per layer for a causal row of T inputs), averaged over the timed steps.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "data"))


def load_docs(path: str) -> tuple[list[np.ndarray], int]:
    """Token ids per document and the vocabulary size from a `--save-docs` file."""
    with np.load(path) as z:
        flat, offsets, vocab = z["tokens"].astype(np.int64), z["offsets"], int(z["vocab_size"])
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])], vocab


def save_docs(path: str, docs: list[np.ndarray], vocab: int) -> None:
    """The token ids of `docs` as one uint16 array with offsets (what `load_docs` reads)."""
    offsets = np.cumsum([0] + [len(d) for d in docs])
    np.savez_compressed(path, tokens=np.concatenate(docs).astype(np.uint16), offsets=offsets, vocab_size=vocab)


def pool_docs() -> tuple[list[np.ndarray], int]:
    """The pool tokenized with an 8,192-entry byte-level BPE trained on it, end-of-text appended."""
    from build_minhash_truth import pool_documents
    from pipelines.tokenize import train_tokenizer

    texts = [t or "" for _, t in pool_documents()]
    tok = train_tokenizer(texts, 8192)
    eot = tok.token_to_id("<|endoftext|>")
    docs = [np.array(e.ids + [eot], dtype=np.int64) for e in tok.encode_batch(texts, add_special_tokens=False)]
    return docs, tok.get_vocab_size()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small")
    ap.add_argument("--tokens-per-batch", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lengths", default="512,1024,2048")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--compile", default="auto", help="auto (on a GPU only), none, or a torch.compile backend")
    ap.add_argument("--docs", default=None, help="token ids from --save-docs instead of tokenizing the pool")
    ap.add_argument("--save-docs", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from mixers.decomposition import concat_and_chunk, decompose
    from training.loop import Accel, compile_setting, lm_loss, pick_device
    from training.model import TransformerLM, attention_flops, model_config

    docs, vocab = load_docs(args.docs) if args.docs else pool_docs()
    if args.save_docs:
        save_docs(args.save_docs, docs, vocab)
    device = pick_device(args.device)
    accel = Accel.of(device, args.precision, compile_setting(args.compile))
    print(f"train bench: {len(docs):,} documents, {sum(map(len, docs)):,} tokens, model {args.size}, "
          f"{args.tokens_per_batch:,} tokens per batch, {accel.describe()}"
          + (f" ({torch.cuda.get_device_name()}, torch {torch.__version__})" if device.type == "cuda"
             else f", {torch.get_num_threads()} threads"))
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        top = int(np.log2(length))
        lo = top - 5
        rng = np.random.default_rng(0)
        buckets: dict[int, list[np.ndarray]] = {}
        for d in docs:
            for c in decompose(d, lo, top, rng, tail="drop").chunks:
                buckets.setdefault(c.bucket, []).append(c.tokens)
        keys = sorted(buckets)
        weights = np.array([len(buckets[k]) * (1 << k) for k in keys], dtype=float)
        windows = np.stack(list(concat_and_chunk(docs, length)))

        def dd_batch(r):
            k = keys[r.choice(len(keys), p=weights / weights.sum())]
            n = args.tokens_per_batch >> k
            pick = r.integers(0, len(buckets[k]), n)
            return np.stack([buckets[k][j] for j in pick])

        def cc_batch(r):
            return windows[r.integers(0, len(windows), args.tokens_per_batch // length)]

        result = {"max_len": length, "buckets": f"{lo}..{top}"}
        for name, make in (("dd", dd_batch), ("concat", cc_batch)):
            torch.manual_seed(0)
            model = TransformerLM(model_config(vocab, args.size, max_seq_len=length)).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
            runner = accel.wrap(model)
            r = np.random.default_rng(1)

            def step(batch):
                x = torch.from_numpy(batch.astype(np.int64, copy=False)).to(device)
                with accel.autocast():
                    loss = lm_loss(runner, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

            warm = [make(r) for _ in range(3)]
            if name == "dd" and accel.backend:  # compile every bucket shape before timing
                warm += [np.stack([buckets[k][0]] * (args.tokens_per_batch >> k)) for k in keys]
            for b in warm:
                step(b)
            timed = [make(r) for _ in range(args.steps)]
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in timed:
                step(b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            tokens = sum(b.shape[0] * (b.shape[1] - 1) for b in timed)
            flops = sum(b.shape[0] * attention_flops(b.shape[1] - 1, model.cfg) for b in timed) / len(timed)
            result[name] = {"tokens_per_s": tokens / seconds, "attention_gflops_per_step": flops / 1e9}
        result["throughput_ratio"] = result["dd"]["tokens_per_s"] / result["concat"]["tokens_per_s"]
        result["attention_flops_ratio"] = (result["dd"]["attention_gflops_per_step"]
                                           / result["concat"]["attention_gflops_per_step"])
        rows.append(result)
        print(f"  max {length:5d} (buckets {lo}..{top})  DD {result['dd']['tokens_per_s']:9,.0f} tok/s  "
              f"concat {result['concat']['tokens_per_s']:9,.0f} tok/s  DD/concat {result['throughput_ratio']:.2f}x   "
              f"attention GFLOPs/step DD {result['dd']['attention_gflops_per_step']:.2f} concat "
              f"{result['concat']['attention_gflops_per_step']:.2f}  DD/concat {result['attention_flops_ratio']:.2f}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**accel.describe(), "torch": torch.__version__, "size": args.size,
                       "tokens_per_batch": args.tokens_per_batch, "steps": args.steps,
                       "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
