"""clean.impressions -> features.{user,poi,user_poi}_stats, one row per (entity, day with activity),
and features.global_stats, one row per day; partition dt. `as_of` reads them as of a sample's day.

The tables store only what happened; the point-in-time view is taken when a sample asks for it.
An entity's row of day d holds that day's counts (`<prefix>_day_impressions`, `_day_clicks`,
`_day_orders`) and its running totals through d over its activity days
(`<prefix>_cumulative_impressions`, ...). The stored size therefore grows with activity (an
entity active on days 1 and 5 has 2 rows), never with active entities x calendar days.

`as_of(samples, ...)` gives every sample of day D its entity's statistics as of the start of D:
counts over the days strictly before D (with `lookback_days` = L > 0 only days D-L..D-1), and
smoothed rates ctr = (clicks + s * global_ctr) / (impressions + s), cvr = (orders + s *
global_cvr) / (clicks + s), s = `prior_strength`, with the global rates of day D. An entity
without activity before D gets counts 0 and the day's global rates (the smoothed rate of zero
counts). The lookup is one window pass per entity table, no range join, no Python loop:
1. the samples' rows are unioned with the stored (entity, d, running totals) rows and, with
   L > 0, with the stored totals again, shifted to day d + L (as a second set of columns);
2. per entity, ordered by (day, samples before stored rows), `last(..., ignorenulls=True)` hands
   each sample the totals of the entity's last activity day before D (a stored row of day D is
   not visible to a sample of day D) and, shifted, those of its last activity day before D - L;
3. counts over [D-L, D-1] = totals before D - totals before D - L (all history when L = 0).
`etl samples` runs it over the distinct (user, poi, day)s of its samples and joins the result.
These equal the old dense (entity x every day) grid's window sums exactly (a test keeps the old
implementation as its oracle).

`features.global_stats` is tiny and stays one row per day: the whole log's counts and raw rates
over the days before dt (only the last `lookback_days` when set; 0.0 on the first day), plus the
`prior_strength` and `lookback_days` they were computed with, which `etl samples` reads back
(`recorded_config`) and passes to `as_of`, so the entities' window and prior match the global one.
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
SETTINGS = ("prior_strength", "lookback_days")  # recorded on every global_stats row
# output table -> (entity key columns, column prefix)
ENTITIES: dict[str, tuple[tuple[str, ...], str]] = {
    USER_STATS: (("user_id",), "user"),
    POI_STATS: (("poi_id",), "poi"),
    USER_POI_STATS: (("user_id", "poi_id"), "user_poi"),
}
_IS_STORED = "_is_stored"  # as-of order within a day: queries (0) before stored rows (1)


@dataclass(frozen=True)
class StatsConfig:
    prior_strength: float = 20.0  # pseudo-impressions (pseudo-clicks for cvr) at the global rate
    lookback_days: int = 0  # days of history before the sample's day; 0 = all history

    def __post_init__(self) -> None:
        if self.prior_strength < 0:
            raise ValueError(f"prior_strength must be >= 0, got {self.prior_strength}")
        if self.lookback_days < 0:
            raise ValueError(f"lookback_days must be >= 0 (0 = all history), got {self.lookback_days}")


def stat_columns(prefix: str) -> list[str]:
    """The feature columns a sample gets from one stats table, e.g. user_impressions, ..., user_cvr."""
    return [f"{prefix}_{name}" for name in (*COUNTS, *RATES)]


def daily_columns(prefix: str) -> list[str]:
    """A stored row's counts of its own day, e.g. user_day_impressions."""
    return [f"{prefix}_day_{name}" for name in COUNTS]


def cumulative_columns(prefix: str) -> list[str]:
    """A stored row's running totals through its day, e.g. user_cumulative_impressions."""
    return [f"{prefix}_cumulative_{name}" for name in COUNTS]


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


def global_stats(impressions: DataFrame, lookback_days: int, prior_strength: float) -> DataFrame:
    """(dt) -> the whole log's counts and raw rates over the days before dt, for every day, and
    the settings the entities' as-of view applies."""
    window = _history("_day", lookback_days, F.lit(0))  # a handful of rows: one per day
    daily = _daily(impressions, []).withColumn("_day", _day_number(F.col("dt")))
    sums = {name: F.coalesce(F.sum(name).over(window), F.lit(0)).cast("long") for name in COUNTS}
    history = daily.select("dt", *[col.alias(f"global_{name}") for name, col in sums.items()])
    rate = lambda hits, trials: F.coalesce(  # noqa: E731 - 0.0 where there is no history yet
        F.col(hits) / F.when(F.col(trials) > 0, F.col(trials)), F.lit(0.0)
    )
    return (
        history.withColumn("global_ctr", rate("global_clicks", "global_impressions"))
        .withColumn("global_cvr", rate("global_orders", "global_clicks"))
        .withColumn("prior_strength", F.lit(float(prior_strength)))
        .withColumn("lookback_days", F.lit(int(lookback_days)))
    )


