"""Stage `dedup_minhash` against datasketch and datatrove: signature throughput per core, precision
and recall against the exact truth of the sample pool, and whole-stage time and memory at 1x, 2x
and 4x the pool.

Usage: bench/bench_dedup_minhash.py [--quick] [--only throughput,quality,scaling]
                                    [--scales 1,2,4] [--seeds 5] [--no-install] [--json FILE]

1. Throughput, one process, the pool's documents, K = 256, word 5-grams, in CPU seconds:
   - winnow:     the compiled kernel the stage runs (`minhash_numba.token_hashes` + its signature
                 pass) per batch of 10,000 documents, as the stage's `mapInArrow` kernel does per
                 Arrow batch, after one call that loads it (from numba's cache, or compiles it);
                 and the numpy reference (`minhash_kernel.shingle_hashes` +
                 `signatures_of_shingles`), which it matches bit for bit;
   - datasketch: per document `MinHash(num_perm=256).update_batch(shingles)`, the shingles being
                 the UTF-8 word 5-grams of `minhash_kernel.tokens` (Winnow's normalization); the
                 shingling is timed with datasketch, which does not shingle by itself;
   - datatrove:  `MinhashDedupSignature.get_shingles` + `get_signature` (its own normalization and
                 spaCy tokenizer), 32 buckets x 8 hashes = 256, in the peer venv `bench/.peers`
                 (created on first use; see `PEERS_INSTALL`), through `bench/_peer_datatrove.py`.
2. Quality against data/sample/minhash_truth.jsonl (exact Jaccard >= 0.8 components, first
   occurrence survives): Winnow's stage (check = signature, none, exact) on the pool read as in
   data/configs/demo.toml (minus the broken feed), and datasketch `MinHashLSH` at the same K, b, r
   with union-find over its candidates and the same survivor rule, over several seeds.
3. Scaling: the whole stage (apply, collect the removed ids, count the kept) on 1x, 2x, 4x the
   pool with local[2], each scale in a fresh process (fresh driver and JVM) so that memory peaks
   are its own. Copies are *distinct*: copy c tags every run of letters and digits
   (`_common.tag_words`), so the corpus is c disjoint pools, each with exactly the pool's
   near-duplicate structure, and the work per document stays the same.
   Peak memory is sampled from /proc every 0.2 s: driver Python RSS, JVM RSS, Python workers PSS.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, TreeMemory, make_corpus, spark_session, vm_hwm_kib

sys.path.insert(0, str(REPO / "data"))

K = 256
NGRAM = 5
BATCH = 10_000
PEERS = REPO / "bench" / ".peers"
PEERS_INSTALL = ["datatrove[processing]==0.10.1", "spacy==3.8.18", "numpy"]
TRUTH = REPO / "data" / "sample" / "minhash_truth.jsonl"
# Throughput is timed in CPU seconds of the (single-threaded) process: docs per CPU-second is docs
# per second on one core, and it holds up when something else shares the machine.
CLOCK = time.process_time


def pool() -> list[tuple[str, str]]:
    from build_minhash_truth import pool_documents

    return [(i, t or "") for i, t in pool_documents()]


# --- 1. signature throughput ---------------------------------------------------------------------

def winnow_signatures(texts: list[str]) -> tuple[float, float]:
    """(shingling seconds, signature seconds) of the stage's kernel over batches of BATCH."""
    from pipelines import minhash_kernel as mk

    perms = mk.permutations(K, 1)
    shingle_s = sig_s = 0.0
    for lo in range(0, len(texts), BATCH):
        t0 = CLOCK()
        shingles = [mk.shingle_hashes(t, NGRAM) for t in texts[lo:lo + BATCH]]
        t1 = CLOCK()
        sigs = mk.signatures_of_shingles(shingles, perms)
        t2 = CLOCK()
        assert sigs.shape == (len(shingles), K)
        shingle_s += t1 - t0
        sig_s += t2 - t1
    return shingle_s, sig_s


