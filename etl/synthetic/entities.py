"""Users and POIs of the synthetic world: spark.range(n) -> one row per user / POI.

Each builder returns two DataFrames: the public table (what a production log system would hold)
and the hidden truth (latent factors, tastes, dish attributes) that only the click model and
evaluations may see. All draws are hash-based (see core/randomness.py).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.randomness import choice, normal, randint, uniform
from etl.synthetic import vocab
from etl.synthetic.config import WorldConfig

LATENT_DIM = 4
STREETS = ("Renmin", "Zhongshan", "Jiefang", "Heping", "Xinhua", "Jianshe", "Wenhua", "Chang'an")
KM_PER_DEGREE = 111.0


def cities_frame(spark: SparkSession) -> DataFrame:
    """The city vocabulary with, per city, the dishes that are its province's specialities."""
    rows = []
    for idx, city in enumerate(vocab.CITIES):
        local = [i for i, d in enumerate(vocab.DISHES) if d.province == city.province]
        rows.append(
            (
                idx,
                city.name,
                city.province,
                city.spring_temp_c,
                city.lat,
                city.lon,
                list(city.districts),
                local,
            )
        )
    schema = (
        "city_idx int, city string, province string, base_temp_c double, center_lat double,"
        " center_lon double, districts array<string>, local_dishes array<int>"
    )
    return spark.createDataFrame(rows, schema)


def dishes_frame(spark: SparkSession) -> DataFrame:
    rows = [
        (i, d.name, d.short, d.category, list(d.menu), d.temperature, d.spicy, d.sweet, d.meal, d.province)
        for i, d in enumerate(vocab.DISHES)
    ]
    schema = (
        "dish_idx int, dish string, short string, category string, menu array<string>,"
        " temperature int, spicy int, sweet int, meal string, dish_province string"
    )
    return spark.createDataFrame(rows, schema)


def _fill(template: Column, **values: Column) -> Column:
    for key, value in values.items():
        template = F.replace(template, F.lit("{" + key + "}"), value)
    return template


def _maybe(seed: int, salt: str, key: str, probability: float, text: Column) -> Column:
    """`text` for a hash-chosen share of rows, else null (dropped by concat_ws)."""
    return F.when(uniform(seed, salt, key) < probability, text)


