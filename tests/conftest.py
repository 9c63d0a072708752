"""One session-scoped Spark (local[2], UI off, few shuffle partitions) with real Delta Lake, and a
fresh lakehouse catalog per test in a temp folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


# fixtures that start a JVM: a test using one (directly or through another fixture) is `slow`
SPARK_FIXTURES = {"spark", "world_catalog", "ctr_world"}


def pytest_collection_modifyitems(config, items):
    """Tests that need Spark are marked `slow` (`make test-fast` leaves them out); tests marked
    `gpu` are skipped where torch sees no CUDA device."""
    for item in items:
        if SPARK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu): torch sees no CUDA device")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def spark():
    from core.spark import SparkSettings, get_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = get_spark(
        SparkSettings(master="local[2]", app_name="larr-tests", shuffle_partitions=4, driver_memory="3g")
    )
    yield session
    session.stop()


@pytest.fixture()
def lakehouse(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "lakehouse"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LARR_LAKEHOUSE", raising=False)
    return root


@pytest.fixture()
def catalog(lakehouse):
    from core.catalog import TableCatalog

    return TableCatalog.resolve(str(lakehouse))


@pytest.fixture(scope="session")
def tiny_world_config():
    """A world small enough for a test and big enough for the semantic effects to show."""
    from etl.synthetic.config import DirtyConfig, GenerateConfig, WorldConfig

    return GenerateConfig(
        world=WorldConfig(users=400, pois=600, days=3, impressions_per_day=6000, partitions=2),
        dirty=DirtyConfig(fraction=0.01),
        test_day=3,
    )


@pytest.fixture(scope="session")
def world_catalog(spark, tiny_world_config, tmp_path_factory):
    """A tiny generated world written once per test session (read-only for tests)."""
    from core.catalog import TableCatalog
    from etl.synthetic import job

    catalog = TableCatalog.resolve(str(tmp_path_factory.mktemp("world") / "lakehouse"))
    job.write_world(spark, catalog, tiny_world_config, log=lambda _: None)
    return catalog


@pytest.fixture(scope="session")
def ctr_world(spark, world_catalog, tiny_world_config, tmp_path_factory):
    """The tiny world cleaned, with its statistics, CTR samples (day 3 = test), its truth table and a
    scene-vector export of random unit vectors (the CTR trainer and `larr bench ctr` tests), and a
    text-vector export of the same encoder (larr_plus)."""
    import numpy as np

    from core.catalog import TableCatalog
    from core.schema_table import write_schema
    from etl.synthetic.job import world_schema
    from features import samples, scene, stats
    from features.embeddings.vectors import save_scene_vectors
    from features.samples import SamplesConfig
    from features.scene import SceneConfig
    from features.stats import StatsConfig
    from tests.features import builders

    root = tmp_path_factory.mktemp("ctr") / "lakehouse"
    catalog = TableCatalog.resolve(str(root))
    users, pois, log = builders.clean_world(spark, world_catalog)
    write_schema(spark, catalog, world_schema(tiny_world_config))
    catalog.write(log, "clean.impressions", partition_by=["dt"])
    catalog.write(users, "clean.users")
    catalog.write(pois, "clean.pois")
    catalog.write(world_catalog.read(spark, "truth.impressions"), "truth.impressions", partition_by=["dt"])
    quiet = lambda _: None  # noqa: E731
    stats.run(spark, catalog, StatsConfig(), log=quiet)
    samples.run(spark, catalog, SamplesConfig(neg_rate=0.3), log=quiet)
    scene.run(spark, catalog, SceneConfig(), log=quiet)
    dictionary = catalog.read(spark, "features.scene_dictionary").select("feature", "scene_id").toPandas()
    rng = np.random.default_rng(0)
    per_feature = {}
    for feature, group in dictionary.groupby("feature"):
        vectors = rng.normal(size=(len(group), 8))
        per_feature[feature] = (
            group["scene_id"].to_numpy(),
            vectors / np.linalg.norm(vectors, axis=1)[:, None],
        )
    export = root / "_exports" / "scene_vectors" / "enc-test.npz"
    export.parent.mkdir(parents=True)
    save_scene_vectors(
        str(export), per_feature, {"encoder_uri": "test-encoder", "encoder_version": "enc-test"}
    )
    # the same encoder's text vectors (larr_plus): every shop, every other user (the rest: unknown)
    per_side = {}
    for side, frame in (("poi", pois), ("user", users)):
        ids = frame.select(f"{side}_id").toPandas()[f"{side}_id"].to_numpy()[:: 1 if side == "poi" else 2]
        vectors = rng.normal(size=(len(ids), 8))
        per_side[side] = (ids, vectors / np.linalg.norm(vectors, axis=1)[:, None])
    texts = root / "_exports" / "text_vectors" / "enc-test.npz"
    texts.parent.mkdir(parents=True)
    save_scene_vectors(str(texts), per_side, {"encoder_uri": "test-encoder", "encoder_version": "enc-test"})
    return catalog, str(export)
