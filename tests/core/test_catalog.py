import os

import pytest
from pyspark.sql import functions as F

from core.catalog import CatalogError, TableCatalog


def test_locations_and_unity_catalog_names(tmp_path, monkeypatch):
    local = TableCatalog.resolve(str(tmp_path))
    assert local.location("raw.impressions") == f"{tmp_path}/raw/impressions"
    assert local.unity_name("raw.impressions") is None
    uc = TableCatalog.resolve(str(tmp_path), unity_prefix="main.larr")
    assert uc.unity_name("raw.impressions") == "main.larr.raw_impressions"
    monkeypatch.setenv("LARR_LAKEHOUSE", str(tmp_path / "from-env"))
    assert TableCatalog.resolve().root == str(tmp_path / "from-env")
    assert TableCatalog.resolve(str(tmp_path / "flag")).root == str(tmp_path / "flag")
    with pytest.raises(CatalogError, match="'layer.table'"):
        local.location("Impressions")
    with pytest.raises(CatalogError, match="catalog.schema"):
        TableCatalog.resolve(str(tmp_path), unity_prefix="main")


def test_write_read_and_time_travel(spark, catalog):
    assert catalog.version(spark, "raw.numbers") is None
    assert catalog.write(spark.range(5), "raw.numbers") == 0
    assert catalog.write(spark.range(3), "raw.numbers") == 1
    assert catalog.last_commit_rows(spark, "raw.numbers") == 3
    assert sorted(r.id for r in catalog.read(spark, "raw.numbers").collect()) == [0, 1, 2]
    assert sorted(r.id for r in catalog.read(spark, "raw.numbers", version=0).collect()) == [0, 1, 2, 3, 4]
    assert os.path.isdir(os.path.join(catalog.location("raw.numbers"), "_delta_log"))


def test_the_latest_commit_is_read_from_the_history_once_per_version(spark, catalog, monkeypatch):
    catalog.write(spark.range(5), "raw.numbers")
    first = catalog.head(spark, "raw.numbers")
    assert (first.version, first.metrics["numOutputRows"]) == (0, "5")
    history_reads = []
    real_delta = TableCatalog.delta
    monkeypatch.setattr(
        TableCatalog, "delta", lambda self, s, name: history_reads.append(name) or real_delta(self, s, name)
    )
    assert catalog.head(spark, "raw.numbers").version == 0
    assert catalog.version(spark, "raw.numbers") == 0
    assert history_reads == []  # the version came from Delta's log snapshot, the facts from the cache
    # a commit by another writer (another catalog on the same lakehouse) is seen at once
    TableCatalog.resolve(catalog.root).write(spark.range(2), "raw.numbers")
    assert catalog.head(spark, "raw.numbers").version == 1
    assert catalog.last_commit_rows(spark, "raw.numbers") == 2
    assert history_reads == ["raw.numbers"] * 2  # version 1's facts: once by each catalog


def test_without_the_log_snapshot_the_history_answers(spark, catalog, monkeypatch):
    monkeypatch.setattr(TableCatalog, "_snapshot_version", lambda self, s, name: None)  # Spark Connect
    catalog.write(spark.range(5), "raw.numbers")
    catalog.write(spark.range(3), "raw.numbers")
    assert catalog.head(spark, "raw.numbers").version == 1
    assert catalog.last_commit_rows(spark, "raw.numbers") == 3


def test_replace_where_overwrites_only_that_partition(spark, catalog):
    df = spark.createDataFrame([(1, "a"), (2, "b")], "day int, v string")
    catalog.write(df, "raw.days", partition_by=["day"])
    catalog.write(spark.createDataFrame([(2, "c")], "day int, v string"), "raw.days", replace_where="day = 2")
    rows = sorted(tuple(r) for r in catalog.read(spark, "raw.days").collect())
    assert rows == [(1, "a"), (2, "c")]


def test_a_failed_write_leaves_the_previous_version_readable(spark, catalog):
    catalog.write(spark.range(5), "raw.numbers")
    failing = spark.range(100).select(
        F.when(F.col("id") == 77, F.raise_error(F.lit("boom"))).otherwise(F.col("id")).alias("id")
    )
    with pytest.raises(Exception, match="boom"):
        catalog.write(failing, "raw.numbers")
    assert catalog.version(spark, "raw.numbers") == 0
    assert catalog.read(spark, "raw.numbers").count() == 5


def test_missing_table_is_named(spark, catalog):
    with pytest.raises(CatalogError, match="table raw.nothing does not exist"):
        catalog.read(spark, "raw.nothing")


def test_unwritable_lakehouse_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    catalog = TableCatalog.resolve(str(blocker / "lakehouse"))
    with pytest.raises(
        CatalogError, match=f"lakehouse {blocker}/lakehouse cannot be a folder: {blocker} is a file"
    ):
        catalog.check_writable()
    with pytest.raises(CatalogError, match=f"lakehouse {blocker} cannot be a folder: {blocker} is a file"):
        TableCatalog.resolve(str(blocker)).check_writable()


def test_the_config_hash_changes_with_the_sources_not_only_the_version(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from core import manifest

    for package in manifest.CODE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "job.py").write_text("X = 1\n")
    (tmp_path / "etl" / "__pycache__").mkdir()
    before = manifest.source_digest(tmp_path)
    (tmp_path / "etl" / "__pycache__" / "job.cpython-311.pyc").write_bytes(b"compiled")
    (tmp_path / "etl" / "notes.txt").write_text("not code")
    assert manifest.source_digest(tmp_path) == before  # caches and other files are not code
    (tmp_path / "etl" / "job.py").write_text("X = 2\n")
    assert manifest.source_digest(tmp_path) != before

    @dataclass
    class Config:
        rows: int = 1

    first = manifest.config_hash(Config())
    assert manifest.config_hash(Config()) == first and manifest.config_hash(Config(rows=2)) != first
    monkeypatch.setattr(manifest, "code_revision", lambda: "0.1.0+edited")
    assert manifest.config_hash(Config()) != first
