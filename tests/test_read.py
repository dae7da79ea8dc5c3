"""The read stage in Spark: input order, id re-keying, kept and removed rows."""
import json
from pathlib import Path

from pipelines import read
from pipelines.read import InputSpec, ReadParams


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_read_splits_good_and_bad_rows(tmp_path, ctx):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "one"}, "{oops", {"id": "2", "text": "two"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "three"}])
    result = read.apply(None, ReadParams((InputSpec(str(a), "A", "web"), InputSpec(str(b), "B", "code"))), ctx)
    kept = [r.asDict() for r in result.kept.orderBy("_file", "_row").collect()]
    assert [(r["id"], r["text"], r["source"], r["domain"], r["_file"], r["_row"]) for r in kept] == [
        ("1", "one", "A", "web", 0, 1), ("2", "two", "A", "web", 0, 3), ("B:b.jsonl:1", "three", "B", "code", 1, 1),
    ]
    (bad,) = result.removed.collect()
    assert bad["id"] == "A:a.jsonl:2" and bad["removed_by"] == "read" and bad["line"] == 2
    assert bad["reason"].startswith("malformed json at a.jsonl line 2") and bad["raw"] == "{oops"
    assert result.stats == {"files": 2, "skipped_files": 0}


def test_repeated_ids_are_rekeyed_in_input_order(tmp_path, ctx):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "1"}, {"id": "x", "text": "2"}, {"id": "x#1", "text": "3"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "text": "4"}])
    result = read.apply(None, ReadParams((InputSpec(str(a), "s"), InputSpec(str(b), "s"))), ctx)
    got = {r["text"]: r["id"] for r in result.kept.collect()}
    ids = list(got.values())
    assert len(set(ids)) == len(ids) == 4
    assert got["1"] == "x" and got["2"] == "x#1"
    assert got["4"] != "x" and got["4"].startswith("x#")


def test_domain_field_gives_records_their_own_domain(tmp_path, ctx):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "one", "domain": "hq"}, {"id": "2", "text": "two"},
                                           {"id": "3", "text": "three", "domain": 7}])
    result = read.apply(None, ReadParams((InputSpec(str(a), "A", "web", domain_field="domain"),)), ctx)
    got = {r["id"]: r["domain"] for r in result.kept.collect()}
    assert got == {"1": "hq", "2": "web", "3": "web"}  # missing or not a string: the input's domain


def test_files_a_directory_input_does_not_read_are_counted_and_named(spark, ctx, tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    write_jsonl(d / "a.jsonl", [{"text": "one"}])
    write_jsonl(d / "sub" / "b.jsonl", [{"text": "two"}])
    write_jsonl(d / ".hidden.jsonl", [{"text": "hidden"}])
    (d / "_tmp").mkdir()
    write_jsonl(d / "_tmp" / "c.jsonl", [{"text": "internal"}])
    (d / "_SUCCESS").write_text("")
    (d / "notes.txt").write_text("x")
    result = read.apply(None, ReadParams((InputSpec(str(d), "A"),)), ctx)
    assert result.kept.count() == 2
    assert result.stats["files"] == 2 and result.stats["skipped_files"] == 4
    assert sorted(Path(p).name for p in result.stats["skipped_examples"]) == [
        ".hidden.jsonl", "_SUCCESS", "c.jsonl", "notes.txt"]


def test_a_saved_dataset_inside_a_directory_input_is_read_as_one(tmp_path):
    import datasets

    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [{"text": "one"}])
    datasets.Dataset.from_dict({"text": ["two", "three"]}).save_to_disk(str(d / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["four"]})}).save_to_disk(str(d / "dict"))
    tasks, skipped = read.expand_inputs_and_skips([InputSpec(str(d), "A")])
    assert [(t.format, Path(t.path).name) for t in tasks] == [("jsonl", "a.jsonl"), ("datasets", "train"),
                                                             ("datasets", "saved")]
    assert skipped == []


def test_names_that_are_not_utf8_stop_the_run_with_a_printable_line(tmp_path):
    import os

    import pytest

    from core.errors import WinnowError

    f = write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}])
    bad = os.fsdecode(b"web\xff")  # how Python hands over a command-line argument that is not UTF-8
    with pytest.raises(WinnowError, match=r"domain is not UTF-8 text") as err:
        read.expand_inputs([InputSpec(str(f), "A", bad)])
    str(err.value).encode("utf-8")  # the line itself can be printed
    (tmp_path / "d").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "d"), b"web\xff.jsonl"), "wb") as fh:
        fh.write(b'{"text": "x"}\n')
    with pytest.raises(WinnowError, match=r"not UTF-8: .*web\\xff") as err:
        read.expand_inputs([InputSpec(str(tmp_path / "d"), "A")])
    str(err.value).encode("utf-8")
