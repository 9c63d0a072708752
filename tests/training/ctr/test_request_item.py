"""Request-item features: the scoring model's numpy derivation equals `etl samples`' Spark one on the
same raw rows (nulls, unreadable hours, past midnight, all day, times before 1970 included), a
missing one is derived and filled, and a request lacking both the feature and its inputs is named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from core.dataset_schema import sample_fields
from features import request_item as spark_request_item
from tests.etl.text_fixtures import SCHEMA
from training.ctr import request_item
from training.ctr.encoding import EncodingConfig, FeatureError, build_layout, with_request_item

NAN = float("nan")
# (user_lat, user_lon, epoch seconds, poi_latitude, poi_longitude, poi_opening_hours)
ROWS = [
    (23.1, 113.3, 1775478600.0, 23.2, 113.3, "17:00-03:00"),  # 2026-04-06 12:30: shut (past-midnight shop)
    (23.1, 113.3, 1775442600.0, 23.2, 113.3, "17:00-03:00"),  # 02:30: open past midnight
    (23.1, 113.3, 1775453999.0, 23.1, 113.3, "03:00-03:00"),  # 05:39:59: open all day, 0 km
    (30.6, 104.0, 1775476799.5, 23.1, 113.3, "10:00-22:00"),  # 11:59:59.5: Chengdu to Guangzhou
    (-33.9, 151.2, 1775505600.0, 51.5, -0.1, "10:00-22:00"),  # 20:00, Sydney to London
    (10.0, 179.9, 1775512800.0, 10.0, -179.9, "9:05-22:00"),  # 22:00: just shut; across the date line
    (None, 113.3, 1775512800.0, 23.1, 113.3, "ask us"),  # no user latitude; unreadable hours
    (23.1, 113.3, None, None, 113.3, None),  # no time, no shop latitude, no hours
    (23.1, NAN, -1.0, 23.1, 113.3, "22:00-01:00"),  # NaN longitude; 1969-12-31 23:59:59
    (23.1, 113.3, -0.5, 23.1, 113.3, "00:00-00:01"),  # half a second before 1970: minute 0 (truncated)
    (0.0, 0.0, 86400.0 * 3 + 60 * 779, 0.0, 1.0, "12:59-13:00\n"),  # a trailing newline: unreadable
    (0.0, 0.0, 86400.0 * 3 + 60 * 779, 0.0, 1.0, "12:59-13:00"),  # 12:59 of 12:59-13:00: open
]
COLUMNS = ["user_lat", "user_lon", "epoch", "poi_latitude", "poi_longitude", "poi_opening_hours"]


def _spark_rows(spark):
    schema = ", ".join(f"{c} {'string' if c.endswith('hours') else 'double'}" for c in COLUMNS)
    df = spark.createDataFrame(ROWS, schema).withColumn("ts", F.timestamp_seconds("epoch"))
    # the item's side first, as `etl samples` computes it per item before the join
    item = lambda c: F.col(f"poi_{c}")  # noqa: E731
    inputs = {n: v for f in SCHEMA.request_item for n, v in spark_request_item.item_inputs(f, item).items()}
    df = df.select("*", *[value.alias(f"_item_{name}") for name, value in inputs.items()])
    item_input = lambda name: F.col(f"_item_{name}")  # noqa: E731
    derived = [spark_request_item.derived(f, F.col, item_input).alias(f.name) for f in SCHEMA.request_item]
    return df.select(F.monotonically_increasing_id().alias("_order"), "*", *derived).orderBy("_order")


def test_numpy_derivations_equal_the_spark_ones_on_the_same_rows(spark):
    rows = _spark_rows(spark).toPandas()  # ts: naive UTC datetimes, as a scoring request holds them
    for feature in SCHEMA.request_item:
        values = request_item.derive(feature.derive, [rows[c] for c in feature.inputs])
        expected = rows[feature.name].to_numpy(dtype=np.float64, na_value=np.nan)
        np.testing.assert_array_equal(np.isnan(values), np.isnan(expected), feature.name)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9, err_msg=feature.name)
    # the cases the rows were chosen for
    open_now = rows["open_now"].tolist()
    assert open_now[:6] == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0] and open_now[8:10] == [1.0, 1.0]
    assert np.isnan(open_now[6]) and np.isnan(open_now[7]) and np.isnan(open_now[10]) and open_now[11] == 1.0
    distance = rows["distance_km"]
    assert distance[0] == pytest.approx(6371.0 * np.radians(0.1), abs=1e-9) and distance[2] == 0.0
    assert distance[5] == pytest.approx(6371.0 * np.radians(0.2) * np.cos(np.radians(10.0)), rel=1e-4)
    assert distance[6:9].isna().all()


def test_a_request_without_the_feature_gets_it_derived_from_its_inputs_and_filled(spark):
    rows = _spark_rows(spark).toPandas()
    layout = build_layout(EncodingConfig(), sample_fields(SCHEMA), SCHEMA.scene_names, False)
    raw = rows.drop(columns=["distance_km", "open_now"])
    out = with_request_item(raw, layout)
    for name in ("distance_km", "open_now"):
        np.testing.assert_allclose(out[name], rows[name].fillna(0.0), rtol=0, atol=1e-9, err_msg=name)
    given = rows.assign(open_now=0.5).drop(columns=["distance_km"])
    assert (with_request_item(given, layout)["open_now"] == 0.5).all()  # a column it carries is kept
    with pytest.raises(FeatureError, match="has no column 'open_now' nor 'ts' to derive it from"):
        with_request_item(raw.drop(columns=["ts"]), layout)
    text = raw.assign(ts=raw["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f"))  # ISO 8601 text reads the same
    np.testing.assert_array_equal(with_request_item(text, layout)["open_now"], out["open_now"])


def test_the_encoding_switch_leaves_the_request_item_features_out():
    fields = sample_fields(SCHEMA)
    with_them = build_layout(EncodingConfig(), fields, SCHEMA.scene_names, False)
    assert with_them.numeric_names[-2:] == ("distance_km", "open_now")
    assert "distance_km" in with_them.log1p_numeric and "open_now" not in with_them.log1p_numeric
    assert [r[:2] for r in with_them.request_item] == [
        ("distance_km", "distance_km"),
        ("open_now", "open_now"),
    ]
    without = build_layout(EncodingConfig(request_item=False), fields, SCHEMA.scene_names, False)
    assert without.numeric_names == with_them.numeric_names[:-2]
    assert without.request_item == () and "distance_km" not in without.log1p_numeric
    assert with_request_item(pd.DataFrame({"user_id": [1]}), without).columns.tolist() == ["user_id"]
