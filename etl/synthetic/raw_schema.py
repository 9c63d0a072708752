"""The synthetic world's raw tables, column by column in the order `generate` writes them.

They are the raw tables of its dataset schema (schema.yaml; tests/etl/test_generate.py checks
that the two agree). Jobs never read this module: they read the stored dataset schema.
"""

from __future__ import annotations

from pyspark.sql.types import StructField, StructType

from core.raw_schema import SPARK_TYPES


def _schema(ddl: str) -> StructType:
    """'name type, ...' -> StructType (parsed here: Spark's parser needs a running session)."""
    fields = [item.split() for item in ddl.split(",")]
    return StructType([StructField(name, SPARK_TYPES[kind], True) for name, kind in fields])


RAW_USERS = _schema(
    "user_id long, nickname string, gender string, age_band string, home_city string,"
    " member_level string, device string"
)
RAW_POIS = _schema(
    "poi_id long, name string, city string, district string, address string, latitude double,"
    " longitude double, cuisine string, main_dishes string, introduction string, tags string,"
    " price_level int, rating double, opening_hours string, monthly_sales int"
)
RAW_IMPRESSIONS = _schema(
    "event_id long, request_id long, ts timestamp, user_id long, poi_id long, position int,"
    " city string, district_type string, location_type string, weather string, temperature_c double,"
    " is_away boolean, user_lat double, user_lon double, device string, clicked int, ordered int, dt date"
)
RAW_SCHEMAS: dict[str, StructType] = {"users": RAW_USERS, "pois": RAW_POIS, "impressions": RAW_IMPRESSIONS}
