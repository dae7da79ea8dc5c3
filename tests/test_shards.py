"""Sharded `save_to_disk` datasets written by executors: every reader opens them."""
from __future__ import annotations

import pyarrow as pa

from pipelines.shards import write_datasets


def test_shards_load_with_datasets_pyarrow_and_torch(spark, tmp_path):
    rows = [(f"d{i}", i % 3, f"bucket_{5 + i % 2}", list(range(i, i + 33 if i % 2 == 0 else i + 65)))
            for i in range(50)]
    df = spark.createDataFrame(rows, "id string, position int, grp string, tokens array<int>").repartition(4)
    schema = pa.schema([("id", pa.string()), ("position", pa.int32()), ("tokens", pa.list_(pa.uint16()))])
    shards = write_datasets(df, str(tmp_path), "grp", schema, order=["id", "position"], shard_rows=7)
    assert set(shards) == {"bucket_5", "bucket_6"}
    assert sum(f.rows for f in shards["bucket_5"]) == 25 and all(f.rows <= 7 for f in shards["bucket_5"])
    assert sum(f.tokens for f in shards["bucket_5"]) == 25 * 33

    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "bucket_6"))
    assert len(ds) == 25 and ds.features["tokens"].feature.dtype == "uint16"
    assert sorted(ds["id"]) == sorted(f"d{i}" for i in range(1, 50, 2))
    assert all(len(t) == 65 for t in ds["tokens"])
    first = sorted(p.name for p in (tmp_path / "bucket_6").glob("data-*.arrow"))[0]
    with pa.ipc.open_stream(str(tmp_path / "bucket_6" / first)) as reader:
        table = reader.read_all()
    assert table.schema.field("tokens").type == pa.list_(pa.uint16()) and table.num_rows <= 7
    assert not list(tmp_path.rglob(".tmp-*"))  # every shard renamed into place

    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(ds.with_format("torch", columns=["tokens"]), batch_size=5)
    batch = next(iter(loader))
    assert batch["tokens"].shape == (5, 65)


def test_domains_from_records_are_encoded_directories_inside_the_output(spark, tmp_path):
    from mixers.dirnames import dir_name, name_of

    out = tmp_path / "out"
    out.mkdir()
    hostile = ["../../escaped", "/tmp/absolute", "kept", "bucket_5", "..", "a/b", "code", "x" * 300, "é 日本"]
    rows = [(f"d{i}", 0, "bucket_5", hostile[i % len(hostile)], [1, 2, 3]) for i in range(40)]
    df = spark.createDataFrame(rows, "id string, position int, grp string, domain string, tokens array<int>")
    schema = pa.schema([("id", pa.string()), ("domain", pa.string()), ("tokens", pa.list_(pa.uint16()))])
    shards = write_datasets(df, str(out), "grp", schema, order=["id"], shard_rows=3, domain="domain")
    # nothing outside the output, no domain took a reserved name, every directory maps back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / "kept").exists() and not (out / "bucket_5").exists()
    by_domain = {files[0].domain: group for group, files in shards.items()}
    assert set(by_domain) == set(hostile)
    for domain, group in by_domain.items():
        top, _, bucket = group.partition("/")
        assert bucket == "bucket_5" and top == dir_name(domain) and (out / top / bucket / "state.json").is_file()
        assert name_of(top) in (domain, None)  # None: a cut name, mapped back by the manifest
    assert by_domain["code"] == "code/bucket_5"

    import datasets

    ds = datasets.load_from_disk(str(out / dir_name("../../escaped") / "bucket_5"))
    assert set(ds["domain"]) == {"../../escaped"}
