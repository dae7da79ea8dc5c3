"""The plain datasketch script a user would write instead of `winnow dedup`: the peer of
bench_dedup_e2e.py, kept that plain on purpose (one process, no tricks).

    python bench/peer_datasketch.py FILE.jsonl.gz [FILE ...] [--threshold 0.8] [--num-perm 128]

Reads every file, a MinHash(num_perm) per document over its lowercased word 5-grams
(`update_batch`), a MinHashLSH(threshold) over them, then union-find over each document's query
results; keeps the first document of each set. Prints one JSON line: documents, removed, seconds.
"""
from __future__ import annotations

import argparse
import gzip
import json
import time

from datasketch import MinHash, MinHashLSH


def shingles(text: str, n: int = 5) -> list[bytes]:
    words = text.lower().split()
    if len(words) < n:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    args = parser.parse_args()
    start = time.perf_counter()

    ids, sigs = [], []
    for path in args.files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                m = MinHash(num_perm=args.num_perm)
                m.update_batch(shingles(doc["text"] or ""))
                ids.append(doc["id"])
                sigs.append(m)

    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    for i, m in enumerate(sigs):
        lsh.insert(i, m)

    parent = list(range(len(ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the first document of a set is its root

    removed = sum(1 for i in range(len(ids)) if find(i) != i)
    print(json.dumps({"documents": len(ids), "removed": removed,
                      "seconds": round(time.perf_counter() - start, 2)}))


if __name__ == "__main__":
    main()