def build_pois(spark: SparkSession, cfg: WorldConfig) -> tuple[DataFrame, DataFrame]:
    """POIs: public profile (text-rich) and hidden attributes. POI i lives in city i % n_cities."""
    seed, n_cities = cfg.seed, len(vocab.CITIES)
    cities = F.broadcast(cities_frame(spark))
    dishes = F.broadcast(dishes_frame(spark))
    base = (
        spark.range(cfg.pois, numPartitions=cfg.partitions or None)
        .withColumnRenamed("id", "poi_id")
        .withColumn("city_idx", (F.col("poi_id") % n_cities).cast("int"))
        .withColumn("rank_in_city", (F.col("poi_id") / n_cities).cast("long"))
        .join(cities, "city_idx")
    )
    # a third of shops sell their province's speciality; the rest any dish, so the same food
    # is sold under different names in many cities
    local_pick = F.element_at(
        "local_dishes", (randint(seed, "poi_local_dish", F.size("local_dishes"), "poi_id") + 1).cast("int")
    )
    any_pick = randint(seed, "poi_dish", len(vocab.DISHES), "poi_id").cast("int")
    base = base.withColumn(
        "dish_idx",
        F.when(
            (F.size("local_dishes") > 0) & (uniform(seed, "poi_is_local", "poi_id") < 0.35), local_pick
        ).otherwise(any_pick),
    ).join(dishes, "dish_idx")

    name = _fill(
        choice(
            vocab.SHOP_NAME_TEMPLATES, randint(seed, "poi_name_tpl", len(vocab.SHOP_NAME_TEMPLATES), "poi_id")
        ),
        owner=choice(vocab.OWNERS, randint(seed, "poi_owner", len(vocab.OWNERS), "poi_id")),
        short=F.col("short"),
        city=F.col("city"),
        number=(randint(seed, "poi_number", 98, "poi_id") + 1).cast("string"),
    )
    intro = F.concat_ws(
        " ",
        _fill(
            choice(vocab.INTRO_TEMPLATES, randint(seed, "poi_intro", len(vocab.INTRO_TEMPLATES), "poi_id")),
            dish=F.col("dish"),
        ),
        _maybe(
            seed,
            "poi_intro_temp",
            "poi_id",
            0.6,
            F.when(F.col("temperature") == -1, F.lit(vocab.TEMPERATURE_PHRASES[-1])).when(
                F.col("temperature") == 1, F.lit(vocab.TEMPERATURE_PHRASES[1])
            ),
        ),
        _maybe(
            seed, "poi_intro_spicy", "poi_id", 0.6, F.when(F.col("spicy") == 1, F.lit(vocab.SPICY_PHRASE))
        ),
        _maybe(
            seed, "poi_intro_sweet", "poi_id", 0.6, F.when(F.col("sweet") == 1, F.lit(vocab.SWEET_PHRASE))
        ),
        _maybe(
            seed,
            "poi_intro_meal",
            "poi_id",
            0.6,
            F.when(F.col("meal") == "breakfast", F.lit(vocab.MEAL_PHRASES["breakfast"])).when(
                F.col("meal") == "late_night", F.lit(vocab.MEAL_PHRASES["late_night"])
            ),
        ),
        _maybe(
            seed,
            "poi_intro_region",
            "poi_id",
            0.6,
            F.when(
                F.col("dish_province") != "",
                _fill(F.lit(vocab.REGION_PHRASE), province=F.col("dish_province")),
            ),
        ),
    )
    district = F.element_at(
        "districts", (randint(seed, "poi_district", F.size("districts"), "poi_id") + 1).cast("int")
    )
    address = F.concat_ws(
        ", ",
        F.concat(
            (randint(seed, "poi_addr_no", 300, "poi_id") + 1).cast("string"),
            F.lit(" "),
            choice(STREETS, randint(seed, "poi_street", len(STREETS), "poi_id")),
            F.lit(" Road"),
        ),
        district,
        F.col("city"),
    )
    open_hour = (
        F.when(F.col("meal") == "breakfast", 6)
        .when(F.col("meal") == "late_night", 17)
        .otherwise(10 + randint(seed, "poi_open", 2, "poi_id"))
    )
    close_hour = (  # hours past midnight are written as 24+
        F.when(F.col("meal") == "breakfast", 14)
        .when(F.col("meal") == "late_night", 27)
        .otherwise(21 + randint(seed, "poi_close", 3, "poi_id"))
    )
    quality = normal(seed, "poi_quality", "poi_id")
    price_level = F.least(
        F.lit(4),
        F.greatest(
            F.lit(1),
            F.when(F.col("category") == "Restaurant", 3).otherwise(2)
            + randint(seed, "poi_price", 3, "poi_id")
            - 1,
        ),
    ).cast("int")
    enriched = (
        base.withColumn("name", name)
        .withColumn("district", district)
        .withColumn("address", address)
        .withColumn("latitude", F.round(F.col("center_lat") + normal(seed, "poi_lat", "poi_id") * 0.04, 5))
        .withColumn("longitude", F.round(F.col("center_lon") + normal(seed, "poi_lon", "poi_id") * 0.05, 5))
        .withColumn("introduction", intro)
        .withColumn("open_hour", open_hour.cast("int"))
        .withColumn("close_hour", close_hour.cast("int"))
        .withColumn("quality", quality)
        .withColumn("price_level", price_level)
    )
    hours = F.format_string("%02d:00-%02d:00", F.col("open_hour"), F.col("close_hour") % 24)
    tag_a = randint(seed, "poi_tag_a", len(vocab.TAGS), "poi_id")
    tag_b = (tag_a + 1 + randint(seed, "poi_tag_b", len(vocab.TAGS) - 1, "poi_id")) % len(vocab.TAGS)
    public = enriched.select(
        "poi_id",
        "name",
        "city",
        "district",
        "address",
        "latitude",
        "longitude",
        F.col("category").alias("cuisine"),
        F.array_join("menu", ", ").alias("main_dishes"),
        "introduction",
        F.concat_ws(", ", choice(vocab.TAGS, tag_a), choice(vocab.TAGS, tag_b)).alias("tags"),
        "price_level",
        F.round(F.least(F.lit(5.0), F.greatest(F.lit(3.0), 4.3 + 0.25 * F.col("quality"))), 1).alias(
            "rating"
        ),
        hours.alias("opening_hours"),
        # exposure falls with the rank in the city (the long tail), sales follow exposure
        F.round(F.lit(3000.0) / F.pow(F.col("rank_in_city") + 1, 0.9) * F.exp(0.3 * F.col("quality")))
        .cast("int")
        .alias("monthly_sales"),
    )
    hidden = enriched.select(
        "poi_id",
        "city_idx",
        "province",
        "dish_idx",
        "dish",
        "temperature",
        "spicy",
        "sweet",
        "meal",
        "dish_province",
        "quality",
        "price_level",
        "open_hour",
        "close_hour",
        "latitude",
        "longitude",
        *[normal(seed, f"poi_factor_{k}", "poi_id").alias(f"factor_{k}") for k in range(LATENT_DIM)],
    )
    return public, hidden