def recorded_config(global_daily: DataFrame) -> StatsConfig:
    """The StatsConfig `global_stats` was computed with (one row of a tiny table; the defaults
    for an empty log, which has no sample to apply them to)."""
    row = global_daily.select(*SETTINGS).first()
    return StatsConfig(**row.asDict()) if row else StatsConfig()


def entity_stats(impressions: DataFrame, keys: tuple[str, ...], prefix: str) -> DataFrame:
    """(keys, dt) for each day with activity -> that day's counts and the running totals through it."""
    keys = list(keys)
    daily = _daily(impressions, keys)
    through_day = Window.partitionBy(*keys).orderBy("dt").rowsBetween(Window.unboundedPreceding, 0)
    return daily.select(
        *keys,
        *[F.col(name).alias(column) for name, column in zip(COUNTS, daily_columns(prefix), strict=True)],
        *[
            F.sum(name).over(through_day).cast("long").alias(column)
            for name, column in zip(COUNTS, cumulative_columns(prefix), strict=True)
        ],
        "dt",
    )


def _shifted_totals(
    stored: DataFrame, keys: list[str], prefix: str, days: int, names: list[str]
) -> DataFrame:
    """The stored running totals as (keys, dt + days, *names), marked as stored rows."""
    totals = zip(cumulative_columns(prefix), names, strict=True)
    return stored.select(
        *keys,
        F.date_add("dt", days).alias("dt"),
        *[F.col(column).cast("long").alias(name) for column, name in totals],
        F.lit(1).alias(_IS_STORED),
    )


def as_of(
    samples: DataFrame,
    stored: DataFrame,
    keys: tuple[str, ...],
    prefix: str,
    lookback_days: int,
    global_daily: DataFrame,
    prior_strength: float,
) -> DataFrame:
    """`samples` (any rows with the keys and dt) plus `stat_columns(prefix)` as of the start of each
    row's day, from one stored entity table and `global_stats` (see the module docstring).

    One window pass per entity over the samples unioned with the stored totals (and, with a
    lookback, the stored totals again, shifted L days later: a sample of day D sees those of days
    d < D - L): no range join, no self-join, the samples' lineage read once."""
    keys = list(keys)
    before = [f"_before_{name}" for name in COUNTS]  # through the last activity day before dt
    before_window = [f"_before_window_{name}" for name in COUNTS]  # ... before dt - lookback_days
    carried = before + (before_window if lookback_days else [])
    rows = samples.withColumn(_IS_STORED, F.lit(0)).unionByName(
        _shifted_totals(stored, keys, prefix, 0, before), allowMissingColumns=True
    )
    if lookback_days:
        rows = rows.unionByName(
            _shifted_totals(stored, keys, prefix, lookback_days, before_window), allowMissingColumns=True
        )
    # a stored row sorts after the samples of its own day, so a sample sees only earlier days
    upto = (
        Window.partitionBy(*keys)
        .orderBy("dt", _IS_STORED)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    seen = rows.select(
        *samples.columns,
        _IS_STORED,
        *[F.last(name, ignorenulls=True).over(upto).alias(name) for name in carried],
    ).where(F.col(_IS_STORED) == 0)
    global_rates = global_daily.select(
        "dt", *[F.col(f"global_{rate}").alias(f"_global_{rate}") for rate in RATES]
    )
    joined = seen.join(F.broadcast(global_rates), "dt", "left")
    has_history = F.col(before[0]).isNotNull()
    counts = []
    for total, window_start in zip(before, before_window, strict=True):
        in_window = (
            F.col(total) - F.coalesce(F.col(window_start), F.lit(0)) if lookback_days else F.col(total)
        )
        counts.append(F.coalesce(in_window, F.lit(0)).cast("long"))
    impressions, clicks, orders = counts
    global_ctr, global_cvr = F.col("_global_ctr"), F.col("_global_cvr")
    # no history: the day's global rate as is (what the smoothed rate of zero counts is meant to be)
    ctr = F.when(has_history, _smoothed(clicks, impressions, global_ctr, prior_strength))
    cvr = F.when(has_history, _smoothed(orders, clicks, global_cvr, prior_strength))
    features = zip(
        stat_columns(prefix),
        (impressions, clicks, orders, ctr.otherwise(global_ctr), cvr.otherwise(global_cvr)),
        strict=True,
    )
    return joined.select(*samples.columns, *[column.alias(name) for name, column in features])


def transform(impressions: DataFrame, prior_strength: float, lookback_days: int) -> dict[str, DataFrame]:
    """Every stats table (name -> DataFrame) from the validated impression log."""
    events = impressions.select("user_id", "poi_id", "clicked", "ordered", "dt")
    tables = {name: entity_stats(events, keys, prefix) for name, (keys, prefix) in ENTITIES.items()}
    tables[GLOBAL_STATS] = global_stats(events, lookback_days, prior_strength)
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
