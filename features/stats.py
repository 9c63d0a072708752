"""clean.impressions -> features.{user,poi,user_poi,global}_stats; one row per (entity, dt); partition dt.

Point-in-time statistics: the row for day D summarises only the impressions of days strictly
before D (optionally only the last `lookback_days` of them), so it can be joined by
(entity, dt) to any sample of day D, including sampled negatives that never had an event.

Method, without Python loops and without a days x days blow-up:
1. daily aggregates per entity (impressions, clicks, orders);
2. a grid of (entity, day) for every day of the log from the entity's first active day on
   (a broadcast join of the entities' first days with the small calendar of days), with zero
   counts on the days the entity was inactive;
3. a window sum per entity ordered by the day number with the frame [D - lookback, D - 1]
   (or everything before D), so gaps in activity and in the calendar are handled by date;
4. rows on the entity's first active day are dropped: they have no history. A consumer
   left-joins and fills counts with 0 and rates with the day's global rate from
   `features.global_stats` (which is what the smoothed rate gives for zero counts).

Smoothed rates: ctr = (clicks + s * global_ctr) / (impressions + s), cvr = (orders + s *
global_cvr) / (clicks + s), with s = `prior_strength` and the global rates taken from the same
earlier days (0.0 on the first day, which has no history at all).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.catalog import TableCatalog

INPUT = "clean.impressions"
USER_STATS = "features.user_stats"
POI_STATS = "features.poi_stats"
USER_POI_STATS = "features.user_poi_stats"
GLOBAL_STATS = "features.global_stats"
COUNTS = ("impressions", "clicks", "orders")
RATES = ("ctr", "cvr")
# output table -> (entity key columns, column prefix)
ENTITIES: dict[str, tuple[tuple[str, ...], str]] = {
    USER_STATS: (("user_id",), "user"),
    POI_STATS: (("poi_id",), "poi"),
    USER_POI_STATS: (("user_id", "poi_id"), "user_poi"),
}


@dataclass(frozen=True)
class StatsConfig:
    prior_strength: float = 20.0  # pseudo-impressions (pseudo-clicks for cvr) at the global rate
    lookback_days: int = 0  # days of history before the row's day; 0 = all history

    def __post_init__(self) -> None:
        if self.prior_strength < 0:
            raise ValueError(f"prior_strength must be >= 0, got {self.prior_strength}")
        if self.lookback_days < 0:
            raise ValueError(f"lookback_days must be >= 0 (0 = all history), got {self.lookback_days}")


def stat_columns(prefix: str) -> list[str]:
    """The feature columns of one stats table, e.g. user_impressions, ..., user_cvr."""
    return [f"{prefix}_{name}" for name in (*COUNTS, *RATES)]


def _day_number(dt: Column) -> Column:
    return F.datediff(dt, F.to_date(F.lit("1970-01-01")))


def _history(order_by: str, lookback_days: int, *keys: str | Column) -> Window:
    """Days strictly before the row's day, optionally only the last `lookback_days` of them."""
    start = Window.unboundedPreceding if lookback_days == 0 else -lookback_days
    return Window.partitionBy(*keys).orderBy(order_by).rangeBetween(start, -1)


def _daily(impressions: DataFrame, keys: list[str]) -> DataFrame:
    return impressions.groupBy(*keys, "dt").agg(
        F.count(F.lit(1)).alias("impressions"),
        F.sum(F.col("clicked").cast("long")).alias("clicks"),
        F.sum(F.col("ordered").cast("long")).alias("orders"),
    )


def _smoothed(hits: Column, trials: Column, prior_rate: Column, prior_strength: float) -> Column:
    s = F.lit(float(prior_strength))
    return F.when(trials + s > 0, (hits + s * prior_rate) / (trials + s)).otherwise(prior_rate)


