"""The n = 10 real-time scene features of an impression, as text values, and their stable ids.

Input: impressions (the raw/clean log schema) and POIs (for the cuisine of past orders).
Output: the impressions with one string column per scene feature (`scene_<feature>`) and one id
column per feature (`scene_<feature>_id`). Ids are a hash of (feature, value), so the scene
dictionary, the CTR samples and the scoring model agree on them without sharing state.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.core.clock import utc_hour
from etl.tokens import SCENE_FEATURES  # defined once, beside their special tokens

NO_RECENT_INTENT = "no recent orders"


def value_column(feature: str) -> str:
    return f"scene_{feature}"


def id_column(feature: str) -> str:
    return f"scene_{feature}_id"


def scene_id(feature: str | Column, value: Column) -> Column:
    """Stable 64-bit id of a (feature, value) pair."""
    feature_col = F.lit(feature) if isinstance(feature, str) else feature
    return F.xxhash64(feature_col, value)


def time_slot_of_hour(hour: Column) -> Column:
    return (
        F.when(hour.between(6, 9), "breakfast")
        .when(hour.between(10, 13), "lunch")
        .when(hour.between(14, 16), "afternoon tea")
        .when(hour.between(17, 20), "dinner")
        .when(hour.between(21, 23), "evening")
        .otherwise("late night")
    )


def _temperature_band(celsius: Column) -> Column:
    return (
        F.when(celsius < 0, "freezing below 0C")
        .when(celsius < 10, "cold 0-10C")
        .when(celsius < 20, "mild 10-20C")
        .when(celsius < 28, "warm 20-28C")
        .otherwise("hot above 28C")
    )


def _season(month: Column) -> Column:
    return (
        F.when(month.isin(3, 4, 5), "spring")
        .when(month.isin(6, 7, 8), "summer")
        .when(month.isin(9, 10, 11), "autumn")
        .otherwise("winter")
    )


def recent_intents(impressions: DataFrame, pois: DataFrame) -> DataFrame:
    """(user_id, dt) -> the cuisine of the user's latest order on an earlier day.

    Point in time: a day's value uses only orders of strictly earlier days.
    """
    orders = (
        impressions.where(F.col("ordered") == 1)
        .join(pois.select("poi_id", "cuisine"), "poi_id")
        .groupBy("user_id", "dt")
        .agg(F.max_by("cuisine", "ts").alias("last_cuisine"))
    )
    days = impressions.select("user_id", "dt").distinct()
    history = days.join(orders, ["user_id", "dt"], "left")
    earlier = Window.partitionBy("user_id").orderBy("dt").rowsBetween(Window.unboundedPreceding, -1)
    return history.select(
        "user_id",
        "dt",
        F.coalesce(F.last("last_cuisine", ignorenulls=True).over(earlier), F.lit(NO_RECENT_INTENT)).alias(
            "recent_intent"
        ),
    )


def with_scene_values(impressions: DataFrame, pois: DataFrame) -> DataFrame:
    """Add `scene_<feature>` (text value) and `scene_<feature>_id` for the 10 scene features."""
    hour = utc_hour(F.col("ts"))
    values = {
        "city": F.col("city"),
        "district_type": F.col("district_type"),
        "time_slot": time_slot_of_hour(hour),
        "day_type": F.when(F.dayofweek("dt").isin(1, 7), "weekend").otherwise("weekday"),
        "weather": F.col("weather"),
        "temperature_band": _temperature_band(F.col("temperature_c")),
        "season": _season(F.month("dt")),
        "travel_status": F.when(F.col("is_away"), "travelling away from home city").otherwise("in home city"),
        "location_type": F.col("location_type"),
        "recent_intent": F.col("recent_intent"),
    }
    df = impressions.join(recent_intents(impressions, pois), ["user_id", "dt"], "left")
    for feature, value in values.items():
        df = df.withColumn(value_column(feature), value)
    for feature in SCENE_FEATURES:
        df = df.withColumn(id_column(feature), scene_id(feature, F.col(value_column(feature))))
    return df.drop("recent_intent")
