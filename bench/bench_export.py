"""Stages `tokenize`, `decompose` and `export` against the same work done by the libraries
themselves in one process, in MB of text per second per core.

Usage: bench/bench_export.py [COPIES]   (the pool repeated COPIES times, default 4: 22,580 docs)

- Tokenizer: byte-level BPE, 8,192 entries, trained once on the pool (`train_tokenizer`).
- Winnow, tokenize: the `tokenize` stage on a cached frame of the corpus, Spark local[2], the
  result materialized through Spark's `noop` sink (every document encoded, every column
  produced, nothing written). Per core = MB/s / 2 (both cores busy).
- Winnow, export: `tokenize` -> `decompose` (buckets 2^5..2^10, as in the demo) -> `export` from
  the same cached text frame to save_to_disk shards in a temp dir, stats included.
- Peer, tokenize: `Tokenizer.encode_batch` over the same texts in batches of 10,000, one
  process, end-of-text appended; timed in CPU seconds (tokenizers runs its own threads, and CPU
  seconds count them all), so MB/s per core = MB / CPU s.
- Peer, export: the same encode, then `mixers.decomposition.decompose` per document and
  `datasets.Dataset.from_dict(...).save_to_disk(...)` per bucket: the script a user would write.
  CPU seconds.
- Ratio: Winnow per core / peer per core (above 1: Winnow is faster).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import numpy as np

from _common import cached_corpus

CORES = 2


def best(fn, repeat: int, clock=time.perf_counter) -> float:
    out = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        out = min(out, clock() - t0)
    return out


def main(copies: int = 4) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
    from build_minhash_truth import pool_documents

    import datasets

    from mixers.decomposition import decompose
    from pipelines import decompose as decompose_stage
    from pipelines import export, tokenize
    from pipelines.decompose import DecomposeParams, document_rng
    from pipelines.export import ExportParams
    from pipelines.stage import StageContext
    from pipelines.tokenize import TokenizeParams, train_tokenizer

    datasets.disable_progress_bars()
    work = tempfile.mkdtemp(prefix="winnow-bench-export-")
    tok = train_tokenizer((t or "" for _, t in pool_documents()), 8192)
    tok_path = os.path.join(work, "tokenizer.json")
    tok.save(tok_path)
    eot = tok.token_to_id("<|endoftext|>")

    spark, df, n = cached_corpus(copies, CORES)
    texts = [r["text"] or "" for r in df.select("id", "text").toLocalIterator()]
    ids = [r["id"] for r in df.select("id").toLocalIterator()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"export bench: {n:,} documents, {mb:.1f} MB of text, Spark local[{CORES}], best of 2 after a warm-up")

    params = TokenizeParams(tokenizer=tok_path)

    def ours_tokenize():
        tokenize.apply(df, params, StageContext(spark=spark)).kept.write.format("noop").mode("overwrite").save()

    def encode_all():
        out = []
        for lo in range(0, len(texts), 10_000):
            out += [e.ids + [eot] for e in tok.encode_batch(texts[lo:lo + 10_000], add_special_tokens=False)]
        return out

    ours_tokenize()
    wall = best(ours_tokenize, 2)
    cpu = best(encode_all, 2, time.process_time)
    ours_pc, peer_pc = mb / wall / CORES, mb / cpu
    print(f"  tokenize           winnow {wall:6.2f} s wall  {ours_pc:6.2f} MB/s per core   "
          f"encode_batch {cpu:6.2f} CPU s  {peer_pc:6.2f} MB/s per core   winnow/peer = {ours_pc / peer_pc:.2f}x")

    dparams = DecomposeParams(min_log2=5, max_log2=10)

    def ours_export():
        out = tempfile.mkdtemp(dir=work)
        c = StageContext(spark=spark, output=out)
        toks = tokenize.apply(df, params, c).kept
        kept = decompose_stage.apply(toks, dparams, c).kept
        export.apply(kept, ExportParams(), c)
        c.release()
        shutil.rmtree(out)

    def peer_export():
        per: dict = {}
        for doc_id, toks in zip(ids, encode_all()):
            for ch in decompose(np.asarray(toks, dtype=np.int32), 5, 10, document_rng(0, doc_id)).chunks:
                slot = per.setdefault(ch.bucket if ch.bucket is not None else "tail", {"id": [], "position": [], "tokens": []})
                slot["id"].append(doc_id)
                slot["position"].append(ch.position)
                slot["tokens"].append(ch.tokens.astype(np.uint16))
        out = tempfile.mkdtemp(dir=work)
        for b, cols in per.items():
            datasets.Dataset.from_dict(cols).save_to_disk(os.path.join(out, f"bucket_{b}"))
        shutil.rmtree(out)

    ours_export()
    wall = best(ours_export, 2)
    cpu = best(peer_export, 1, time.process_time)
    ours_pc, peer_pc = mb / wall / CORES, mb / cpu
    print(f"  tokenize+decompose+export  winnow {wall:6.2f} s wall  {ours_pc:6.2f} MB/s per core   "
          f"one process + save_to_disk {cpu:6.2f} CPU s  {peer_pc:6.2f} MB/s per core   winnow/peer = {ours_pc / peer_pc:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
