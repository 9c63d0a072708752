import datetime
import shutil

import pytest
from pyspark.sql import functions as F

from core.raw_schema import raw_struct
from core.schema_table import SchemaMismatchError, read_schema
from etl.clean import job as clean
from etl.clean.config import CleanConfig
from etl.ingest import job
from etl.ingest.mapping import MappingError, load_mapping
from tests.conftest import REPO_ROOT

BYO = REPO_ROOT / "tests" / "data" / "byo"
RAW = ("raw.dataset_schema", "raw.users", "raw.pois", "raw.impressions", "raw.ingest_mapping")


def table(spark, catalog, name, key, columns=None):
    df = catalog.read(spark, name)
    if columns:
        df = df.select(*columns)
    if "ts" in df.columns:  # compare instants as UTC text (the session zone is UTC)
        df = df.withColumn("ts", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"))
    return [tuple(r) for r in df.orderBy(key).collect()]


def copy_example(tmp_path):
    folder = tmp_path / "byo"
    shutil.copytree(BYO, folder)
    return folder


POI_COLUMNS = ["poi_id", "name", "city", "district", "address", "latitude", "longitude", "cuisine",
               "main_dishes", "introduction", "tags", "price_level", "rating", "opening_hours", "monthly_sales"]  # fmt: skip
EVENT_COLUMNS = ["event_id", "request_id", "ts", "user_id", "poi_id", "position", "city", "district_type",
                 "location_type", "weather", "temperature_c", "device", "clicked", "ordered", "dt"]  # fmt: skip
d6, d7, d8 = (datetime.date(2026, 4, d) for d in (6, 7, 8))
home, office = ("residential", "home"), ("business district", "office")
campus, hotel = ("university", "campus"), ("scenic area", "hotel")
EXAMPLE_EVENTS = [  # the example impressions as raw rows (EVENT_COLUMNS)
    (9001, 70, "2026-04-06 11:45:10", 1, 501, 1, "Chengdu", *home, "cloudy", 18.5, "ios", 1, 1, d6),
    (9002, 71, "2026-04-06 19:02:33", 2, 501, 1, "Chengdu", *office, "rainy", 14.0, "android", 0, 0, d6),
    (9003, 72, "2026-04-07 22:30:00", 3, 502, 1, "Wuhan", *home, "sunny", 21.0, "mini_program", 1, 0, d7),
    (9004, 72, "2026-04-07 22:30:00", 3, 503, 2, "Wuhan", *home, "sunny", 21.0, "mini_program", 0, 0, d7),
    (9005, 73, "2026-04-07 23:10:05", 4, 502, 1, "Wuhan", *campus, "sunny", 19.5, "ios", 1, 1, d7),
    (9006, 74, "2026-04-08 12:00:00", 1, 503, 1, "Wuhan", *hotel, "N/A", 20.0, "ios", 0, 0, d8),
]  # fmt: skip


def test_example_logs_become_the_raw_tables_of_their_declared_schema_and_clean(spark, catalog):
    figures = job.run(spark, catalog, job.IngestConfig(mapping=str(BYO / "mapping.yaml")), log=lambda _: None)

    schema = read_schema(spark, catalog)
    assert schema == load_mapping(BYO / "mapping.yaml").schema and schema.name == "byo-example"
    for name in ("users", "pois", "impressions"):  # exactly the declared columns and types
        stored = {f.name: f.dataType for f in catalog.read(spark, f"raw.{name}").schema.fields}
        assert stored == {f.name: f.dataType for f in raw_struct(schema, name).fields}, name
    assert table(spark, catalog, "raw.users", "user_id", ["user_id", "nickname", "gender", "age_band", "home_city", "device"]) == [
        (1, "HappyPanda7", "female", "25-34", "Chengdu", "ios"),
        (2, "SleepyFox12", "male", "18-24", "Chengdu", "android"),
        (3, "LuckyKoi3", "unknown", "35-44", "Wuhan", "mini_program"),
        (4, "QuietCloud9", "robot", "45-54", "Wuhan", "ios"),
    ]  # fmt: skip
    assert table(spark, catalog, "raw.pois", "poi_id", POI_COLUMNS) == [
        (501, "Granny Zhao's Dan Dan", "Chengdu", "Wuhou", "12 Renmin Road, Wuhou, Chengdu", 30.57, 104.07,
         "Noodles & rice", "dan dan noodles, spicy wontons in chili oil",
         "Chengdu dan dan noodles made fresh to order.", "top rated, fast delivery", 2, 4.6, "10:00-22:00", 830),
        (502, "Crayfish No. 8", "Wuhan", "Hankou", "8 Jiefang Road, Hankou, Wuhan", 30.59, 114.31, "Street food",
         "spicy crayfish, garlic crayfish", "Open late for night owls.", "discount", 3, 4.2, "17:00-03:00", 410),
        (503, "Lucky Ice Corner", "Wuhan", "Wuchang", "3 Heping Road, Wuchang, Wuhan", 30.55, 114.3,
         "Drinks & desserts", "mango snow ice, red bean shaved ice", "Served chilled.", "new shop", 1, 4.4,
         "11:00-23:00", 150),
    ]  # fmt: skip
    assert table(spark, catalog, "raw.impressions", "event_id", EVENT_COLUMNS) == EXAMPLE_EVENTS
    mapping = catalog.read(spark, "raw.ingest_mapping").collect()
    assert len(mapping) == 1 and mapping[0]["dataset"] == "byo-example"
    assert mapping[0]["sources"]["users"] == str(BYO / "users.csv")
    assert figures["scene_features"] == [
        "city",
        "district_type",
        "location_type",
        "weather",
        "temperature_band",
        "time_slot",
    ]
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
    assert table(spark, catalog, "raw.impressions", "event_id", EVENT_COLUMNS)[0][:3] == (
        9001,
        70,
        "2026-04-06 11:45:10",
    )
    assert catalog.read(spark, "raw.impressions").count() == 6


def test_another_schema_over_a_lakehouse_is_refused_naming_the_difference(spark, catalog, tmp_path):
    job.run(spark, catalog, job.IngestConfig(mapping=str(BYO / "mapping.yaml")), log=lambda _: None)
    folder = copy_example(tmp_path)
    path = folder / "mapping.yaml"
    path.write_text(
        path.read_text()
        .replace("    - {name: time_slot, derive: part_of_day}\n", "    - {name: weekday, derive: weekday}\n")
        .replace("scene: time_slot}", "scene: time_slot}")
        .replace("    open_hours: {item: opening_hours, scene: time_slot}\n", "")
    )
    with pytest.raises(SchemaMismatchError) as err:
        job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)
    message = str(err.value)
    assert message.startswith(f"ingest: {path}: the lakehouse holds dataset 'byo-example' of another schema")
    assert "scene features added: weekday; scene features removed: time_slot" in message
    assert "--set replace_schema=true" in message and "\n" not in message
    assert catalog.version(spark, "raw.impressions") == 0  # nothing was written
    replaced = job.run(
        spark, catalog, job.IngestConfig(mapping=str(path), replace_schema=True), log=lambda _: None
    )
    assert replaced["scene_features"][-1] == "weekday"
    assert read_schema(spark, catalog).scene_names[-1] == "weekday"


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
    head = head.replace(
        "    conversion: true        # `order`: an order after the click\n", "    positive_only: true\n"
    )
    head = head.replace("    request_id: true\n    position: true\n", "")
    (folder / "mapping.yaml").write_text(
        head
        + "impressions:\n  path: orders.parquet\n  format: parquet\n"
        + "  columns: {order_id: event_id, customer: user_id, shop: poi_id, paid_at: ts}\n"
        + "  defaults: {location_type: home, district_type: residential, temperature_c: 20.0, device: ios}\n"
    )
    figures = job.run(
        spark, catalog, job.IngestConfig(mapping=str(folder / "mapping.yaml")), log=lambda _: None
    )
    assert figures["positive_only"] is True
    rows = catalog.read(spark, "raw.impressions")
    assert "request_id" not in rows.columns and "position" not in rows.columns  # not declared: not there
    rows = rows.select(
        "event_id", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"), "user_id", "poi_id",
        "location_type", "weather", "temperature_c", "device", "clicked", "ordered", F.col("dt").cast("string"),
    )  # fmt: skip
    # positive-only: clicked = 1; no conversion label: ordered = clicked
    assert sorted(tuple(r) for r in rows.collect()) == [
        (1, "2026-04-06 01:00:00", 1, 501, "home", "sunny", 20.0, "ios", 1, 1, "2026-04-06"),
        (2, "2026-04-07 02:00:00", 2, 501, "home", "sunny", 20.0, "ios", 1, 1, "2026-04-07"),
    ]
    assert read_schema(spark, catalog).events.positive_only is True


