"""A CTR world for the trainer tests: the tiny generated world cleaned, with its statistics, CTR
samples (day 3 = test), its truth table and a scene-vector export of random unit vectors."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ctr_world(spark, world_catalog, tiny_world_config, tmp_path_factory):
    from etl.core.catalog import TableCatalog
    from etl.core.schema_table import write_schema
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
    return catalog, str(export)
