"""The synthetic world: determinism, schemas, dirty rows, and the hidden semantic effects."""

import re
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from core.schema_table import SCHEMA_TABLE, read_schema
from etl.synthetic import job
from etl.synthetic.impressions import RAW_IMPRESSION_COLUMNS

RAW_IMPRESSION_SCHEMA = (
    "event_id:bigint,request_id:bigint,ts:timestamp,user_id:bigint,poi_id:bigint,position:int,"
    "city:string,district_type:string,location_type:string,weather:string,temperature_c:double,"
    "is_away:boolean,user_lat:double,user_lon:double,device:string,clicked:int,ordered:int,dt:date"
)


def simple_schema(df):
    return ",".join(f"{f.name}:{f.dataType.simpleString()}" for f in df.schema.fields)


def sorted_rows(df):
    return sorted(df.collect(), key=lambda r: tuple("" if v is None else str(v) for v in r))


@pytest.fixture(scope="module")
def small_config(tiny_world_config):
    world = replace(tiny_world_config.world, users=60, pois=120, days=2, impressions_per_day=400)
    return replace(tiny_world_config, world=world, test_day=2)


def test_same_seed_same_world_whatever_the_partitioning(spark, small_config):
    tables = {}
    for partitions, shuffle in ((1, 3), (5, 11)):
        spark.conf.set("spark.sql.shuffle.partitions", str(shuffle))
        cfg = replace(small_config, world=replace(small_config.world, partitions=partitions))
        world = job.transform(spark, cfg)
        raw, truth = job.impression_tables(world.scored_impressions, cfg)
        tables[partitions] = [
            sorted_rows(df) for df in (world.users, world.pois, world.pois_truth, raw, truth)
        ]
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    assert tables[1] == tables[5]
    assert len(tables[1][3]) == 800


def test_another_seed_gives_another_world(spark, small_config):
    other = replace(small_config, world=replace(small_config.world, seed=8))
    a = job.impression_tables(job.transform(spark, small_config).scored_impressions, small_config)[0]
    b = job.impression_tables(job.transform(spark, other).scored_impressions, other)[0]
    assert sorted_rows(a.select("user_id", "poi_id")) != sorted_rows(b.select("user_id", "poi_id"))


def test_schemas_and_no_truth_in_raw_tables(world_catalog, spark):
    impressions = world_catalog.read(spark, "raw.impressions")
    assert simple_schema(impressions) == RAW_IMPRESSION_SCHEMA
    assert tuple(impressions.columns) == RAW_IMPRESSION_COLUMNS
    pois = world_catalog.read(spark, "raw.pois")
    assert pois.columns == [
        "poi_id", "name", "city", "district", "address", "latitude", "longitude", "cuisine", "main_dishes",
        "introduction", "tags", "price_level", "rating", "opening_hours", "monthly_sales",
    ]  # fmt: skip
    users = world_catalog.read(spark, "raw.users")
    assert users.columns == [
        "user_id",
        "nickname",
        "gender",
        "age_band",
        "home_city",
        "member_level",
        "device",
    ]
    hidden = {
        "p_click",
        "p_order",
        "p_ctcvr",
        "semantic_logit",
        "collaborative_score",
        "temperature",
        "spicy",
        "sweet",
        "meal",
        "quality",
    }
    for df in (impressions, pois, users):
        assert hidden.isdisjoint(df.columns)
    truth = world_catalog.read(spark, "truth.impressions")
    assert {"p_click", "p_order", "p_ctcvr", "semantic_logit", "collaborative_score"} <= set(truth.columns)


