"""Requests -> impressions with scene fields, hidden click/order probabilities and sampled labels.

Grain: one row per (request, list position); partition column `dt` (the request's date).
A request is a user opening the app at a time and place (the real-time scene); it shows
`list_length` distinct shops of the city the user is in. Clicks and orders are drawn from a
hidden model that mixes collaborative effects (latent factors, popularity, position bias) with
semantic ones that only the text reveals (dish temperature vs weather, rain vs distance,
late-night and breakfast food vs hour, a visitor's taste for the local speciality, the user's
taste times the dish's attributes).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import math
import operator

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from core.randomness import normal, randint, uniform, weighted_index
from etl.synthetic import vocab
from etl.synthetic.config import WorldConfig
from etl.synthetic.entities import KM_PER_DEGREE, LATENT_DIM, cities_frame
from etl.synthetic.raw_schema import RAW_IMPRESSIONS

SECONDS_PER_DAY = 86400


REQUEST_USER_COLUMNS = ("home_city_idx", "home_province", "is_student", "home_lat", "home_lon", "device")
USER_TRAITS = ("spicy_pref", "sweet_pref", "price_sensitivity", "activity")  # for the click model only


def _user_traits() -> list[Column]:
    """The hidden user columns the scoring reads (latent factors as `u_factor_<k>`)."""
    factors = [F.col(f"factor_{k}").alias(f"u_factor_{k}") for k in range(LATENT_DIM)]
    return [*map(F.col, USER_TRAITS), *factors]


def _clamp(col: Column, low: float, high: float) -> Column:
    return F.least(F.lit(high), F.greatest(F.lit(low), col))


def _requesting_user(cfg: WorldConfig) -> Column:
    """A request's user: skewed towards low indices, and user 0 for `hot_user_share` of requests."""
    drawn = F.floor(F.pow(uniform(cfg.seed, "req_user", "request_id"), 1.7) * cfg.users).cast("long")
    if cfg.hot_user_share == 0:
        return drawn
    hot = uniform(cfg.seed, "req_hot_user", "request_id") < F.lit(cfg.hot_user_share)
    return F.when(hot, F.lit(0).cast("long")).otherwise(drawn)