def winnow_compiled(texts: list[str]) -> tuple[float, float]:
    """(tokens and token hashes seconds, shingles and signatures seconds) of the compiled kernel."""
    from pipelines import minhash_kernel as mk
    from pipelines import minhash_numba as mn

    perms = mk.permutations(K, 1)
    a, b, consts = perms.a.ravel(), perms.b.ravel(), mk._order_constants(NGRAM)
    shingle_s = sig_s = 0.0
    for lo in range(0, len(texts), BATCH):
        t0 = CLOCK()
        th, off = mn.token_hashes(texts[lo:lo + BATCH])
        t1 = CLOCK()
        sigs = mn._signatures(th, off, NGRAM, consts, a, b)
        t2 = CLOCK()
        assert sigs.shape == (len(off) - 1, K)
        shingle_s += t1 - t0
        sig_s += t2 - t1
    return shingle_s, sig_s


def compiled_load_seconds() -> float | None:
    """Wall seconds of the compiled kernel's first call in this process: importing numba and
    loading the kernel from its cache (or compiling it, the first time on a machine)."""
    from pipelines import minhash_numba as mn

    if not mn.AVAILABLE:
        return None
    t0 = time.perf_counter()
    mn.signatures(["warm up"], K, NGRAM, 1)
    return time.perf_counter() - t0


def winnow_breakdown(texts: list[str]) -> dict[str, float]:
    """Where the kernel's time goes, step by step (same work as `winnow_signatures`)."""
    from filters import text as text_module
    from filters.text import normalize
    from pipelines import minhash_kernel as mk

    out = {}
    t0 = CLOCK()
    norm = [normalize(t, "aggressive") for t in texts]
    out["filters.text.normalize(aggressive)"] = CLOCK() - t0
    t0 = CLOCK()
    toks = [mk.tokens(t) for t in texts]
    out["minhash_kernel.tokens (incl. normalize)"] = CLOCK() - t0
    non_ascii = [t for t in texts if not t.isascii()]
    share = sum(map(len, non_ascii)) / max(1, sum(map(len, texts)))
    t0 = CLOCK()
    for t in non_ascii:
        mk.tokens(t)
    out[f"  of it, the {len(non_ascii)} non-ASCII docs ({share:.0%} of chars)"] = CLOCK() - t0
    strip = getattr(text_module, "_strip_diacritics", None)
    if strip is not None:  # a private helper: skip the line if it is renamed
        t0 = CLOCK()
        for t in non_ascii:
            strip(strip(t).lower())
        out["  of that, filters.text._strip_diacritics x 2"] = CLOCK() - t0
    t0 = CLOCK()
    th = [mk.token_hashes(x) for x in toks]
    out["minhash_kernel.token_hashes (xxh3 per token)"] = CLOCK() - t0
    t0 = CLOCK()
    sh = [mk._shingles_of(x, NGRAM) for x in th]
    out["minhash_kernel._shingles_of"] = CLOCK() - t0
    perms = mk.permutations(K, 1)
    t0 = CLOCK()
    for lo in range(0, len(sh), BATCH):
        mk.signatures_of_shingles(sh[lo:lo + BATCH], perms)
    out["minhash_kernel.signatures_of_shingles"] = CLOCK() - t0
    del norm
    return out


def datasketch_shingles(text: str) -> list[bytes]:
    """Word NGRAM-grams of Winnow's tokens, as bytes; fewer than NGRAM tokens make one shingle of
    all of them and no token one empty shingle, as in `minhash_kernel`."""
    from pipelines import minhash_kernel as mk

    tk = mk.tokens(text)
    return [" ".join(tk[i:i + NGRAM]).encode("utf-8", "surrogatepass") for i in range(max(len(tk) - NGRAM + 1, 1))]


def datasketch_signatures(texts: list[str]) -> tuple[float, float]:
    from datasketch import MinHash

    shingle_s = sig_s = 0.0
    for t in texts:
        t0 = CLOCK()
        grams = datasketch_shingles(t)
        t1 = CLOCK()
        m = MinHash(num_perm=K)
        m.update_batch(grams)
        t2 = CLOCK()
        shingle_s += t1 - t0
        sig_s += t2 - t1
    return shingle_s, sig_s