def test_a_declared_column_the_export_lacks_is_named(spark, catalog, tmp_path):
    folder = copy_example(tmp_path)
    path = folder / "mapping.yaml"
    path.write_text(path.read_text().replace("    platform: device\n    click", "    click"))
    with pytest.raises(job.IngestError) as err:
        job.run(spark, catalog, job.IngestConfig(mapping=str(path)), log=lambda _: None)
    assert str(err.value).startswith(
        f"ingest: {folder / 'impressions.csv'}: declared column device (-> raw.impressions.device) is missing"
    )
    assert "give it a default under impressions.defaults" in str(err.value)
    assert not any(catalog.exists(spark, name) for name in RAW)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("version: 1", "version: 2"), "key version must be 1"),
        (("    conversion: true", "    conversion: maybe"), "schema key events.conversion: expected bool"),
        (("sex: gender", "sex: sex"), "users.columns.sex: 'sex' is not a column of raw.users: declare it"),
        (("format: csv", "format: json"), "users.format must be one of csv, parquet"),
        (
            ("platform: device}", "platform: device}\n  defaults: {device: 3}"),
            "users.defaults.device: 3 is not a string",
        ),
        (
            ("    order: ordered\n", "    order: ordered\n  defaults: {user_id: 1}\n"),
            "impressions.defaults.user_id: a required column",
        ),
        (("click: clicked", "click: position"), "two source columns map to position"),
        (("  name: byo-example\n", "  name: byo-example\n  colour: red\n"), "unknown schema key colour"),
        (("edges: [10, 20, 28]", "edges: [10, 28, 20]"), "buckets.edges must be increasing"),
        (('template: "weather: {value}"', 'template: "weather"'), "template 'weather' has no {value}"),
        (
            ("{name: district_type, column: district_type}", "{name: city, column: district_type}"),
            "two features are named city",
        ),
        (
            (
                "{name: time_slot, derive: part_of_day}",
                "{name: time_slot, derive: part_of_day, column: city}",
            ),
            "derive part_of_day needs a timestamp column, city is declared string",
        ),
        (
            ("version: 1\nschema:", "version: 1\npositive_only: true\nschema:"),
            "key positive_only moved into the dataset schema: declare schema.events.positive_only",
        ),
        (("schema:\n  name", "schema_:\n  name"), "unknown key schema_"),
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
