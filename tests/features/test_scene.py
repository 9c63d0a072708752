from pyspark.sql import functions as F

from etl.tokens import wrap_text
from features import scene
from features.scene import SceneConfig
from features.scene_values import id_column, scene_id, value_column, with_scene_values
from jobs.config import default_config_path, load_config
from tests.etl.text_fixtures import (
    IMPRESSIONS,
    IMPRESSIONS_SCHEMA,
    POIS,
    POIS_SCHEMA,
    SCHEMA,
    impression,
    write_clean,
)

# the 8 hand-made impressions: Chengdu offices, Monday to Wednesday in April, one rainy 17.6 C
# row, one away from home; user 10 ordered noodles on Monday, so his Tuesday intent is Noodles
VALUES = {
    ("city", "Chengdu"): 8,
    ("district_type", "urban core"): 8,
    ("time_slot", "breakfast"): 2,
    ("time_slot", "lunch"): 4,
    ("time_slot", "dinner"): 2,
    ("day_type", "weekday"): 8,
    ("weather", "rainy"): 1,
    ("weather", "sunny"): 7,
    ("temperature_band", "mild 10-20C"): 1,
    ("temperature_band", "warm 20-28C"): 7,
    ("season", "spring"): 8,
    ("travel_status", "travelling away from home city"): 1,
    ("travel_status", "in home city"): 7,
    ("location_type", "office"): 8,
    ("recent_intent", "no recent orders"): 6,
    ("recent_intent", "Noodles"): 2,
}


def _rows(df):
    return sorted(tuple(r) for r in df.select(*scene.COLUMNS).collect())


def _expected(spark):
    ids = spark.createDataFrame([(f, v) for f, v in VALUES], "feature string, value string")
    ids = {
        (r[0], r[1]): r[2]
        for r in ids.select("feature", "value", scene_id(F.col("feature"), F.col("value"))).collect()
    }
    return sorted((f, v, wrap_text(f"scene_{f}", v), ids[(f, v)], n) for (f, v), n in VALUES.items())


def test_scene_dictionary_whole_table_and_idempotent(spark, catalog):
    write_clean(spark, catalog)
    figures = scene.run(spark, catalog, SceneConfig(), log=lambda _: None)
    expected = _expected(spark)
    assert _rows(catalog.read(spark, "features.scene_dictionary")) == expected
    assert expected[0][2].startswith("<scene_city>") and expected[0][2].endswith("</scene_city>")
    assert figures["values"] == 16 and figures["time_slot_values"] == 3 and figures["season_values"] == 1
    assert figures["input_versions"] == {"clean.impressions": 0, "clean.pois": 0, "raw.dataset_schema": 0}
    again = scene.run(spark, catalog, SceneConfig(), log=lambda _: None)
    assert again["output_versions"] == {
        "features.scene_dictionary": figures["output_versions"][scene.OUTPUT] + 1
    }
    assert _rows(catalog.read(spark, "features.scene_dictionary")) == expected


def test_every_scene_id_of_an_impression_is_in_the_dictionary(spark):
    extra = [impression(30, IMPRESSIONS[0][-1], 2, 12, 3, 0, 0, weather=None, temp=-4.0)]
    impressions = spark.createDataFrame(IMPRESSIONS + extra, IMPRESSIONS_SCHEMA)
    pois = spark.createDataFrame(POIS, POIS_SCHEMA)
    dictionary = scene.transform(impressions, pois, SCHEMA.scene_features)
    rows = with_scene_values(impressions, pois, SCHEMA.scene_features)
    for feature in SCHEMA.scene_names:
        keys = rows.where(F.col(value_column(feature)).isNotNull()).select(
            F.lit(feature).alias("feature"),
            F.col(value_column(feature)).alias("value"),
            F.col(id_column(feature)).alias("scene_id"),
        )
        assert keys.join(dictionary, ["feature", "value", "scene_id"], "left_anti").count() == 0
    # the null weather gets no row; the freezing night does
    assert dictionary.where(F.col("value").isNull() | F.col("text").isNull()).count() == 0
    got = {(r[0], r[1]) for r in dictionary.select("feature", "value").collect()}
    assert {("temperature_band", "freezing below 0C"), ("time_slot", "late night")} <= got
    assert dictionary.groupBy("scene_id").count().where(F.col("count") > 1).count() == 0


def test_config_file_loads():
    assert load_config(SceneConfig, default_config_path("features_scene")) == SceneConfig()


