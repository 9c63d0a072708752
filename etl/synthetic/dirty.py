"""The dirty-data knob: malformed rows for the cleaning job to catch.

Impressions are corrupted in place (a hash-chosen `fraction` of events, one defect each); users
and POIs get extra malformed rows with fresh ids that no impression references. The `defect`
tag is never written: the cleaning job must find the defects on its own.
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.randomness import randint, uniform

UNKNOWN_ID_OFFSET = 10**12
IMPRESSION_DEFECTS = (
    "null_user",
    "unknown_user",
    "unknown_poi",
    "bad_timestamp",
    "duplicate_event",
    "garbage_string",
)


def corrupt_impressions(raw: DataFrame, seed: int, fraction: float) -> DataFrame:
    if fraction <= 0:
        return raw
    hit = uniform(seed, "dirty", "event_id") < fraction
    kind = randint(seed, "dirty_kind", len(IMPRESSION_DEFECTS), "event_id")
    defect = F.when(
        hit, F.element_at(F.array(*[F.lit(d) for d in IMPRESSION_DEFECTS]), (kind + 1).cast("int"))
    )
    df = raw.withColumn("_defect", defect)
    is_ = lambda name: F.col("_defect") == name  # noqa: E731
    return (
        df.withColumn(
            "user_id", F.when(is_("null_user"), F.lit(None).cast("long")).otherwise(F.col("user_id"))
        )
        .withColumn(
            "user_id",
            F.when(is_("unknown_user"), F.col("user_id") + UNKNOWN_ID_OFFSET).otherwise(F.col("user_id")),
        )
        .withColumn(
            "poi_id",
            F.when(is_("unknown_poi"), F.col("poi_id") + UNKNOWN_ID_OFFSET).otherwise(F.col("poi_id")),
        )
        .withColumn("ts", F.when(is_("bad_timestamp"), F.timestamp_seconds(F.lit(0))).otherwise(F.col("ts")))
        # the neighbouring event of the same request: two rows now share one event id
        .withColumn(
            "event_id",
            F.when(
                is_("duplicate_event"),
                F.when(F.col("position") > 1, F.col("event_id") - 1).otherwise(F.col("event_id") + 1),
            ).otherwise(F.col("event_id")),
        )
        .withColumn("weather", F.when(is_("garbage_string"), F.lit("#N/A?%")).otherwise(F.col("weather")))
        .drop("_defect")
    )


def malformed_users(users: DataFrame, n_users: int, fraction: float) -> DataFrame:
    """Extra user rows with a missing age band, an unknown gender and an empty home city."""
    extra = math.ceil(n_users * fraction) if fraction > 0 else 0
    bad = (
        users.sparkSession.range(n_users, n_users + extra)
        .withColumnRenamed("id", "user_id")
        .select(
            "user_id",
            F.lit("Nobody").alias("nickname"),
            F.lit("x@!").alias("gender"),
            F.lit(None).cast("string").alias("age_band"),
            F.lit("").alias("home_city"),
            F.lit("regular").alias("member_level"),
            F.lit("android").alias("device"),
        )
    )
    return users.unionByName(bad)


def malformed_pois(pois: DataFrame, n_pois: int, fraction: float) -> DataFrame:
    """Extra POI rows with no name, a price level and rating out of range and a bad latitude."""
    extra = math.ceil(n_pois * fraction) if fraction > 0 else 0
    template = pois.limit(0)
    bad = (
        pois.sparkSession.range(n_pois, n_pois + extra)
        .withColumnRenamed("id", "poi_id")
        .select(
            "poi_id",
            *[
                {
                    "name": F.lit(None).cast("string"),
                    "price_level": F.lit(9),
                    "rating": F.lit(11.0),
                    "latitude": F.lit(123.0),
                    "monthly_sales": F.lit(-5),
                }.get(field.name, F.lit("???"))
                .try_cast(field.dataType)
                .alias(field.name)
                for field in template.schema.fields
                if field.name != "poi_id"
            ],
        )
    )
    return pois.unionByName(bad)
