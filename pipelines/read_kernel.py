"""Reading input files into document rows, in plain Python (runs inside Spark tasks).

No Spark objects here, so every case is unit-testable on a file. Each input file is read
record by record; a record that cannot become a document (broken JSON, invalid UTF-8, no text,
text that is not a string, JSON that Python cannot hold: an integer past its 4300-digit limit or
nesting past its recursion limit) and a file that cannot be read to its end (truncated .gz,
corrupt Parquet) becomes an error row with its place, never an exception and never a silent drop.
Only lines that are entirely blank are skipped: they hold no record.

Two JSONL readers give the same rows: the per-line reader (`json.loads` on each line, a dict per
row; the reference, `read_file(..., per_line=True)`) and the fast reader that runs (orjson on
big decompressed chunks, columns built as lists; every line orjson refuses or that is not a
plain record goes through the per-line logic, `_line_row`). The fast reader also reads a piece
of a file (`FileTask.part_*`): a byte range of a plain file or a group of zstd frames, keeping
the line numbers of the whole file; Parquet pieces are row groups.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass, replace
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
    # A piece of a large file (read.py's `plan_pieces`), read by a task of its own. JSONL: the
    # bytes [part_start, part_end) of a plain file or the zstd frames that start there (offsets in
    # the file); Parquet: row groups [part_start, part_end). part_end = -1: the whole file.
    # part_line: the file's line (JSONL) or row (Parquet) number of the piece's first byte or row;
    # part_mid_line: the piece starts inside a line, which belongs to the piece before it.
    part_start: int = 0
    part_end: int = -1
    part_line: int = 1
    part_mid_line: bool = False

    @property
    def whole(self) -> bool:
        return self.part_end < 0

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
    """Accumulates rows, column by column, and emits Arrow record batches of bounded size.

    Rows come as dicts (`add`: error rows, Parquet records, the per-line reader) or, on the fast
    JSONL path, as a document's parts (`add_doc`); both fill the same Python lists, which become
    one Arrow array per column (no dict per row, no `from_pylist`)."""

    _MAP = READ_ARROW_SCHEMA.field("meta").type

    def __init__(self, task: FileTask, max_rows: int, max_bytes: int):
        self.task = task
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._ids: list[str] = []
        self._texts: list[str | None] = []
        self._domains: list[str] = []
        self._offsets: list[int] = [0]
        self._meta_null: list[bool] = []
        self._keys: list[str] = []
        self._values: list[str] = []
        self._rows: list[int] = []
        self._errors: list[str | None] = []
        self._raws: list[str | None] = []
        self._paths: list[str | None] = []
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add_doc(self, position: int, doc_id: str, text: str, domain: str,
                keys: list[str], values: list[str]) -> pa.RecordBatch | None:
        """A good document (fast path): its meta as parallel key and value lists."""
        self._ids.append(doc_id)
        self._texts.append(text)
        self._domains.append(domain)
        self._keys += keys
        self._values += values
        self._offsets.append(len(self._keys))
        self._meta_null.append(False)
        self._rows.append(position)
        self._errors.append(None)
        self._raws.append(None)
        self._paths.append(None)
        self._bytes += len(text)
        if len(self._ids) >= self.max_rows or self._bytes >= self.max_bytes:
            return self.flush()
        return None

    def add(self, row: dict[str, Any]) -> pa.RecordBatch | None:
        self._ids.append(row["id"])
        self._texts.append(row["text"])
        self._domains.append(row["domain"])
        meta = row["meta"]
        if meta is not None:
            self._keys += meta.keys()
            self._values += meta.values()
        self._offsets.append(len(self._keys))
        self._meta_null.append(meta is None)
        self._rows.append(row["_row"])
        self._errors.append(row["_error"])
        self._raws.append(row["_raw"])
        self._paths.append(row["_path"])
        self._bytes += len(row["text"] or "") + len(row["_raw"] or "")
        if len(self._ids) >= self.max_rows or self._bytes >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        n = len(self._ids)
        if not n:
            return None
        t = self.task
        string = pa.string()
        meta = pa.MapArray.from_arrays(
            pa.array(self._offsets, pa.int32()), pa.array(self._keys, string), pa.array(self._values, string),
            type=self._MAP, mask=pa.array(self._meta_null, pa.bool_()) if any(self._meta_null) else None,
        )
        batch = pa.RecordBatch.from_arrays([
            pa.array(self._ids, string), pa.array(self._texts, string), pa.array([t.source] * n, string),
            pa.array(self._domains, string), meta, pa.array([t.index] * n, pa.int32()),
            pa.array(self._rows, pa.int64()), pa.array(self._errors, string), pa.array(self._raws, string),
            pa.array(self._paths, string),
        ], schema=READ_ARROW_SCHEMA)
        self._reset()
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
        if given_id is None or given_id == "":  # an empty id names nothing: derived, as a missing one
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
    name = path.lower()  # the suffix as infer_format matched it: DOCS.JSONL.GZ is gzip too
    if name.endswith((".zst", ".zstd")):
        yield from _lines(_zstd_chunks(path))
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as stream:
        yield from stream


_UNREADABLE = (OSError, EOFError, zlib.error, ValueError)


def _unreadable_row(out: _Batcher, line_no: int, exc: BaseException | str) -> dict[str, Any]:
    """The error row of a file that could not be read past line `line_no` (both JSONL readers;
    `exc` as text when a .gz file's decompressing task met it, see `gunzip_blocks`)."""
    what = exc if isinstance(exc, str) else _exception_text(exc)
    return out.error(line_no + 1, f"unreadable file at {out.task.relpath} after line {line_no}: {what}", None)


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _empty_row(out: _Batcher) -> dict[str, Any]:
    return out.error(0, f"empty file at {out.task.relpath}: no records", None)


def _too_deep(out: _Batcher, line_no: int, line: str) -> dict[str, Any]:
    """The error row of a record nested deeper than Python's recursion limit lets json parse,
    walk or re-encode (``[[[...]]]`` a few thousand deep); the RecursionError used to escape
    `read_file` and fail the Spark task."""
    return out.error(line_no, f"json nested too deeply at {_where(out.task, line_no)}", line.rstrip("\r\n"))


def _jsonl_rows_per_line(task: FileTask, out: _Batcher) -> Iterator[pa.RecordBatch | None]:
    """The per-line reader: `json.loads` on every line of the whole file. The reference the fast
    reader (`_jsonl_rows`) is tested against; `read_file(..., per_line=True)` runs it."""
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
        yield out.add(_unreadable_row(out, line_no, exc))
        return
    if records == 0:
        yield out.add(_empty_row(out))


# ------------------------------------------------------------------------------------------------
# The fast JSONL reader: big decompressed chunks, orjson, and `_line_row` (the per-line reader's
# logic) for every line orjson refuses or that is not a plain document.

CHUNK = 8 << 20  # decompressed bytes handed to the line splitter at a time


def _unreadable() -> tuple[type[BaseException], ...]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover
        return _UNREADABLE
    return _UNREADABLE + (zstandard.ZstdError,)


def _plain_chunks(path: str, start: int = 0, end: int = -1) -> Iterator[tuple[bytes, bool]]:
    """(bytes, in the piece) of a plain file from `start`: the piece's bytes [start, end), then
    the bytes after it (False), which only finish the piece's last line."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start if end >= 0 else -1
        while left != 0:
            data = fh.read(CHUNK if left < 0 else min(CHUNK, left))
            if not data:
                return
            if left > 0:
                left -= len(data)
            yield data, True
        while data := fh.read(1 << 16):
            yield data, False


def _gzip_chunks(path: str) -> Iterator[tuple[bytes, bool]]:
    """Decompressed bytes of a .gz file. With `isal` installed its igzip decompresses (about 2.5x
    zlib's speed); on any error it raises, the gzip module takes over where isal stopped and
    decides, so a broken file gives the per-line reader's rows and reason to the byte (isal may
    stop earlier than gzip does, or name the error differently)."""
    handed = 0
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is optional
        igzip = None
    if igzip is not None:
        try:
            with igzip.open(path, "rb") as fh:
                while data := fh.read1(CHUNK):
                    handed += len(data)
                    yield data, True
            return
        except Exception:  # noqa: BLE001 - the gzip module below gives the answer
            pass
    # read1, not read: a read that reaches a truncation raises without returning the bytes it
    # decompressed before it, which would lose the whole lines read so far
    with gzip.open(path, "rb") as fh:
        while handed:  # what isal handed out already: the same bytes from a good stream
            data = fh.read(min(handed, CHUNK))
            if not data:
                raise EOFError("the gzip module ended before isal did")  # pragma: no cover
            handed -= len(data)
        while data := fh.read1(CHUNK):
            yield data, True


def _zstd_piece_chunks(path: str, start: int = 0, end: int = -1) -> Iterator[tuple[bytes, bool]]:
    """Decompressed bytes of the zstd frames that start in [start, end) (all from `start` when
    end < 0), then of the frames after them (False). Raises TruncatedStream if the file ends
    inside a frame (zstandard's stream_reader would end there silently)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    frame_at = start   # file offset where the current frame starts
    fed = 0            # bytes fed to the current frame's decompressor
    with open(path, "rb") as raw:
        raw.seek(start)
        while data := raw.read(1 << 20):
            while data:
                ours = end < 0 or frame_at < end
                fed += len(data)
                out = obj.decompress(data)
                if out:
                    yield out, ours
                if obj.eof:
                    data = obj.unused_data
                    frame_at += fed - len(data)
                    fed = 0
                    obj = dctx.decompressobj()
                else:
                    data = b""
    if fed and not obj.eof:
        raise TruncatedStream("zstd stream ends inside a frame (truncated file)")


def _chunks(task: FileTask) -> Iterator[tuple[bytes, bool]]:
    path = task.path
    name = path.lower()
    if name.endswith((".zst", ".zstd")):
        return _zstd_piece_chunks(path, task.part_start, task.part_end)
    if name.endswith(".gz"):
        return _gzip_chunks(path)
    return _plain_chunks(path, task.part_start, task.part_end)


def _piece_lines(chunks: Iterator[tuple[bytes, bool]], mid_line: bool) -> Iterator[bytes]:
    """The lines (with their b"\n") that start in the piece: the first partial line is skipped
    when `mid_line` (the piece before reads it), and the last one is finished from the bytes
    after the piece. A line is read by exactly one piece. The unfinished line is kept as a list
    of blocks, joined once it ends, so a line of many chunks is copied once, not once a chunk."""
    rest: list[bytes] = []  # the blocks of the line not finished yet
    skipping = mid_line
    for data, ours in chunks:
        if skipping:
            cut = data.find(b"\n")
            if cut < 0:
                if not ours:
                    return
                continue
            data = data[cut + 1:]
            skipping = False
            if not ours:
                return  # the next line starts after the piece
        if not ours:
            if not rest:
                return  # the piece ended at a line end
            cut = data.find(b"\n")
            if cut < 0:
                rest.append(data)
                continue
            rest.append(data[:cut + 1])
            yield b"".join(rest)
            return
        if b"\n" not in data:
            if data:
                rest.append(data)
            continue
        parts = data.split(b"\n")
        if rest:
            rest.append(parts[0])
            parts[0] = b"".join(rest)
        last = parts.pop()
        rest = [last] if last else []
        for part in parts:
            yield part + b"\n"
    if rest and not skipping:
        yield b"".join(rest)


def _line_row(task: FileTask, out: _Batcher, line_no: int, raw_line: bytes) -> dict[str, Any] | None:
    """The row of one line as the per-line reader makes it (None for a blank line)."""
    if not raw_line.strip():
        return None
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return out.error(line_no, f"invalid utf-8 at {_where(task, line_no)}, byte {exc.start}",
                         raw_line.decode("utf-8", "backslashreplace").rstrip("\r\n"))
    try:
        record = json.loads(line)
    except RecursionError:
        return _too_deep(out, line_no, line)
    except json.JSONDecodeError as exc:
        return out.error(line_no, f"malformed json at {_where(task, line_no)}: {exc.msg} (column {exc.colno})",
                         line.rstrip("\r\n"))
    except ValueError as exc:  # an integer past Python's digit limit: this record's fault only
        return out.error(line_no, f"unreadable json at {_where(task, line_no)}: {exc}", line.rstrip("\r\n"))
    if not isinstance(record, dict):
        return out.error(line_no, f"record is a JSON {type(record).__name__}, not an object, at "
                         f"{_where(task, line_no)}", line.rstrip("\r\n"))
    try:
        where = lone_surrogate(record) if "\\u" in line else None
        if where is not None:
            where = where if len(where) <= 200 else where[:200] + "..."
            return out.error(line_no, f"lone surrogate escape (not a Unicode character) in field '{where}' "
                             f"at {_where(task, line_no)}", line.rstrip("\r\n"))
        return out.doc(line_no, record, raw=line)
    except RecursionError:
        return _too_deep(out, line_no, line)


def _jsonl_rows(task: FileTask, out: _Batcher,
                chunks: Iterator[tuple[bytes, bool]] | None = None) -> Iterator[pa.RecordBatch | None]:
    """The fast reader. orjson parses each line; a record whose fields are all strings,
    integers, booleans or null, with a string text and a string, integer or no id, becomes a
    document here. orjson's answer is then the one `json` gives (it refuses NaN, lone
    surrogates, nesting past 1024 and invalid UTF-8; it turns integers past 64 bits into floats,
    which is why floats, lists and objects are not taken). Every other line goes to `_line_row`,
    the per-line reader's own logic, so its row and reason are the per-line reader's.
    `chunks`: the bytes to read instead of the task's file (a block of a .gz file, `read_block`)."""
    import orjson

    loads, JSONError = orjson.loads, orjson.JSONDecodeError
    tf, idf, df = task.text_field, task.id_field, task.domain_field
    source, relpath, domain0 = task.source, task.relpath, task.domain
    line_no = task.part_line - 1 + (1 if task.part_mid_line else 0)
    records = 0
    str_, int_, bool_ = str, int, bool
    try:
        for raw_line in _piece_lines(_chunks(task) if chunks is None else chunks, task.part_mid_line):
            line_no += 1
            if line_no == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]  # a UTF-8 byte-order mark opens the file, not the record
            records += 1
            try:
                record = loads(raw_line)
            except JSONError:
                record = None
            if type(record) is dict:
                text = record.get(tf)
                given = record.get(idf)
                tg = type(given)
                if type(text) is str_ and (given is None or tg is str_ or tg is int_):
                    keys: list[str] = []
                    values: list[str] = []
                    for key, value in record.items():
                        tv = type(value)
                        if tv is str_:
                            if key != tf and key != idf:
                                keys.append(key)
                                values.append(value)
                        elif value is None:
                            pass
                        elif tv is int_:
                            if key != idf:
                                keys.append(key)
                                values.append(str(value))
                        elif tv is bool_:
                            keys.append(key)
                            values.append("true" if value else "false")
                        else:
                            break  # a float, list or object: the per-line reader's encoding
                    else:
                        domain = record.get(df) if df else None
                        yield out.add_doc(
                            line_no,
                            f"{source}:{relpath}:{line_no}" if given is None or given == "" else (given if tg is str_ else str(given)),
                            text, domain if type(domain) is str_ and domain else domain0, keys, values,
                        )
                        continue
            row = _line_row(task, out, line_no, raw_line)
            if row is None:
                records -= 1  # a blank line holds no record
            else:
                yield out.add(row)
    except _unreadable() as exc:
        records += 1
        yield out.add(_unreadable_row(out, line_no, exc))
        return
    if records == 0 and task.whole and chunks is None:
        yield out.add(_empty_row(out))


# ------------------------------------------------------------------------------------------------
# A large .gz file read by several tasks. A deflate stream cannot be entered in the middle, so
# one task decompresses the file (`gunzip_blocks`) into blocks of whole lines, each with the
# file's line number of its first line; the blocks are spread over the cluster and each is
# parsed where it lands (`read_block`), as the fast reader would parse it in the whole file.

_BOM = b"\xef\xbb\xbf"

BLOCK_SCHEMA = pa.schema([
    ("index", pa.int32()), ("block", pa.int64()), ("line", pa.int64()), ("data", pa.binary()),
    ("error", pa.string()), ("empty", pa.bool_()),
])


def gunzip_blocks(task: FileTask, block_bytes: int) -> Iterator[dict[str, Any]]:
    """The blocks of a .gz file, in order: {index, block, line, data, error, empty}. `data`: whole
    lines (the last block's last line may lack its newline), `line`: the number of its first.
    A stream that breaks (truncated, corrupt, not gzip) ends with a block whose `error` says
    why: its whole lines before the break are kept and the unfinished one is lost, as in the
    whole-file reader. A file without a record (nothing, blank lines, a byte-order mark) ends
    with an `empty` block, so the parse gives the whole-file reader's "empty file" row.
    `block_bytes`: a block ends at the first line end after this many decompressed bytes."""
    line, number, content = 1, 0, False
    pending: list[bytes] = []
    held = 0

    def block(data: bytes, error: str | None = None, empty: bool = False) -> dict[str, Any]:
        nonlocal line, number, content
        if data and not content:
            start = 3 if line == 1 and data.startswith(_BOM) else 0
            content = _BLANK.search(data, start) is not None
        row = {"index": task.index, "block": number, "line": line, "data": data, "error": error, "empty": empty}
        line += data.count(b"\n")
        number += 1
        return row

    try:
        for data, _ in _gzip_chunks(task.path):
            start = 0
            view = memoryview(data)  # slices of it are joined into the block without a copy of their own
            while held + len(data) - start >= block_bytes:
                # the first line end at or past the block's `block_bytes`-th byte ends it
                at = data.find(b"\n", start + max(0, block_bytes - held - 1))
                if at < 0:  # a line longer than what is left of the chunk: keep gathering
                    break
                pending.append(view[start:at + 1])
                yield block(b"".join(pending))
                pending, held, start = [], 0, at + 1
            if start < len(data):
                pending.append(view[start:] if start else data)
                held += len(data) - start
    except _unreadable() as exc:
        joined = b"".join(pending)
        cut = joined.rfind(b"\n") + 1
        if cut:
            yield block(joined[:cut])
        yield block(b"", error=_exception_text(exc))
        return
    if pending:
        yield block(b"".join(pending))
    if not content:
        yield block(b"", empty=True)


def read_block(task: FileTask, row: dict[str, Any], batch_rows: int = 2048,
               batch_bytes: int = 64 << 20) -> Iterator[pa.RecordBatch]:
    """Document batches of one block of `gunzip_blocks` (READ_ARROW_SCHEMA): the rows the fast
    reader gives for those lines of the whole file, or the file's error or empty row."""
    part = replace(task, part_start=0, part_end=len(row["data"]), part_line=row["line"], part_mid_line=False)
    out = _Batcher(part, batch_rows, batch_bytes)
    if row["data"]:
        for batch in _jsonl_rows(part, out, iter([(row["data"], True)])):
            if batch is not None:
                yield batch
    if row["error"] is not None:
        out.add(_unreadable_row(out, row["line"] - 1, row["error"]))
    if row["empty"]:
        out.add(_empty_row(out))
    last = out.flush()
    if last is not None:
        yield last


def gunzip_tasks(block_bytes: int, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow entry point (with `block_bytes` bound): FileTask rows of .gz files in, their
    blocks out, one per batch."""
    for batch in batches:
        for task_row in batch.to_pylist():
            for row in gunzip_blocks(FileTask(**task_row), block_bytes):
                yield pa.RecordBatch.from_pylist([row], schema=BLOCK_SCHEMA)


def read_blocks(tasks: dict[int, FileTask], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow entry point (with `tasks` bound, by file index): blocks in, document batches out."""
    for batch in batches:
        for row in batch.to_pylist():
            yield from read_block(tasks[row["index"]], row)


# ------------------------------------------------------------------------------------------------
# Pieces of large files (planned by read.py): where a file may be cut, and the counts that give
# each piece its first line number.

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLANK = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # a byte that makes a line not blank (bytes.strip's set)


def zstd_frames(path: str) -> list[tuple[int, int]] | None:
    """(offset, compressed size) of every frame of a .zst file, found from the frame and block
    headers without decompressing; None when the file is not a clean sequence of frames that
    ends at its last byte (truncated, junk, unknown block type): such a file is read whole, by
    one task, which reports where it breaks."""
    import zstandard

    frames: list[tuple[int, int]] = []
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(18)
            if len(head) >= 8 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50:  # skippable
                end = pos + 8 + int.from_bytes(head[4:8], "little")
            elif head[:4] == _ZSTD_MAGIC and len(head) >= 5:
                try:
                    header = zstandard.frame_header_size(head)
                except zstandard.ZstdError:
                    return None
                checksum = 4 if head[4] & 0x04 else 0
                at = pos + header
                while True:
                    fh.seek(at)
                    block = fh.read(3)
                    if len(block) < 3:
                        return None
                    word = int.from_bytes(block, "little")
                    kind, length = (word >> 1) & 3, word >> 3
                    if kind == 3:
                        return None
                    at += 3 + (1 if kind == 1 else length)
                    if word & 1:
                        break
                end = at + checksum
            else:
                return None
            if end > size:
                return None
            frames.append((pos, end - pos))
            pos = end
    return frames


def piece_counts(task: FileTask) -> dict[str, Any]:
    """What the plan needs of one JSONL piece: its newlines, whether it holds a non-blank byte,
    whether its last byte is a newline, its length, and whether it decompressed cleanly."""
    newlines = length = 0
    content = ends_line = False
    ok = True
    try:
        for data, ours in _chunks(task):
            if not ours:
                break
            newlines += data.count(b"\n")
            length += len(data)
            content = content or _BLANK.search(data) is not None
            ends_line = data.endswith(b"\n")
    except _unreadable():
        ok = False
    return {"index": task.index, "part_start": task.part_start, "newlines": newlines, "content": content,
            "ends_line": ends_line, "length": length, "ok": ok}


def parquet_row_groups(path: str) -> list[tuple[int, int]] | None:
    """(rows, compressed bytes) of each row group of a Parquet file; None if its footer cannot
    be read (the file is then read whole and reported there)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        return [(meta.row_group(i).num_rows,
                 sum(meta.row_group(i).column(c).total_compressed_size for c in range(meta.num_columns)))
                for i in range(meta.num_row_groups)]
    except Exception:  # noqa: BLE001 - a broken file is reported by the task that reads it
        return None


def count_pieces(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow entry point of the plan's counting pass: FileTask rows in, `piece_counts` out."""
    for batch in batches:
        counts = [piece_counts(FileTask(**row)) for row in batch.to_pylist()]
        yield pa.RecordBatch.from_pylist(counts, schema=PIECE_COUNTS_SCHEMA)


PIECE_COUNTS_SCHEMA = pa.schema([
    ("index", pa.int32()), ("part_start", pa.int64()), ("newlines", pa.int64()), ("content", pa.bool_()),
    ("ends_line", pa.bool_()), ("length", pa.int64()), ("ok", pa.bool_()),
])


def _table_rows(task: FileTask, out: _Batcher, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch | None]:
    row_no = task.part_line - 1
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
    if row_no == 0 and task.whole:
        yield out.add(out.error(0, f"empty file at {task.relpath}: no records", None))


def _parquet_batches(task: FileTask, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    groups = None if task.whole else range(task.part_start, task.part_end)
    yield from pq.ParquetFile(task.path).iter_batches(batch_size=batch_rows, row_groups=groups)


def _datasets_batches(path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import datasets

    ds = datasets.load_from_disk(path)
    for table in ds.with_format("arrow").iter(batch_size=batch_rows):
        yield from table.to_batches()


def read_file(task: FileTask, batch_rows: int = 2048, batch_bytes: int = 64 << 20,
              per_line: bool = False) -> Iterator[pa.RecordBatch]:
    """Arrow batches (READ_ARROW_SCHEMA) of every record of one file or piece, good or bad, in
    file order. `per_line`: JSONL through the per-line reader (the reference; whole files only)."""
    out = _Batcher(task, batch_rows, batch_bytes)
    if task.format == "jsonl" and per_line:
        if not task.whole:
            raise ValueError("the per-line reader reads whole files only")
        rows = _jsonl_rows_per_line(task, out)
    elif task.format == "jsonl":
        rows = _jsonl_rows(task, out)
    elif task.format == "parquet":
        rows = _table_rows(task, out, _parquet_batches(task, batch_rows))
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