def test_the_dictionary_follows_another_declared_schema(spark, catalog):
    """Four features of another dataset: a templated column, a bucketed numeric, two derivations."""
    from core.dataset_schema import parse_schema

    schema = parse_schema(
        {
            "name": "other",
            "scene_features": [
                {"name": "sky", "column": "weather", "template": "the sky: {value}"},
                {
                    "name": "warmth",
                    "column": "temperature_c",
                    "column_type": "double",
                    "buckets": {"edges": [20], "labels": ["cool", "warm"]},
                },
                {"name": "daypart", "derive": "part_of_day"},
                {"name": "weekday", "derive": "weekday", "template": "on a {value}"},
            ],
        },
        "test",
    )
    write_clean(spark, catalog, schema=schema)
    figures = scene.run(spark, catalog, SceneConfig(), log=lambda _: None)
    rows = {(r[0], r[1]): (r[2], r[4]) for r in catalog.read(spark, scene.OUTPUT).collect()}
    assert rows == {
        ("sky", "rainy"): ("<scene_sky>the sky: rainy</scene_sky>", 1),
        ("sky", "sunny"): ("<scene_sky>the sky: sunny</scene_sky>", 7),
        ("warmth", "cool"): ("<scene_warmth>cool</scene_warmth>", 1),
        ("warmth", "warm"): ("<scene_warmth>warm</scene_warmth>", 7),
        ("daypart", "morning"): ("<scene_daypart>morning</scene_daypart>", 2),
        ("daypart", "afternoon"): ("<scene_daypart>afternoon</scene_daypart>", 4),
        ("daypart", "evening"): ("<scene_daypart>evening</scene_daypart>", 2),
        ("weekday", "Monday"): ("<scene_weekday>on a Monday</scene_weekday>", 3),
        ("weekday", "Tuesday"): ("<scene_weekday>on a Tuesday</scene_weekday>", 3),
        ("weekday", "Wednesday"): ("<scene_weekday>on a Wednesday</scene_weekday>", 2),
    }
    assert figures["values"] == 10 and figures["daypart_values"] == 3 and "city_values" not in figures


def test_a_subset_of_events_reads_its_recent_values_from_the_history_it_is_given(spark):
    impressions = spark.createDataFrame(IMPRESSIONS, IMPRESSIONS_SCHEMA)
    pois = spark.createDataFrame(POIS, POIS_SCHEMA)
    unclicked = impressions.where(F.col("clicked") == 0)  # user 10's Monday order is not among them
    columns = ["event_id", value_column("recent_intent"), id_column("recent_intent")]
    whole = with_scene_values(impressions, pois, SCHEMA.scene_features).join(
        unclicked.select("event_id"), "event_id"
    )
    subset = with_scene_values(unclicked, pois, SCHEMA.scene_features, history=impressions)
    assert sorted(subset.select(*columns).collect()) == sorted(whole.select(*columns).collect())
    assert subset.where(F.col(value_column("recent_intent")) == "Noodles").count() >= 1
    alone = with_scene_values(unclicked, pois, SCHEMA.scene_features)  # its own rows as history
    assert alone.where(F.col(value_column("recent_intent")) == "Noodles").count() == 0


def test_two_orders_of_one_request_give_the_same_recent_value_in_any_row_order(spark):
    from datetime import date, datetime

    from features.scene_values import recent_values

    feature = next(f for f in SCHEMA.scene_features if f.recent)
    ts, day = datetime(2026, 4, 6, 12), date(2026, 4, 6)
    # one request of user 1: two shops ordered at the same ts; the next day reads the recent value
    rows = [(1, 101, ts, day, 1), (1, 102, ts, day, 1), (1, 101, ts.replace(day=7), date(2026, 4, 7), 0)]
    items = spark.createDataFrame(
        [(101, "Noodles"), (102, "Hotpot")], f"poi_id long, {feature.recent} string"
    )
    schema = "user_id long, poi_id long, ts timestamp, dt date, ordered int"
    seen = set()
    for order in (rows, rows[::-1], [rows[1], rows[2], rows[0]]):
        for partitions in (1, 3):
            impressions = spark.createDataFrame(order, schema).repartition(partitions)
            got = recent_values(impressions, items, feature).where(F.col("dt") == date(2026, 4, 7)).collect()
            seen.add(got[0][2])
    assert seen == {"Noodles"}  # ties go to the larger value
