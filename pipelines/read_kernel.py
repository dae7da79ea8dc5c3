"""Reading input files into document rows, in plain Python (runs inside Spark tasks).

No Spark objects here, so every case is unit-testable on a file. Each input file is read
record by record; a record that cannot become a document (broken JSON, invalid UTF-8, no text,
text that is not a string, JSON that Python cannot hold: an integer past its 4300-digit limit or
nesting past its recursion limit) and a file that cannot be read to its end (truncated .gz,
corrupt Parquet) becomes an error row with its place, never an exception and never a silent drop.
Only lines that are entirely blank are skipped: they hold no record.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pyarrow as pa

from .schema import READ_ARROW_SCHEMA

FORMATS = ("jsonl", "parquet", "datasets")
RAW_LIMIT = 10_000  # characters of a bad record kept in the removed row
# A lone UTF-16 surrogate (U+D800..U+DFFF) is a valid JSON escape (\ud800) but not a Unicode
# scalar value: it cannot be encoded as UTF-8, so Arrow, Spark and Parquet refuse it.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class FileTask:
    """One input file (or one split of a saved `datasets` directory) to read."""

    index: int          # position of the file in input order
    path: str           # absolute path
    relpath: str        # path relative to the input it came from: part of derived ids
    format: str         # one of FORMATS
    source: str
    domain: str
    text_field: str = "text"
    id_field: str = "id"
    domain_field: str = ""  # a record's string value of this field, when set and present, is its domain

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def derived_id(source: str, relpath: str, position: int) -> str:
    """The id of a record that has none: ``<source>:<relpath>:<line or row>``."""
    return f"{source}:{relpath}:{position}"


def _json_default(value: Any) -> Any:
    """What json cannot encode but a Parquet or `datasets` column gives (bytes, dates and times,
    Decimal, timedelta, pandas Timestamp): bytes as UTF-8 text (invalid bytes as \\x escapes),
    anything with `isoformat` as ISO 8601, the rest as `str`. Without this a record with such a
    field raised TypeError, which ended the file at that row."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _meta_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_json_default)


def _as_meta(value: Any) -> dict[str, str] | None:
    """A nested `meta` value as a flat str->str dict: a dict, Arrow map entries, or key/value structs."""
    if isinstance(value, dict):
        return {str(k): _meta_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list) and all(
        (isinstance(e, tuple) and len(e) == 2) or (isinstance(e, dict) and set(e) == {"key", "value"})
        for e in value
    ):
        pairs = [(e["key"], e["value"]) if isinstance(e, dict) else e for e in value]
        return {str(k): _meta_value(v) for k, v in pairs if v is not None}
    return None


def lone_surrogate(value: Any) -> str | None:
    """Where a parsed JSON value holds a lone surrogate (a field path such as ``meta.url``, with
    the surrogate written as an escape where it is in a key), or None; "" for `value` itself."""
    if isinstance(value, str):
        return "" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
            inner = "" if _SURROGATE.search(str(key)) else lone_surrogate(item)
            if inner is not None:
                return f"{name}.{inner}" if inner else name
    elif isinstance(value, list):
        for i, item in enumerate(value):
            inner = lone_surrogate(item)
            if inner is not None:
                return f"[{i}]{'.' + inner if inner else ''}"
    return None


