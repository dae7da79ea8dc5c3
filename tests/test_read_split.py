"""The fast reader against the per-line reader, and large files read in pieces by several tasks.

The per-line reader (`read_file(..., per_line=True)`: `json.loads` on every line of the whole
file) is the reference. The fast reader (orjson, column lists) must give the same rows, good and
bad, with the same reasons, on every hostile input of the suite; and a file cut into pieces
(plain JSONL by byte ranges, zstd by frames, Parquet by row groups) must give the rows of the
whole file: every record exactly once, with its line number in the whole file.
"""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import read
from pipelines.read import InputSpec, ReadParams, expand_inputs, plan_pieces
from pipelines.read_kernel import FileTask, gunzip_blocks, piece_counts, read_block, read_file, zstd_frames
from pipelines.schema import READ_ARROW_SCHEMA

from .test_hostile import hostile_corpus
from .test_read_fuzz import HARD_LINES, _lines, _nested, _zstd_frames

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def task_for(path: Path, fmt: str = "jsonl") -> FileTask:
    return FileTask(index=5, path=str(path), relpath=path.name, format=fmt, source="sp", domain="dom")


def rows_of(tasks: list[FileTask], per_line: bool = False, batch_rows: int = 3) -> list[dict]:
    out = []
    for task in tasks:
        for batch in read_file(task, batch_rows=batch_rows, per_line=per_line):
            assert batch.schema.equals(READ_ARROW_SCHEMA)
            batch.validate(full=True)
            out += batch.to_pylist()
    return out


def local_counts(pieces: list[FileTask]) -> list[dict]:
    return [piece_counts(p) for p in pieces]


def pieces_of(path: Path, piece: int, fmt: str = "jsonl") -> list[FileTask]:
    return plan_pieces([task_for(path, fmt)], piece, local_counts)


# ------------------------------------------------------------------------------------------------
# fast reader == per-line reader, whole files


@FUZZ
@given(body=_lines, zstd_parts=st.integers(1, 3))
def test_fast_reader_gives_the_per_line_readers_rows(body, zstd_parts):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("f.jsonl", body), ("f.jsonl.gz", gzip.compress(body)),
                           ("f.jsonl.zst", _zstd_frames(body, zstd_parts))):
            path = Path(tmp) / name
            path.write_bytes(data)
            assert rows_of([task_for(path)]) == rows_of([task_for(path)], per_line=True)


def test_fast_reader_on_every_hard_line_and_the_hostile_corpus(tmp_path):
    hard = tmp_path / "hard.jsonl"
    hard.write_bytes(b"\n".join(HARD_LINES) + b"\n" + b"\n".join(HARD_LINES))
    assert rows_of([task_for(hard)]) == rows_of([task_for(hard)], per_line=True)
    hostile_corpus(tmp_path / "in", tmp_path / "target", big=False)
    tasks = [t for t in expand_inputs([InputSpec(str(tmp_path / "in"), "x", domain_field="domain")])]
    assert {Path(t.path).name for t in tasks} >= {"mixed.jsonl", "cut.jsonl.gz", "cut.jsonl.zst", "empty.jsonl"}
    for t in tasks:
        assert rows_of([t], batch_rows=2048) == rows_of([t], per_line=True, batch_rows=2048), t.relpath


def test_records_the_fast_path_takes_and_those_it_hands_back(tmp_path):
    """Values orjson would read differently from json (integers past 64 bits become floats) and
    nested values go to the per-line logic; the reasons stay the per-line reader's."""
    f = tmp_path / "m.jsonl"
    f.write_bytes(b'{"id": 7, "text": "a", "n": 3, "ok": true, "z": null, "u": "v"}\n'
                  b'{"text": "b", "big": 18446744073709551616, "f": 1.5, "l": [1], "meta": {"k": 1}}\n'
                  b'{"text": "c", "n": NaN}\n{"id": 1.5, "text": "d"}\n{"text": "e \\ud800"}\n')
    got = rows_of([task_for(f)])
    assert got == rows_of([task_for(f)], per_line=True)
    assert got[0]["id"] == "7" and got[0]["meta"] == [("n", "3"), ("ok", "true"), ("u", "v")]
    assert dict(got[1]["meta"])["big"] == "18446744073709551616"
    assert dict(got[2]["meta"])["n"] == "NaN"
    assert got[3]["_error"].startswith("'id' is float") and got[4]["_error"].startswith("lone surrogate")


# ------------------------------------------------------------------------------------------------
# pieces == whole file


