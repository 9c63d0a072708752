"""The feature encoding: its spelled-out column names match the Spark jobs, raw strings hash to
the ids Spark wrote, unknown scene values map to their feature's unknown row and are counted."""

from __future__ import annotations

import numpy as np
import pytest

from training.ctr import encoding
from training.ctr.encoding import EncodingConfig, FeatureError, SceneTable, build_layout, encode


def test_column_names_match_the_sample_and_stats_jobs():
    from features import samples, stats
    from features.scene_values import id_column, value_column

    assert encoding.HASHED_FIELDS == samples.HASHED_FIELDS
    expected = [c for _, prefix in stats.ENTITIES.values() for c in stats.stat_columns(prefix)]
    assert sorted(encoding.NUMERIC_COLUMNS) == sorted(expected)
    assert tuple(id_column(f) for f in encoding.SCENE_FEATURES) == encoding.SCENE_ID_COLUMNS
    assert tuple(value_column(f) for f in encoding.SCENE_FEATURES) == encoding.SCENE_VALUE_COLUMNS
    assert set(encoding.training_columns()) <= set(samples.SAMPLE_COLUMNS)
    assert set(encoding.RAW_COLUMNS) <= set(samples.SAMPLE_COLUMNS)


def test_raw_strings_hash_to_the_ids_spark_wrote(spark, ctr_world):
    catalog, _ = ctr_world
    rows = catalog.read(spark, "samples.ctr").limit(300).toPandas()
    derived = encoding.with_hashed_ids(
        rows.drop(columns=[c for c in rows.columns if c.endswith("_id") and c not in ("user_id", "poi_id")])
    )
    for column in [f"{f}_id" for f in encoding.HASHED_FIELDS] + list(encoding.SCENE_ID_COLUMNS):
        np.testing.assert_array_equal(
            derived[column].to_numpy(np.int64), rows[column].to_numpy(np.int64), column
        )


def test_encode_buckets_ids_logs_counts_and_looks_up_scene_rows(spark, ctr_world):
    from features.embeddings.vectors import load_scene_vectors

    catalog, export = ctr_world
    rows = catalog.read(spark, "samples.ctr").limit(50).toPandas()
    cfg = EncodingConfig(id_buckets=97, field_buckets=31, small_buckets=8)
    layout = build_layout(cfg, with_scene=True)
    table = SceneTable(load_scene_vectors(export))
    rows.loc[rows.index[0], "scene_weather_id"] = 12345  # never embedded
    inputs, unknown = encode(rows, layout, table)
    user = layout.field_names.index("user_id")
    np.testing.assert_array_equal(inputs.categorical[:, user].numpy(), rows["user_id"].to_numpy() % 97)
    assert (inputs.categorical >= 0).all()
    count = layout.numeric_names.index("user_impressions")
    np.testing.assert_allclose(
        inputs.numeric[:, count].numpy(), np.log1p(rows["user_impressions"]), rtol=1e-6
    )
    weather = encoding.SCENE_FEATURES.index("weather")
    assert unknown[weather] == 1 and unknown.sum() == 1
    vectors = load_scene_vectors(export)["weather"]
    looked_up = table.matrix[inputs.scene_rows[:, weather].numpy()]
    np.testing.assert_allclose(looked_up[0], vectors.matrix[-1])  # the unknown vector
    expected, _ = vectors.lookup(rows["scene_weather_id"].to_numpy()[1:])
    np.testing.assert_allclose(looked_up[1:], expected)


def test_missing_and_non_finite_columns_are_named(spark, ctr_world):
    catalog, _ = ctr_world
    rows = catalog.read(spark, "samples.ctr").limit(5).toPandas()
    layout = build_layout(EncodingConfig(), with_scene=False)
    with pytest.raises(FeatureError, match="'poi_ctr'"):
        encode(rows.drop(columns=["poi_ctr"]), layout)
    rows.loc[rows.index[2], "user_cvr"] = np.nan
    with pytest.raises(FeatureError, match="'user_cvr'"):
        encode(rows, layout)