def build_users(spark: SparkSession, cfg: WorldConfig) -> tuple[DataFrame, DataFrame]:
    """Users: public profile and hidden tastes. The home city is uniform over cities."""
    seed = cfg.seed
    cities = F.broadcast(
        cities_frame(spark).select("city_idx", "city", "province", "center_lat", "center_lon")
    )
    base = (
        spark.range(cfg.users, numPartitions=cfg.partitions or None)
        .withColumnRenamed("id", "user_id")
        .withColumn("city_idx", randint(seed, "user_city", len(vocab.CITIES), "user_id").cast("int"))
        .join(cities, "city_idx")
        .withColumn("age_idx", randint(seed, "user_age", len(vocab.AGE_BANDS), "user_id"))
    )
    nickname = F.concat(
        choice(vocab.NICK_ADJECTIVES, randint(seed, "user_nick_a", len(vocab.NICK_ADJECTIVES), "user_id")),
        choice(vocab.NICK_NOUNS, randint(seed, "user_nick_n", len(vocab.NICK_NOUNS), "user_id")),
        (randint(seed, "user_nick_no", 99, "user_id") + 1).cast("string"),
    )
    base = base.withColumn(
        "device", choice(vocab.DEVICES, randint(seed, "user_device", len(vocab.DEVICES), "user_id"))
    )
    public = base.select(
        "user_id",
        nickname.alias("nickname"),
        choice(vocab.GENDERS, randint(seed, "user_gender", len(vocab.GENDERS), "user_id")).alias("gender"),
        choice(vocab.AGE_BANDS, F.col("age_idx")).alias("age_band"),
        F.col("city").alias("home_city"),
        choice(("regular", "silver", "gold"), randint(seed, "user_level", 3, "user_id")).alias(
            "member_level"
        ),
        "device",
    )
    hidden = base.select(
        "user_id",
        F.col("city_idx").alias("home_city_idx"),
        F.col("province").alias("home_province"),
        "device",
        # students (18-24) often order to campus
        ((F.col("age_idx") == 0) & (uniform(seed, "user_student", "user_id") < 0.6)).alias("is_student"),
        F.round(F.col("center_lat") + normal(seed, "user_lat", "user_id") * 0.04, 5).alias("home_lat"),
        F.round(F.col("center_lon") + normal(seed, "user_lon", "user_id") * 0.05, 5).alias("home_lon"),
        normal(seed, "user_spicy", "user_id").alias("spicy_pref"),
        normal(seed, "user_sweet", "user_id").alias("sweet_pref"),
        normal(seed, "user_price", "user_id").alias("price_sensitivity"),
        normal(seed, "user_activity", "user_id").alias("activity"),
        *[normal(seed, f"user_factor_{k}", "user_id").alias(f"factor_{k}") for k in range(LATENT_DIM)],
    )
    return public, hidden
