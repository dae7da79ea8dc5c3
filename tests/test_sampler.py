"""Tests for mixers.sampler: constant-token batches from Dataset Decomposition buckets and the
concat-and-chunk baseline, read from `save_to_disk` export directories (Pouransari et al. 2024, arXiv:2405.13226)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import datasets
import numpy as np
import pytest

from mixers.sampler import ConcatSampler, VariableLengthSampler

BUCKETS = {3: 40, 4: 30, 5: 21, 6: 13}  # rows per bucket; leftovers with 64 tokens per batch
TPB = 64  # multiple of 2**6
FEATURES = datasets.Features({
    "id": datasets.Value("string"), "domain": datasets.Value("string"),
    "position": datasets.Value("int32"), "start": datasets.Value("int32"),
    "tokens": datasets.Sequence(datasets.Value("uint16")),
})


class Counter:
    """Distinct token ids across everything one test writes, so every row can be traced."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> list[int]:
        out = list(range(self.next, self.next + n))
        self.next += n
        assert self.next < 1 << 16
        return out


def write_group(directory: Path, lengths: list[int], ids: Counter, domain: str = "web",
                shards: int = 2) -> list[list[int]]:
    rows = [ids.take(n) for n in lengths]
    ds = datasets.Dataset.from_dict({
        "id": [f"{domain}-{directory.name}-{k}" for k in range(len(rows))],
        "domain": [domain] * len(rows), "position": [0] * len(rows), "start": [0] * len(rows),
        "tokens": rows}, features=FEATURES)
    ds.save_to_disk(str(directory), num_shards=min(shards, max(len(rows), 1)))
    return rows


def make_export(root: Path, buckets=BUCKETS, tails: list[int] | None = None, ids: Counter | None = None,
                domain: str = "web", manifest: bool = False) -> dict[str, list[list[int]]]:
    ids = ids or Counter()
    groups = {}
    for i, n in buckets.items():
        groups[f"bucket_{i}"] = write_group(root / f"bucket_{i}", [2 ** i + 1] * n, ids, domain)
    if tails:
        groups["bucket_tail"] = write_group(root / "bucket_tail", tails, ids, domain)
    if manifest:
        stats = {name: {"sequences": len(rows), "tokens": sum(map(len, rows)), "shards": 2}
                 for name, rows in groups.items()}
        (root / "manifest.json").write_text(json.dumps(
            {"stages": [{"name": "decompose", "stats": {}}, {"name": "export", "stats": {"datasets": stats}}]}))
    return groups


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    groups = make_export(root, tails=[1, 5, 8, 3, 2, 7, 8, 4, 6, 2, 5], manifest=True)
    return root, groups


def rows_of(batches) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for b in batches for row in b["tokens"]]


def schedule_of(batches) -> list[tuple[int, object]]:
    return [(b["step"], b["bucket"]) for b in batches]


# --------------------------------------------------------------------------------------------
# One epoch: every sequence once, minus the counted leftovers; constant tokens per batch
# --------------------------------------------------------------------------------------------


