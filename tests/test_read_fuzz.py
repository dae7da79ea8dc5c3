"""Fuzz of the read kernel (pipelines/read_kernel.py): whatever bytes a file holds, `read_file`
never raises, every batch is valid under READ_ARROW_SCHEMA, and every record becomes exactly one
row, a document or an error row, in file order.

JSONL files are random bytes, mutated JSON and the known hard cases (BOMs, CRLF, NUL, invalid
UTF-8, lone surrogate escapes, deep nesting, 1e999, integers past Python's digit limit, duplicate
keys), written plain, gzip and zstd, whole and truncated. Parquet files get random extra, missing
and mistyped columns. Examples are derandomized so CI is reproducible.
"""
from __future__ import annotations

import gzip
import json
import tempfile
import zlib
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.read_kernel import RAW_LIMIT, FileTask, derived_id, read_file
from pipelines.schema import READ_ARROW_SCHEMA

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RELPATH = "part.jsonl"
NOT_NULL = [f.name for f in READ_ARROW_SCHEMA if not f.nullable]


def read(path: Path, fmt: str = "jsonl", batch_rows: int = 3, batch_bytes: int = 64 << 20) -> list[dict]:
    """Every row `read_file` gives for `path`, after checking each batch against the schema."""
    task = FileTask(index=7, path=str(path), relpath=RELPATH, format=fmt, source="fz", domain="dom")
    batches = list(read_file(task, batch_rows=batch_rows, batch_bytes=batch_bytes))
    for batch in batches:
        assert batch.schema.equals(READ_ARROW_SCHEMA)
        batch.validate(full=True)  # also checks that every string is valid UTF-8
        assert 0 < batch.num_rows <= batch_rows
        for name in NOT_NULL:
            assert batch.column(name).null_count == 0, name
    rows = pa.Table.from_batches(batches, schema=READ_ARROW_SCHEMA).to_pylist()
    for r in rows:
        assert r["_file"] == 7 and r["source"] == "fz" and r["domain"] == "dom" and r["id"]
        if r["_error"] is None:
            assert isinstance(r["text"], str) and r["meta"] is not None
            assert r["_raw"] is None and r["_path"] is None
        else:
            assert r["text"] is None and r["meta"] is None and r["_path"] == str(path)
            assert r["id"] == derived_id("fz", RELPATH, r["_row"])
            assert r["_raw"] is None or len(r["_raw"]) <= RAW_LIMIT
    return rows


def without_path(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "_path"} for r in rows]


# ------------------------------------------------------------------------------------------------
# JSONL lines (bytes without b"\n")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {}, optional={"text": st.one_of(st.text(max_size=30), json_values), "id": json_values,
                  "meta": json_values, "url": st.text(max_size=10), "n": json_values})