def build_requests(spark: SparkSession, cfg: WorldConfig, users_hidden: DataFrame) -> DataFrame:
    """One row per request with its scene (city, place, time, weather, temperature, device) and the
    requesting user's hidden traits that `score` reads."""
    seed, n_cities = cfg.seed, len(vocab.CITIES)
    cities = F.broadcast(
        cities_frame(spark).select("city_idx", "city", "province", "base_temp_c", "center_lat", "center_lon")
    )
    start = F.lit(cfg.start_date).cast("date")
    req = (
        spark.range(cfg.requests, numPartitions=cfg.partitions or None)
        .withColumnRenamed("id", "request_id")
        .withColumn("day", (randint(seed, "req_day", cfg.days, "request_id") + 1).cast("int"))
        # heavy users: the user index is drawn with a skew towards low indices
        .withColumn("user_id", _requesting_user(cfg))
        .withColumn(
            "hour", weighted_index(vocab.HOUR_WEIGHTS, uniform(seed, "req_hour", "request_id")).cast("int")
        )
        # the requesting user's scene inputs and the traits the scoring reads, joined once per
        # request rather than once per shown shop (a tenth of the rows through the shuffle)
        .join(users_hidden.select("user_id", *REQUEST_USER_COLUMNS, *_user_traits()), "user_id")
        .withColumn("is_away", uniform(seed, "req_away", "request_id") < cfg.away_rate)
        .withColumn(
            "city_idx",
            F.when(
                F.col("is_away"),
                (F.col("home_city_idx") + 1 + randint(seed, "req_away_city", n_cities - 1, "request_id"))
                % n_cities,
            )
            .otherwise(F.col("home_city_idx"))
            .cast("int"),
        )
        .join(cities, "city_idx")
        .withColumn("dt", F.date_add(start, F.col("day") - 1))
        .withColumn("day_of_week", F.dayofweek("dt"))  # 1 = Sunday ... 7 = Saturday
    )
    workday_hours = (F.col("day_of_week").between(2, 6)) & F.col("hour").between(9, 17)
    u_loc = uniform(seed, "req_location", "request_id")
    location = (
        F.when(F.col("is_away"), F.when(u_loc < 0.85, "hotel").otherwise("office"))
        .when(F.col("is_student") & (u_loc < 0.7), "campus")
        .when(workday_hours & (u_loc < 0.55), "office")
        .otherwise("home")
    )
    # weather is shared by every request of a city in the same quarter of a day
    block = F.floor(F.col("hour") / 6)
    day_shock = normal(seed, "temp_day", "city_idx", "day") * 5.0
    diurnal = -4.0 * F.cos(F.lit(2 * math.pi / 24) * (F.col("hour") - 14))
    temperature = F.round(F.col("base_temp_c") + day_shock + diurnal, 1)
    u_weather = uniform(seed, "weather", "city_idx", "day", block)
    weather = (
        F.when(u_weather < 0.45, "sunny")
        .when(u_weather < 0.72, "cloudy")
        .otherwise(F.when(F.col("temperature_c") < 1.0, "snowy").otherwise("rainy"))
    )
    away_lat = F.col("center_lat") + normal(seed, "req_lat", "request_id") * 0.04
    away_lon = F.col("center_lon") + normal(seed, "req_lon", "request_id") * 0.05
    seconds = (
        (F.col("day") - 1) * SECONDS_PER_DAY
        + F.col("hour") * 3600
        + randint(seed, "req_second", 3600, "request_id")
    )
    # epoch seconds computed here, not parsed by Spark, so the session time zone cannot shift them
    start_epoch = F.lit(calendar.timegm(dt.date.fromisoformat(cfg.start_date).timetuple()))
    return (
        req.withColumn("location_type", location)
        .withColumn(
            "district_type",
            F.create_map(
                *[x for kv in vocab.DISTRICT_TYPE_OF_LOCATION.items() for x in (F.lit(kv[0]), F.lit(kv[1]))]
            )[F.col("location_type")],
        )
        .withColumn("temperature_c", temperature)
        .withColumn("weather", weather)
        .withColumn(
            "user_lat",
            F.round(F.when(F.col("location_type") == "home", F.col("home_lat")).otherwise(away_lat), 5),
        )
        .withColumn(
            "user_lon",
            F.round(F.when(F.col("location_type") == "home", F.col("home_lon")).otherwise(away_lon), 5),
        )
        .withColumn("ts", F.timestamp_seconds(start_epoch + seconds))
    )


def _shown_poi(cfg: WorldConfig) -> Column:
    """Shop `rank_in_city` of the request's city, or POI 0 (city 0's first shop) in the first slot
    of `hot_poi_share` x list_length of the lists: rank 0 is only ever drawn by slot 0, so the
    list's shops stay distinct."""
    n_cities = len(vocab.CITIES)
    shop = (F.col("city_idx") + n_cities * F.col("rank_in_city")).cast("long")
    if cfg.hot_poi_share == 0:
        return shop
    promoted = uniform(cfg.seed, "list_hot_poi", "request_id") < F.lit(cfg.hot_poi_share * cfg.list_length)
    return F.when((F.col("slot") == 0) & promoted, F.lit(0).cast("long")).otherwise(shop)


