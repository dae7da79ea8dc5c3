"""Stage `export`: training shards from tokenized documents, in `datasets`' `save_to_disk` layout.

Two layouts:
- ``decomposition`` (after `decompose`): one dataset per bucket, ``<output>/bucket_<i>/``
  (``bucket_tail`` for tails), or ``<output>/<domain>/bucket_<i>/`` when domains are kept apart
  (``by_domain``, or whenever a mixture is given). Rows: ``id``, ``domain``, ``position`` (the
  chunk's index in its document), ``start`` (its first token's offset) and ``tokens``.
- ``concat`` (the concat-and-chunk baseline of Dataset Decomposition, Pouransari et al. 2024,
  arXiv:2405.13226, after `tokenize`): each partition's
  documents, in input order, are concatenated (their end-of-text tokens between them) and cut
  into ``seq_len + 1`` windows, written to ``<output>/concat_<seq_len>/``; the last partial window of
  each partition is counted in the stats, not written.

Token ids are written as uint16 where the vocabulary fits (ids < 65,536), else uint32. Shards
hold at most ``shard_rows`` rows and are written atomically (`pipelines.shards`).

The mixture (``mixture``: a JSON file ``{"weights": {domain: w}, "budget": tokens,
"max_repeats": r, "schedule": {...}, "synthetic_ratio": s}``) is planned against the tokens each domain really has
(`mixers.mixture.Mixture.plan`); its table, and the schedule (`mixers.schedule`) with its switch
step, go into the stats, so the run's manifest.json holds tokens and sequences per bucket and
domain, the tokenizer, the mixture, the schedule and the run's provenance together. Accounting
stays in documents: the stage keeps every document it is given.

Synthetic documents (a `synthetic` column from `rephrase`, true) are exported per domain as
``<domain>.synthetic`` when domains are kept apart. With a mixture, each domain's weight is split
between its real and synthetic parts at ``synthetic_ratio : 1`` (synthetic to real; default 1,
WRAP's 1:1, Maini et al. 2024) unless the weights name ``<domain>.synthetic`` themselves
(`mixers.mixture.with_synthetic`).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param
from mixers.dirnames import dir_name
from mixers.mixture import SYNTHETIC_SUFFIX, Mixture, with_synthetic

from .shards import write_datasets
from .stage import Columns, StageContext, StageResult

NAME = "export"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
LAYOUTS = ("decomposition", "concat")
UINT16_IDS = 1 << 16  # token ids below this fit uint16: half the bytes of uint32 shards


@dataclass(frozen=True)
class ExportParams:
    layout: str = param("decomposition", choices=LAYOUTS, metavar="LAYOUT",
                        help="decomposition (one dataset per bucket, after decompose) or the "
                        "concat-and-chunk baseline (after tokenize)")
    seq_len: int = param(2048, metavar="N", help="concat layout: inputs per window")
    by_domain: bool = param(False, help="one dataset per domain and bucket")
    shard_rows: int = param(100_000, metavar="N", help="rows per shard file")
    mixture: str | None = param(None, metavar="FILE",
                                help='JSON {"weights": {domain: w}, "budget": tokens, "max_repeats": r, '
                                '"schedule": {...}, "synthetic_ratio": s}; implies by_domain; s (default 1) is '
                                'synthetic : real tokens per domain after rephrase')
    tokenizer: str | None = param(None, metavar="PATH",
                                  help="tokenizer.json copied beside the shards; none: the output "
                                  "directory's tokenizer.json, if there is one")

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise WinnowError(f"export.layout: {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.seq_len < 1 or self.shard_rows < 1:
            raise WinnowError("export: seq_len and shard_rows must be >= 1")
        if self.mixture is not None:
            load_mixture(self.mixture)


def columns(params: ExportParams) -> Columns:
    if params.layout == "decomposition":
        return Columns(requires=("id", "domain", "chunks"))
    return Columns(requires=("tokens", "_file", "_row"))


def load_mixture(path: str) -> dict[str, Any]:
    from mixers.schedule import Schedule

    p = Path(path)
    if not p.is_file():
        raise WinnowError(f"export.mixture: file not found: {p}")
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
        mixture = Mixture(spec["weights"])
        ratio = float(spec.get("synthetic_ratio", 1.0))
        if not (0 <= ratio < float("inf")):
            raise ValueError(f"synthetic_ratio must be a finite number >= 0, got {ratio}")
        budget = int(spec["budget"])
        schedule = Schedule.from_json(spec["schedule"]) if spec.get("schedule") else None
    except (ValueError, KeyError, TypeError) as exc:
        raise WinnowError(f"export.mixture: {p}: {exc} (expected {{\"weights\": {{...}}, \"budget\": N, "
                          "\"max_repeats\": R, \"schedule\": {...}}})") from None
    return {"mixture": mixture, "budget": budget, "max_repeats": spec.get("max_repeats"), "schedule": schedule,
            "synthetic_ratio": ratio}


def _token_type(vocab_max: int) -> pa.DataType:
    return pa.uint16() if vocab_max < UINT16_IDS else pa.uint32()


def _concat_kernel(seq_len: int):
    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mixers.decomposition import concat_and_chunk

        docs = []
        for batch in batches:  # one partition, in its (input) order
            col = batch.column(batch.schema.get_field_index("tokens"))
            docs += [col[i].values.to_numpy(zero_copy_only=False) for i in range(len(col)) if col[i].is_valid]
        stream = concat_and_chunk(docs, seq_len)
        windows = [w for w in stream]
        yield pa.RecordBatch.from_arrays([
            pa.array([w.tolist() for w in windows], type=pa.list_(pa.int32())),
            pa.array([len(windows)] * len(windows), type=pa.int64()),
            pa.array([stream.dropped_tokens] * len(windows), type=pa.int64()),
        ], names=["tokens", "_windows", "_remainder"]) if windows else pa.RecordBatch.from_arrays(
            [pa.array([[]], type=pa.list_(pa.int32())), pa.array([0], pa.int64()), pa.array([stream.dropped_tokens], pa.int64())],
            names=["tokens", "_windows", "_remainder"])

    return kernel


def apply(df: DataFrame, params: ExportParams, ctx: StageContext) -> StageResult:
    if not ctx.output:
        raise WinnowError("export: no output directory (StageContext.output: the stage writes into a run's "
                          "output directory)")
    out = Path(ctx.output)
    plan = load_mixture(params.mixture) if params.mixture else None
    by_domain = params.by_domain or plan is not None
    stats: dict[str, Any] = {"layout": params.layout, "output": str(out)}

    if params.layout == "decomposition":
        domain = F.col("domain")
        if by_domain and "synthetic" in df.columns:  # rephrased documents: their own <domain>.synthetic
            domain = F.when(F.col("synthetic"), F.concat(domain, F.lit(SYNTHETIC_SUFFIX))).otherwise(domain)
        chunks = df.select("id", domain.alias("domain"), F.explode("chunks").alias("c")).select(
            "id", "domain", F.col("c.position").alias("position"), F.col("c.start").alias("start"),
            F.col("c.tokens").alias("tokens"), F.coalesce(F.col("c.bucket").cast("string"), F.lit("tail")).alias("b"))
        # the domain is a record's or a config's name: write_datasets encodes it into a safe directory
        chunks = ctx.persist(chunks.withColumn("_group", F.concat(F.lit("bucket_"), F.col("b"))))
        # the top-level directories about to be written, recorded as the run's own first (one row
        # per domain or bucket)
        tops = [r[0] for r in chunks.select("domain" if by_domain else "_group").distinct().collect()]
        ctx.own(*(str(out / (dir_name(t) if by_domain else t)) for t in tops))
        vocab_max = chunks.select(F.max(F.array_max("tokens"))).first()[0] or 0
        schema = pa.schema([("id", pa.string()), ("domain", pa.string()), ("position", pa.int32()),
                            ("start", pa.int32()), ("tokens", pa.list_(_token_type(vocab_max)))])
        shards = write_datasets(chunks, str(out), "_group", schema, order=["id", "position"],
                                shard_rows=params.shard_rows, domain="domain" if by_domain else None)
    else:
        windows = df.orderBy("_file", "_row").mapInArrow(
            _concat_kernel(params.seq_len),
            T.StructType([T.StructField("tokens", T.ArrayType(T.IntegerType())),
                          T.StructField("_windows", T.LongType()), T.StructField("_remainder", T.LongType())]))
        windows = ctx.persist(windows)
        per_part = windows.groupBy(F.spark_partition_id().alias("p")).agg(F.max("_remainder").alias("r"))
        stats["remainder_tokens"] = int(per_part.agg(F.sum("r")).first()[0] or 0)  # tokens in no window
        windows = windows.where(F.size("tokens") > 0).withColumn("_group", F.lit(f"concat_{params.seq_len}"))
        ctx.own(str(out / f"concat_{params.seq_len}"))
        windows = windows.withColumn("_order", F.monotonically_increasing_id())
        vocab_max = windows.select(F.max(F.array_max("tokens"))).first()[0] or 0
        schema = pa.schema([("tokens", pa.list_(_token_type(vocab_max)))])
        shards = write_datasets(windows, str(out), "_group", schema, order=["_order"], shard_rows=params.shard_rows)

    groups = {}
    def natural(name: str):  # domain, then bucket number, tail last
        head, _, last = name.rpartition("bucket_")
        return head, not last.isdigit(), int(last) if last.isdigit() else 0, name

    available: dict[str, int] = {}
    domain_dirs: dict[str, str] = {}
    for name, files in sorted(shards.items(), key=lambda kv: natural(kv[0])):
        groups[name] = {"sequences": sum(f.rows for f in files), "tokens": sum(f.tokens for f in files),
                        "shards": len(files)}
        domain = files[0].domain
        if domain is not None:
            groups[name]["domain"] = domain
            domain_dirs[name.split("/", 1)[0]] = domain
            available[domain] = available.get(domain, 0) + groups[name]["tokens"]
    stats["datasets"] = groups
    if by_domain:  # directory -> domain: the way back for names that had to be encoded
        stats["domain_dirs"] = dict(sorted(domain_dirs.items()))
    stats["token_dtype"] = str(_token_type(vocab_max))
    tokenizer = params.tokenizer or (str(out / "tokenizer.json") if (out / "tokenizer.json").exists() else None)
    if tokenizer:
        if Path(tokenizer).resolve() != (out / "tokenizer.json").resolve():
            ctx.own(str(out / "tokenizer.json"))
            shutil.copyfile(tokenizer, out / "tokenizer.json")
        stats["tokenizer"] = str(out / "tokenizer.json")
    if plan is not None:
        synthetic = [d for d in available if d.endswith(SYNTHETIC_SUFFIX)]
        if synthetic:  # each domain's synthetic part at synthetic_ratio : 1 to its real part
            plan["mixture"] = Mixture(with_synthetic(plan["mixture"].weights, synthetic, plan["synthetic_ratio"]))
            stats["synthetic_ratio"] = plan["synthetic_ratio"]
        try:
            mix = plan["mixture"].plan(plan["budget"], {d: available.get(d, 0) for d in plan["mixture"].domains} | available,
                                       max_repeats=plan["max_repeats"])
        except ValueError as exc:
            raise WinnowError(f"export.mixture: {exc}") from None
        stats["mixture"] = mix.to_dict()
        stats["mixture_table"] = mix.to_text()
        if plan["schedule"] is not None:
            stats["schedule"] = plan["schedule"].to_dict()
    removed = ctx.spark.createDataFrame([], "id string, removed_by string, reason string")
    return StageResult(df, removed, stats)

