import datetime as dt
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from etl.text import pairs
from etl.text.pairs import PairsConfig
from jobs.config import ConfigError, default_config_path, load_config
from tests.etl.text_fixtures import (
    IMPRESSIONS,
    IMPRESSIONS_SCHEMA,
    POIS,
    POIS_SCHEMA,
    SCHEMA,
    TEST_DAY,
    impression,
    write_clean,
)

COLUMNS = ["pair_type", "anchor_id", "positive_id", "text_a", "text_b", "split"]
CFG = PairsConfig(history_end_date=TEST_DAY.isoformat(), heldout_fraction=0.0)

PROFILE_10 = "<user_profile>Lily88, female, age 25-34, lives in Chengdu, gold member</user_profile>"
PROFILE_11 = "<user_profile>Bo, age 18-24, lives in Guangzhou, basic member</user_profile>"
ACTION_10 = (
    "<user_hist>Noodle No. 7 (dan dan noodles); Aunt Li's Claypot (claypot rice, rice noodle rolls)</user_hist>"
    "<user_env>Monday, 08:00, Chengdu, office, rainy, 18°C; "
    "Tuesday, 12:00, Chengdu, office, sunny, 24°C, away from home</user_env>"
    "<user_price>clicked: mean price level 2.3 of 4 over 3 clicks; "
    "ordered: mean price level 1.5 of 4 over 2 orders</user_price>"
)
ACTION_11 = "<user_price>clicked: mean price level 2.0 of 4 over 1 clicks; no orders</user_price>"
BUSINESS = {
    1: "<POI_name>Aunt Li's Claypot</POI_name><POI_loc>Guangzhou, Tianhe, 12 Renmin Road</POI_loc>"
    "<POI_cuisine>Cantonese</POI_cuisine><POI_dishes>claypot rice, rice noodle rolls</POI_dishes>",
    2: "<POI_name>Noodle No. 7</POI_name><POI_loc>Chengdu, Wuhou, 3 Jiefang Road</POI_loc>"
    "<POI_cuisine>Noodles</POI_cuisine><POI_dishes>dan dan noodles</POI_dishes>",
    3: "<POI_name>Hotpot King</POI_name><POI_loc>Chengdu, Jinjiang, 8 Heping Road</POI_loc>"
    "<POI_cuisine>Hotpot</POI_cuisine><POI_dishes>beef hotpot</POI_dishes>",
}
BASIC = {
    1: "<POI_intro>Home-style claypot rice.</POI_intro><POI_tags>cosy, fast delivery</POI_tags>",
    2: "<POI_intro>Best noodles in town</POI_intro>",
    3: "<POI_intro>Spicy hotpot.</POI_intro><POI_tags>spicy</POI_tags>",
}
EXPECTED = sorted(
    [
        ("user_user", 10, 10, PROFILE_10, ACTION_10, "train"),
        ("user_user", 11, 11, PROFILE_11, ACTION_11, "train"),
        *[("poi_poi", p, p, BUSINESS[p], BASIC[p], "train") for p in (1, 2, 3)],
        # user 10 ordered from POIs 2 and 1 before the test day; user 12's test-day order is unseen
        *[("user_poi", 10, p, PROFILE_10 + ACTION_10, BUSINESS[p] + BASIC[p], "train") for p in (1, 2)],
        # each of user 10's orders: that order's scene alone -> the ordered POI; anchor = the event
        (
            "scene_poi",
            1,
            2,
            "<user_env>Monday, 08:00, Chengdu, office, rainy, 18°C</user_env>",
            BUSINESS[2] + BASIC[2],
            "train",
        ),
        (
            "scene_poi",
            3,
            1,
            "<user_env>Tuesday, 12:00, Chengdu, office, sunny, 24°C, away from home</user_env>",
            BUSINESS[1] + BASIC[1],
            "train",
        ),
    ]
)


def _rows(df):
    return sorted(tuple(r) for r in df.select(COLUMNS).collect())


def test_pairs_whole_table_and_idempotent(spark, catalog):
    write_clean(spark, catalog)
    figures = pairs.run(spark, catalog, CFG, log=lambda _: None)
    table = catalog.read(spark, "pairs.contrastive")
    assert sorted(table.columns) == sorted(COLUMNS)
    assert _rows(table) == EXPECTED
    assert (figures["user_user_rows"], figures["poi_poi_rows"], figures["user_poi_rows"]) == (2, 3, 2)
    assert figures["scene_poi_rows"] == figures["scene_poi_train_rows"] == 2
    assert figures["rows"] == figures["user_user_train_rows"] + 7 == 9
    assert figures["input_versions"] == {
        "clean.users": 0,
        "clean.pois": 0,
        "clean.impressions": 0,
        "raw.dataset_schema": 0,
    }
    again = pairs.run(spark, catalog, CFG, log=lambda _: None)
    assert (
        again["output_versions"]["pairs.contrastive"] == figures["output_versions"]["pairs.contrastive"] + 1
    )
    assert _rows(catalog.read(spark, "pairs.contrastive")) == EXPECTED
    detail = catalog.delta(spark, "pairs.contrastive").detail().select("partitionColumns").first()
    assert list(detail[0]) == ["pair_type"]


