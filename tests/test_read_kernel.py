"""The read kernel on real files, without Spark: every bad record becomes an error row."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import WinnowError
from pipelines.read import InputSpec, expand_inputs, infer_format
from pipelines.read_kernel import FileTask, derived_id, file_fingerprint, read_file


def rows(path, fmt="jsonl", **kw):
    task = FileTask(index=3, path=str(path), relpath=path.name, format=fmt, source="src", domain="dom", **kw)
    out = []
    for batch in read_file(task, batch_rows=2):
        out.extend(batch.to_pylist())
    return out


def test_good_records_keep_id_text_and_meta(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"id": "x1", "text": "hi", "url": "u", "n": 3, "meta": {"title": "T"}}) + "\n"
                 + json.dumps({"text": "no id"}) + "\n")
    good = rows(f)
    assert [r["id"] for r in good] == ["x1", derived_id("src", "a.jsonl", 2)]
    assert good[0]["meta"] == [("url", "u"), ("n", "3"), ("title", "T")]
    assert good[1]["id"] == "src:a.jsonl:2"
    assert all(r["_error"] is None and r["_file"] == 3 for r in good)
    assert [r["_row"] for r in good] == [1, 2]


def test_integer_ids_become_strings_and_blank_lines_are_not_records(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"id": 7, "text": "t"}\n\n   \n{"text": "u"}\n')
    out = rows(f)
    assert [(r["id"], r["_row"]) for r in out] == [("7", 1), ("src:a.jsonl:4", 4)]


def test_every_malformed_record_is_an_error_row_with_its_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(
        b'{"text": "ok"}\n'
        b'{"text": broken\n'
        b'{"text": "caf\xe9"}\n'
        b'{"title": "no text"}\n'
        b'{"text": ["a", "list"]}\n'
        b'[1, 2]\n'
        b'{"text": null}\n'
        b'{"id": {"x": 1}, "text": "bad id"}\n'
    )
    out = rows(f)
    assert len(out) == 8
    errors = {r["_row"]: r["_error"] for r in out if r["_error"]}
    assert set(errors) == {2, 3, 4, 5, 6, 7, 8}
    assert errors[2].startswith("malformed json at bad.jsonl line 2")
    assert errors[3] == "invalid utf-8 at bad.jsonl line 3, byte 13"
    assert errors[4] == "no 'text' field at bad.jsonl line 4"
    assert errors[5] == "'text' is list, not a string, at bad.jsonl line 5"
    assert errors[6] == "record is a JSON list, not an object, at bad.jsonl line 6"
    assert errors[8].startswith("'id' is dict")
    bad = next(r for r in out if r["_row"] == 3)
    assert bad["id"] == "src:bad.jsonl:3" and "\\xe9" in bad["_raw"] and bad["_path"] == str(f)


def test_empty_file_is_one_error_row(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    (r,) = rows(f)
    assert r["_error"] == "empty file at empty.jsonl: no records"


def test_truncated_gzip_keeps_what_was_read_and_reports_the_rest(tmp_path):
    body = "".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(200)).encode()
    whole = gzip.compress(body)
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(whole[: len(whole) // 2])
    out = rows(f)
    good = [r for r in out if r["_error"] is None]
    bad = [r for r in out if r["_error"]]
    assert 0 < len(good) < 200
    assert len(bad) == 1 and bad[0]["_error"].startswith(f"unreadable file at cut.jsonl.gz after line {len(good)}")
    assert bad[0]["_row"] == len(good) + 1


def test_gzip_and_zstd_read_like_plain(tmp_path):
    body = b'{"text": "a"}\n{"text": "b"}\n'
    (tmp_path / "p.jsonl").write_bytes(body)
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    texts = [[r["text"] for r in rows(tmp_path / n)] for n in ("p.jsonl", "g.jsonl.gz", "z.jsonl.zst")]
    assert texts == [["a", "b"]] * 3


@pytest.mark.parametrize("per_line", [False, True])
def test_compression_suffixes_are_matched_in_any_case_as_the_format_is(tmp_path, per_line):
    """infer_format takes DOCS.JSONL.GZ as gzip JSONL; the readers decompress it (they used to
    read its bytes as plain text: one invalid-UTF-8 row per line)."""
    body = b'{"text": "a"}\n{"text": "b"}\n'
    (tmp_path / "G.JSONL.GZ").write_bytes(gzip.compress(body))
    (tmp_path / "Z.Jsonl.Zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    for name in ("G.JSONL.GZ", "Z.Jsonl.Zst"):
        assert infer_format(str(tmp_path / name)) == "jsonl"
        task = FileTask(0, str(tmp_path / name), name, "jsonl", "s", "d")
        got = [r for b in read_file(task, per_line=per_line) for r in b.to_pylist()]
        assert [(r["text"], r["_error"]) for r in got] == [("a", None), ("b", None)]


def test_truncated_zstd_is_an_error_row(tmp_path):
    body = "".join(json.dumps({"text": f"z {i} " * 40}) + "\n" for i in range(300)).encode()
    data = zstandard.ZstdCompressor().compress(body)
    f = tmp_path / "cut.jsonl.zst"
    f.write_bytes(data[: len(data) // 3])
    out = rows(f)
    assert out[-1]["_error"].startswith("unreadable file at cut.jsonl.zst")


def test_parquet_rows_with_null_text_and_map_meta(tmp_path):
    table = pa.table({
        "id": ["p1", "p2"], "text": ["x", None],
        "meta": pa.array([[("k", "v")], None], type=pa.map_(pa.string(), pa.string())),
    })
    f = tmp_path / "t.parquet"
    pq.write_table(table, f)
    out = rows(f, "parquet")
    assert out[0]["id"] == "p1" and out[0]["meta"] == [("k", "v")]
    assert out[1]["_error"] == "no 'text' field at t.parquet row 2"


def test_corrupt_parquet_is_an_error_row(tmp_path):
    f = tmp_path / "junk.parquet"
    f.write_bytes(b"PAR1 this is not parquet")
    (r,) = rows(f, "parquet")
    assert r["_error"].startswith("unreadable file at junk.parquet after row 0")


def test_datasets_directory(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["one", "two"], "title": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    task = expand_inputs([InputSpec(path=str(tmp_path / "ds"), source="hf")])
    assert [t.format for t in task] == ["datasets"]
    out = [r for b in read_file(task[0]) for r in b.to_pylist()]
    assert [(r["id"], r["text"], r["meta"]) for r in out] == [
        ("hf:ds:1", "one", [("title", "a")]), ("hf:ds:2", "two", [("title", "b")])
    ]


def test_expand_inputs_orders_inputs_then_sorted_paths(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.jsonl", "a.jsonl.gz", "c.parquet", "notes.txt", ".hidden.jsonl"):
        (tmp_path / "d" / name).write_text("")
    (tmp_path / "z.jsonl").write_text("")
    tasks = expand_inputs([
        InputSpec(path=str(tmp_path / "z.jsonl"), source="first"),
        InputSpec(path=str(tmp_path / "d"), source="second", domain="web"),
    ])
    assert [(t.index, t.relpath, t.format, t.source) for t in tasks] == [
        (0, "z.jsonl", "jsonl", "first"), (1, "a.jsonl.gz", "jsonl", "second"),
        (2, "b.jsonl", "jsonl", "second"), (3, "c.parquet", "parquet", "second"),
    ]
    globbed = expand_inputs([InputSpec(path=str(tmp_path / "d" / "*.jsonl*"), source="g")])
    assert [t.relpath for t in globbed] == ["a.jsonl.gz", "b.jsonl"]


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(WinnowError, match="input path does not exist"):
        expand_inputs([InputSpec(path=str(tmp_path / "missing.jsonl"), source="s")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(WinnowError, match="cannot tell the format"):
        expand_inputs([InputSpec(path=str(tmp_path / "notes.txt"), source="s")])
    assert infer_format("x.json.zst") == "jsonl" and infer_format("x.pq") == "parquet"


def test_fingerprint_is_content_based(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert file_fingerprint(str(a))["xxh3_128"] == file_fingerprint(str(b))["xxh3_128"]
    assert file_fingerprint(str(a))["bytes"] == 4


_line = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda t: json.dumps({"text": t}).encode(), st.text(max_size=30)),
    st.builds(lambda v: json.dumps({"text": v}).encode(), st.one_of(st.integers(), st.none(), st.lists(st.text()))),
    st.just(b""), st.just(b"   "),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=30), compression=st.sampled_from(["", ".gz", ".zst"]))
def test_every_non_blank_line_becomes_exactly_one_row(tmp_path, lines, compression):
    body = b"\n".join(lines) + (b"\n" if lines else b"")
    data = {"": body, ".gz": gzip.compress(body), ".zst": zstandard.ZstdCompressor().compress(body)}[compression]
    f = tmp_path / f"h.jsonl{compression}"
    f.write_bytes(data)
    out = rows(f)
    # a byte-order mark opening the file is not part of line 1 (a line of only a BOM is blank)
    bare = [line[3:] if i == 1 and line.startswith(b"\xef\xbb\xbf") else line for i, line in enumerate(lines, start=1)]
    expected = [i for i, line in enumerate(bare, start=1) if line.strip()]
    if expected:
        assert [r["_row"] for r in out] == expected
        assert all((r["_error"] is None) == (r["text"] is not None) for r in out)
    else:
        assert len(out) == 1 and out[0]["_error"].startswith("empty file")


def test_lone_surrogate_escapes_are_error_rows_and_pairs_are_text(tmp_path):
    # valid JSON, but \ud800 alone is no Unicode character: UTF-8 (Arrow, Spark) cannot hold it
    f = tmp_path / "s.jsonl"
    f.write_text('{"id": "s", "text": "lone \\ud800 surrogate"}\n'
                 '{"id": "ok", "text": "pair \\ud83d\\ude00 fine"}\n'
                 '{"id": "k", "text": "x", "meta": {"url\\udc00": "v"}}\n'
                 '{"text": "y", "title": ["a", "\\udfff"]}\n')
    out = rows(f)
    assert [r["_row"] for r in out] == [1, 2, 3, 4]
    assert out[1]["_error"] is None and out[1]["text"] == "pair \U0001F600 fine"
    assert out[0]["_error"] == "lone surrogate escape (not a Unicode character) in field 'text' at s.jsonl line 1"
    assert out[0]["_raw"] == '{"id": "s", "text": "lone \\ud800 surrogate"}'
    assert "'meta.url\\udc00'" in out[2]["_error"] and "'title.[1]'" in out[3]["_error"]
    # every row can go to Arrow and back
    assert pa.Table.from_pylist(out).num_rows == 4


def test_a_byte_order_mark_opens_the_file_not_the_first_record(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "first"}\r\n{"id": "b", "text": "\xef\xbb\xbfsecond"}\n')
    out = rows(f)
    assert [(r["id"], r["text"], r["_error"]) for r in out] == [("a", "first", None), ("b", "\ufeffsecond", None)]


@pytest.mark.parametrize("per_line", [False, True])
def test_an_empty_id_is_derived_like_a_missing_one(tmp_path, per_line):
    f = tmp_path / "e.jsonl"
    f.write_text('{"id": "", "text": "a"}\n{"id": "x", "text": "b"}\n{"text": "c"}\n')
    task = FileTask(index=0, path=str(f), relpath="e.jsonl", format="jsonl", source="s", domain="d")
    got = [r["id"] for b in read_file(task, per_line=per_line) for r in b.to_pylist()]
    assert got == ["s:e.jsonl:1", "x", "s:e.jsonl:3"]