class _Batcher:
    """Accumulates rows and emits Arrow record batches of bounded size."""

    def __init__(self, task: FileTask, max_rows: int, max_bytes: int):
        self.task = task
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0

    def add(self, row: dict[str, Any]) -> pa.RecordBatch | None:
        self._rows.append(row)
        self._bytes += len(row["text"] or "") + len(row["_raw"] or "")
        if len(self._rows) >= self.max_rows or self._bytes >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        if not self._rows:
            return None
        batch = pa.RecordBatch.from_pylist(self._rows, schema=READ_ARROW_SCHEMA)
        self._rows = []
        self._bytes = 0
        return batch

    def doc(self, position: int, record: dict[str, Any], raw: str | None = None) -> dict[str, Any]:
        """A row for a record read from the file, or an error row if it cannot be a document.
        `raw`: the record's line as read (JSONL), kept in an error row instead of a re-encoding."""
        t = self.task
        text = record.get(t.text_field)
        if t.text_field not in record or text is None:
            return self.error(position, f"no '{t.text_field}' field at {_where(t, position)}", _raw(raw, record))
        if not isinstance(text, str):
            return self.error(
                position,
                f"'{t.text_field}' is {type(text).__name__}, not a string, at {_where(t, position)}",
                _raw(raw, record),
            )
        given_id = record.get(t.id_field)
        if given_id is None:
            doc_id = derived_id(t.source, t.relpath, position)
        elif isinstance(given_id, (str, int)) and not isinstance(given_id, bool):
            doc_id = str(given_id)
        else:
            return self.error(
                position,
                f"'{t.id_field}' is {type(given_id).__name__}, not a string or integer, at {_where(t, position)}",
                _raw(raw, record),
            )
        meta: dict[str, str] = {}
        for key, value in record.items():
            if key in (t.text_field, t.id_field) or value is None:
                continue
            nested = _as_meta(value) if key == "meta" else None
            if nested is not None:
                meta.update(nested)
            else:
                meta[key] = _meta_value(value)
        domain = record.get(t.domain_field) if t.domain_field else None
        return {
            "id": doc_id, "text": text, "source": t.source,
            "domain": domain if isinstance(domain, str) and domain else t.domain, "meta": meta,
            "_file": t.index, "_row": position, "_error": None, "_raw": None, "_path": None,
        }

    def error(self, position: int, reason: str, raw: str | None) -> dict[str, Any]:
        t = self.task
        return {
            "id": derived_id(t.source, t.relpath, position), "text": None, "source": t.source,
            "domain": t.domain, "meta": None, "_file": t.index, "_row": position,
            "_error": reason, "_raw": raw[:RAW_LIMIT] if raw is not None else None, "_path": t.path,
        }


def _where(task: FileTask, position: int) -> str:
    unit = "line" if task.format == "jsonl" else "row"
    return f"{task.relpath} {unit} {position}"


def _raw(line: str | None, record: Any) -> str:
    return line.rstrip("\r\n") if line is not None else _dump(record)


def _dump(record: Any) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(record)


class TruncatedStream(EOFError):
    """A compressed stream that ended inside a frame."""


