"""datatrove's MinHash signature step on a list of texts; run by bench/.peers/bin/python (a venv of
its own, because datatrove's pins do not belong in Winnow's). Prints one JSON object.

Usage: _peer_datatrove.py TEXTS.json NUM_PERM NGRAM REPEAT

What is timed is what `MinhashDedupSignature.run` does per document before it writes: its
`get_shingles` (simplify_text, spaCy's blank English word tokenizer, xxhash64 of each joined
n-gram) and `get_signature` ((a * x + b) mod 2^61-1 for every shingle and permutation, min per
permutation, split into buckets). The struct packing into one file per bucket and the sort of
each bucket file that `run` does afterwards are left out, so this flatters datatrove a little.
Timed in CPU seconds of this process, as the bench times Winnow and datasketch.
"""
import json
import os
import sys
import tempfile
import time


def main(path: str, num_perm: int, ngram: int, repeat: int) -> None:
    from importlib.metadata import version

    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    with open(path) as f:
        texts = json.load(f)
    # num_buckets x hashes_per_bucket = num_perm; the banding only matters for the later stages.
    per_bucket = 8 if num_perm % 8 == 0 else 1
    config = MinhashConfig(n_grams=ngram, num_buckets=num_perm // per_bucket, hashes_per_bucket=per_bucket, seed=1)
    step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(prefix="winnow-dt-"), config=config)
    assert step.num_hashes == num_perm
    step.get_signature(step.get_shingles("warm up the tokenizer and the parameters once"))

    best = None
    for _ in range(repeat):
        shingle_s = signature_s = 0.0
        shingles_total = empty = 0
        for text in texts:
            t0 = time.process_time()
            sh = step.get_shingles(text)
            t1 = time.process_time()
            if sh.size:  # run() skips documents without an n-gram
                step.get_signature(sh)
            else:
                empty += 1
            t2 = time.process_time()
            shingle_s += t1 - t0
            signature_s += t2 - t1
            shingles_total += sh.size
        total = shingle_s + signature_s
        if best is None or total < best["seconds"]:
            best = {"seconds": total, "shingle_s": shingle_s, "signature_s": signature_s,
                    "shingles": shingles_total, "skipped_docs": empty}
    best.update({
        "version": version("datatrove"),
        "config": f"n_grams={ngram}, {config.num_buckets} buckets x {config.hashes_per_bucket} hashes, "
                  f"{config.hash_config}",
        "docs": len(texts),
        "pid": os.getpid(),
    })
    print(json.dumps(best))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
