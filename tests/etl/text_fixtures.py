"""Hand-made clean.* rows for the text-builder tests (same columns and types as raw.*)."""

from __future__ import annotations

import datetime as dt

from core.dataset_schema import load_schema_file
from core.schema_table import write_schema
from etl.synthetic.job import SCHEMA_FILE

# the synthetic world's declared schema: these rows follow it
SCHEMA = load_schema_file(SCHEMA_FILE)

USERS_SCHEMA = (
    "user_id long, nickname string, gender string, age_band string, home_city string,"
    " member_level string, device string"
)
POIS_SCHEMA = (
    "poi_id long, name string, city string, district string, address string, latitude double,"
    " longitude double, cuisine string, main_dishes string, introduction string, tags string,"
    " price_level int, rating double, opening_hours string, monthly_sales int"
)
IMPRESSIONS_SCHEMA = (
    "event_id long, request_id long, ts timestamp, user_id long, poi_id long, position int, city string,"
    " district_type string, location_type string, weather string, temperature_c double, is_away boolean,"
    " user_lat double, user_lon double, device string, clicked int, ordered int, dt date"
)

POIS = [
    (
        1,
        "Aunt Li's Claypot",
        "Guangzhou",
        "Tianhe",
        "12 Renmin Road",
        23.1,
        113.3,
        "Cantonese",
        "claypot rice, rice noodle rolls",
        "Home-style claypot rice.",
        "cosy, fast delivery",
        2,
        4.6,
        "10:00-22:00",
        1200,
    ),
    (
        2,
        "Noodle No. 7",
        "Chengdu",
        "Wuhou",
        "3 Jiefang Road",
        30.6,
        104.0,
        "Noodles",
        "dan dan noodles",
        "Best <POI_name>noodles</POI_name> in town",
        None,
        1,
        None,
        "06:00-14:00",
        300,
    ),
    (
        3,
        "Hotpot King",
        "Chengdu",
        "Jinjiang",
        "8 Heping Road",
        30.7,
        104.1,
        "Hotpot",
        "beef hotpot",
        "Spicy hotpot.",
        "spicy",
        4,
        4.9,
        "17:00-03:00",
        50,
    ),
]

USERS = [
    (10, "Lily88", "female", "25-34", "Chengdu", "gold", "ios"),
    (11, "Bo", "unknown", "18-24", "Guangzhou", "basic", "android"),
    (12, "Quiet", "male", "55+", "Chengdu", "basic", "ios"),  # never clicks
]

DAY1, DAY2, TEST_DAY = dt.date(2026, 4, 6), dt.date(2026, 4, 7), dt.date(2026, 4, 8)


def ts(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    # naive datetimes are read in the session time zone; the tests' session uses UTC epoch
    # semantics through unix_timestamp, so build the instant explicitly in UTC
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


def impression(
    event_id, day, hour, user_id, poi_id, clicked, ordered, *, weather="sunny", temp=24.0, away=False
):
    return (
        event_id,
        event_id,
        ts(day, hour),
        user_id,
        poi_id,
        1,
        "Chengdu",
        "urban core",
        "office",
        weather,
        temp,
        away,
        30.6,
        104.0,
        "ios",
        clicked,
        ordered,
        day,
    )


IMPRESSIONS = [
    # user 10: clicks POI 3 and orders POI 2 then POI 1 on day 1 and 2
    impression(1, DAY1, 8, 10, 2, 1, 1, weather="rainy", temp=17.6),
    impression(2, DAY1, 8, 10, 3, 1, 0),
    impression(3, DAY2, 12, 10, 1, 1, 1, away=True),
    impression(4, DAY2, 12, 10, 3, 0, 0),
    # user 11: one click, no order
    impression(5, DAY1, 19, 11, 1, 1, 0),
    # user 12: shown, never clicks
    impression(6, DAY2, 19, 12, 1, 0, 0),
    # the test day: must never reach the pairs
    impression(7, TEST_DAY, 12, 11, 3, 1, 1),
    impression(8, TEST_DAY, 13, 12, 2, 1, 1),
]


def write_clean(spark, catalog, users=USERS, pois=POIS, impressions=IMPRESSIONS, schema=SCHEMA) -> None:
    write_schema(spark, catalog, schema)
    catalog.write(spark.createDataFrame(users, USERS_SCHEMA), "clean.users")
    catalog.write(spark.createDataFrame(pois, POIS_SCHEMA), "clean.pois")
    catalog.write(
        spark.createDataFrame(impressions, IMPRESSIONS_SCHEMA), "clean.impressions", partition_by=["dt"]
    )