@FUZZ
@given(body=_lines, piece=st.integers(1, 60), frames=st.integers(2, 6))
def test_a_file_cut_anywhere_gives_the_whole_files_rows(body, piece, frames):
    """Byte ranges of a plain file, and frame groups of a zstd file, cut anywhere (inside a
    line, at a line end, inside a BOM or a CRLF): every record once, with its whole-file line."""
    with tempfile.TemporaryDirectory() as tmp:
        plain, zst = Path(tmp) / "f.jsonl", Path(tmp) / "f.jsonl.zst"
        plain.write_bytes(body)
        zst.write_bytes(_zstd_frames(body, frames))
        whole = rows_of([task_for(plain)], per_line=True)
        assert rows_of(pieces_of(plain, piece)) == whole
        split = pieces_of(zst, max(1, piece // 4))
        assert rows_of(split) == rows_of([task_for(zst)], per_line=True)
        zwhole = [{k: v for k, v in r.items() if k != "_path"} for r in rows_of([task_for(zst)])]
        assert [{k: v for k, v in r.items() if k != "_path"} for r in rows_of(split)] == zwhole


def test_plain_pieces_cover_the_file_and_know_their_first_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"text": "one"}\n{"text": "two, a longer line"}\n\n{"text": "four"}\n')
    pieces = pieces_of(f, 10)
    assert len(pieces) == 7 and pieces[0].part_start == 0 and pieces[-1].part_end == f.stat().st_size == 65
    assert [(p.part_line, p.part_mid_line) for p in pieces] == [
        (1, False), (1, True), (2, True), (2, True), (2, True), (4, True), (4, True)]
    assert [(r["_row"], r["text"], r["id"]) for r in rows_of(pieces)] == [
        (1, "one", "sp:p.jsonl:1"), (2, "two, a longer line", "sp:p.jsonl:2"), (4, "four", "sp:p.jsonl:4")]


def test_files_that_do_not_cut_cleanly_are_read_whole(tmp_path):
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n" * 50)
    assert pieces_of(blank, 16) == [task_for(blank)]  # one task says "empty file"
    (row,) = rows_of(pieces_of(blank, 16))
    assert row["_error"] == "empty file at blank.jsonl: no records"
    body = b"".join(b'{"text": "z %d"}\n' % i for i in range(300))
    data = _zstd_frames(body, 6)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(data[:-50])
    assert zstd_frames(str(cut)) is None and pieces_of(cut, 4) == [task_for(cut)]
    assert rows_of(pieces_of(cut, 4))[-1]["_error"].startswith("unreadable file at cut.jsonl.zst after line")
    junk = tmp_path / "junk.jsonl.zst"
    junk.write_bytes(data + b"junk")
    assert pieces_of(junk, 4) == [task_for(junk)]
    one = tmp_path / "one.jsonl.zst"
    one.write_bytes(zstandard.ZstdCompressor().compress(body))
    assert pieces_of(one, 4) == [task_for(one)]  # a single frame cannot be cut
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(body))
    assert pieces_of(gz, 4) == [task_for(gz)]  # nor can gzip
    many = tmp_path / "many.jsonl.zst"
    many.write_bytes(data)
    assert len(zstd_frames(str(many))) == 6 and len(pieces_of(many, 4)) == 6


def test_a_corrupt_middle_frame_keeps_the_file_whole(tmp_path):
    body = b"".join(b'{"text": "z %d"}\n' % i for i in range(300))
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    frames = [cctx.compress(body[i:i + 1000]) for i in range(0, len(body), 1000)]
    bad = bytearray(frames[2])
    bad[-3] ^= 0xFF  # the checksum no longer matches
    f = tmp_path / "bad.jsonl.zst"
    f.write_bytes(b"".join(frames[:2]) + bytes(bad) + b"".join(frames[3:]))
    assert len(zstd_frames(str(f))) == len(frames)  # the headers are sound
    assert pieces_of(f, 4) == [task_for(f)]  # the count pass saw the bad frame
    assert rows_of(pieces_of(f, 4)) == rows_of([task_for(f)], per_line=True)


def test_parquet_is_cut_by_row_groups(tmp_path):
    table = pa.table({"id": [f"r{i}" for i in range(100)], "text": [f"t{i}" if i % 7 else None for i in range(100)]})
    f = tmp_path / "t.parquet"
    pq.write_table(table, f, row_group_size=10)
    pieces = pieces_of(f, 4, "parquet")
    assert len(pieces) == 10 and [p.part_line for p in pieces] == list(range(1, 101, 10))
    assert rows_of(pieces) == rows_of([task_for(f, "parquet")])


# ------------------------------------------------------------------------------------------------
# a .gz file decompressed into blocks of whole lines, each parsed on its own == the whole file


