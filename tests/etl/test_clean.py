import json
import math

import pytest
from pyspark.sql import functions as F

from core.randomness import uniform
from core.schema_table import write_schema
from etl.clean import job
from etl.clean.config import CleanConfig
from etl.synthetic.raw_schema import RAW_SCHEMAS
from tests.etl.text_fixtures import SCHEMA

USER = {
    "user_id": 1,
    "nickname": "Ann",
    "gender": "female",
    "age_band": "25-34",
    "home_city": "Beijing",
    "member_level": "gold",
    "device": "ios",
}
POI = {
    "poi_id": 10,
    "name": "Golden Claypot",
    "city": "Beijing",
    "district": "Chaoyang",
    "address": "1 Renmin Road",
    "latitude": 39.9,
    "longitude": 116.4,
    "cuisine": "Restaurant",
    "main_dishes": "claypot rice",
    "introduction": "Hot claypot.",
    "tags": "new shop",
    "price_level": 2,
    "rating": 4.5,
    "opening_hours": "10:00-22:00",
    "monthly_sales": 120,
}
EVENT = {
    "event_id": 100,
    "request_id": 7,
    "ts": "2026-04-06 12:30:00",
    "user_id": 1,
    "poi_id": 10,
    "position": 1,
    "city": "Beijing",
    "district_type": "residential",
    "location_type": "home",
    "weather": "sunny",
    "temperature_c": 15.5,
    "is_away": False,
    "user_lat": 39.9,
    "user_lon": 116.4,
    "device": "ios",
    "clicked": 1,
    "ordered": 1,
    "dt": "2026-04-06",
}


def frame(spark, table, rows):
    """Rows as dicts (defaults from the templates above); ts and dt given as UTC strings."""
    schema = RAW_SCHEMAS[table]
    template = {"users": USER, "pois": POI, "impressions": EVENT}[table]
    ddl = ", ".join(
        f"{f.name} {'string' if f.name in ('ts', 'dt') else f.dataType.simpleString()}" for f in schema.fields
    )
    data = [tuple({**template, **row}[name] for name in schema.names) for row in rows]
    df = spark.createDataFrame(data, ddl)
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def write_raw(spark, catalog, users, pois, events):
    write_schema(spark, catalog, SCHEMA)
    catalog.write(frame(spark, "users", users), "raw.users")
    catalog.write(frame(spark, "pois", pois), "raw.pois")
    catalog.write(frame(spark, "impressions", events), "raw.impressions", partition_by=["dt"])


def rows(spark, catalog, name, order):
    return [r.asDict() for r in catalog.read(spark, name).orderBy(*order).collect()]


