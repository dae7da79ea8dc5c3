"""Earlier outputs a dedup stage compares new documents against (`against = [dirs]`).

A weekly crawl is deduplicated against the documents earlier weeks kept: a new document that
duplicates one of them is removed, its reason naming the earlier document's id, and the earlier
documents are never emitted again. `earlier_documents` reads those directories (Parquet, as a
run's `kept/` is written) through the `read` stage, so the rows get input positions: `_file` is
made negative (-1 - the file's index), so every earlier document comes before every new one in
input order and is the one a duplicate group keeps.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.errors import WinnowError

from .stage import StageContext

# The reason prefixes of documents removed for an earlier output's copy (their kind, by the rule
# in pipelines/stage.py, is the text before " of ").
EARLIER_EXACT = "earlier exact duplicate of "
EARLIER_NEAR = "earlier near-duplicate of "


def check_dirs(paths: Sequence[str], output: str | None, stage: str) -> list[str]:
    """The `against` directories, absolute; refused when missing, not a directory, or inside
    this run's own output (which a re-run clears)."""
    out = []
    for p in paths:
        path = Path(p).resolve()
        if not path.is_dir():
            raise WinnowError(f"{stage}.against: {p} is not a directory (give earlier runs' kept/ directories)")
        if output and (path == Path(output).resolve() or path.is_relative_to(Path(output).resolve())):
            raise WinnowError(f"{stage}.against: {p} is inside this run's output directory; "
                              "give an earlier run's kept/ directory")
        out.append(str(path))
    return out


def earlier_documents(ctx: StageContext, paths: Sequence[str], stage: str, per_source: bool = False) -> DataFrame:
    """`id`, `text`, `_file` (< 0), `_row` and, with `per_source`, `source` of every document the
    directories hold (a record the reader cannot take is left out: it was never a document)."""
    from . import read
    from .read import InputSpec, ReadParams

    dirs = check_dirs(paths, ctx.output, stage)
    specs = tuple(InputSpec(path=d, source="earlier", format="parquet") for d in dirs)
    try:
        docs = read.apply(None, ReadParams(specs), ctx).kept
    except WinnowError as exc:
        raise WinnowError(f"{stage}.against: {exc}") from None
    cols = [F.col("id"), F.col("text"), (F.lit(-1) - F.col("_file")).alias("_file"), F.col("_row")]
    if per_source:  # the earlier run's own source column, which `read` keeps in meta
        cols.append(F.coalesce(F.col("meta")["source"], F.lit("")).alias("source"))
    return docs.select(*cols)


def files(paths: Sequence[str]) -> list[str]:
    """The files under the directories (what a resumed run's key fingerprints)."""
    found = []
    for d in paths:
        for root, dirnames, names in os.walk(d):
            dirnames[:] = sorted(n for n in dirnames if not n.startswith((".", "_")))
            found += [os.path.join(root, n) for n in sorted(names) if not n.startswith((".", "_"))]
    return found
