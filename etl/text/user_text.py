"""User-side slice texts: the profile, and the action texts built from the user's clicks and
orders (recent orders, the environments of those orders, click and order price statistics).

Inputs: rows with the clean.users columns; impressions (clean.impressions columns) that the
caller has already restricted to the history window, and POIs (clean.pois columns).
No Python loops over rows: histories are a window rank, `collect_list` of structs, `sort_array`
by time and `array_join`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.core.clock import utc_hour
from etl.tokens import join_wrapped, wrap

USER_PROFILE_SLICES = ("user_profile",)
USER_ACTION_SLICES = ("user_hist", "user_env", "user_price")
USER_COMPREHENSIVE_SLICES = USER_PROFILE_SLICES + USER_ACTION_SLICES
ORDER_SEPARATOR = "; "


def _if_present(value: Column, text: Column) -> Column:
    return F.when(value.isNotNull(), text)


def profile_value() -> Column:
    """'Lily88, female, age 25-34, lives in Chengdu, gold member' from clean.users columns."""
    return F.concat_ws(
        ", ",
        F.col("nickname"),
        F.when(F.col("gender").isin("female", "male"), F.col("gender")),
        _if_present(F.col("age_band"), F.concat(F.lit("age "), "age_band")),
        _if_present(F.col("home_city"), F.concat(F.lit("lives in "), "home_city")),
        _if_present(F.col("member_level"), F.concat("member_level", F.lit(" member"))),
    )


def _environment() -> Column:
    """'Monday 12:00, Chengdu, office, rainy, 18°C, away from home' of one impression."""
    return F.concat_ws(
        ", ",
        F.concat_ws(" ", F.date_format("dt", "EEEE"), F.format_string("%02d:00", utc_hour(F.col("ts")))),
        F.col("city"),
        F.col("location_type"),
        F.col("weather"),
        _if_present(F.col("temperature_c"), F.format_string("%.0f°C", F.col("temperature_c"))),
        F.when(F.col("is_away"), F.lit("away from home")),
    )


def clicked_events(impressions: DataFrame, pois: DataFrame) -> DataFrame:
    """The clicked impressions (orders among them) with the POI's name, dishes and price level."""
    return impressions.where(F.col("clicked") == 1).join(
        pois.select("poi_id", "name", "main_dishes", "price_level"), "poi_id"
    )


def recent_orders(clicks: DataFrame, last_orders: int) -> DataFrame:
    """user_id -> hist (the last `last_orders` orders, oldest first) and env (their environments)."""
    latest_first = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("event_id").desc())
    order_text = F.concat_ws(
        "", F.col("name"), _if_present(F.col("main_dishes"), F.concat(F.lit(" ("), "main_dishes", F.lit(")")))
    )
    recent = (
        clicks.where(F.col("ordered") == 1)
        .withColumn("_rank", F.row_number().over(latest_first))
        .where(F.col("_rank") <= last_orders)
        .select(
            "user_id",
            F.struct("ts", "event_id", order_text.alias("order"), _environment().alias("env")).alias("o"),
        )
    )
    orders = F.sort_array(F.collect_list("o"))  # by ts, then event_id: oldest first
    return (
        recent.groupBy("user_id")
        .agg(orders.alias("orders"))
        .select(
            "user_id",
            F.array_join(F.transform("orders", lambda o: o["order"]), ORDER_SEPARATOR).alias("hist"),
            F.array_join(F.transform("orders", lambda o: o["env"]), ORDER_SEPARATOR).alias("env"),
        )
    )


def price_statistics(clicks: DataFrame) -> DataFrame:
    """user_id -> price: mean price level of clicked and of ordered POIs, with the counts."""
    ordered = F.col("ordered") == 1
    stats = clicks.groupBy("user_id").agg(
        F.count("*").alias("clicks"),
        F.avg("price_level").alias("click_price"),
        F.count(F.when(ordered, 1)).alias("orders"),
        F.avg(F.when(ordered, F.col("price_level"))).alias("order_price"),
    )
    click_text = F.format_string(
        "clicked shops: mean price level %.1f of 4 over %d clicks", "click_price", "clicks"
    )
    order_text = F.when(
        F.col("orders") > 0,
        F.format_string("ordered shops: mean price level %.1f of 4 over %d orders", "order_price", "orders"),
    ).otherwise(F.lit("no orders"))
    return stats.select("user_id", F.concat_ws(ORDER_SEPARATOR, click_text, order_text).alias("price"))


def user_texts(users: DataFrame, impressions: DataFrame, pois: DataFrame, last_orders: int) -> DataFrame:
    """One row per user with at least one click in `impressions`:
    user_id, profile_text, action_text, comprehensive_text (all wrapped)."""
    clicks = clicked_events(impressions, pois)
    actions = price_statistics(clicks).join(recent_orders(clicks, last_orders), "user_id", "left")
    profile = wrap("user_profile", profile_value())
    action = join_wrapped(
        wrap("user_hist", F.col("hist")), wrap("user_env", F.col("env")), wrap("user_price", F.col("price"))
    )
    return users.join(actions, "user_id").select(
        "user_id",
        profile.alias("profile_text"),
        action.alias("action_text"),
        F.concat(profile, action).alias("comprehensive_text"),
    )