def datasketch_bulk(texts: list[str]) -> tuple[float, float]:
    """datasketch's own fast path for many documents: `MinHash.bulk` shares one permutation set."""
    from datasketch import MinHash

    t0 = CLOCK()
    grams = [datasketch_shingles(t) for t in texts]
    t1 = CLOCK()
    MinHash.bulk(grams, num_perm=K)
    return t1 - t0, CLOCK() - t1


def best_of(fn, texts, repeat: int) -> tuple[float, float]:
    runs = [fn(texts) for _ in range(repeat)]
    return min(runs, key=sum)


def ensure_peers(install: bool) -> Path | None:
    """The peer venv's python, creating the venv on first use; None (with a message) if it
    cannot be had. The command it runs:
        python -m venv bench/.peers
        bench/.peers/bin/pip install 'datatrove[processing]==0.10.1' spacy==3.8.18 numpy
    """
    py = PEERS / "bin" / "python"
    probe = [str(py), "-c", "import datatrove.pipeline.dedup.minhash, spacy"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    if not install:
        print(f"  datatrove: skipped, no usable peer venv at {PEERS} (run without --no-install to create it)")
        return None
    print(f"  creating the peer venv {PEERS} (datatrove, spaCy; once, about a minute) ...", flush=True)
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS_INSTALL], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except (subprocess.CalledProcessError, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        print(f"  datatrove: skipped, could not create the peer venv: {detail.strip().splitlines()[-1:]}")
        return None
    if subprocess.run(probe, capture_output=True).returncode != 0:
        print("  datatrove: skipped, the peer venv cannot import datatrove's MinHash and spaCy")
        return None
    return py


def datatrove_signatures(texts: list[str], install: bool, repeat: int) -> dict | None:
    py = ensure_peers(install)
    if py is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        proc = subprocess.run(
            [str(py), str(REPO / "bench" / "_peer_datatrove.py"), f.name, str(K), str(NGRAM), str(repeat)],
            capture_output=True, text=True, env=env, timeout=1800,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        print(f"  datatrove: skipped, the peer process failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(docs: list[tuple[str, str]], quick: bool, install: bool) -> dict:
    texts = [t for _, t in docs]
    if quick:
        texts = texts[::4]
    n = len(texts)
    chars = sum(map(len, texts))
    print(f"\n1. signature throughput: {n:,} pool documents ({chars / 1e6:.1f} M characters), K = {K}, "
          f"word {NGRAM}-grams, one process; CPU seconds, so docs/s is per core")
    rep = 2 if quick else 3
    load = compiled_load_seconds()
    wc = best_of(winnow_compiled, texts, rep) if load is not None else None
    w = best_of(winnow_signatures, texts, rep)
    d = best_of(datasketch_signatures, texts, 1 if quick else 2)
    db = best_of(datasketch_bulk, texts, 1 if quick else 2)
    dt = datatrove_signatures(texts, install, 1)

    def line(name, parts, note=""):
        total = sum(parts)
        print(f"  {name:<34} {total:6.2f} CPU s {n / total:7,.0f} docs/s   "
              f"(shingling {parts[0]:5.2f} s, signatures {parts[1]:5.2f} s){note}")

    if wc is not None:
        line("winnow compiled kernel (numba)", wc)
        print(f"    its first call in this process (import numba, load or compile): {load:.2f} s wall")
    line("winnow numpy reference kernel", w)
    ours = wc if wc is not None else w
    line("datasketch MinHash per document", d, f"   winnow/peer = {sum(d) / sum(ours):.2f}x")
    line("datasketch MinHash.bulk", db, f"   winnow/peer = {sum(db) / sum(ours):.2f}x")
    if dt is not None:
        line(f"datatrove {dt['version']} signature step", (dt["shingle_s"], dt["signature_s"]),
             f"   winnow/peer = {dt['seconds'] / sum(ours):.2f}x")
        print(f"    datatrove: {dt['config']}; {dt['skipped_docs']} documents with fewer than {NGRAM} "
              "words have no n-gram and no signature")
    bd = winnow_breakdown(texts)
    print("  where the numpy reference kernel's time goes (one pass, CPU seconds):")
    for name, s in bd.items():
        print(f"    {name:<52} {s:6.2f}")
    return {"docs": n, "winnow_compiled": wc, "compiled_load_s": load, "winnow": w, "datasketch": d, "datasketch_bulk": db, "datatrove": dt, "breakdown": bd}


# --- 2. precision and recall ---------------------------------------------------------------------

def truth_labels() -> dict[str, float]:
    """True near-duplicate id -> its highest exact Jaccard with another document."""
    with TRUTH.open() as f:
        return {r["id"]: r["max_jaccard"] for r in map(json.loads, filter(str.strip, f))}


def pr(removed: set[str], truth: set[str]) -> tuple[int, float, float]:
    tp = len(removed & truth)
    return tp, (tp / len(removed) if removed else 1.0), tp / len(truth)


def pool_frame(spark):
    """The pool as the stage sees it in the demo flow: demo.toml's inputs minus the broken feed."""
    import tomllib

    from pipelines import read
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    config = REPO / "data" / "configs" / "demo.toml"
    with config.open("rb") as f:
        inputs = tomllib.load(f)["inputs"]
    specs = tuple(
        InputSpec(str((config.parent / i["path"]).resolve()), i["source"], i.get("domain", "default"))
        for i in inputs if "broken" not in i["path"]
    )
    ctx = StageContext(spark=spark)
    df = read.apply(None, ReadParams(specs), ctx).kept
    return df, ctx


def run_stage(spark, df, params) -> tuple[float, set[str], int, dict]:
    from pipelines import dedup_minhash
    from pipelines.stage import StageContext

    ctx = StageContext(spark=spark)
    t0 = time.perf_counter()
    result = dedup_minhash.apply(df, params, ctx)
    removed = {r["id"] for r in result.removed.select("id").collect()}
    kept = result.kept.count()
    seconds = time.perf_counter() - t0
    ctx.release()
    return seconds, removed, kept, result.stats


def union_find_removed(n: int, pairs) -> set[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the root is the smallest index: the first occurrence
    return {i for i in range(n) if find(i) != i}


def datasketch_lsh(docs, grams, bands: int, rows: int, seed: int) -> tuple[set[str], float, int]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    sketches = MinHash.bulk(grams, num_perm=K, seed=seed)
    lsh = MinHashLSH(num_perm=K, params=(bands, rows))
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m)
    pairs = {(min(i, j), max(i, j)) for i, m in enumerate(sketches) for j in lsh.query(m) if j != i}
    removed = union_find_removed(len(docs), pairs)
    return {docs[i][0] for i in removed}, time.perf_counter() - t0, len(pairs)


def quality(spark, docs, seeds: int, quick: bool) -> dict:
    from pipelines.dedup_minhash import DedupMinhashParams

    labels = truth_labels()
    truth = set(labels)
    default = DedupMinhashParams()
    bands, rows = default.banding()
    print(f"\n2. precision / recall against {TRUTH.relative_to(REPO)}: {len(docs):,} documents, "
          f"{len(truth)} true near-duplicates (exact Jaccard >= {default.threshold}), "
          f"K = {K}, b x r = {bands} x {rows}, seeds 1-{seeds}")
    df, read_ctx = pool_frame(spark)
    n = df.count()
    assert n == len(docs), (n, len(docs))
    # One untimed run on a slice first: the first jobs of a session pay the JVM's warm-up.
    from pyspark.sql import functions as F

    run_stage(spark, df.where(F.col("_row") <= 200), DedupMinhashParams())

    def winnow(check: str, seed: int, probes: int = default.probes) -> dict:
        seconds, removed, kept, stats = run_stage(spark, df, DedupMinhashParams(check=check, seed=seed, probes=probes))
        assert kept + len(removed) == n
        tp, p, r = pr(removed, truth)
        return {"check": check, "seed": seed, "removed": len(removed), "tp": tp, "precision": p, "recall": r,
                "seconds": seconds, "candidates": stats.get("candidate_pairs"),
                "missed_max_jaccard": sorted(labels[i] for i in truth - removed)}

    runs = {"signature": [winnow("signature", s) for s in range(1, seeds + 1)]}
    for check in () if quick else ("none", "exact"):
        runs[check] = [winnow(check, 1)]
    if not quick:
        runs["plain"] = [winnow("signature", s, probes=1) for s in range(1, seeds + 1)]
    read_ctx.release()

    grams = [datasketch_shingles(t) for _, t in docs]
    ds = []
    for seed in range(1, seeds + 1):
        removed, seconds, cands = datasketch_lsh(docs, grams, bands, rows, seed)
        tp, p, r = pr(removed, truth)
        ds.append({"seed": seed, "removed": len(removed), "tp": tp, "precision": p, "recall": r,
                   "seconds": seconds, "candidates": cands})

    print(f"  {'method':<40} {'removed':>7} {'true':>5} {'precision':>9} {'recall':>7} {'cand.':>6} {'time':>7}")

    def row(name: str, rs: list[dict], agg=None) -> None:
        agg = agg or (lambda xs: list(xs)[0])
        def num(v, width: int) -> str:
            return f"{v:>{width}.1f}" if isinstance(v, float) and not v.is_integer() else f"{int(v):>{width}}"

        print(f"  {name:<40} {num(agg(r['removed'] for r in rs), 7)} {num(agg(r['tp'] for r in rs), 5)} "
              f"{agg(r['precision'] for r in rs):>9.4f} {agg(r['recall'] for r in rs):>7.4f} "
              f"{num(agg(r['candidates'] for r in rs), 6)} {agg(r['seconds'] for r in rs):>6.1f}s")

    row("winnow check=signature (default), seed 1", runs["signature"][:1])
    for check in ("none", "exact"):
        if check in runs:
            row(f"winnow check={check}, seed 1", runs[check])
    for name, agg in (("mean", statistics.mean), ("min", min)):
        row(f"winnow default, {seeds} seeds, {name}", runs["signature"], agg)
    if "plain" in runs:
        for name, agg in (("mean", statistics.mean), ("min", min)):
            row(f"winnow probes=1 (plain bands), {seeds} seeds, {name}", runs["plain"], agg)
    for name, agg in (("mean", statistics.mean), ("min", min)):
        row(f"datasketch MinHashLSH, {seeds} seeds, {name}", ds, agg)
    for name, rs in (("winnow default", runs["signature"]), ("datasketch", ds)):
        print(f"    {name} per seed (precision/recall): "
              + ", ".join(f"{r['seed']}: {r['precision']:.4f}/{r['recall']:.4f}" for r in rs))
    print("    winnow default, seed 1, misses true duplicates whose best exact Jaccard is: "
          f"{runs['signature'][0]['missed_max_jaccard']}")
    print("    cand. = winnow: distinct (member, bucket anchor or previous member) pairs before the check; datasketch: distinct "
          "colliding pairs")
    print("    time = winnow: the whole Spark stage, local[2]; datasketch: one process, signatures (MinHash.bulk) "
          "+ LSH + union-find, shingling excluded")
    return {"winnow": runs, "datasketch": ds}


# --- 3. scaling ------------------------------------------------------------------------------------

def scale_child(copies: int) -> None:
    """One scale in this (fresh) process: prints one JSON line."""
    from pyspark.sql import functions as F

    from pipelines import read
    from pipelines.dedup_minhash import DedupMinhashParams
    from pipelines.read import InputSpec, ReadParams
    from pipelines.stage import StageContext

    corpus, n = make_corpus(copies, files=4, distinct=True)
    spark = spark_session("local[2]")
    ctx = StageContext(spark=spark)
    staged = str(corpus / "staged.parquet")
    read.apply(None, ReadParams((InputSpec(str(corpus), "bench"),)), ctx).kept.write.mode("overwrite").parquet(staged)
    ctx.release()
    df = spark.read.parquet(staged).cache()
    assert df.count() == n
    # Warm the JVM and the Python workers on a small slice, untimed.
    run_stage(spark, df.where(F.col("_row") <= 200), DedupMinhashParams())
    before = vm_hwm_kib()
    with TreeMemory() as mem:
        seconds, removed, kept, stats = run_stage(spark, df, DedupMinhashParams())
    assert kept + len(removed) == n
    print(json.dumps({
        "copies": copies, "docs": n, "seconds": seconds, "cpu_seconds": mem.cpu_seconds, "removed": len(removed),
        "candidates": stats["candidate_pairs"], "cc_rounds": stats["cc_rounds"],
        "memory_mib": mem.mib(), "driver_hwm_mib": vm_hwm_kib() / 1024, "driver_hwm_before_mib": before / 1024,
        "partitions": df.rdd.getNumPartitions(),
    }))
    spark.stop()
    shutil.rmtree(corpus, ignore_errors=True)


def scaling(scales: list[int]) -> list[dict]:
    print(f"\n3. whole stage (apply + collect removed ids + count kept), local[2], default params, "
          f"pool x {', '.join(map(str, scales))} (distinct word-tagged copies), one fresh process each")
    out = []
    for copies in scales:
        proc = subprocess.run([sys.executable, __file__, "--scale-child", str(copies)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            raise SystemExit(f"scale {copies} failed")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = out[0]
    print(f"  {'x':>3} {'docs':>7} {'seconds':>8} {'docs/s':>7} {'vs 1x':>6} {'CPU s':>6} {'vs 1x':>6} {'removed':>7} {'cand.':>7} "
          f"{'parts':>5} {'driver py':>9} {'JVM':>7} {'workers':>8} {'1 worker':>8}")
    for r in out:
        m = r["memory_mib"]
        print(f"  {r['copies']:>3} {r['docs']:>7,} {r['seconds']:>8.1f} {r['docs'] / r['seconds']:>7,.0f} "
              f"{r['seconds'] / base['seconds']:>5.2f}x {r['cpu_seconds']:>6.1f} {r['cpu_seconds'] / base['cpu_seconds']:>5.2f}x "
              f"{r['removed']:>7,} {r['candidates']:>7,} {r['partitions']:>5} "
              f"{m['driver']:>7.0f}Mi {m['jvm']:>5.0f}Mi {m['workers']:>6.0f}Mi {m['worker_max']:>6.0f}Mi")
    if len(out) >= 2:
        import numpy as np

        slope, fixed = np.polyfit([r["docs"] for r in out], [r["seconds"] for r in out], 1)
        print(f"    least-squares fit: seconds = {fixed:.1f} + {slope * 1000:.3f} x thousand docs "
              f"(the fixed part is Spark's job and shuffle overhead, paid once per run)")
    print("    CPU s = CPU seconds of the driver, the JVM and the Python workers together during the run; "
          "parts = input partitions")
    print("    memory: peaks sampled every 0.2 s during the run; driver py = the driver's Python RSS, "
          "JVM = RSS of the Spark JVM (driver and, in local mode, executor), workers = PSS summed over "
          "the Python worker processes, 1 worker = the largest worker's RSS")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a quarter of the pool for throughput, fewer runs and seeds, 1x and 2x")
    ap.add_argument("--only", default="throughput,quality,scaling")
    ap.add_argument("--scales", default=None, help="comma-separated pool multiples (default 1,2,4; quick 1,2)")
    ap.add_argument("--seeds", type=int, default=None, help="datasketch seeds (default 5; quick 2)")
    ap.add_argument("--no-install", action="store_true", help="never create the peer venv; skip datatrove without it")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        scale_child(args.scale_child)
        return
    only = set(args.only.split(","))
    scales = [int(x) for x in (args.scales or ("1,2" if args.quick else "1,2,4")).split(",")]
    seeds = args.seeds or (2 if args.quick else 5)
    start = time.perf_counter()
    print(f"dedup_minhash bench, {os.cpu_count()} cores{' (quick)' if args.quick else ''}, "
          f"load average {os.getloadavg()[0]:.2f}")
    if os.getloadavg()[0] > 1.0:
        print("  warning: the machine is busy; timings will be low", flush=True)
    docs = pool()
    results = {}
    if "throughput" in only:
        results["throughput"] = throughput(docs, args.quick, not args.no_install)
    if "quality" in only:
        spark = spark_session("local[2]")
        results["quality"] = quality(spark, docs, seeds, args.quick)
        spark.stop()
    if "scaling" in only:
        results["scaling"] = scaling(scales)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
