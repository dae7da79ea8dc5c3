"""Build data/sample/minhash_truth.jsonl: the exact near-duplicate labels of the sample pool.

Truth, as issue 3 defines it: compute the exact Jaccard of every pair of pool documents on the
same shingles the `dedup_minhash` stage uses (pipelines/minhash_kernel.py: aggressive
normalization, word 5-grams, 64-bit shingle hashes); link every pair with J >= 0.8; take the
connected components; in each component the first document in input order survives and every
other one is a true near-duplicate. One line per true duplicate:

    {"id": ..., "survivor": ..., "component_size": ..., "max_jaccard": ...}

All pairs are computed sparsely: a documents x shingles 0/1 matrix X, intersections X @ X.T
(only pairs sharing a shingle appear), Jaccard = inter / (|A| + |B| - inter). The pool is read in
the order of data/configs/demo.toml (code, docs, fiction, reference), which is the input order
the stage sees. Deterministic; takes a few seconds:

    .venv/bin/python data/build_minhash_truth.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pipelines.minhash_kernel import shingle_hashes  # noqa: E402
from pipelines.read_kernel import FileTask, read_file  # noqa: E402

POOL = ["code.parquet", "docs.jsonl.gz", "fiction.jsonl.zst", "reference.jsonl.zst"]
THRESHOLD = 0.8
NGRAM = 5


def pool_documents(pool: Path = HERE / "sample" / "pool"):
    for index, name in enumerate(POOL):
        fmt = "parquet" if name.endswith(".parquet") else "jsonl"
        task = FileTask(index, str(pool / name), name, fmt, "pool", name.split(".")[0])
        for batch in read_file(task):
            for row in batch.to_pylist():
                if row.get("_error") is None:
                    yield row["id"], row["text"]


def truth(docs: list[tuple[str, str]], threshold: float = THRESHOLD, ngram: int = NGRAM):
    """(labels, pairs): the true duplicates as above, and every (i, j, jaccard) with J >= threshold."""
    vocab: dict[int, int] = {}
    rows, cols = [], []
    for i, (_, text) in enumerate(docs):
        for h in set(shingle_hashes(text, ngram).tolist()):
            rows.append(i)
            cols.append(vocab.setdefault(h, len(vocab)))
    x = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(docs), len(vocab))
    )
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac >= threshold
    i, j, jv = inter.row[keep], inter.col[keep], jac[keep]
    graph = sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(len(docs), len(docs)))
    _, comp = connected_components(graph, directed=False)
    best = np.zeros(len(docs))
    np.maximum.at(best, i, jv)
    np.maximum.at(best, j, jv)
    first: dict[int, int] = {}
    counts = np.bincount(comp)
    labels = []
    for k, c in enumerate(comp):
        if c not in first:
            first[c] = k
        elif counts[c] > 1:
            labels.append({
                "id": docs[k][0], "survivor": docs[first[c]][0],
                "component_size": int(counts[c]), "max_jaccard": round(float(best[k]), 4),
            })
    return labels, list(zip(i.tolist(), j.tolist(), jv.tolist()))


def main() -> None:
    docs = list(pool_documents())
    labels, pairs = truth(docs)
    out = HERE / "sample" / "minhash_truth.jsonl"
    with out.open("w") as f:
        for lab in labels:
            f.write(json.dumps(lab) + "\n")
    print(f"{len(docs)} documents, {len(pairs)} pairs with J >= {THRESHOLD}, "
          f"{len(labels)} true near-duplicates -> {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