def expand_to_lists(req: DataFrame, cfg: WorldConfig) -> DataFrame:
    """Each request shows `list_length` distinct shops of its city.

    Shop k of city c is POI c + n_cities * k. Slot j draws a rank k = j + L * z from its stripe
    (the ranks congruent to j mod L), with z skewed to small values: the slots never collide,
    and low ranks are shown far more than high ones, which gives the long tail of rarely shown
    shops. Slots are rotated over list positions so that no shop is tied to one position.
    """
    seed, n_cities, length = cfg.seed, len(vocab.CITIES), cfg.list_length
    shops_in_city = F.floor((F.lit(cfg.pois - 1) - F.col("city_idx")) / n_cities) + 1
    stripe = F.floor((shops_in_city - 1 - F.col("slot")) / length) + 1
    depth = F.floor(F.pow(uniform(seed, "list_rank", "request_id", "slot"), 4.0) * stripe)
    rotation = randint(seed, "list_rotation", length, "request_id")
    return (
        req.withColumn("slot", F.explode(F.sequence(F.lit(0), F.lit(length - 1))))
        .withColumn("rank_in_city", (F.col("slot") + length * depth).cast("long"))
        .withColumn("poi_id", _shown_poi(cfg))
        .withColumn("position", ((F.col("slot") + rotation) % length + 1).cast("int"))
        .withColumn("event_id", F.col("request_id") * length + F.col("position") - 1)
    )


def semantic_parts(hour: Column, temp: Column) -> dict[str, tuple[Column, ...]]:
    """The semantic part of the click logit, term by term, each term as its parts in the order
    `score` adds them (so the logit is bit for bit what it always was), on a frame with the scene,
    the shop's hidden dish facts, the user's tastes and `dist_km`. Each term is the scene (or the
    user) times what the shop's text says, except `rain_x_distance`, which needs the request-item
    distance that no text carries. Named so that `larr gap` can add them one at a time as oracles."""
    late_night = (hour >= 22) | (hour < 3)
    breakfast_time = hour.between(6, 9)
    evening = (hour >= 17) | (hour < 3)
    meal, away, dish_province = F.col("meal"), F.col("is_away"), F.col("dish_province")
    return {
        "cold_dish_x_heat": (
            0.9 * _flag(F.col("temperature") == -1) * _clamp((temp - 20.0) / 8.0, -1.5, 1.5),
        ),
        "hot_dish_x_cold": (0.6 * _flag(F.col("temperature") == 1) * _clamp((10.0 - temp) / 8.0, -1.0, 1.5),),
        "rain_x_distance": (
            -0.35 * _flag(F.col("weather").isin("rainy", "snowy")) * F.least(F.col("dist_km"), F.lit(10.0)),
        ),
        "meal_x_hour": (
            1.0 * _flag((meal == "late_night") & late_night),
            -0.5 * _flag((meal == "late_night") & breakfast_time),
            1.0 * _flag((meal == "breakfast") & breakfast_time),
            -0.7 * _flag((meal == "breakfast") & evening),
        ),
        "visitor_x_local_speciality": (1.2 * _flag(away & (dish_province == F.col("province"))),),
        "home_x_home_speciality": (0.4 * _flag(~away & (dish_province == F.col("home_province"))),),
        "taste_x_dish": (
            0.6 * F.col("spicy_pref") * F.col("spicy"),
            0.5 * F.col("sweet_pref") * F.col("sweet"),
        ),
    }


# semantic_parts' names, in order (tests/etl/test_generate.py checks that the two agree)
SEMANTIC_TERMS = (
    "cold_dish_x_heat",
    "hot_dish_x_cold",
    "rain_x_distance",
    "meal_x_hour",
    "visitor_x_local_speciality",
    "home_x_home_speciality",
    "taste_x_dish",
)
# the terms a scene text and a shop text together reveal: all but the distance and the user's tastes
SCENE_X_DISH = (
    "cold_dish_x_heat",
    "hot_dish_x_cold",
    "meal_x_hour",
    "visitor_x_local_speciality",
    "home_x_home_speciality",
)
# in the truth table with `world.semantic_terms`: each term, then the scene x dish ones summed
TERM_COLUMNS = (*(f"semantic_{term}" for term in SEMANTIC_TERMS), "semantic_scene_x_dish")


def _flag(condition: Column) -> Column:
    return condition.cast("double")


def _added(parts) -> Column:
    return functools.reduce(operator.add, parts)


