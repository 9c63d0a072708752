import datetime
import shutil

import pytest
from pyspark.sql import functions as F

from etl.clean import job as clean
from etl.clean.config import CleanConfig
from etl.ingest import job
from etl.ingest.mapping import MappingError, load_mapping
from tests.conftest import REPO_ROOT

BYO = REPO_ROOT / "tests" / "data" / "byo"
RAW = ("raw.users", "raw.pois", "raw.impressions", "raw.ingest_mapping")


def table(spark, catalog, name, key):
    df = catalog.read(spark, name)
    if "ts" in df.columns:  # compare instants as UTC text (the session zone is UTC)
        df = df.withColumn("ts", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"))
    return [tuple(r) for r in df.orderBy(key).collect()]


def copy_example(tmp_path):
    folder = tmp_path / "byo"
    shutil.copytree(BYO, folder)
    return folder


def test_example_logs_become_the_raw_tables_and_clean(spark, catalog):
    figures = job.run(spark, catalog, job.IngestConfig(mapping=str(BYO / "mapping.yaml")), log=lambda _: None)

    assert table(spark, catalog, "raw.users", "user_id") == [
        (1, "HappyPanda7", "female", "25-34", "Chengdu", "regular", "ios"),
        (2, "SleepyFox12", "male", "18-24", "Chengdu", "regular", "android"),
        (3, "LuckyKoi3", "unknown", "35-44", "Wuhan", "regular", "mini_program"),
        (4, "QuietCloud9", "robot", "45-54", "Wuhan", "regular", "ios"),
    ]
    assert table(spark, catalog, "raw.pois", "poi_id") == [
        (
            501,
            "Granny Zhao's Dan Dan",
            "Chengdu",
            "Wuhou",
            "12 Renmin Road, Wuhou, Chengdu",
            30.57,
            104.07,
            "Noodles & rice",
            "dan dan noodles, spicy wontons in chili oil",
            "Chengdu dan dan noodles made fresh to order.",
            "top rated, fast delivery",
            2,
            4.6,
            "10:00-22:00",
            830,
        ),
        (
            502,
            "Crayfish No. 8",
            "Wuhan",
            "Hankou",
            "8 Jiefang Road, Hankou, Wuhan",
            30.59,
            114.31,
            "Street food",
            "spicy crayfish, garlic crayfish",
            "Open late for night owls.",
            "discount",
            3,
            4.2,
            "17:00-03:00",
            410,
        ),
        (
            503,
            "Lucky Ice Corner",
            "Wuhan",
            "Wuchang",
            "3 Heping Road, Wuchang, Wuhan",
            30.55,
            114.3,
            "Drinks & desserts",
            "mango snow ice, red bean shaved ice",
            "Served chilled.",
            "new shop",
            1,
            4.4,
            "11:00-23:00",
            150,
        ),
    ]
    d6, d7, d8 = (datetime.date(2026, 4, d) for d in (6, 7, 8))
    home, office = ("residential", "home"), ("business district", "office")
    campus, hotel = ("university", "campus"), ("scenic area", "hotel")
    assert table(spark, catalog, "raw.impressions", "event_id") == [
        (9001, 70, "2026-04-06 11:45:10", 1, 501, 1, "Chengdu", *home, "cloudy", 18.5, False, None, None, "ios", 1, 1, d6),
        (9002, 71, "2026-04-06 19:02:33", 2, 501, 1, "Chengdu", *office, "rainy", 14.0, False, None, None, "android", 0, 0, d6),
        (9003, 72, "2026-04-07 22:30:00", 3, 502, 1, "Wuhan", *home, "sunny", 21.0, False, None, None, "mini_program", 1, 0, d7),
        (9004, 72, "2026-04-07 22:30:00", 3, 503, 2, "Wuhan", *home, "sunny", 21.0, False, None, None, "mini_program", 0, 0, d7),
        (9005, 73, "2026-04-07 23:10:05", 4, 502, 1, "Wuhan", *campus, "sunny", 19.5, False, None, None, "ios", 1, 1, d7),
        (9006, 74, "2026-04-08 12:00:00", 1, 503, 1, "Wuhan", *hotel, "N/A", 20.0, False, None, None, "ios", 0, 0, d8),
    ]  # fmt: skip
    assert catalog.read(spark, "raw.impressions").schema == job.RAW_SCHEMAS["impressions"]
    mapping = catalog.read(spark, "raw.ingest_mapping").collect()
    assert len(mapping) == 1
    assert mapping[0]["scene_features"] == [
        "city",
        "district_type",
        "location_type",
        "weather",
        "temperature_c",
        "is_away",
    ]
    assert mapping[0]["positive_only"] is False
    assert mapping[0]["sources"]["users"] == str(BYO / "users.csv")
    assert {k: figures[k] for k in ("users", "pois", "impressions")} == {
        "users": 4,
        "pois": 3,
        "impressions": 6,
    }
    assert figures["output_versions"] == {name: 0 for name in RAW}

    # clean takes the ingested tables as they are: the robot user and its event, the N/A weather
    cleaned = clean.run(spark, catalog, CleanConfig(), log=lambda _: None)
    assert cleaned["rejects_by_reason"] == {
        "raw.users": {"invalid_gender": 1},
        "raw.pois": {},
        "raw.impressions": {"invalid_weather": 1, "unknown_user": 1},
    }
    assert [r[0] for r in table(spark, catalog, "clean.impressions", "event_id")] == [9001, 9002, 9003, 9004]

    # idempotent
    again = job.run(spark, catalog, job.IngestConfig(mapping=str(BYO / "mapping.yaml")), log=lambda _: None)
    assert again["output_versions"] == {name: 1 for name in RAW}
    assert table(spark, catalog, "raw.impressions", "event_id")[0][:3] == (9001, 70, "2026-04-06 11:45:10")
    assert catalog.read(spark, "raw.impressions").count() == 6


def test_missing_column_is_named_and_nothing_is_written(spark, catalog, tmp_path):
    folder = copy_example(tmp_path)
    lines = (folder / "impressions.csv").read_text().splitlines()
    # drop the uid column (the source of the required raw.impressions.user_id)
    rows = [line.split(",") for line in lines]
    (folder / "impressions.csv").write_text("\n".join(",".join(r[:3] + r[4:]) for r in rows) + "\n")
    with pytest.raises(job.IngestError) as err:
        job.run(spark, catalog, job.IngestConfig(mapping=str(folder / "mapping.yaml")), log=lambda _: None)
    assert str(err.value) == (
        f"ingest: {folder / 'impressions.csv'}: required column uid (-> raw.impressions.user_id) is missing"
        " (columns: log_id, session, event_time, shop_id, rank, city, area_type, place, weather, temp,"
        " platform, click, order)"
    )
    assert not any(catalog.exists(spark, name) for name in RAW)


def test_mistyped_column_is_named_with_a_count_and_nothing_is_written(spark, catalog, tmp_path):
    folder = copy_example(tmp_path)
    path = folder / "impressions.csv"
    path.write_text(path.read_text().replace(",18.5,", ",warm,").replace(",14.0,", ",cool,"))
    with pytest.raises(job.IngestError) as err:
        job.run(spark, catalog, job.IngestConfig(mapping=str(folder / "mapping.yaml")), log=lambda _: None)
    assert str(err.value) == (
        f"ingest: {path}: column temp (-> raw.impressions.temperature_c): 2 value(s) cannot be read as double,"
        " e.g. 'cool'"
    )
    assert not any(catalog.exists(spark, name) for name in RAW)


def test_positive_only_parquet_log_with_epoch_seconds(spark, catalog, tmp_path):
    folder = copy_example(tmp_path)
    orders = spark.createDataFrame(
        [(1, 1, 501, 1775433600 + 3600), (2, 2, 501, 1775520000 + 7200)],
        "order_id long, customer long, shop long, paid_at long",
    ).withColumns({"city": F.lit("Chengdu"), "weather": F.lit("sunny")})
    orders.write.parquet(str(folder / "orders.parquet"))
    text = (folder / "mapping.yaml").read_text()
    head, _ = text.split("impressions:\n  path")
    (folder / "mapping.yaml").write_text(
        head.replace("positive_only: false", "positive_only: true")
        + "impressions:\n  path: orders.parquet\n  format: parquet\n"
        + "  columns: {order_id: event_id, customer: user_id, shop: poi_id, paid_at: ts}\n"
        + "  defaults: {location_type: home, district_type: residential, temperature_c: 20.0}\n"
    )
    figures = job.run(
        spark, catalog, job.IngestConfig(mapping=str(folder / "mapping.yaml")), log=lambda _: None
    )
    assert figures["positive_only"] is True
    rows = catalog.read(spark, "raw.impressions").select(
        "event_id", "request_id", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"), "user_id", "poi_id", "position",
        "location_type", "weather", "temperature_c", "device", "clicked", "ordered", F.col("dt").cast("string"),
    )  # fmt: skip
    assert sorted(tuple(r) for r in rows.collect()) == [
        (1, 1, "2026-04-06 01:00:00", 1, 501, 1, "home", "sunny", 20.0, None, 1, 1, "2026-04-06"),
        (2, 2, "2026-04-07 02:00:00", 2, 501, 1, "home", "sunny", 20.0, None, 1, 1, "2026-04-07"),
    ]
    assert catalog.read(spark, "raw.ingest_mapping").first()["positive_only"] is True


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("version: 1", "version: 2"), "key version must be 1"),
        (("positive_only: false", "positive_only: maybe"), "positive_only must be true or false"),
        (("sex: gender", "sex: sex"), "users.columns.sex: 'sex' is not a column of raw.users"),
        (("format: csv", "format: json"), "users.format must be one of csv, parquet"),
        (("{member_level: regular}", "{member_level: 3}"), "users.defaults.member_level: 3 is not a string"),
        (("{is_away: false}", "{user_id: 1}"), "impressions.defaults.user_id: a required column"),
        (("scene_features: [city,", "scene_features: [town,"), "scene_features: town is not a column"),
        (("click: clicked", "click: position"), "two source columns map to position"),
    ],
)
def test_bad_mapping_names_file_and_key(tmp_path, edit, message):
    folder = copy_example(tmp_path)
    path = folder / "mapping.yaml"
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_config_requires_a_mapping():
    with pytest.raises(ValueError, match="--set mapping=PATH"):
        job.IngestConfig()


def test_job_yaml_needs_the_mapping_set():
    from jobs.config import ConfigError, default_config_path, load_config

    with pytest.raises(ConfigError, match="--set mapping=PATH"):
        load_config(job.IngestConfig, default_config_path("etl_ingest"))
    path = str(BYO / "mapping.yaml")
    assert (
        load_config(job.IngestConfig, default_config_path("etl_ingest"), [f"mapping={path}"]).mapping == path
    )