def _zstd_chunks(path: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of a .zst file, frame after frame; raises if the last frame is cut.

    zstandard's stream_reader ends a truncated stream as if it were complete, which would drop
    the rest of the file silently, so the frame end is checked here.
    """
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    fed = False
    with open(path, "rb") as raw:
        while data := raw.read(chunk):
            while data:
                fed = True
                out = obj.decompress(data)
                if out:
                    yield out
                if obj.eof:
                    data = obj.unused_data
                    obj = dctx.decompressobj()
                    fed = False
                else:
                    data = b""
    if fed and not obj.eof:
        raise TruncatedStream("zstd stream ends inside a frame (truncated file)")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for block in chunks:
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
    if rest:
        yield rest


def _open_lines(path: str) -> Iterator[bytes]:
    """The lines of a plain, .gz or .zst file, as bytes."""
    if path.endswith((".zst", ".zstd")):
        yield from _lines(_zstd_chunks(path))
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        yield from stream


_UNREADABLE = (OSError, EOFError, zlib.error, ValueError)


def _too_deep(out: _Batcher, line_no: int, line: str) -> dict[str, Any]:
    """The error row of a record nested deeper than Python's recursion limit lets json parse,
    walk or re-encode (``[[[...]]]`` a few thousand deep); the RecursionError used to escape
    `read_file` and fail the Spark task."""
    return out.error(line_no, f"json nested too deeply at {_where(out.task, line_no)}", line.rstrip("\r\n"))


def _jsonl_rows(task: FileTask, out: _Batcher) -> Iterator[pa.RecordBatch | None]:
    line_no = 0
    records = 0
    try:
        import zstandard

        unreadable: tuple[type[BaseException], ...] = _UNREADABLE + (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover
        unreadable = _UNREADABLE
    try:
        for line_no, raw_line in enumerate(_open_lines(task.path), start=1):
            if line_no == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]  # a UTF-8 byte-order mark opens the file, not the record
            if not raw_line.strip():
                continue
            records += 1
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield out.add(out.error(
                    line_no,
                    f"invalid utf-8 at {_where(task, line_no)}, byte {exc.start}",
                    raw_line.decode("utf-8", "backslashreplace").rstrip("\r\n"),  # the line, as for any error
                ))
                continue
            try:
                record = json.loads(line)
            except RecursionError:
                yield out.add(_too_deep(out, line_no, line))
                continue
            except json.JSONDecodeError as exc:
                yield out.add(out.error(
                    line_no, f"malformed json at {_where(task, line_no)}: {exc.msg} (column {exc.colno})",
                    line.rstrip("\r\n"),
                ))
                continue
            except ValueError as exc:
                # Valid JSON that Python refuses to hold: an integer of more digits than
                # sys.get_int_max_str_digits() (4300). It is this record's fault; caught by the
                # file's `unreadable` handler instead, it ended the file there and lost every
                # later line.
                yield out.add(out.error(
                    line_no, f"unreadable json at {_where(task, line_no)}: {exc}", line.rstrip("\r\n"),
                ))
                continue
            if not isinstance(record, dict):
                yield out.add(out.error(
                    line_no, f"record is a JSON {type(record).__name__}, not an object, at {_where(task, line_no)}",
                    line.rstrip("\r\n"),
                ))
                continue
            try:
                # surrogates can only come from \u escapes (the UTF-8 decoder refuses encoded ones)
                where = lone_surrogate(record) if "\\u" in line else None
                if where is not None:
                    where = where if len(where) <= 200 else where[:200] + "..."
                    row = out.error(
                        line_no, f"lone surrogate escape (not a Unicode character) in field '{where}' "
                        f"at {_where(task, line_no)}", line.rstrip("\r\n"),
                    )
                else:
                    row = out.doc(line_no, record, raw=line)
            except RecursionError:  # parsed just under the limit, too deep to walk or re-encode
                row = _too_deep(out, line_no, line)
            yield out.add(row)
    except unreadable as exc:
        records += 1
        yield out.add(out.error(
            line_no + 1,
            f"unreadable file at {task.relpath} after line {line_no}: {type(exc).__name__}: {exc}",
            None,
        ))
        return
    if records == 0:
        yield out.add(out.error(0, f"empty file at {task.relpath}: no records", None))


def _table_rows(task: FileTask, out: _Batcher, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch | None]:
    row_no = 0
    try:
        for batch in batches:
            for record in batch.to_pylist():
                row_no += 1
                yield out.add(out.doc(row_no, record))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a property of the file
        row_no += 1
        yield out.add(out.error(
            row_no, f"unreadable file at {task.relpath} after row {row_no - 1}: {type(exc).__name__}: {exc}", None
        ))
        return
    if row_no == 0:
        yield out.add(out.error(0, f"empty file at {task.relpath}: no records", None))


def _parquet_batches(path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)


def _datasets_batches(path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import datasets

    ds = datasets.load_from_disk(path)
    for table in ds.with_format("arrow").iter(batch_size=batch_rows):
        yield from table.to_batches()


def read_file(task: FileTask, batch_rows: int = 2048, batch_bytes: int = 64 << 20) -> Iterator[pa.RecordBatch]:
    """Arrow batches (READ_ARROW_SCHEMA) of every record of one file, good or bad, in file order."""
    out = _Batcher(task, batch_rows, batch_bytes)
    if task.format == "jsonl":
        rows = _jsonl_rows(task, out)
    elif task.format == "parquet":
        rows = _table_rows(task, out, _parquet_batches(task.path, batch_rows))
    elif task.format == "datasets":
        rows = _table_rows(task, out, _datasets_batches(task.path, batch_rows))
    else:
        raise ValueError(f"unknown input format {task.format!r}")
    for batch in rows:
        if batch is not None:
            yield batch
    last = out.flush()
    if last is not None:
        yield last


def read_tasks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow entry point: batches of FileTask rows in, document batches out."""
    for batch in batches:
        for row in batch.to_pylist():
            yield from read_file(FileTask(**row))


def file_fingerprint(path: str) -> dict[str, Any]:
    """Size and xxh3-128 digest of a file, or of every file under a directory (sorted by path)."""
    import xxhash

    digest = xxhash.xxh3_128()
    size = 0
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names
        )
    else:
        files = [path]
    for name in files:
        if len(files) > 1:
            digest.update(os.path.relpath(name, path).encode() + b"\0")
        with open(name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
                size += len(chunk)
    return {"path": path, "bytes": size, "xxh3_128": digest.hexdigest()}