def block_rows(task: FileTask, block_bytes: int) -> list[dict]:
    blocks = list(gunzip_blocks(task, block_bytes))
    assert [b["block"] for b in blocks] == list(range(len(blocks)))
    data = [b["data"] for b in blocks if b["data"]]
    for d in data[:-1]:  # each ends at the first line end past block_bytes; the last is the rest
        assert d.endswith(b"\n") and len(d) >= block_bytes and d[:-1].rfind(b"\n") + 1 < block_bytes
    assert all(b["data"] for b in blocks[:len(data)])  # an error or empty block only ends the file
    out = []
    for block in blocks:
        for batch in read_block(task, block, batch_rows=3):
            assert batch.schema.equals(READ_ARROW_SCHEMA)
            batch.validate(full=True)
            out += batch.to_pylist()
    return out


@FUZZ
@given(body=_lines, block=st.integers(1, 80), chunk=st.integers(1, 50), cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_gzip_blocks_give_the_whole_files_rows(body, block, chunk, cut):
    """Blocks of any size, over decompressed chunks of any size (a line spanning many of
    both), of a whole, truncated or emptied .gz file: the per-line reader's rows of the whole
    file, its line numbers, error rows and "empty file" row included."""
    from pipelines import read_kernel

    data = gzip.compress(body)
    if cut is not None:
        data = data[:cut % len(data)]
    saved = read_kernel.CHUNK
    read_kernel.CHUNK = chunk
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gz = Path(tmp) / "f.jsonl.gz"
            gz.write_bytes(data)
            assert block_rows(task_for(gz), block) == rows_of([task_for(gz)], per_line=True)
    finally:
        read_kernel.CHUNK = saved


@pytest.mark.parametrize("body, rows", [
    (b"", ["empty file at f.jsonl.gz: no records"]),
    (b"\n  \n\t\n", ["empty file at f.jsonl.gz: no records"]),
    (b"\xef\xbb\xbf\n\n", ["empty file at f.jsonl.gz: no records"]),
    (b'\xef\xbb\xbf{"text": "a"}', [None]),
    (b"\xef\xbb\xbfx\n", ["malformed json at f.jsonl.gz line 1: Expecting value (column 1)"]),
])
def test_gzip_blocks_of_empty_files_and_byte_order_marks(tmp_path, body, rows):
    gz = tmp_path / "f.jsonl.gz"
    gz.write_bytes(gzip.compress(body))
    for size in (1, 2, 1 << 20):
        assert [r["_error"] for r in block_rows(task_for(gz), size)] == rows


def test_gzip_blocks_of_a_file_that_is_not_gzip(tmp_path):
    gz = tmp_path / "f.jsonl.gz"
    gz.write_bytes(b'{"text": "plain, not gzip"}\n')
    [row] = block_rows(task_for(gz), 1)
    assert row["_row"] == 1 and row["_error"].startswith("unreadable file at f.jsonl.gz after line 0: ")
    assert row["_error"] == rows_of([task_for(gz)], per_line=True)[0]["_error"]


# ------------------------------------------------------------------------------------------------
# in Spark: one large file, several tasks; rows spread after reading


def _big_file(path: Path, n: int = 3000) -> Path:
    lines = [b'{"text": "document %d %s"}' % (i, b"x" * (i % 50)) for i in range(n)]
    lines[17] = b'{"text": broken'
    lines[1234] = b'{"text": "lone \\ud800"}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_large_single_file_is_read_by_several_tasks(spark, ctx, tmp_path, monkeypatch):
    from pyspark.sql import functions as F

    from pipelines.read import _task_frame
    from pipelines.read_kernel import read_tasks
    from pipelines.schema import READ_SCHEMA

    f = _big_file(tmp_path / "big.jsonl")
    monkeypatch.setattr(read, "SPLIT_BYTES", 16 << 10)
    monkeypatch.setattr(read, "MIN_SPLIT_BYTES", 16 << 10)
    monkeypatch.setattr(read, "DRIVER_COUNT_BYTES", 0)  # the pieces' lines counted by a Spark job
    result = read.apply(None, ReadParams((InputSpec(str(f), "s"),)), ctx)
    tasks = result.stats["read_tasks"]
    assert tasks == -(-f.stat().st_size // (16 << 10)) > 1
    whole = rows_of([FileTask(0, str(f), "big.jsonl", "jsonl", "s", "default")], per_line=True)
    kept = sorted((r["_row"], r["id"], r["text"]) for r in result.kept.collect())
    assert kept == [(r["_row"], r["id"], r["text"]) for r in whole if r["_error"] is None]
    removed = sorted((r["line"], r["reason"]) for r in result.removed.collect())
    assert removed == [(r["_row"], r["_error"]) for r in whole if r["_error"]]
    assert [line for line, _ in removed] == [18, 1235]
    # the pieces ran as tasks of their own: rows come out of as many partitions
    pieces = read.plan_pieces(expand_inputs([InputSpec(str(f), "s")]), 16 << 10, local_counts)
    frame = _task_frame(ctx, pieces).mapInArrow(read_tasks, READ_SCHEMA)
    assert frame.select(F.spark_partition_id().alias("p")).distinct().count() == len(pieces) == tasks


def test_a_gzip_file_is_read_by_one_task_and_spread_after(spark, ctx, tmp_path):
    from pyspark.sql import functions as F

    f = tmp_path / "one.jsonl.gz"
    f.write_bytes(gzip.compress(b"".join(b'{"text": "doc %d"}\n' % i for i in range(2000))))
    result = read.apply(None, ReadParams((InputSpec(str(f), "s"),)), ctx)
    assert "read_tasks" not in result.stats  # .gz cannot be cut
    per_partition = result.kept.groupBy(F.spark_partition_id()).count().collect()
    assert len(per_partition) == spark.sparkContext.defaultParallelism > 1
    assert sum(r["count"] for r in per_partition) == 2000


def test_a_large_gzip_file_is_parsed_on_every_core(spark, ctx, tmp_path, monkeypatch):
    """One .gz file (fewer read tasks than cores): one task decompresses it into blocks, the
    cores parse them; every row as the whole-file reader gives it, spread over the cores. A
    truncated one keeps its whole lines and ends with its error row."""
    from pyspark.sql import functions as F

    cores = spark.sparkContext.defaultParallelism
    plain = _big_file(tmp_path / "big.jsonl")
    f = tmp_path / "big.jsonl.gz"
    f.write_bytes(gzip.compress(plain.read_bytes()))
    monkeypatch.setattr(read, "GZ_SPLIT_BYTES", 1)
    monkeypatch.setattr(read, "SPLIT_BYTES", 16 << 10)
    monkeypatch.setattr(read, "GZ_BLOCK", 4 << 10)
    whole = rows_of([FileTask(0, str(f), "big.jsonl.gz", "jsonl", "s", "default")], per_line=True)
    result = read.apply(None, ReadParams((InputSpec(str(f), "s"),)), ctx)
    assert result.stats["gz_files_in_blocks"] == 1
    assert result.stats["read_tasks"] % cores == 0 and result.stats["read_tasks"] > cores
    kept = sorted((r["_row"], r["id"], r["text"]) for r in result.kept.collect())
    assert kept == [(r["_row"], r["id"], r["text"]) for r in whole if r["_error"] is None]
    removed = sorted((r["line"], r["reason"]) for r in result.removed.collect())
    assert removed == [(r["_row"], r["_error"]) for r in whole if r["_error"]]
    assert [line for line, _ in removed] == [18, 1235]
    per_partition = result.kept.groupBy(F.spark_partition_id()).count().collect()
    assert len(per_partition) == result.stats["read_tasks"]
    assert min(r["count"] for r in per_partition) > 0

    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(f.read_bytes()[:len(f.read_bytes()) * 2 // 3])
    whole = rows_of([FileTask(0, str(cut), "cut.jsonl.gz", "jsonl", "s", "default")], per_line=True)
    assert whole[-1]["_error"].startswith("unreadable file at cut.jsonl.gz after line ")
    result = read.apply(None, ReadParams((InputSpec(str(cut), "s"),)), ctx)
    assert result.stats["gz_files_in_blocks"] == 1
    assert sorted(r["_row"] for r in result.kept.collect()) == [r["_row"] for r in whole if r["_error"] is None]
    assert sorted((r["line"], r["reason"]) for r in result.removed.collect()) == [
        (r["_row"], r["_error"]) for r in whole if r["_error"]]


@FUZZ
@given(body=_lines, chunk=st.integers(1, 40), piece=st.integers(1, 80))
def test_lines_longer_than_a_chunk(body, chunk, piece):
    """Lines that span many decompressed chunks (CHUNK made tiny), whole and in pieces."""
    from pipelines import read_kernel

    saved = read_kernel.CHUNK
    read_kernel.CHUNK = chunk
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plain, gz = Path(tmp) / "f.jsonl", Path(tmp) / "f.jsonl.gz"
            plain.write_bytes(body)
            gz.write_bytes(gzip.compress(body))
            whole = rows_of([task_for(plain)], per_line=True)
            assert rows_of([task_for(plain)]) == whole
            assert rows_of(pieces_of(plain, piece)) == whole
            assert rows_of([task_for(gz)]) == rows_of([task_for(gz)], per_line=True)
    finally:
        read_kernel.CHUNK = saved