def test_one_epoch_yields_every_stored_sequence_once_minus_the_counted_leftovers(export):
    root, groups = export
    sampler = VariableLengthSampler(root, TPB, seed=3)
    plan = sampler.epoch_plan()
    batches = list(sampler)
    assert len(batches) == plan["steps"] == len(sampler)

    seen = rows_of(batches)
    assert len(seen) == len(set(seen))  # no sequence twice
    for i, n in BUCKETS.items():
        stored = {tuple(r) for r in groups[f"bucket_{i}"]}
        got = [r for r in seen if len(r) == 2 ** i + 1]
        assert set(got) <= stored
        p = plan["buckets"][i]
        assert p["sequences"] == n and p["tokens"] == n * (2 ** i + 1)
        assert p["batch_size"] == TPB // 2 ** i
        assert len(got) == p["used_sequences"] == p["batches"] * p["batch_size"]
        assert len(stored) - len(got) == p["leftover_sequences"] == n % (TPB // 2 ** i)
    total = plan["total"]
    assert sum(len(r) for r in seen) == total["used_tokens"]
    assert total["used_tokens"] + total["leftover_tokens"] + total["skipped_tokens"] == total["tokens"]
    assert total["leftover_sequences"] == sum(n % (TPB // 2 ** i) for i, n in BUCKETS.items()) > 0
    # tails are skipped by default, and counted
    tail_rows = groups["bucket_tail"]
    assert plan["tail"]["skipped_sequences"] == len(tail_rows)
    assert plan["tail"]["skipped_tokens"] == sum(map(len, tail_rows))
    assert not set(seen) & {tuple(r) for r in tail_rows}
    # what the manifest promises: its tokens == yielded + leftovers + skipped tails
    manifest = json.loads((root / "manifest.json").read_text())["stages"][1]["stats"]["datasets"]
    assert sum(g["tokens"] for g in manifest.values()) == total["tokens"]
    assert plan["manifest"]["checked"] == sorted(manifest)


def test_every_batch_has_tokens_per_batch_inputs_from_one_bucket(export):
    root, _ = export
    sampler = VariableLengthSampler(root, 2 * TPB, curriculum="grow_p2", seed=1)
    buckets = set()
    for b in sampler:
        i = b["bucket"]
        buckets.add(i)
        t = b["tokens"]
        assert t.shape == (2 * TPB // 2 ** i, 2 ** i + 1) and t.dtype == np.int64
        assert t.shape[0] * (t.shape[1] - 1) == 2 * TPB  # constant tokens per step
        x, y = t[:, :-1], t[:, 1:]
        assert np.all(y == x + 1)  # rows are consecutive ids: each row is one stored sequence
    assert buckets == set(BUCKETS)
    assert VariableLengthSampler(root, TPB, dtype=None).iter_from(0).__next__()["tokens"].dtype == np.uint16


def test_epochs_reshuffle_and_each_epoch_covers_the_data(export):
    root, _ = export
    sampler = VariableLengthSampler(root, TPB, seed=5, epochs=2)
    batches = list(sampler)
    spe = sampler.steps_per_epoch
    assert len(batches) == 2 * spe and [b["epoch"] for b in batches] == [0] * spe + [1] * spe
    first, second = rows_of(batches[:spe]), rows_of(batches[spe:])
    assert len(set(first)) == len(first) and len(set(second)) == len(second)
    assert first != second
    assert len(first) == len(second) == sampler.epoch_plan()["total"]["used_sequences"]


# --------------------------------------------------------------------------------------------
# Ranks and seeds
# --------------------------------------------------------------------------------------------


def test_ranks_share_the_global_order_and_split_each_batch(export):
    root, _ = export
    whole = list(VariableLengthSampler(root, 2 * TPB, curriculum="grow_p2", seed=7))
    per_rank = [list(VariableLengthSampler(root, 2 * TPB, curriculum="grow_p2", seed=7, rank=r, world_size=2))
                for r in range(2)]
    assert schedule_of(per_rank[0]) == schedule_of(per_rank[1]) == schedule_of(whole)
    for g, a, b in zip(whole, *per_rank):
        assert len(a["tokens"]) == len(b["tokens"]) == len(g["tokens"]) // 2
        assert not {tuple(r) for r in a["tokens"]} & {tuple(r) for r in b["tokens"]}
        assert np.array_equal(np.concatenate([a["tokens"], b["tokens"]]), g["tokens"])  # contiguous slices


def test_same_seed_same_batches_other_seed_other_order(export):
    root, _ = export
    a = list(VariableLengthSampler(root, TPB, seed=11))
    b = list(VariableLengthSampler(root, TPB, seed=11))
    c = list(VariableLengthSampler(root, TPB, seed=12))
    assert schedule_of(a) == schedule_of(b) and rows_of(a) == rows_of(b)
    assert schedule_of(a) != schedule_of(c)
    assert rows_of(a) != rows_of(c)
    assert sorted(rows_of(a)) != rows_of(a)  # shuffled


# --------------------------------------------------------------------------------------------
# Resumption
# --------------------------------------------------------------------------------------------


def test_resume_from_any_step_yields_the_remaining_batches(export):
    root, _ = export
    kw = dict(curriculum="grow_p2", cycles=2, seed=2, epochs=2)
    full = list(VariableLengthSampler(root, 2 * TPB, **kw))
    spe = len(full) // 2
    for k in (0, 1, 5, spe - 1, spe, spe + 3, len(full)):
        resumed = list(VariableLengthSampler(root, 2 * TPB, **kw).iter_from(k))
        assert schedule_of(resumed) == schedule_of(full[k:])
        assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(resumed, full[k:]))

    # state_dict after k batches -> fresh object (another rank count is fine) -> the rest
    run = VariableLengthSampler(root, 2 * TPB, **kw)
    it = iter(run)
    for _ in range(9):
        next(it)
    state = json.loads(json.dumps(run.state_dict()))
    assert state["step"] == 9
    fresh = VariableLengthSampler(root, 2 * TPB, **kw, rank=1, world_size=2)
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert schedule_of(rest) == schedule_of(full[9:])
    assert all(np.array_equal(x["tokens"], y["tokens"][len(y["tokens"]) // 2:]) for x, y in zip(rest, full[9:]))


def test_resume_reads_no_data_for_the_skipped_steps(export, monkeypatch):
    root, _ = export
    sampler = VariableLengthSampler(root, TPB, seed=4)
    assert not any(s._opened for s in sampler._stores.values())  # construction maps no data
    gathered = []
    for store in sampler._stores.values():
        original = store.gather
        monkeypatch.setattr(store, "gather",
                            lambda rows, dtype, f=original: gathered.append(len(rows)) or f(rows, dtype))
    it = sampler.iter_from(len(sampler) - 2)
    next(it)
    assert len(gathered) == 1
    opened = sum(len(s._opened) for s in sampler._stores.values())
    assert 0 < opened <= 2  # only the files the one batch touched are mapped


def test_state_from_other_settings_is_refused(export):
    root, _ = export
    state = VariableLengthSampler(root, TPB, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        VariableLengthSampler(root, TPB, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="tokens_per_batch"):
        VariableLengthSampler(root, 2 * TPB, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="step"):
        VariableLengthSampler(root, TPB, seed=1).iter_from(10 ** 6)


# --------------------------------------------------------------------------------------------
# Curriculum (the paper's length curricula)
# --------------------------------------------------------------------------------------------


def mean_position(schedule: np.ndarray, bucket: int) -> float:
    return float(np.mean(np.flatnonzero(schedule == bucket)) / (len(schedule) - 1))


def test_grow_p2_puts_short_buckets_earlier_than_uniform(tmp_path):
    make_export(tmp_path, buckets={3: 160, 4: 80, 5: 40, 6: 20})  # equal tokens per bucket
    grow, uni = [], []
    for seed in range(8):
        g = VariableLengthSampler(tmp_path, TPB, curriculum="grow_p2", seed=seed).schedule()
        u = VariableLengthSampler(tmp_path, TPB, curriculum="uniform", seed=seed).schedule()
        assert np.array_equal(g, VariableLengthSampler(tmp_path, TPB, curriculum="grow_p2", seed=seed).schedule())
        grow.append([mean_position(g, i) for i in (3, 4, 5, 6)])
        uni.append([mean_position(u, i) for i in (3, 4, 5, 6)])
    grow, uni = np.mean(grow, axis=0), np.mean(uni, axis=0)
    assert grow[0] < uni[0] - 0.1 and grow[-1] > uni[-1] + 0.1
    assert list(grow) == sorted(grow)  # short to long
    assert np.ptp(uni) < 0.1  # uniform drains the buckets together


def test_cycles_split_each_bucket_across_the_epoch(tmp_path):
    make_export(tmp_path, buckets={3: 160, 4: 80, 5: 40, 6: 21})
    sampler = VariableLengthSampler(tmp_path, TPB, curriculum="grow_p2", cycles=4, seed=0)
    sched = sampler.schedule()
    counts = {i: sampler.epoch_plan()["buckets"][i]["batches"] for i in (3, 4, 5, 6)}
    assert len(sched) == sum(counts.values())
    start = 0
    for c in range(4):
        size = sum(n // 4 + (c < n % 4) for n in counts.values())
        part = sched[start:start + size]
        for i, n in counts.items():
            assert np.count_nonzero(part == i) == n // 4 + (c < n % 4)
        assert mean_position(part, 3) < mean_position(part, 6)  # every cycle goes short to long
        start += size


# --------------------------------------------------------------------------------------------
# Tails, domains, manifest, torch
# --------------------------------------------------------------------------------------------


def test_padded_tails_are_batched_with_the_smallest_bucket_shape(export):
    root, groups = export
    sampler = VariableLengthSampler(root, TPB, tails="pad", pad_id=0, seed=9)  # 64 / 2**3 = 8 rows a batch
    plan = sampler.epoch_plan()
    tail_batches = [b for b in sampler if b["bucket"] is None]
    assert len(tail_batches) == plan["tail"]["batches"] == len(groups["bucket_tail"]) // 8 == 1
    got = set()
    for b in tail_batches:
        assert b["tokens"].shape == (8, 9)
        for row, n in zip(b["tokens"], b["lengths"]):
            assert np.all(row[n:] == 0)
            got.add(tuple(int(v) for v in row[:n]))
    assert got <= {tuple(r) for r in groups["bucket_tail"]}
    assert len(got) == plan["tail"]["used_sequences"]
    assert sum(map(len, got)) == plan["tail"]["used_tokens"]
    assert plan["tail"]["used_tokens"] + plan["tail"]["leftover_tokens"] == plan["tail"]["tokens"]
    with pytest.raises(ValueError, match="pad_id"):
        VariableLengthSampler(root, TPB, tails="pad")


def test_domains_apart_are_merged_or_chosen(tmp_path):
    ids = Counter()
    a = make_export(tmp_path / "code", buckets={3: 8, 4: 4}, ids=ids, domain="code")
    b = make_export(tmp_path / "web", buckets={3: 8, 5: 2}, ids=ids, domain="web")
    both = VariableLengthSampler(tmp_path, 32, seed=0)
    assert both.domains == ["code", "web"] and both.buckets == [3, 4, 5]
    seen = set(rows_of(list(both)))
    assert seen == {tuple(r) for g in (a, b) for rows in g.values() for r in rows}  # no leftovers here
    only = VariableLengthSampler(tmp_path, 32, seed=0, domains=["web"])
    assert set(rows_of(list(only))) == {tuple(r) for rows in b.values() for r in rows}
    with pytest.raises(ValueError, match="domain directory not found"):
        VariableLengthSampler(tmp_path, 32, domains=["books"])


def test_domain_directories_with_encoded_names_are_read_by_domain_name(tmp_path):
    """An export writes a domain under mixers.dirnames.dir_name(domain); samplers take and report
    domain names: %-encoded directories decode by themselves, cut ones through the manifest's
    domain_dirs (and stay as they are without it)."""
    from mixers.dirnames import dir_name
    from mixers.exported import domain_dirs

    long = "news/" + "é" * 40  # encoded longer than 120 characters: cut, with a hash
    cut = dir_name(long)
    assert dir_name("a/b") == "%a%2Fb" and "~" in cut
    ids = Counter()
    slash = make_export(tmp_path / "%a%2Fb", buckets={3: 8}, ids=ids, domain="a/b")
    make_export(tmp_path / "code", buckets={3: 8, 4: 4}, ids=ids, domain="code")
    make_export(tmp_path / cut, buckets={3: 4}, ids=ids, domain=long)
    assert domain_dirs(tmp_path) == {"a/b": "%a%2Fb", "code": "code", cut: cut}  # no manifest: cut stays

    groups = {f"{d}/bucket_3": {"sequences": n, "tokens": n * 9} for d, n in (("a/b", 8), ("code", 8), (long, 4))}
    groups["code/bucket_4"] = {"sequences": 4, "tokens": 4 * 17}  # the manifest may key groups by domain too
    stats = {"datasets": groups, "domain_dirs": {"%a%2Fb": "a/b", "code": "code", cut: long}}
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": [{"name": "export", "stage": "export", "stats": stats}]}))
    assert domain_dirs(tmp_path) == {"a/b": "%a%2Fb", "code": "code", long: cut}
    every = VariableLengthSampler(tmp_path, 32, seed=0)
    assert every.domains == ["a/b", "code", long] and len(every.manifest["checked"]) == 4
    only = VariableLengthSampler(tmp_path, 32, seed=0, domains=["a/b"])
    assert set(rows_of(list(only))) == {tuple(r) for r in slash["bucket_3"]}
    assert only.state_dict()["domains"] == ["a/b"]
    assert VariableLengthSampler(tmp_path, 32, domains=[long]).steps_per_epoch == 1
    with pytest.raises(ValueError, match="domain directory not found"):
        VariableLengthSampler(tmp_path, 32, domains=["%a%2Fb"])  # a directory is not a domain name
    groups["a/b/bucket_3"]["sequences"] = 7
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": [{"name": "export", "stage": "export", "stats": stats}]}))
    with pytest.raises(ValueError, match="a/b/bucket_3: manifest 7 sequences"):
        VariableLengthSampler(tmp_path, 32, domains=["a/b"])


def test_shards_that_disagree_with_the_manifest_are_refused(tmp_path):
    make_export(tmp_path, buckets={3: 8, 4: 4}, manifest=True)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["stages"][1]["stats"]["datasets"]["bucket_4"]["sequences"] = 5
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="bucket_4: manifest 5 sequences"):
        VariableLengthSampler(tmp_path, 16)
    assert VariableLengthSampler(tmp_path, 16, check_manifest=False).steps_per_epoch == 8


def test_torch_dataloader_keeps_the_order_with_workers(export):
    import torch
    from torch.utils.data import DataLoader

    from training.loader import torch_dataset

    root, _ = export
    sampler = VariableLengthSampler(root, TPB, seed=6)
    expected = list(VariableLengthSampler(root, TPB, seed=6).iter_from(3))
    ds = torch_dataset(sampler, start=3)
    assert len(ds) == len(expected)
    pickle.loads(pickle.dumps(ds))  # workers started with spawn get a copy without the maps
    # spawn: workers start clean, not as forks of a test process that holds a JVM gateway and
    # Prefect's logging handlers (a fork of it could fail at exit)
    for workers in (0, 2):
        got = list(DataLoader(ds, batch_size=None, num_workers=workers,
                              multiprocessing_context="spawn" if workers else None))
        assert [b["step"] for b in got] == [b["step"] for b in expected]
        assert all(isinstance(g["tokens"], torch.Tensor) and np.array_equal(g["tokens"].numpy(), e["tokens"])
                   for g, e in zip(got, expected))


# --------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------


def test_argument_errors_are_clear(export, tmp_path):
    root, _ = export
    with pytest.raises(ValueError, match=r"multiple of 2\*\*6"):
        VariableLengthSampler(root, 96)
    with pytest.raises(ValueError, match=r"rank \(2\) must be < world_size \(2\)"):
        VariableLengthSampler(root, TPB, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        VariableLengthSampler(root, TPB, world_size=3)  # 64 / 2**6 = 1 row cannot split over 3 ranks
    with pytest.raises(ValueError, match="not found"):
        VariableLengthSampler(tmp_path / "nowhere", TPB)
    with pytest.raises(ValueError, match="no bucket_<i>"):
        VariableLengthSampler(tmp_path, TPB)
    with pytest.raises(ValueError, match="unknown curriculum"):
        VariableLengthSampler(root, TPB, curriculum="shrink")
    with pytest.raises(ValueError, match="fills one batch"):
        VariableLengthSampler(root, 64 * 64)
    bad = tmp_path / "bad"
    write_group(bad / "bucket_3", [9, 9, 8, 10], Counter())
    with pytest.raises(ValueError, match="exactly 9 tokens|row of"):
        list(VariableLengthSampler(bad, 8, check_manifest=False))


# --------------------------------------------------------------------------------------------
# Concat-and-chunk
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def concat(tmp_path_factory):
    root = tmp_path_factory.mktemp("concat")
    rows = write_group(root / "concat_16", [17] * 50, Counter(), shards=3)
    (root / "manifest.json").write_text(json.dumps({"stages": [{"name": "export", "stats": {
        "datasets": {"concat_16": {"sequences": 50, "tokens": 50 * 17, "shards": 3}}}}]}))
    return root, rows


def test_concat_epoch_ranks_seeds_and_resume(concat):
    root, rows = concat
    sampler = ConcatSampler(root, 8, seed=1)
    plan = sampler.epoch_plan()
    batches = list(sampler)
    assert len(batches) == plan["batches"] == 6 and plan["leftover_sequences"] == 2
    seen = rows_of(batches)
    assert len(set(seen)) == 48 and set(seen) <= {tuple(r) for r in rows}
    assert sum(map(len, seen)) == plan["used_tokens"] == plan["tokens"] - plan["leftover_tokens"]
    assert all(b["tokens"].shape == (8, 17) for b in batches)
    assert plan["manifest"]["checked"] == ["concat_16"]

    ranks = [list(ConcatSampler(root / "concat_16", 8, seed=1, rank=r, world_size=4)) for r in range(4)]
    for step, parts in enumerate(zip(*ranks)):
        assert {p["step"] for p in parts} == {step}
        assert np.array_equal(np.concatenate([p["tokens"] for p in parts]), batches[step]["tokens"])
    assert rows_of(list(ConcatSampler(root, 8, seed=2))) != seen

    two = list(ConcatSampler(root, 8, seed=1, epochs=2))
    assert rows_of(two[:6]) == seen and rows_of(two[6:]) != seen
    resumed = ConcatSampler(root, 8, seed=1, epochs=2)
    it = iter(resumed)
    next(it), next(it)
    fresh = ConcatSampler(root, 8, seed=1, epochs=2)
    fresh.load_state_dict(resumed.state_dict())
    assert rows_of(list(fresh)) == rows_of(two[2:])
    assert rows_of(list(ConcatSampler(root, 8, seed=1, epochs=2).iter_from(7))) == rows_of(two[7:])


def test_concat_argument_errors(concat, tmp_path):
    root, _ = concat
    with pytest.raises(ValueError, match="multiple of world_size"):
        ConcatSampler(root, 8, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        ConcatSampler(root, 8, rank=-1)
    with pytest.raises(ValueError, match="not found"):
        ConcatSampler(tmp_path / "nowhere", 8)
    with pytest.raises(ValueError, match="no concat_32"):
        ConcatSampler(root, 8, seq_len=32)
    with pytest.raises(ValueError, match="no concat_<seq_len>"):
        ConcatSampler(tmp_path, 8)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ConcatSampler(root, 64)
    with pytest.raises(ValueError, match="ConcatSampler"):
        ConcatSampler(root, 8).load_state_dict(VariableLengthSampler(concat_free_export(tmp_path), 8).state_dict())


def concat_free_export(tmp_path: Path) -> Path:
    make_export(tmp_path / "dd", buckets={3: 4})
    return tmp_path / "dd"