def _nested(n: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * n + inner + b"}" * n


HARD_LINES = [
    b'{"text": "plain", "id": "p1"}',
    b'{"text": "a", "n": 1e999, "m": -1e999, "x": NaN, "y": Infinity}',
    b'{"text": "first", "text": "second", "meta": {"k": 1}, "meta": "flat"}',
    b'{"text": "lone \\ud800"}', b'{"text": "ok", "m": {"\\udc00key": 1}}', b'{"text": "\\udfff\\ud800"}',
    b'{"text": "pair \\ud83d\\ude00"}', b'{"text": "escaped \\\\ud800 is text"}',
    b'\xef\xbb\xbf{"text": "after a BOM"}', b'{"text": "crlf"}\r', b'\r', b'\x00', b'{"text": "a\\u0000b"}',
    b'{"text": "raw \x00 nul"}', b'{"text": "\xff"}', b'{"text": "\xed\xa0\x80"}', b'{"text": "\xc0\x80"}',
    b'{"text": "caf\xc3\xa9"}', b'{"text": "cut \xc3"}',
    b"[" * 3000, b"[" * 5000 + b"]" * 5000, _nested(3000),
    b'{"text": "deep", "m": ' + b"[" * 990 + b"]" * 990 + b"}", b'{"text": "deep", "m": ' + _nested(960) + b"}",
    b'{"text": "deep", "m": ' + b"[" * 700 + b'"\\ud800"' + b"]" * 700 + b"}",
    b'{"text": "big", "n": ' + b"9" * 5000 + b"}", b'{"id": ' + b"1" * 4200 + b', "text": "big id"}',
    b'{"text": "long float", "f": ' + b"1" * 400 + b".5}", b'{"text": "tiny", "f": 1e-999}',
    b'{"id": true, "text": "a"}', b'{"id": 1.5, "text": "a"}', b'{"id": null, "text": "a"}',
    b'{"id": [1], "text": "a"}',
    b'{"text": 5}', b'{"text": null}', b'{"title": "no text"}', b"[1, 2]", b'"a string"', b"null", b"123", b"{}",
    b"{", b'{"text": "unterminated', b" ", b"\t\x0b\x0c", b"",
]
_json_line = st.builds(lambda r, ascii_: json.dumps(r, ensure_ascii=ascii_).encode("utf-8", "surrogatepass"),
                       records, st.booleans())
_cut_json = st.builds(lambda b, i: b[: i % (len(b) + 1)], _json_line, st.integers(0, 200))
_mutated = st.builds(lambda b, i, junk: b[: i % (len(b) + 1)] + junk + b[i % (len(b) + 1):],
                     _json_line, st.integers(0, 200), st.binary(min_size=1, max_size=4))
_line = st.one_of(
    _json_line, _cut_json, _mutated, st.sampled_from(HARD_LINES),
    st.binary(max_size=40),
).map(lambda b: b.replace(b"\n", b""))
_lines = st.tuples(st.lists(st.tuples(_line, st.booleans()), max_size=12), st.booleans()).map(
    lambda t: b"".join(line + (b"\r\n" if crlf else b"\n") for line, crlf in t[0])[: None if t[1] else -1]
    if t[0] else b"")


def expected_rows(body: bytes) -> list[int]:
    """Line numbers of the non-blank lines: one row each."""
    return [i for i, line in enumerate(body.split(b"\n"), start=1) if line.strip()]


def _depth(value, limit: int = 200) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
            stack.extend((k, d + 1) for k in v)
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _utf8_clean(value) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def verdict(line: bytes) -> bool | None:
    """Whether a line must be a document (True) or an error row (False); None: too deep to say."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    except RecursionError:
        return None
    if _depth(record) > 200:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return False
    given_id = record.get("id")
    if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, (str, int))):
        return False
    return _utf8_clean(record)


def check_jsonl(body: bytes, rows: list[dict]) -> None:
    lines = body.split(b"\n")
    expected = expected_rows(body)
    if not expected:
        assert len(rows) == 1 and rows[0]["_row"] == 0 and rows[0]["_error"].startswith("empty file")
        return
    assert [r["_row"] for r in rows] == expected  # one row per non-blank line, in line order
    for r in rows:
        line = lines[r["_row"] - 1]
        must = verdict(line)
        if must is not None:
            assert (r["_error"] is None) == must, (line[:200], r["_error"])
        if r["_error"] is None:
            record = json.loads(line)
            assert r["text"] == record["text"]
            assert r["id"] == (derived_id("fz", RELPATH, r["_row"]) if record.get("id") in (None, "")
                               else str(record["id"]))
        elif r["_raw"] is not None:  # the line itself, as read
            assert r["_raw"] == line.decode("utf-8", "backslashreplace").rstrip("\r\n")[:RAW_LIMIT]


def _zstd_frames(body: bytes, parts: int) -> bytes:
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    step = max(1, -(-len(body) // parts))
    pieces = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
    return b"".join(cctx.compress(p) for p in pieces)


@FUZZ
@given(body=_lines, batch_rows=st.integers(1, 5), batch_bytes=st.sampled_from([1, 100, 64 << 20]),
       zstd_parts=st.integers(1, 3))
def test_jsonl_any_bytes_plain_gzip_zstd(body, batch_rows, batch_bytes, zstd_parts):
    with tempfile.TemporaryDirectory() as tmp:
        plain, gz, zst = Path(tmp) / "f.jsonl", Path(tmp) / "f.jsonl.gz", Path(tmp) / "f.jsonl.zst"
        plain.write_bytes(body)
        gz.write_bytes(gzip.compress(body))
        zst.write_bytes(_zstd_frames(body, zstd_parts))
        rows = read(plain, batch_rows=batch_rows, batch_bytes=batch_bytes)
        check_jsonl(body, rows)
        # compressed files read exactly like the plain one
        assert without_path(read(gz, batch_rows=batch_rows)) == without_path(rows)
        assert without_path(read(zst, batch_rows=batch_rows)) == without_path(rows)


@FUZZ
@given(body=_lines, codec=st.sampled_from(["gz", "zst"]), cut=st.integers(0, 10**6))
def test_truncated_compressed_file_keeps_its_whole_lines_and_adds_one_error_row(body, codec, cut):
    """A cut .gz or .zst gives the rows of the lines it holds whole, then one error row."""
    data = gzip.compress(body) if codec == "gz" else zstandard.ZstdCompressor().compress(body)
    cut %= len(data)  # a proper prefix: always truncated
    with tempfile.TemporaryDirectory() as tmp:
        path, plain = Path(tmp) / f"f.jsonl.{codec}", Path(tmp) / "f.jsonl"
        path.write_bytes(data[:cut])
        plain.write_bytes(body)
        rows = read(path)
        if cut == 0:
            assert len(rows) == 1 and rows[0]["_error"].startswith("empty file")
            return
        if codec == "gz":
            readable = zlib.decompressobj(wbits=31).decompress(data[:cut])
        else:
            readable = zstandard.ZstdDecompressor().decompressobj().decompress(data[:cut])
        assert body.startswith(readable)
        whole_lines = readable.count(b"\n")
        *good, last = rows
        assert without_path(good) == [r for r in without_path(read(plain)) if 0 < r["_row"] <= whole_lines]
        assert last["_error"].startswith("unreadable file") and last["_row"] == whole_lines + 1


@FUZZ
@given(codec=st.sampled_from(["gz", "zst"]), junk=st.binary(max_size=200),
       head=st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"\x28\xb5\x2f\xfd\x00"]),
       body=_lines)
def test_garbage_in_a_compressed_file_is_an_error_row(codec, junk, head, body):
    """Random bytes named .gz or .zst, or a valid stream followed by junk: no exception, rows in
    line order, and the file ends in an error row unless the junk was harmless (empty, or the
    zero padding gzip allows)."""
    valid = gzip.compress(body) if codec == "gz" else zstandard.ZstdCompressor().compress(body)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f.jsonl.{codec}"
        for data in (head + junk, valid + head + junk):
            path.write_bytes(data)
            rows = read(path)
            assert rows and all(a["_row"] < b["_row"] for a, b in zip(rows, rows[1:]))
            harmless = not head + junk or (codec == "gz" and not (head + junk).strip(b"\x00"))
            if not harmless:
                assert rows[-1]["_error"] is not None


# ------------------------------------------------------------------------------------------------
# Parquet with random columns

_texts = st.text(max_size=12)
COLUMN_TYPES = {
    "string": (pa.string(), _texts),
    "large_string": (pa.large_string(), _texts),
    "int64": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "float64": (pa.float64(), st.floats()),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), st.binary(max_size=8)),
    "list<string>": (pa.list_(pa.string()), st.lists(_texts, max_size=3)),
    "struct": (pa.struct([("a", pa.string()), ("b", pa.int64())]),
               st.fixed_dictionaries({"a": st.none() | _texts, "b": st.none() | st.integers(-5, 5)})),
    "map<string,string>": (pa.map_(pa.string(), pa.string()),
                           st.lists(st.tuples(_texts, st.none() | _texts), max_size=3, unique_by=lambda t: t[0])),
    "map<string,int64>": (pa.map_(pa.string(), pa.int64()),
                          st.lists(st.tuples(_texts, st.integers(-9, 9)), max_size=3, unique_by=lambda t: t[0])),
    "list<struct<key,value>>": (pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])),
                                st.lists(st.fixed_dictionaries({"key": _texts, "value": st.none() | _texts}),
                                         max_size=3)),
    "timestamp[us]": (pa.timestamp("us"), st.datetimes()),
    "timestamp[ns]": (pa.timestamp("ns"), st.integers(-2**62, 2**62)),
    "date32": (pa.date32(), st.dates()),
    "time64": (pa.time64("us"), st.times()),
    "duration": (pa.duration("us"), st.timedeltas(min_value=-timedelta(days=10**5), max_value=timedelta(days=10**5))),
    "decimal": (pa.decimal128(12, 3), st.decimals(min_value=-10**8, max_value=10**8, places=3,
                                                 allow_nan=False, allow_infinity=False)),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_columns(draw):
    n = draw(st.integers(0, 5))
    names = ["text", "id", "meta"] + draw(st.lists(st.text(min_size=1, max_size=6).filter(
        lambda s: s not in ("text", "id", "meta")), min_size=1, max_size=4, unique=True))
    columns: dict[str, pa.Array] = {}
    for name in names:
        # text is a string column in about half the files, so documents with odd meta are common
        kinds = ["missing", *COLUMN_TYPES, "dictionary"]
        kind = draw(st.sampled_from(kinds + ["string", "dictionary"] * 10 if name == "text" else kinds))
        if kind == "missing":
            continue
        typ, values = COLUMN_TYPES["string" if kind == "dictionary" else kind]
        data = draw(st.lists(st.none() | values, min_size=n, max_size=n))
        arr = pa.array(data, type=typ)
        columns[name] = arr.dictionary_encode() if kind == "dictionary" else arr
    return n, columns


@FUZZ
@given(case=parquet_columns(), batch_rows=st.integers(1, 4), cut=st.none() | st.integers(0, 10**5))
def test_parquet_with_any_columns_gives_one_row_per_record(case, batch_rows, cut):
    n, columns = case
    table = pa.table(columns) if columns else pa.table({"x": pa.nulls(n)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.parquet"
        pq.write_table(table, path)
        if cut is not None:  # a cut file: whatever is left, an error row and no exception
            data = path.read_bytes()
            path.write_bytes(data[: cut % len(data)])
            rows = read(path, "parquet", batch_rows=batch_rows)
            assert rows and rows[-1]["_error"] is not None
            assert [r["_row"] for r in rows] == list(range(1, len(rows) + 1))
            return
        rows = read(path, "parquet", batch_rows=batch_rows)
    if n == 0:
        assert len(rows) == 1 and rows[0]["_error"].startswith("empty file")
        return
    assert [r["_row"] for r in rows] == list(range(1, n + 1))
    records = table.to_pylist()
    for r, record in zip(rows, records):
        text, given_id = record.get("text"), record.get("id")
        id_ok = given_id is None or (isinstance(given_id, (str, int)) and not isinstance(given_id, bool))
        assert (r["_error"] is None) == (isinstance(text, str) and id_ok), (record, r["_error"])
        if r["_error"] is not None:
            continue
        assert r["text"] == text
        assert r["id"] == (derived_id("fz", RELPATH, r["_row"]) if given_id in (None, "") else str(given_id))
        meta = dict(r["meta"])
        if "meta" not in record:
            assert set(meta) == {k for k, v in record.items() if k not in ("text", "id") and v is not None}


def _deepest_parse() -> int:
    """The deepest list nesting json.loads accepts at this point of the stack."""
    lo, hi = 1, 20_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            json.loads("[" * mid + "]" * mid)
            lo = mid
        except RecursionError:
            hi = mid - 1
    return lo


def test_nesting_around_the_recursion_limit_is_one_row_per_line(tmp_path):
    """Records nested just under, at and past the depth json can parse: parsing, the surrogate
    check and the meta encoding all recurse, and each may be the one that hits the limit."""
    top = _deepest_parse()
    lines = []
    for depth in range(max(1, top - 60), top + 3):
        lines.append(b'{"text": "x", "m": ' + b"[" * depth + b"]" * depth + b"}")
        lines.append(b'{"text": "\\u0041", "m": ' + b"[" * depth + b'"\\ud800"' + b"]" * depth + b"}")
        lines.append(b'{"text": "y", "m": ' + _nested(depth) + b"}")
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read(path, batch_rows=64)
    assert [r["_row"] for r in rows] == list(range(1, len(lines) + 1))
    errors = {r["_error"].split(" at ")[0] for r in rows if r["_error"]}
    assert "json nested too deeply" in errors
    assert rows[0]["_error"] is None  # well under the limit: a document
