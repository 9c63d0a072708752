from pathlib import Path

import numpy as np
import pytest
import torch

from training.common.data import (
    DataError,
    DeltaBatches,
    delta_loader,
    delta_snapshot,
    petastorm_url,
    to_torch,
)

TABLE = "samples.toy"
COLUMNS = ["id", "text", "tokens", "score"]
CURRENT_IDS = list(range(100, 160))  # version 1; version 0 held ids 0..39


def _tokens(i: int) -> list[int]:
    return [i * 10 + k for k in range(i % 5 + 1)]  # 1 to 5 token ids: lengths differ within files


def _frame(spark, ids):
    rows = [(i, f"text {i}", _tokens(i), i / 4, "a" if i % 3 else "b") for i in ids]
    schema = "id long, text string, tokens array<int>, score double, part string"
    return spark.createDataFrame(rows, schema).repartition(3)


@pytest.fixture()
def toy_table(spark, catalog):
    """Version 0 (ids 0..39), then an overwrite (ids 100..159): the folder keeps version 0's files."""
    catalog.write(_frame(spark, range(40)), TABLE, partition_by=["part"])
    catalog.write(_frame(spark, CURRENT_IDS), TABLE, partition_by=["part"])
    return catalog


def _read_all(batches) -> dict[str, list]:
    out: dict[str, list] = {}
    for batch in batches:
        for column, values in batch.items():
            out.setdefault(column, []).extend(list(values))
    return out


def test_loader_reads_exactly_the_current_snapshot(spark, toy_table):
    snapshot = delta_snapshot(spark, toy_table, TABLE, COLUMNS)
    on_disk = list(Path(toy_table.location(TABLE)).rglob("*.parquet"))
    assert snapshot.version == 1 and len(on_disk) > len(snapshot.files)  # stale files of version 0 exist
    assert snapshot.num_rows == len(CURRENT_IDS) and snapshot.array_columns == ("tokens",)
    assert all(f.startswith("file:///") for f in snapshot.files)

    batches = list(DeltaBatches(snapshot, batch_size=7, shuffle_seed=1))
    assert [len(b["id"]) for b in batches] == [7] * 8 + [4]
    assert all(set(b) == set(COLUMNS) for b in batches)
    rows = _read_all(batches)
    assert sorted(rows["id"]) == CURRENT_IDS  # none from removed files, none lost, none twice
    assert rows["id"] != CURRENT_IDS  # shuffled
    for i, text, tokens, score in zip(rows["id"], rows["text"], rows["tokens"], rows["score"], strict=True):
        assert text == f"text {i}" and score == i / 4
        assert tokens.dtype == np.int32 and tokens.tolist() == _tokens(i)

    # column selection, a partition filter, and the one-call form
    loader = delta_loader(spark, toy_table, TABLE, ["tokens", "id"], batch_size=16, where="part = 'b'")
    rows = _read_all(loader)
    assert set(rows) == {"tokens", "id"}
    assert sorted(rows["id"]) == [i for i in CURRENT_IDS if i % 3 == 0]
    assert all(t.tolist() == _tokens(i) for i, t in zip(rows["id"], rows["tokens"], strict=True))


def test_sharding_two_ways_covers_every_row_once(spark, toy_table):
    snapshot = delta_snapshot(spark, toy_table, TABLE, ["id"])
    shards = [
        _read_all(DeltaBatches(snapshot, 5, rank=r, world_size=2, balance_ranks=False))["id"]
        for r in range(2)
    ]
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == CURRENT_IDS

    # balanced (the training default): the same number of full batches on both ranks
    balanced = [list(DeltaBatches(snapshot, 5, rank=r, world_size=2)) for r in range(2)]
    assert [len(b) for b in balanced] == [len(CURRENT_IDS) // 10] * 2
    assert all(len(batch["id"]) == 5 for batches in balanced for batch in batches)
    for rank, batches in enumerate(balanced):
        assert set(_read_all(batches)["id"]) <= set(shards[rank])


def test_epochs_are_reproducible_and_resumable(spark, toy_table):
    snapshot = delta_snapshot(spark, toy_table, TABLE, ["id"])
    loader = DeltaBatches(snapshot, 8, shuffle_seed=3, num_epochs=2)
    first = [b["id"].tolist() for b in loader.epoch(0)]
    assert first == [b["id"].tolist() for b in loader.epoch(0)]
    assert first != [b["id"].tolist() for b in loader.epoch(1)]
    assert [b["id"].tolist() for b in loader.epoch(0, skip=3)] == first[3:]
    assert len(list(loader)) == 2 * len(first)
    in_order = [b["id"].tolist() for b in DeltaBatches(snapshot, 8, shuffle=False).epoch(0)]
    assert in_order != first and sorted(sum(in_order, [])) == CURRENT_IDS


def test_bad_requests_are_clear_errors(spark, toy_table):
    with pytest.raises(DataError, match=r"no columns \['nope'\]"):
        delta_snapshot(spark, toy_table, TABLE, ["id", "nope"])
    with pytest.raises(DataError, match="only its partition columns"):
        delta_snapshot(spark, toy_table, TABLE, ["id"], where="score > 3")
    with pytest.raises(DataError, match="does not exist"):
        delta_snapshot(spark, toy_table, "samples.missing", ["id"])
    empty = delta_snapshot(spark, toy_table, TABLE, ["id"], where="part = 'zzz'")
    assert empty.files == () and empty.num_rows == 0
    with pytest.raises(DataError, match="has no rows where part = 'zzz'"):
        DeltaBatches(empty, 4)


def test_to_torch_types():
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.array([1, 2, 3], dtype=np.int32), np.array([4], dtype=np.int32)]
    batch = {
        "id": np.array([7, 8]),
        "score": np.array([0.5, 1.5]),
        "text": np.array(["a", "b"]),
        "tokens": ragged,
    }
    out = to_torch(batch)
    assert out["id"].dtype == torch.int64 and out["score"].dtype == torch.float64
    assert out["text"] == ["a", "b"]
    assert [t.tolist() for t in out["tokens"]] == [[1, 2, 3], [4]]


@pytest.mark.parametrize(
    "path,url",
    [
        ("file:/tmp/x/a.parquet", "file:///tmp/x/a.parquet"),
        ("file:///tmp/x/a.parquet", "file:///tmp/x/a.parquet"),
        ("/tmp/x/a.parquet", "file:///tmp/x/a.parquet"),
        ("dbfs:/mnt/lake/a.parquet", "file:///dbfs/mnt/lake/a.parquet"),
        ("s3://bucket/lake/a.parquet", "s3://bucket/lake/a.parquet"),
    ],
)
def test_petastorm_urls(path, url):
    assert petastorm_url(path) == url