def test_pairs_ignore_the_history_end_day_and_later(spark, catalog):
    """Point in time: changing, adding or dropping impressions on/after the end date changes nothing."""
    changed = [r for r in IMPRESSIONS if r[-1] < TEST_DAY]
    changed += [
        impression(20, TEST_DAY, 9, 12, 1, 1, 1),
        impression(21, TEST_DAY, 9, 10, 3, 1, 1, weather="snowy"),
        impression(22, TEST_DAY + dt.timedelta(days=3), 9, 11, 2, 1, 1),
    ]
    write_clean(spark, catalog, impressions=changed)
    pairs.run(spark, catalog, CFG, log=lambda _: None)
    assert _rows(catalog.read(spark, "pairs.contrastive")) == EXPECTED
    # and the end date really is the cut: one day later the test-day orders become history
    later = PairsConfig(history_end_date=(TEST_DAY + dt.timedelta(days=1)).isoformat(), heldout_fraction=0.0)
    pairs.run(spark, catalog, later, log=lambda _: None)
    got = catalog.read(spark, "pairs.contrastive").where(F.col("pair_type") == "user_poi")
    assert sorted((r[0], r[1]) for r in got.select("anchor_id", "positive_id").collect()) == [
        (10, 1),
        (10, 2),
        (10, 3),
        (12, 1),
    ]


def test_the_default_history_ends_at_the_first_test_day_of_the_declared_split(spark, catalog):
    """No date of the synthetic world: the log's last `events.test_days` days are never history."""
    write_clean(spark, catalog)  # the fixtures' last day is TEST_DAY; the schema holds out 1 day
    figures = pairs.run(spark, catalog, replace(CFG, history_end_date=""), log=lambda _: None)
    assert figures["history_end_date"] == TEST_DAY.isoformat()
    assert _rows(catalog.read(spark, "pairs.contrastive")) == EXPECTED
    two_days = replace(SCHEMA, events=replace(SCHEMA.events, test_days=2))
    write_clean(spark, catalog, schema=two_days)
    figures = pairs.run(spark, catalog, replace(CFG, history_end_date=""), log=lambda _: None)
    assert figures["history_end_date"] == (TEST_DAY - dt.timedelta(days=1)).isoformat()


def test_caps_per_user_and_per_poi_by_hash_rank(spark):
    # user 0 ordered from 30 POIs; POI 100 was ordered by 40 users (and user 0)
    orders = [(0, p) for p in range(100, 130)] + [(u, 100) for u in range(1, 41)] + [(0, 100)]
    df = spark.createDataFrame(orders, "user_id long, poi_id long")
    capped = pairs.capped_orders(df, max_per_user=5, max_per_poi=10, seed=3)
    rows = sorted(tuple(r) for r in capped.collect())
    per_user = {u: sum(1 for r in rows if r[0] == u) for u in {r[0] for r in rows}}
    per_poi = {p: sum(1 for r in rows if r[1] == p) for p in {r[1] for r in rows}}
    assert max(per_user.values()) <= 5 and max(per_poi.values()) <= 10
    assert per_poi[100] == 10
    assert 4 <= per_user[0] <= 5  # 5 kept per user; POI 100 may then drop user 0
    assert set(rows) <= set(orders)
    reshuffled = pairs.capped_orders(df.repartition(5).orderBy(F.desc("poi_id")), 5, 10, seed=3)
    assert sorted(tuple(r) for r in reshuffled.collect()) == rows
    other_seed = sorted(tuple(r) for r in pairs.capped_orders(df, 5, 10, seed=4).collect())
    assert other_seed != rows
    uncapped = pairs.capped_orders(df, 1000, 1000, seed=3)
    assert sorted(tuple(r) for r in uncapped.collect()) == sorted(set(orders))


def test_heldout_users_are_held_out_in_every_pair_type(spark):
    users = spark.range(300).select(
        F.col("id").alias("user_id"),
        F.lit("n").alias("nickname"),
        F.lit("female").alias("gender"),
        F.lit("25-34").alias("age_band"),
        F.lit("Chengdu").alias("home_city"),
        F.lit("gold").alias("member_level"),
        F.lit("ios").alias("device"),
    )
    rows = [impression(1000 + u, TEST_DAY - dt.timedelta(days=1), 12, u, 1, 1, 1) for u in range(300)]
    impressions = spark.createDataFrame(rows, IMPRESSIONS_SCHEMA)
    pois = spark.createDataFrame(POIS, POIS_SCHEMA)
    cfg = PairsConfig(history_end_date=TEST_DAY.isoformat(), heldout_fraction=0.2, max_pairs_per_poi=1000)
    every = pairs.transform(users, pois, impressions, SCHEMA, cfg)
    out = every.where(F.col("pair_type").isin("user_user", "user_poi"))
    # a held-out user's scenes are held out too (scene_poi's anchor is the event, 1000 + user)
    scenes = every.where(F.col("pair_type") == "scene_poi").select(
        (F.col("anchor_id") - 1000).alias("anchor_id"), "split"
    )
    assert scenes.count() == 300
    assert (
        scenes.join(out.select("anchor_id", F.col("split").alias("user_split")).distinct(), "anchor_id")
        .where(F.col("split") != F.col("user_split"))
        .count()
        == 0
    )
    by_user = out.groupBy("anchor_id").agg(F.collect_set("split").alias("s"), F.count("*").alias("n"))
    assert by_user.where(F.size("s") != 1).count() == 0
    assert by_user.where(F.col("n") != 2).count() == 0
    share = out.where(F.col("split") == "heldout").count() / out.count()
    assert 0.12 < share < 0.28


def test_config():
    assert load_config(PairsConfig, default_config_path("etl_pairs")) == PairsConfig()
    with pytest.raises(ConfigError, match="history_end_date"):
        load_config(PairsConfig, None, ["history_end_date=13.04.2026"])
    with pytest.raises(ConfigError, match="max_pairs_per_user"):
        load_config(PairsConfig, None, ["max_pairs_per_user=0"])
