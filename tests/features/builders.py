"""Tiny hand-made clean.* tables for the feature and sample tests, and a cleaned copy of the test world."""

from __future__ import annotations

import calendar
import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

IMPRESSION_FIELDS = (
    "event_id long, user_id long, poi_id long, day string, epoch long, city string, clicked int, ordered int"
)


def _epoch(day: str, time: str) -> int:
    return calendar.timegm(dt.datetime.fromisoformat(f"{day}T{time}:00").timetuple())


def impressions(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """clean.impressions from (event_id, user_id, poi_id, day, "HH:MM" UTC, city, clicked, ordered)."""
    with_epoch = [(e, u, p, day, _epoch(day, time), *rest) for e, u, p, day, time, *rest in rows]
    df = spark.createDataFrame(with_epoch, IMPRESSION_FIELDS)
    return df.select(
        "event_id",
        (F.col("event_id") * 10).alias("request_id"),
        F.timestamp_seconds("epoch").alias("ts"),
        "user_id",
        "poi_id",
        (F.col("event_id") % 3 + 1).cast("int").alias("position"),
        "city",
        F.lit("downtown").alias("district_type"),
        F.lit("home").alias("location_type"),
        F.lit("sunny").alias("weather"),
        F.lit(18.5).alias("temperature_c"),
        F.lit(False).alias("is_away"),
        F.lit(23.1).alias("user_lat"),
        F.lit(113.3).alias("user_lon"),
        F.lit("ios").alias("device"),
        "clicked",
        "ordered",
        F.to_date("day").alias("dt"),
    )


def users(spark: SparkSession, user_ids: list[int]) -> DataFrame:
    rows = [(u, f"user{u}", "female" if u % 2 else "male", "25-34", "A", "gold", "ios") for u in user_ids]
    schema = "user_id long, nickname string, gender string, age_band string, home_city string, member_level string, device string"
    return spark.createDataFrame(rows, schema)


def pois(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """clean.pois from (poi_id, city, cuisine, opening_hours[, latitude, longitude]); without
    coordinates a POI is where `impressions` puts the user (23.1, 113.3)."""
    full = [
        (
            p,
            f"shop{p}",
            city,
            "Tianhe",
            "1 Road",
            *(where or (23.1, 113.3)),
            cuisine,
            "rice",
            "good food",
            "cosy",
            2,
            4.5,
            hours,
            100,
        )
        for p, city, cuisine, hours, *where in rows
    ]
    schema = (
        "poi_id long, name string, city string, district string, address string, latitude double,"
        " longitude double, cuisine string, main_dishes string, introduction string, tags string,"
        " price_level int, rating double, opening_hours string, monthly_sales int"
    )
    return spark.createDataFrame(full, schema)


def clean_world(spark: SparkSession, world_catalog) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The test world's raw tables minus bad rows (a simple stand-in for `etl clean`)."""
    users_df = world_catalog.read(spark, "raw.users").where(F.col("age_band").isNotNull())
    pois_df = world_catalog.read(spark, "raw.pois").where(F.col("name").isNotNull())
    raw = world_catalog.read(spark, "raw.impressions")
    unique = raw.groupBy("event_id").count().where("count = 1").select("event_id")
    impressions_df = (
        raw.where(F.col("user_id").isNotNull() & (F.col("ts") > F.timestamp_seconds(F.lit(0))))
        .where(~F.col("weather").contains("#"))
        .join(unique, "event_id")
        .join(users_df.select("user_id"), "user_id", "left_semi")
        .join(pois_df.select("poi_id"), "poi_id", "left_semi")
    )
    return users_df, pois_df, impressions_df


def tiny_encoder_model(folder, dim: int = 16, max_length: int = 24, seed: int = 0, schema=None):
    """A tiny random stage-2 encoder (tiny Llama with the special tokens of `schema`'s slices, the
    synthetic world's by default, + a seeded projection) saved as a local MLflow model folder;
    returns (folder, TextEncoder, tokenizer)."""
    from etl.text.slices import token_slices
    from tests.etl.text_fixtures import SCHEMA
    from training.embedding.encoder import TextEncoder
    from training.embedding.pyfunc import save_encoder_model
    from training.lm.backbone import add_special_tokens
    from training.lm.tiny import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed=seed)
    add_special_tokens(model, tokenizer, token_slices(schema or SCHEMA))
    encoder = TextEncoder(model, dim=dim, seed=seed).eval()
    save_encoder_model(encoder.backbone, tokenizer, encoder.projection, max_length, folder)
    return folder, encoder, tokenizer


def write_scene_dictionary(spark: SparkSession, catalog, values: list[tuple]) -> None:
    """features.scene_dictionary from (feature, value, impressions) rows, texts wrapped as
    `features scene` wraps them (a null or empty value gets a null text)."""
    from etl.tokens import wrap_text
    from features.scene_values import scene_id

    rows = [(f, v, wrap_text(f"scene_{f}", v) if v else None, n) for f, v, n in values]
    df = spark.createDataFrame(rows, "feature string, value string, text string, impressions long")
    df = df.select(
        "feature",
        "value",
        "text",
        scene_id(F.col("feature"), F.col("value")).alias("scene_id"),
        "impressions",
    )
    catalog.write(df, "features.scene_dictionary")