def test_hand_made_inputs_give_exact_valid_and_reject_tables(spark, catalog):
    users = [
        {},
        {"user_id": 2, "nickname": "Bo", "gender": "male"},
        {"user_id": 2, "nickname": "Bo", "gender": "male"},  # exact duplicate
        {"user_id": 3, "gender": "x@!"},
        {"user_id": 4, "age_band": None, "home_city": ""},
        {"user_id": None},
    ]
    pois = [
        {},
        {"poi_id": 11, "name": "Noodle Bar"},
        {"poi_id": 12, "rating": 11.0},
        {"poi_id": 13, "name": None, "price_level": 9},
        {"poi_id": 14, "opening_hours": "25:00-22:00"},
        {"poi_id": 15, "latitude": 123.0},
    ]
    events = [
        {},
        {"event_id": 101, "user_id": 2, "poi_id": 11, "clicked": 0, "ordered": 0},
        {"event_id": 102, "user_id": None},
        {"event_id": 103, "user_id": 3},  # an invalid user
        {"event_id": 104, "poi_id": 12},  # an invalid POI
        {"event_id": 105, "user_id": 99},  # no such user
        {"event_id": 106, "ts": "1970-01-01 00:00:00"},
        {"event_id": 107, "ts": "2026-04-07 00:00:00"},  # the next day
        {"event_id": 108, "weather": "#N/A?%"},
        {"event_id": 109, "clicked": 0, "ordered": 1},
        {"event_id": 110, "position": 0},
        {"event_id": 111, "temperature_c": 99.0},
        {"event_id": 112, "dt": None},
        {"event_id": 113, "user_id": None, "weather": "#N/A?%"},  # the first failing rule wins
        {"event_id": 114, "position": 2},
        {"event_id": 114, "position": 3},  # same event id, different content
        {"event_id": 115, "ts": "2026-04-07 09:00:00", "dt": "2026-04-07"},
    ]
    write_raw(spark, catalog, users, pois, events)

    figures = job.run(spark, catalog, CleanConfig(), log=lambda _: None)

    assert rows(spark, catalog, "clean.users", ["user_id"]) == [
        {**USER},
        {**USER, "user_id": 2, "nickname": "Bo", "gender": "male"},
    ]
    assert rows(spark, catalog, "clean.pois", ["poi_id"]) == [
        {**POI},
        {**POI, "poi_id": 11, "name": "Noodle Bar"},
    ]
    valid = rows(spark, catalog, "clean.impressions", ["event_id"])
    kept_position = valid[2]["position"] if len(valid) == 4 else None
    assert kept_position in (2, 3)  # one of the two rows of event 114, by content hash
    kept = [events[0], events[1], {"event_id": 114, "position": kept_position}, events[-1]]
    assert valid == [r.asDict() for r in frame(spark, "impressions", kept).orderBy("event_id").collect()]

    rejects = [
        (
            r["source_table"],
            r["reason"],
            json.loads(r["raw_payload"]).get("event_id"),
            r["dt"] and str(r["dt"]),
        )
        for r in rows(spark, catalog, "clean.rejects", ["source_table", "reason", "raw_payload"])
    ]
    assert sorted(rejects, key=str) == sorted(
        [
            ("raw.impressions", "duplicate_event_id", 114, "2026-04-06"),
            ("raw.impressions", "invalid_weather", 108, "2026-04-06"),
            ("raw.impressions", "missing_dt", 112, None),
            ("raw.impressions", "missing_user_id", 102, "2026-04-06"),
            ("raw.impressions", "missing_user_id", 113, "2026-04-06"),
            ("raw.impressions", "ordered_without_click", 109, "2026-04-06"),
            ("raw.impressions", "out_of_range_position", 110, "2026-04-06"),
            ("raw.impressions", "out_of_range_temperature_c", 111, "2026-04-06"),
            ("raw.impressions", "out_of_range_ts", 106, "2026-04-06"),
            ("raw.impressions", "out_of_range_ts", 107, "2026-04-06"),
            ("raw.impressions", "unknown_poi", 104, "2026-04-06"),
            ("raw.impressions", "unknown_user", 103, "2026-04-06"),
            ("raw.impressions", "unknown_user", 105, "2026-04-06"),
            ("raw.pois", "invalid_opening_hours", None, None),
            ("raw.pois", "missing_name", None, None),
            ("raw.pois", "out_of_range_latitude", None, None),
            ("raw.pois", "out_of_range_rating", None, None),
            ("raw.users", "duplicate_user_id", None, None),
            ("raw.users", "invalid_gender", None, None),
            ("raw.users", "missing_age_band", None, None),
            ("raw.users", "missing_user_id", None, None),
        ],
        key=str,
    )
    # the payload is the whole raw row, nulls included; the duplicate's payload is the row not kept
    payloads = {
        r["reason"]: json.loads(r["raw_payload"]) for r in catalog.read(spark, "clean.rejects").collect()
    }
    assert payloads["missing_age_band"] == {**USER, "user_id": 4, "age_band": None, "home_city": ""}
    assert payloads["duplicate_event_id"]["position"] == 5 - kept_position
    assert figures["tables"] == {
        "users": {"input_rows": 6, "valid_rows": 2, "rejected_rows": 4},
        "pois": {"input_rows": 6, "valid_rows": 2, "rejected_rows": 4},
        "impressions": {"input_rows": 17, "valid_rows": 4, "rejected_rows": 13},
    }
    assert (figures["input_rows"], figures["valid_rows"], figures["rejected_rows"]) == (29, 8, 21)
    assert figures["rejects_by_reason"]["raw.impressions"]["out_of_range_ts"] == 2
    assert figures["input_versions"] == {
        "raw.users": 0,
        "raw.pois": 0,
        "raw.impressions": 0,
        "raw.dataset_schema": 0,
    }
    assert figures["output_versions"] == {
        "clean.users": 0,
        "clean.pois": 0,
        "clean.impressions": 0,
        "clean.rejects": 0,
    }
    assert {r.input_version for r in catalog.read(spark, "clean.rejects").collect()} == {0}

    # idempotent: the same input gives the same tables, as new versions; and the contested keys met
    # by shuffling the rows (too many to broadcast) give what broadcasting them gave
    before = {
        n: sorted(map(tuple, catalog.read(spark, n).collect()), key=str) for n in figures["output_versions"]
    }
    again = job.run(spark, catalog, CleanConfig(broadcast_contested_keys=0), log=lambda _: None)
    assert again["output_versions"] == {n: 1 for n in figures["output_versions"]}
    assert {k: v for k, v in again.items() if k != "output_versions"} == {
        k: v for k, v in figures.items() if k != "output_versions"
    }
    for name, table in before.items():
        assert sorted(map(tuple, catalog.read(spark, name).collect()), key=str) == table


