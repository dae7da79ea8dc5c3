"""Stage `tokenize`: token ids for every kept document, with a `tokenizers` tokenizer.

- ``tokenizer``: a `tokenizer.json` to use as is; or none, and a byte-level BPE tokenizer with
  ``vocab_size`` entries is trained on a sample of the corpus (``sample_docs`` documents in the
  order of a seeded hash of the id, streamed from Spark with `toLocalIterator`, never collected)
  and saved as ``<output>/tokenizer.json`` (the run's output directory, `StageContext.output`;
  a temporary directory outside a flow).
- The end-of-text token (``eot``, a special token of the vocabulary) is appended to every
  document, so documents stay apart once concatenated.
- Encoding runs inside `mapInArrow` with `encode_batch` over each Arrow batch; the tokenizer
  file goes to the executors once (`pipelines.spark.ship_file`) and is loaded once per Python
  worker.
- Columns added: ``tokens`` (`array<int>`: Spark has no unsigned types, so ids are int32 inside
  the pipeline; the export narrows them to uint16 where the vocabulary fits) and ``n_tokens``.
- Stats: the tokenizer path, its vocabulary size, and the eot id.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.errors import WinnowError
from core.params import param

from .spark import ship_file
from .stage import Columns, StageContext, StageResult

NAME = "tokenize"
# Bumped when this stage\'s output changes for the same input and parameters: saved state
# (flows/state.py) of an earlier version is then not reused.
VERSION = 1
EOT = "<|endoftext|>"
MIN_VOCAB = 256 + 1   # a trained byte-level vocabulary: every byte, plus the end-of-text token
MAX_VOCAB = 1 << 20   # ids stay far inside int32; export writes uint32 above 65,536


@dataclass(frozen=True)
class TokenizeParams:
    tokenizer: str | None = param(None, metavar="PATH",
                                  help="a tokenizers tokenizer.json to use as is; none: train byte-level BPE on a sample")
    vocab_size: int = param(8192, metavar="N", help="vocabulary of a trained tokenizer")
    sample_docs: int = param(20_000, metavar="N", help="documents a tokenizer is trained on")
    eot: str = param(EOT, metavar="TOKEN",
                     help="end-of-text token appended to every document (a special token of the vocabulary)")
    seed: int = param(0, metavar="N", help="seed of the tokenizer's training sample")

    def __post_init__(self) -> None:
        if self.tokenizer is None and not MIN_VOCAB <= self.vocab_size <= MAX_VOCAB:
            raise WinnowError(f"tokenize.vocab_size: must be within [{MIN_VOCAB}, {MAX_VOCAB}], got {self.vocab_size}")
        if self.sample_docs < 1:
            raise WinnowError(f"tokenize.sample_docs: must be >= 1, got {self.sample_docs}")
        if not self.eot:
            raise WinnowError("tokenize.eot: the end-of-text token must not be empty")


def columns(_params: TokenizeParams) -> Columns:
    return Columns(requires=("id", "text"), adds=("tokens", "n_tokens"))


def load_tokenizer(path: str, eot: str = EOT):
    """A `tokenizers.Tokenizer` from `path` that knows `eot`, or a one-line WinnowError."""
    from tokenizers import Tokenizer

    if not os.path.isfile(path):
        raise WinnowError(f"tokenize: tokenizer file not found: {path}")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise WinnowError(f"tokenize: {path} is not a tokenizers JSON file ({str(exc).splitlines()[0]})") from None
    if tok.token_to_id(eot) is None:
        raise WinnowError(f"tokenize: {path} has no end-of-text token {eot!r} in its vocabulary")
    return tok


def train_tokenizer(texts, vocab_size: int, eot: str = EOT):
    """Byte-level BPE (GPT-2 style pre-tokenization, every byte in the alphabet) with `eot`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eot],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def sample_texts(df: DataFrame, n: int, seed: int) -> Iterator[str]:
    rows = df.where(F.col("text").isNotNull()).orderBy(F.xxhash64("id", F.lit(seed)), "id").limit(n)
    for row in rows.select("text").toLocalIterator():
        yield row["text"]


_LOADED: dict[tuple[str, str], Any] = {}


def _kernel(shipped: str, eot: str):
    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        key = (shipped, eot)
        if key not in _LOADED:
            from pyspark import SparkFiles
            from tokenizers import Tokenizer

            _LOADED[key] = Tokenizer.from_file(SparkFiles.get(shipped))
        tok = _LOADED[key]
        eot_id = tok.token_to_id(eot)
        for batch in batches:
            texts = [t if t is not None else "" for t in batch.column(batch.schema.get_field_index("text")).to_pylist()]
            ids = [enc.ids + [eot_id] for enc in tok.encode_batch(texts, add_special_tokens=False)]
            lengths = [len(x) for x in ids]
            yield pa.RecordBatch.from_arrays(
                list(batch.columns) + [pa.array(ids, type=pa.list_(pa.int32())), pa.array(lengths, type=pa.int32())],
                names=batch.schema.names + ["tokens", "n_tokens"])

    return kernel


def apply(df: DataFrame, params: TokenizeParams, ctx: StageContext) -> StageResult:
    if params.tokenizer:
        path = params.tokenizer
        tok = load_tokenizer(path, params.eot)
        trained = False
    else:
        tok = train_tokenizer(sample_texts(df, params.sample_docs, params.seed), params.vocab_size, params.eot)
        out_dir = Path(ctx.output) if ctx.output else Path(tempfile.mkdtemp(prefix="winnow-tokenizer-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = str(out_dir / "tokenizer.json")
        ctx.own(path)
        tok.save(path)
        trained = True
    shipped = ship_file(ctx.spark, path)
    schema = T.StructType(list(df.schema.fields) + [
        T.StructField("tokens", T.ArrayType(T.IntegerType(), containsNull=False)),
        T.StructField("n_tokens", T.IntegerType())])
    tokenized = df.mapInArrow(_kernel(shipped, params.eot), schema)
    removed = ctx.spark.createDataFrame([], "id string, removed_by string, reason string")
    stats = {"tokenizer": path, "trained": trained, "vocab_size": tok.get_vocab_size(),
             "eot_id": tok.token_to_id(params.eot)}
    return StageResult(tokenized, removed, stats,
                       stats_after_write=lambda kept, _: {"tokens": int(kept.agg(F.sum("n_tokens")).first()[0] or 0)})
