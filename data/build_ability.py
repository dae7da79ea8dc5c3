#!/usr/bin/env python3
"""Build data/eval/ability.jsonl.zst: the split PreSelect measures its reference models' ability on.

Run from the repository root after the packages of data/README.md ("Rebuilding") are installed:

    python data/build_ability.py

The documents come from the same Debian sources as the sample (build_sample.py's readers), 40 per
pool domain (code, docs, fiction, reference), and none of them is in the pool, the reference set
or the held-out split: a candidate is dropped when its normalized text equals any document
there, or is part of one (the pool's long documents are real documents joined together).
So the ability of a model is never measured on what `winnow validate` judges on, nor on a seed
set drawn from the pool. Deterministic: a seeded random.Random, sorted sources, zstd level 19.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_sample as bs  # noqa: E402

PER_DOMAIN = 40


def _zst_jsonl(path: Path) -> list[dict]:
    raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line]


def build(root: Path, seed: int) -> Path:
    taken: set[str] = set()
    long_texts: list[str] = []
    for docs in bs.read_pool(root).values():
        for d in docs:
            n = bs.norm(d["text"])
            taken.add(n)
            if len(n) > 50_000:
                long_texts.append(n)
    for extra in (root / "reference" / "hq.jsonl.zst", root / "eval" / "heldout.jsonl.zst"):
        taken.update(bs.norm(d["text"]) for d in _zst_jsonl(extra))
    sources = {
        "code": bs.read_stdlib(),
        "docs": bs.read_debian_descriptions() + bs.read_pydoc_library(),
        "fiction": bs.read_fortunes(),
        "reference": bs.read_dictd("foldoc", "dict-foldoc") + bs.read_dictd("jargon", "dict-jargon")
        + bs.read_dictd("devil", "dict-devil"),
    }
    rng = random.Random(seed)
    out = []
    for domain in bs.DOMAINS:
        seen: set[str] = set()
        fresh = []
        for d in sources[domain]:
            n = bs.norm(d["text"])
            if not n or n in taken or n in seen or len(n.split()) < bs.MIN_WORDS:
                continue
            seen.add(n)
            fresh.append(d)
        rng.shuffle(fresh)
        chosen = []
        for d in fresh:
            n = bs.norm(d["text"])
            if any(n in long for long in long_texts):
                continue
            chosen.append(d)
            if len(chosen) == PER_DOMAIN:
                break
        out += [{"id": f"ability-{domain}-{i:04d}", "text": d["text"], "meta": d["meta"], "domain": domain}
                for i, d in enumerate(chosen)]
    path = root / "eval" / "ability.jsonl.zst"
    bs.write_zst(path, bs.jsonl_bytes(out, keys=("id", "text", "meta", "domain")))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    path = build(HERE, args.seed)
    docs = _zst_jsonl(path)
    by = {}
    for d in docs:
        by[d["domain"]] = by.get(d["domain"], 0) + 1
    print(f"{path}: {len(docs)} documents {json.dumps(by, sort_keys=True)}, {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