def test_sizes_lists_and_long_tail(world_catalog, spark, tiny_world_config):
    world = tiny_world_config.world
    truth = world_catalog.read(spark, "truth.impressions")
    assert truth.count() == world.days * world.impressions_per_day
    # every request shows distinct shops of one city
    per_request = (
        world_catalog.read(spark, "raw.impressions")
        .join(truth.select("event_id"), "event_id")  # drop duplicated ids from the dirty knob
        .groupBy("request_id")
        .agg(
            F.countDistinct("poi_id").alias("shops"),
            F.countDistinct("city").alias("cities"),
            F.count("*").alias("n"),
        )
    )
    assert per_request.where("cities != 1").count() == 0
    assert per_request.where("shops != n").count() == 0
    counts = sorted(
        (r["n"] for r in truth.groupBy("poi_id").agg(F.count("*").alias("n")).collect()), reverse=True
    )
    total, median = sum(counts), counts[len(counts) // 2]
    assert sum(counts[: len(counts) // 10]) > 0.3 * total  # a few shops are shown very often
    assert median < 0.7 * total / len(counts)  # and most shops rarely


def test_dirty_rows_are_injected(world_catalog, spark):
    impressions = world_catalog.read(spark, "raw.impressions")
    assert impressions.where("user_id is null").count() > 0
    assert impressions.where("user_id >= 1000000000000 or poi_id >= 1000000000000").count() > 0
    assert impressions.where("ts < timestamp'2000-01-01'").count() > 0
    assert impressions.groupBy("event_id").count().where("count > 1").count() > 0
    assert impressions.where("weather = '#N/A?%'").count() > 0
    assert world_catalog.read(spark, "raw.users").where("age_band is null").count() > 0
    assert world_catalog.read(spark, "raw.pois").where("name is null and price_level = 9").count() > 0


def _rates(df, condition):
    row = df.where(condition).agg(
        F.avg("p_click").alias("p"), F.avg("clicked").alias("y"), F.count("*").alias("n")
    )
    return row.first()


def test_semantic_effects_only_text_reveals(world_catalog, spark):
    truth = world_catalog.read(spark, "truth.impressions")
    pois = world_catalog.read(spark, "truth.pois").select("poi_id", "temperature", "meal")
    raw = world_catalog.read(spark, "raw.impressions").select("event_id", "temperature_c", "ts", "weather")
    df = truth.join(pois, "poi_id").join(raw.dropDuplicates(["event_id"]), "event_id")

    cold_dishes = df.where("temperature = -1")
    hot_day, cold_day = _rates(cold_dishes, "temperature_c >= 22"), _rates(cold_dishes, "temperature_c <= 12")
    assert hot_day["n"] > 300 and cold_day["n"] > 300
    assert hot_day["p"] > 1.5 * cold_day["p"]  # the hidden probability
    assert hot_day["y"] > cold_day["y"]  # and the sampled clicks

    late_food = df.where("meal = 'late_night'").withColumn("hour", F.hour("ts"))
    night, morning = _rates(late_food, "hour >= 22 or hour < 3"), _rates(late_food, "hour between 6 and 9")
    assert night["p"] > 2 * morning["p"]


def test_the_semantic_terms_sum_to_the_semantic_logit_and_leave_the_world_as_it_was(spark, small_config):
    from etl.synthetic.impressions import SCENE_X_DISH, SEMANTIC_TERMS, TERM_COLUMNS, semantic_parts

    assert tuple(semantic_parts(F.col("hour"), F.col("temperature_c"))) == SEMANTIC_TERMS
    flagged = replace(small_config, world=replace(small_config.world, semantic_terms=True))
    plain = job.impression_tables(job.transform(spark, small_config).scored_impressions, small_config)[1]
    truth = job.impression_tables(job.transform(spark, flagged).scored_impressions, flagged)[1]
    assert not set(TERM_COLUMNS) & set(plain.columns) and set(TERM_COLUMNS) < set(truth.columns)
    # the flag only adds columns: the same rows, the same logit and clicks, bit for bit
    assert sorted_rows(truth.select(*plain.columns)) == sorted_rows(plain)
    terms = [F.col(f"semantic_{t}") for t in SEMANTIC_TERMS]
    scene_x_dish = [F.col(f"semantic_{t}") for t in SCENE_X_DISH]
    errors = truth.select(
        F.max(F.abs(sum(terms) - F.col("semantic_logit"))).alias("total"),
        F.max(F.abs(sum(scene_x_dish) - F.col("semantic_scene_x_dish"))).alias("scene_x_dish"),
        F.sum((F.col("semantic_rain_x_distance") != 0).cast("int")).alias("rainy"),
        F.sum((F.col("semantic_scene_x_dish") != 0).cast("int")).alias("scene"),
    ).first()
    assert errors["total"] < 1e-9 and errors["scene_x_dish"] < 1e-9
    assert errors["rainy"] > 0 and errors["scene"] > 0  # terms that are there, not columns of zeros


def test_generate_summary_reports_the_bayes_ceiling(spark, catalog, small_config):
    versions = job.write_world(spark, catalog, small_config, log=lambda _: None)
    assert versions == dict.fromkeys((SCHEMA_TABLE, *job.TABLES), 0)
    summary = job.summarize(spark, catalog, small_config, versions)
    assert summary["impressions"] == 800
    assert summary["users"] == 60 + 1 and summary["pois"] == 120 + 2  # plus the malformed extra rows
    assert 0.0 < summary["ctr"] < 0.3 and 0.0 < summary["cvr"] < 1.0
    assert 0.6 < summary["bayes_auc_ctr_test"] < 1.0


def test_generate_stores_the_schema_its_tables_conform_to(spark, catalog, small_config):
    job.write_world(spark, catalog, small_config, log=lambda _: None)
    schema = read_schema(spark, catalog)
    assert schema == job.world_schema(small_config)
    assert schema.events.test_days == small_config.world.days - small_config.test_day + 1
    for table in ("users", "pois", "impressions"):
        stored = {
            f.name: f.dataType.simpleString() for f in catalog.read(spark, f"raw.{table}").schema.fields
        }
        declared = {name: kind.replace("long", "bigint") for name, kind in schema.raw_columns(table).items()}
        assert stored == declared, table


def test_a_skewed_world_has_its_hot_user_and_hot_poi_and_distinct_lists(spark, small_config):
    from etl.synthetic.config import DirtyConfig

    plain_cfg = replace(  # no dirty rows: the raw table is the whole log, with its request ids
        small_config, world=replace(small_config.world, impressions_per_day=2000), dirty=DirtyConfig(0.0)
    )
    skewed = replace(plain_cfg, world=replace(plain_cfg.world, hot_user_share=0.3, hot_poi_share=0.05))
    plain, truth = (
        job.impression_tables(job.transform(spark, cfg).scored_impressions, cfg)[0].cache()
        for cfg in (plain_cfg, skewed)
    )
    total = truth.count()
    share = lambda table, column: table.where(F.col(column) == 0).count() / total  # noqa: E731
    # on top of the natural draws (user 0 is the heaviest user; POI 0 is city 0's first shop),
    # which the hot share replaces: 400 requests, so a few points of noise
    assert share(truth, "user_id") == pytest.approx(0.3 + 0.7 * share(plain, "user_id"), abs=0.06)
    promoted = 0.05 * skewed.world.list_length  # the lists whose first slot is POI 0; in the others,
    expected_poi = 0.05 + (1 - promoted) * share(plain, "poi_id")  # it is drawn as in the plain world
    assert share(truth, "poi_id") == pytest.approx(expected_poi, abs=0.02)
    assert share(truth, "poi_id") > 2 * share(plain, "poi_id")
    lists = truth.groupBy("request_id").agg(F.countDistinct("poi_id").alias("shops"), F.count("*").alias("n"))
    assert lists.where("shops != n").count() == 0


@pytest.mark.parametrize(
    ("world", "named"),
    [
        ({"hot_poi_share": 0.2}, "world.hot_poi_share must be in [0, 1/list_length = 0.1]"),
        ({"hot_user_share": 1.5}, "world.hot_user_share must be in [0, 1]"),
        (
            {"days": 10**6, "impressions_per_day": 10**13},
            "world.impressions_per_day: days x impressions_per_day",
        ),
    ],
)
def test_a_skew_or_size_that_cannot_be_met_is_refused_up_front(world, named):
    from etl.synthetic.config import WorldConfig

    with pytest.raises(ValueError, match=re.escape(named)):
        WorldConfig(**world)