def score(impr: DataFrame, pois_hidden: DataFrame, cfg: WorldConfig) -> DataFrame:
    """Join the hidden POI attributes and compute the true click and order probabilities (the
    user's traits came with the request, see `build_requests`)."""
    p = pois_hidden.select(
        "poi_id",
        "temperature",
        "spicy",
        "sweet",
        "meal",
        "dish_province",
        "quality",
        "price_level",
        "open_hour",
        "close_hour",
        F.col("latitude").alias("poi_lat"),
        F.col("longitude").alias("poi_lon"),
        *[F.col(f"factor_{k}").alias(f"p_factor_{k}") for k in range(LATENT_DIM)],
    )
    df = impr.join(p, "poi_id")
    hour, temp = F.col("hour"), F.col("temperature_c")
    dist_km = F.sqrt(
        F.pow((F.col("user_lat") - F.col("poi_lat")) * KM_PER_DEGREE, 2)
        + F.pow(
            (F.col("user_lon") - F.col("poi_lon")) * KM_PER_DEGREE * F.cos(F.radians(F.col("user_lat"))),
            2,
        )
    )
    is_open = F.when(
        F.col("close_hour") > 24, (hour >= F.col("open_hour")) | (hour < F.col("close_hour") - 24)
    ).otherwise((hour >= F.col("open_hour")) & (hour < F.col("close_hour")))
    terms = semantic_parts(hour, temp)
    semantic = _added(part for parts in terms.values() for part in parts)
    collaborative = sum(
        F.col(f"u_factor_{k}") * F.col(f"p_factor_{k}") for k in range(LATENT_DIM)
    ) / math.sqrt(LATENT_DIM)
    ctr_logit = (
        F.lit(cfg.ctr_base_logit)
        + cfg.collaborative_weight * collaborative
        + cfg.popularity_weight * F.col("quality")
        + 0.3 * F.col("activity")
        - cfg.position_weight * F.log(F.col("position").cast("double"))
        - 0.04 * F.col("dist_km")
        - 2.5 * _flag(~is_open)
        + cfg.semantic_weight * F.col("semantic_logit")
    )
    cvr_logit = (
        F.lit(cfg.cvr_base_logit)
        + 0.5 * cfg.semantic_weight * F.col("semantic_logit")
        + 0.4 * F.col("quality")
        + 0.2 * collaborative
        - 0.3 * F.col("price_sensitivity") * (F.col("price_level") - 2.5)
    )
    df = df.withColumn("dist_km", dist_km)
    if cfg.semantic_terms:  # the terms as truth columns, for `larr gap`'s per-term oracles
        scene_x_dish = [part for term in SCENE_X_DISH for part in terms[term]]
        values = [*map(_added, terms.values()), _added(scene_x_dish)]
        df = df.withColumns(dict(zip(TERM_COLUMNS, values, strict=True)))
    return (
        df.withColumn("semantic_logit", semantic)
        .withColumn("collaborative_score", collaborative)
        .withColumn("p_click", 1.0 / (1.0 + F.exp(-ctr_logit)))
        .withColumn("p_order", 1.0 / (1.0 + F.exp(-cvr_logit)))
        .withColumn("clicked", (uniform(cfg.seed, "click", "event_id") < F.col("p_click")).cast("int"))
        .withColumn(
            "ordered",
            ((F.col("clicked") == 1) & (uniform(cfg.seed, "order", "event_id") < F.col("p_order"))).cast(
                "int"
            ),
        )
    )


RAW_IMPRESSION_COLUMNS = tuple(RAW_IMPRESSIONS.fieldNames())  # the documented raw schema, in order


def raw_and_truth(scored: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split the scored frame into the raw log and the truth table (probabilities, never features;
    the semantic terms too when `score` wrote them)."""
    raw = scored.select(*RAW_IMPRESSION_COLUMNS)
    truth = scored.select(
        "event_id",
        "user_id",
        "poi_id",
        "p_click",
        "p_order",
        (F.col("p_click") * F.col("p_order")).alias("p_ctcvr"),
        "semantic_logit",
        "collaborative_score",
        *[c for c in TERM_COLUMNS if c in scored.columns],
        "clicked",
        "ordered",
        "dt",
    )
    return raw, truth
