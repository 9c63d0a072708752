"""The feature encoding: its spelled-out column names match the Spark jobs, raw strings hash to
the ids Spark wrote, unknown scene values map to their feature's unknown row and are counted."""

from __future__ import annotations

import numpy as np
import pytest

from core.dataset_schema import sample_fields
from tests.etl.text_fixtures import SCHEMA
from training.ctr import encoding
from training.ctr.encoding import EncodingConfig, FeatureError, SceneTable, build_layout, encode

FIELDS, SCENES = sample_fields(SCHEMA), SCHEMA.scene_names


def _layout(cfg=None, with_scene=False):
    return build_layout(cfg or EncodingConfig(), FIELDS, SCENES, with_scene)


def test_column_names_match_the_sample_and_stats_jobs():
    from features import samples, stats
    from features.scene_values import id_column

    layout = _layout()
    expected = [c for _, prefix in stats.ENTITIES.values() for c in stats.stat_columns(prefix)]
    assert sorted(encoding.NUMERIC_COLUMNS) == sorted(expected)
    assert layout.field_names[-len(SCENES) :] == tuple(id_column(f) for f in SCENES)
    assert set(encoding.training_columns(layout)) <= set(samples.sample_columns(SCHEMA))
    assert set(encoding.raw_columns(layout)) <= set(samples.sample_columns(SCHEMA))
    # the synthetic world's layout, as it was spelled out before the dataset schema
    assert layout.hashed_fields == (
        "user_gender", "user_age_band", "user_home_city", "user_member_level", "device", "poi_city", "poi_cuisine"
    )  # fmt: skip
    assert layout.small_int_fields == ("poi_price_level", "position")
    assert layout.user_columns == (
        "user_id", "user_gender", "user_age_band", "user_home_city", "user_member_level", "device"
    )  # fmt: skip
    assert layout.poi_columns == ("poi_id", "poi_city", "poi_cuisine", "poi_price_level")


def test_raw_strings_hash_to_the_ids_spark_wrote(spark, ctr_world):
    catalog, _ = ctr_world
    layout = _layout()
    rows = catalog.read(spark, "samples.ctr").limit(300).toPandas()
    derived = encoding.with_hashed_ids(
        rows.drop(columns=[c for c in rows.columns if c.endswith("_id") and c not in ("user_id", "poi_id")]),
        layout,
    )
    for column in [f"{f}_id" for f in layout.hashed_fields] + [f"scene_{f}_id" for f in SCENES]:
        np.testing.assert_array_equal(
            np.asarray(derived[column], np.int64), rows[column].to_numpy(np.int64), column
        )


def test_encode_buckets_ids_logs_counts_and_looks_up_scene_rows(spark, ctr_world):
    from features.embeddings.vectors import load_scene_vectors

    catalog, export = ctr_world
    rows = catalog.read(spark, "samples.ctr").limit(50).toPandas()
    cfg = EncodingConfig(id_buckets=97, field_buckets=31, small_buckets=8)
    layout = _layout(cfg, with_scene=True)
    table = SceneTable(load_scene_vectors(export), SCENES)
    rows.loc[rows.index[0], "scene_weather_id"] = 12345  # never embedded
    inputs, unknown = encode(rows, layout, table)
    user = layout.field_names.index("user_id")
    np.testing.assert_array_equal(inputs.categorical[:, user].numpy(), rows["user_id"].to_numpy() % 97)
    assert (inputs.categorical >= 0).all()
    count = layout.numeric_names.index("user_impressions")
    np.testing.assert_allclose(
        inputs.numeric[:, count].numpy(), np.log1p(rows["user_impressions"]), rtol=1e-6
    )
    weather = SCENES.index("weather")
    assert unknown[weather] == 1 and unknown.sum() == 1
    vectors = load_scene_vectors(export)["weather"]
    looked_up = table.matrix[inputs.scene_rows[:, weather].numpy()]
    np.testing.assert_allclose(looked_up[0], vectors.matrix[-1])  # the unknown vector
    expected, _ = vectors.lookup(rows["scene_weather_id"].to_numpy()[1:])
    np.testing.assert_allclose(looked_up[1:], expected)


def test_missing_and_non_finite_columns_are_named(spark, ctr_world):
    catalog, _ = ctr_world
    rows = catalog.read(spark, "samples.ctr").limit(5).toPandas()
    layout = _layout()
    with pytest.raises(FeatureError, match="'poi_ctr'"):
        encode(rows.drop(columns=["poi_ctr"]), layout)
    rows.loc[rows.index[2], "user_cvr"] = np.nan
    with pytest.raises(FeatureError, match="'user_cvr'"):
        encode(rows, layout)