def global_stats(impressions: DataFrame, lookback_days: int) -> DataFrame:
    """(dt) -> the whole log's counts and raw rates over the days before dt, for every day."""
    window = _history("_day", lookback_days, F.lit(0))  # a handful of rows: one per day
    daily = _daily(impressions, []).withColumn("_day", _day_number(F.col("dt")))
    sums = {name: F.coalesce(F.sum(name).over(window), F.lit(0)).cast("long") for name in COUNTS}
    history = daily.select("dt", *[col.alias(f"global_{name}") for name, col in sums.items()])
    rate = lambda hits, trials: F.coalesce(  # noqa: E731 - 0.0 where there is no history yet
        F.col(hits) / F.when(F.col(trials) > 0, F.col(trials)), F.lit(0.0)
    )
    return history.withColumn("global_ctr", rate("global_clicks", "global_impressions")).withColumn(
        "global_cvr", rate("global_orders", "global_clicks")
    )


def entity_stats(
    impressions: DataFrame,
    global_daily: DataFrame,
    keys: tuple[str, ...],
    prefix: str,
    prior_strength: float,
    lookback_days: int,
) -> DataFrame:
    """(keys, dt) -> counts and smoothed rates over the days before dt, from the entity's second day."""
    keys = list(keys)
    daily = _daily(impressions, keys)
    calendar = impressions.select("dt").distinct()
    first_days = daily.groupBy(*keys).agg(F.min("dt").alias("_first_dt"))
    grid = first_days.join(F.broadcast(calendar), F.col("dt") >= F.col("_first_dt"))
    filled = grid.join(daily, [*keys, "dt"], "left").fillna(0, subset=list(COUNTS))
    window = _history("_day", lookback_days, *keys)
    history = filled.withColumn("_day", _day_number(F.col("dt"))).select(
        *keys,
        "dt",
        "_first_dt",
        *[F.coalesce(F.sum(name).over(window), F.lit(0)).cast("long").alias(name) for name in COUNTS],
    )
    rates = history.where(F.col("dt") > F.col("_first_dt")).join(
        global_daily.select("dt", "global_ctr", "global_cvr"), "dt"
    )
    return rates.select(
        *keys,
        *[F.col(name).alias(f"{prefix}_{name}") for name in COUNTS],
        _smoothed(F.col("clicks"), F.col("impressions"), F.col("global_ctr"), prior_strength).alias(
            f"{prefix}_ctr"
        ),
        _smoothed(F.col("orders"), F.col("clicks"), F.col("global_cvr"), prior_strength).alias(
            f"{prefix}_cvr"
        ),
        "dt",
    )


def transform(impressions: DataFrame, prior_strength: float, lookback_days: int) -> dict[str, DataFrame]:
    """Every stats table (name -> DataFrame) from the validated impression log."""
    events = impressions.select("user_id", "poi_id", "clicked", "ordered", "dt")
    global_daily = global_stats(events, lookback_days)
    tables = {
        name: entity_stats(events, global_daily, keys, prefix, prior_strength, lookback_days)
        for name, (keys, prefix) in ENTITIES.items()
    }
    tables[GLOBAL_STATS] = global_daily
    return tables


def run(spark: SparkSession, catalog: TableCatalog, cfg: StatsConfig, log=print) -> dict:
    """Recompute every stats table in full (a full overwrite: idempotent by construction)."""
    input_version = catalog.version(spark, INPUT)
    impressions = catalog.read(spark, INPUT, version=input_version)
    tables = transform(impressions, cfg.prior_strength, cfg.lookback_days)
    versions, rows = {}, {}
    for name, df in tables.items():
        versions[name] = catalog.write(df, name, partition_by=["dt"])
        rows[name] = catalog.last_commit_rows(spark, name)
        log(f"features stats: wrote {name}: {rows[name]} rows (version {versions[name]})")
    return {
        "user_stats_rows": rows[USER_STATS],
        "poi_stats_rows": rows[POI_STATS],
        "user_poi_stats_rows": rows[USER_POI_STATS],
        "days": rows[GLOBAL_STATS],
        "prior_strength": cfg.prior_strength,
        "lookback_days": cfg.lookback_days,
        "input_versions": {INPUT: input_version},
        "output_versions": versions,
    }
