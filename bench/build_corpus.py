"""A benchmark corpus from the real sample pool, as a user's crawl would look to `winnow dedup`.

    python bench/build_corpus.py --copies 4 --out /tmp/corpus4 [--files 4] [--seed 0]

- `copies` copies of the pool whose words are tagged per copy (`_common.tag_words`): copy c shares
  no word token with copy c', so copies are *not* near-duplicates of each other, while each keeps
  the pool's own length, layout and near-duplicate structure (the pool's planted duplicates).
- Planted near-duplicate clusters of 2 to 60 members: a pool document of at least 100 words,
  tagged for its cluster, then each member with 1% of its words replaced by seeded random words
  (5-gram Jaccard between two members about 0.9). Cluster sizes are log-uniform in [2, 60];
  clusters hold about a tenth of the corpus's documents. Their ids are `cluster-<k>-<j>`.
- Written twice: `<out>/one/corpus.jsonl.gz` (one file) and `<out>/split/part-<i>.jsonl.gz`
  (`files` files, documents dealt round-robin); `<out>/clusters.json` lists each cluster's ids.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import random
from pathlib import Path

from _common import copy_tag, pool_texts, tag_words

MIN_WORDS = 100          # cluster bases: long enough that a 1% edit leaves most shingles intact
EDIT_FRACTION = 0.01     # words replaced per member
CLUSTER_SHARE = 0.10     # documents in planted clusters, of the whole corpus
SIZES = (2, 60)          # cluster sizes, log-uniform


def cluster_tag(k: int) -> str:
    """Letters only (digits become 0 under MinHash normalization), distinct from copy tags."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    tag = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        tag = letters[r] + tag
    return "zc" + tag


def edited(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * EDIT_FRACTION))):
        words[i] = rng.choice(vocabulary)
    return " ".join(words)


def documents(copies: int, seed: int, clusters: list[list[str]]):
    """Yield (id, text) of the corpus, copies first, then the clusters (their ids appended to
    `clusters`)."""
    pool = pool_texts()
    for c in range(copies):
        for r in pool:
            text = tag_words(r["text"], copy_tag(c)) if c and r["text"] else r["text"]
            yield f"{r['id']}-{c}", text
    rng = random.Random(seed)
    bases = [r["text"] for r in pool if r["text"] and len(r["text"].split()) >= MIN_WORDS]
    vocabulary = sorted({w for t in bases[:200] for w in t.split() if w.isalpha()})
    target = int(CLUSTER_SHARE * copies * len(pool) / (1 - CLUSTER_SHARE))
    planted, k = 0, 0
    while planted < target:
        size = int(round(math.exp(rng.uniform(math.log(SIZES[0]), math.log(SIZES[1])))))
        base = tag_words(rng.choice(bases), cluster_tag(k))
        ids = []
        for j in range(size):
            ids.append(f"cluster-{k}-{j}")
            yield ids[-1], edited(base, rng, vocabulary)
        clusters.append(ids)
        planted += size
        k += 1


def build(copies: int, out: Path, files: int = 4, seed: int = 0) -> dict:
    (out / "one").mkdir(parents=True, exist_ok=True)
    (out / "split").mkdir(parents=True, exist_ok=True)
    one = gzip.open(out / "one" / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=6)
    parts = [gzip.open(out / "split" / f"part-{i}.jsonl.gz", "wt", encoding="utf-8", compresslevel=6)
             for i in range(files)]
    n = chars = 0
    clusters: list[list[str]] = []
    for doc_id, text in documents(copies, seed, clusters):
        line = json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n"
        one.write(line)
        parts[n % files].write(line)
        n += 1
        chars += len(text or "")
    for f in (one, *parts):
        f.close()
    (out / "clusters.json").write_text(json.dumps(clusters))
    info = {"documents": n, "characters": chars, "copies": copies, "clusters": len(clusters),
            "clustered_documents": sum(map(len, clusters)), "files": files, "seed": seed}
    (out / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the sample pool (default 4)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--files", type=int, default=4, help="files of the split copy (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(build(args.copies, Path(args.out), args.files, args.seed)))


if __name__ == "__main__":
    main()