def test_config_vocabularies_and_date_window(spark, catalog):
    events = [
        {},
        {"event_id": 101, "weather": "foggy"},
        {"event_id": 102, "ts": "2026-04-05 23:30:00"},  # 30 minutes before its day
        {"event_id": 103, "ts": "2026-04-08 12:00:00", "dt": "2026-04-08"},
    ]
    write_raw(spark, catalog, [{}], [{}], events)
    cfg = CleanConfig(vocab={"weather": ("sunny", "foggy")}, ts_tolerance_hours=1, max_date="2026-04-07")
    figures = job.run(spark, catalog, cfg, log=lambda _: None)
    assert [r["event_id"] for r in rows(spark, catalog, "clean.impressions", ["event_id"])] == [100, 101, 102]
    assert figures["rejects_by_reason"]["raw.impressions"] == {"out_of_range_dt": 1}
    cfg = CleanConfig(vocab={"weather": ()})  # an empty vocabulary accepts any value
    figures = job.run(spark, catalog, cfg, log=lambda _: None)
    assert figures["rejects_by_reason"]["raw.impressions"] == {"out_of_range_ts": 1}


def test_a_value_of_the_wrong_type_is_rejected_and_a_missing_column_named(spark, catalog):
    pois = frame(spark, "pois", [{}, {"poi_id": 11}]).withColumn(
        "price_level", F.when(F.col("poi_id") == 11, F.lit("cheap")).otherwise(F.lit("2"))
    )
    annotated = job.transform_entities(pois.withColumn("note", F.lit("x")), "pois", CleanConfig(), SCHEMA)
    assert sorted((r.poi_id, r.price_level, r._reason) for r in annotated.collect()) == [
        (10, 2, None),
        (11, None, "bad_type_price_level"),
    ]
    (reject,) = job.rejected_rows(annotated, "pois", 3).collect()
    assert json.loads(reject.raw_payload) == {**POI, "poi_id": 11, "price_level": "cheap", "note": "x"}
    assert (reject.source_table, reject.reason, reject.dt, reject.input_version) == (
        "raw.pois",
        "bad_type_price_level",
        None,
        3,
    )
    with pytest.raises(job.CleanInputError, match="raw.users has no column gender, which dataset schema"):
        job.annotate(frame(spark, "users", [{}]).drop("gender"), "users", CleanConfig(), SCHEMA)


def test_reconciliation_failure_names_the_table():
    ok = {"input_rows": 5, "valid_rows": 3, "rejected_rows": 2}
    assert job.reconcile({"users": ok, "pois": ok}) == {"input_rows": 10, "valid_rows": 6, "rejected_rows": 4}
    with pytest.raises(job.ReconciliationError, match="raw.pois has 5 input rows but 3 valid"):
        job.reconcile({"users": ok, "pois": {**ok, "rejected_rows": 1}})


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_date"):
        CleanConfig(max_date="April")
    with pytest.raises(ValueError, match="vocab.weather"):
        CleanConfig(vocab={"weather": ("sunny", "")})
    with pytest.raises(ValueError, match="broadcast_contested_keys"):
        CleanConfig(broadcast_contested_keys=-1)


def test_every_injected_defect_of_the_generated_world_is_caught(
    spark, world_catalog, catalog, tiny_world_config
):
    write_schema(spark, catalog, SCHEMA)
    for table in ("users", "pois", "impressions"):
        partitions = ["dt"] if table == "impressions" else None
        catalog.write(world_catalog.read(spark, f"raw.{table}"), f"raw.{table}", partition_by=partitions)
    figures = job.run(spark, catalog, CleanConfig(), log=lambda _: None)

    reasons = figures["rejects_by_reason"]
    for reason in (
        "missing_user_id",
        "unknown_user",
        "unknown_poi",
        "out_of_range_ts",
        "duplicate_event_id",
        "invalid_weather",
    ):
        assert reasons["raw.impressions"].get(reason, 0) > 0, reason
    world = tiny_world_config.world
    fraction = tiny_world_config.dirty.fraction
    assert reasons["raw.users"] == {"missing_age_band": math.ceil(world.users * fraction)}
    assert reasons["raw.pois"] == {"missing_name": math.ceil(world.pois * fraction)}
    # one reject per corrupted event (the truth table keeps the original event ids)
    corrupted = (
        world_catalog.read(spark, "truth.impressions")
        .where(uniform(world.seed, "dirty", "event_id") < tiny_world_config.dirty.fraction)
        .count()
    )
    tables = figures["tables"]
    assert tables["impressions"]["rejected_rows"] == pytest.approx(corrupted, abs=3)
    for table, counts in tables.items():
        assert counts["input_rows"] == counts["valid_rows"] + counts["rejected_rows"]
        assert counts["valid_rows"] == catalog.read(spark, f"clean.{table}").count()
    assert tables["impressions"]["input_rows"] == world.days * world.impressions_per_day
    clean = catalog.read(spark, "clean.impressions")
    assert clean.select("event_id").distinct().count() == clean.count()
    assert catalog.read(spark, "clean.rejects").count() == figures["rejected_rows"]


def test_job_yaml_is_the_default_config():
    from jobs.config import default_config_path, load_config

    assert load_config(CleanConfig, default_config_path("etl_clean")) == CleanConfig()
