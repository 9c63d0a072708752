import datetime as dt

import pytest
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.schema_table import write_schema
from etl.synthetic.job import world_schema
from features import samples as samples_job
from features import stats
from features.samples import SamplesConfig
from features.stats import StatsConfig
from tests.features import builders

D1, D2, D3 = dt.date(2026, 4, 6), dt.date(2026, 4, 7), dt.date(2026, 4, 8)
# (event_id, user_id, poi_id, day, UTC time, city, clicked, ordered); user 1 is idle on day 3
LOG = [
    (1, 1, 10, "2026-04-06", "12:00", "A", 1, 1),
    (2, 1, 20, "2026-04-06", "12:00", "A", 0, 0),
    (3, 2, 10, "2026-04-06", "19:00", "A", 1, 0),
    (4, 1, 10, "2026-04-07", "12:00", "A", 0, 0),
    (5, 2, 20, "2026-04-07", "19:00", "A", 1, 1),
    (6, 2, 10, "2026-04-08", "12:00", "A", 0, 0),
]
S = 2.0  # prior strength
# global history before each day: (impressions, clicks, orders, ctr, cvr)
GLOBAL = {D1: (0, 0, 0, 0.0, 0.0), D2: (3, 2, 1, 2 / 3, 1 / 2), D3: (5, 3, 2, 3 / 5, 2 / 3)}


def _with_rates(key, day, imps, clicks, orders):
    _, _, _, g_ctr, g_cvr = GLOBAL[day]
    ctr = (clicks + S * g_ctr) / (imps + S)
    cvr = (orders + S * g_cvr) / (clicks + S)
    return (*key, imps, clicks, orders, round(ctr, 9), round(cvr, 9), day)


# the stored rows: (key..., the day's impressions, clicks, orders, the running totals through it, day);
# only days with activity (user 1 has no row on day 3; the pair (2, 10) none on day 2)
STORED = {
    stats.USER_STATS: [
        ((1,), D1, (2, 1, 1), (2, 1, 1)),
        ((1,), D2, (1, 0, 0), (3, 1, 1)),
        ((2,), D1, (1, 1, 0), (1, 1, 0)),
        ((2,), D2, (1, 1, 1), (2, 2, 1)),
        ((2,), D3, (1, 0, 0), (3, 2, 1)),
    ],
    stats.POI_STATS: [
        ((10,), D1, (2, 2, 1), (2, 2, 1)),
        ((10,), D2, (1, 0, 0), (3, 2, 1)),
        ((10,), D3, (1, 0, 0), (4, 2, 1)),
        ((20,), D1, (1, 0, 0), (1, 0, 0)),
        ((20,), D2, (1, 1, 1), (2, 1, 1)),
    ],
    stats.USER_POI_STATS: [
        ((1, 10), D1, (1, 1, 1), (1, 1, 1)),
        ((1, 10), D2, (1, 0, 0), (2, 1, 1)),
        ((1, 20), D1, (1, 0, 0), (1, 0, 0)),
        ((2, 10), D1, (1, 1, 0), (1, 1, 0)),
        ((2, 10), D3, (1, 0, 0), (2, 1, 0)),
        ((2, 20), D2, (1, 1, 1), (1, 1, 1)),
    ],
}
EXPECTED = {
    name: [(*key, *day_counts, *totals, day) for key, day, day_counts, totals in rows]
    for name, rows in STORED.items()
}
EXPECTED[stats.GLOBAL_STATS] = [(day, *(round(v, 9) for v in values), S, 0) for day, values in GLOBAL.items()]


def _with_rates(key, day, imps, clicks, orders):
    _, _, _, g_ctr, g_cvr = GLOBAL[day]
    ctr = (clicks + S * g_ctr) / (imps + S)
    cvr = (orders + S * g_cvr) / (clicks + S)
    return (*key, day, imps, clicks, orders, round(ctr, 9), round(cvr, 9))


def _no_history(key, day):
    _, _, _, g_ctr, g_cvr = GLOBAL[day]
    return (*key, day, 0, 0, 0, round(g_ctr, 9), round(g_cvr, 9))


# as of the start of each day: the days strictly before it; no earlier activity = zeros and the
# day's global rates
AS_OF = {
    stats.USER_STATS: [
        _no_history((1,), D1),
        _with_rates((1,), D2, 2, 1, 1),
        _with_rates((1,), D3, 3, 1, 1),
        _no_history((2,), D1),
        _with_rates((2,), D2, 1, 1, 0),
        _with_rates((2,), D3, 2, 2, 1),
        _no_history((3,), D3),  # never active
    ],
    stats.POI_STATS: [
        _no_history((10,), D1),
        _with_rates((10,), D2, 2, 2, 1),
        _with_rates((10,), D3, 3, 2, 1),
        _no_history((20,), D1),
        _with_rates((20,), D2, 1, 0, 0),
        _with_rates((20,), D3, 2, 1, 1),
    ],
    stats.USER_POI_STATS: [
        _no_history((1, 10), D1),
        _with_rates((1, 10), D2, 1, 1, 1),
        _with_rates((1, 10), D3, 2, 1, 1),
        _with_rates((1, 20), D2, 1, 0, 0),
        _with_rates((1, 20), D3, 1, 0, 0),
        _with_rates((2, 10), D2, 1, 1, 0),
        _with_rates((2, 10), D3, 1, 1, 0),
        _no_history((2, 20), D2),
        _with_rates((2, 20), D3, 1, 1, 1),
    ],
}


def _rows(df):
    rounded = [F.round(c, 9).alias(c) if t == "double" else F.col(c) for c, t in df.dtypes]
    return sorted(tuple(r) for r in df.select(*rounded).collect())


def _global_rows(df):
    return _rows(df.select("dt", *[c for c in df.columns if c != "dt"]))


def _as_of(spark, tables, name, queries, lookback_days=0, prior_strength=S):
    """(keys..., dt, stat columns) of `as_of` for (keys..., day) queries."""
    keys, prefix = stats.ENTITIES[name]
    asked = spark.createDataFrame(queries, ", ".join([*(f"{k} long" for k in keys), "dt date"]))
    df = stats.as_of(
        asked, tables[name], keys, prefix, lookback_days, tables[stats.GLOBAL_STATS], prior_strength
    )
    return {tuple(r)[: len(keys) + 1]: r for r in df.collect()}


def test_whole_tables_by_hand_and_idempotent(spark, catalog):
    catalog.write(builders.impressions(spark, LOG), "clean.impressions", partition_by=["dt"])
    cfg = StatsConfig(prior_strength=S)
    first = stats.run(spark, catalog, cfg, log=lambda _: None)
    for name, expected in EXPECTED.items():
        table = catalog.read(spark, name)
        got = _global_rows(table) if name == stats.GLOBAL_STATS else _rows(table)
        assert got == sorted(expected), name
    assert first["user_poi_stats_rows"] == 6 and first["days"] == 3
    assert first["input_versions"] == {"clean.impressions": 0}
    assert stats.recorded_config(catalog.read(spark, stats.GLOBAL_STATS)) == cfg

    second = stats.run(spark, catalog, cfg, log=lambda _: None)
    for name, expected in EXPECTED.items():
        table = catalog.read(spark, name)
        got = _global_rows(table) if name == stats.GLOBAL_STATS else _rows(table)
        assert got == sorted(expected), name
    assert second["output_versions"] == {name: v + 1 for name, v in first["output_versions"].items()}


def test_as_of_sees_only_earlier_days_by_hand(spark):
    tables = stats.transform(builders.impressions(spark, LOG), prior_strength=S, lookback_days=0)
    for name, expected in AS_OF.items():
        keys, prefix = stats.ENTITIES[name]
        got = _as_of(spark, tables, name, [row[: len(keys) + 1] for row in expected])
        assert _rows(spark.createDataFrame(list(got.values()))) == sorted(expected), name
        assert list(next(iter(got.values())).asDict()) == [*keys, "dt", *stats.stat_columns(prefix)]


def test_the_stored_size_grows_with_activity_not_with_the_calendar(spark):
    # user 9 is active on days 1 and 5 of a 5-day log: 2 rows (a dense grid had 4: days 2..5)
    days = [f"2026-04-{d:02d}" for d in range(6, 11)]
    log = [(i, 1, 10, day, "12:00", "A", 1, 0) for i, day in enumerate(days)]
    log += [(10, 9, 10, days[0], "12:00", "A", 1, 1), (11, 9, 20, days[4], "12:00", "A", 0, 0)]
    log += [(12, 9, 20, days[4], "13:00", "A", 1, 0)]
    tables = stats.transform(builders.impressions(spark, log), prior_strength=S, lookback_days=0)
    user9 = tables[stats.USER_STATS].where("user_id = 9").orderBy("dt").collect()
    assert [(r["dt"], r["user_day_impressions"], r["user_cumulative_impressions"]) for r in user9] == [
        (D1, 1, 1),
        (dt.date(2026, 4, 10), 2, 3),
    ]
    assert tables[stats.USER_STATS].count() == 5 + 2  # user 1 every day, user 9 twice
    assert tables[stats.USER_POI_STATS].count() == 5 + 2  # (1, 10) x 5 days, (9, 10) and (9, 20) once
    assert tables[stats.GLOBAL_STATS].count() == 5
    # as of day 4, user 9 still has its day-1 history
    row = _as_of(spark, tables, stats.USER_STATS, [(9, dt.date(2026, 4, 9))])[(9, dt.date(2026, 4, 9))]
    assert (row["user_impressions"], row["user_clicks"], row["user_orders"]) == (1, 1, 1)


def test_columns_and_partitioning(spark, catalog):
    catalog.write(builders.impressions(spark, LOG), "clean.impressions", partition_by=["dt"])
    stats.run(spark, catalog, StatsConfig(), log=lambda _: None)
    assert catalog.read(spark, stats.USER_POI_STATS).columns == [
        "user_id",
        "poi_id",
        *stats.daily_columns("user_poi"),
        *stats.cumulative_columns("user_poi"),
        "dt",
    ]
    assert stats.daily_columns("user")[0] == "user_day_impressions"
    assert stats.cumulative_columns("poi")[-1] == "poi_cumulative_orders"
    detail = catalog.delta(spark, stats.USER_STATS).detail().select("partitionColumns").first()[0]
    assert detail == ["dt"]


def test_lookback_window_counts_only_recent_days(spark):
    tables = stats.transform(builders.impressions(spark, LOG), prior_strength=S, lookback_days=1)
    user = _as_of(spark, tables, stats.USER_STATS, [(1, D3), (2, D3), (2, D2)], lookback_days=1)
    # user 1 on day 3 sees only day 2 (one unclicked impression); global day 2: 2 impressions, 1 click, 1 order
    row = user[(1, D3)]
    assert (row["user_impressions"], row["user_clicks"], row["user_orders"]) == (1, 0, 0)
    assert row["user_ctr"] == pytest.approx((0 + S * 0.5) / (1 + S))
    assert row["user_cvr"] == pytest.approx((0 + S * 1.0) / (0 + S))
    # user 2 on day 3: day 2 only (one click and order), not day 1
    assert (user[(2, D3)]["user_impressions"], user[(2, D3)]["user_clicks"]) == (1, 1)
    assert (user[(2, D2)]["user_impressions"], user[(2, D2)]["user_clicks"]) == (1, 1)  # day 1


def test_a_gap_in_the_calendar_counts_by_date(spark):
    # day 2 missing from the log: a 1-day lookback on day 3 sees nothing, though both users have history
    log = [row for row in LOG if row[3] != "2026-04-07"]
    tables = stats.transform(builders.impressions(spark, log), prior_strength=S, lookback_days=1)
    user = _as_of(spark, tables, stats.USER_STATS, [(1, D3), (2, D3)], lookback_days=1)
    for key in (1, 2):
        row = user[(key, D3)]
        assert (row["user_impressions"], row["user_clicks"], row["user_ctr"]) == (0, 0, 0.0)
    everything = _as_of(spark, tables, stats.USER_STATS, [(1, D3)], lookback_days=0)[(1, D3)]
    assert everything["user_impressions"] == 2


def test_no_leakage_from_labels_on_or_after_a_day(spark, world_catalog):
    _, _, log = builders.clean_world(spark, world_catalog)
    days = sorted(r["dt"] for r in log.select("dt").distinct().collect())
    cut = days[1]
    flip = F.col("dt") >= F.lit(cut)
    changed = log.withColumn("clicked", F.when(flip, 1 - F.col("clicked")).otherwise(F.col("clicked")))
    changed = changed.withColumn(
        "ordered",
        F.when(flip, F.col("clicked") * (F.col("event_id") % 2).cast("int")).otherwise(F.col("ordered")),
    )
    samples = log.select("user_id", "poi_id", "dt")  # a sample at every logged (user, POI, day)

    def as_of_every_sample(impressions):
        tables = stats.transform(impressions, prior_strength=5.0, lookback_days=0)
        for name, (keys, prefix) in stats.ENTITIES.items():
            samples_with = stats.as_of(
                samples, tables[name], keys, prefix, 0, tables[stats.GLOBAL_STATS], 5.0
            )
            yield name, samples_with
        yield stats.GLOBAL_STATS, tables[stats.GLOBAL_STATS]

    for (name, old), (_, new) in zip(as_of_every_sample(log), as_of_every_sample(changed), strict=True):
        assert _rows(old.where(F.col("dt") <= F.lit(cut))) == _rows(new.where(F.col("dt") <= F.lit(cut))), (
            name
        )
        assert old.where(F.col("dt") <= F.lit(cut)).count() > 0
        # the flip does change later days, so the comparison above could have failed
        later_old, later_new = old.where(F.col("dt") > F.lit(cut)), new.where(F.col("dt") > F.lit(cut))
        assert _rows(later_old) != _rows(later_new), name


# ---------------------------------------------------------------------------------------------
# The OLD dense-grid implementation (features/stats.py and the join and fill of features/samples.py
# before the as-of lookup), kept verbatim here only as the oracle of the test below: one row per
# (entity, every day from its first active day on), a window sum over the earlier days.


def _old_day_number(dt: Column) -> Column:
    return F.datediff(dt, F.to_date(F.lit("1970-01-01")))


def _old_history(order_by: str, lookback_days: int, *keys: str | Column) -> Window:
    start = Window.unboundedPreceding if lookback_days == 0 else -lookback_days
    return Window.partitionBy(*keys).orderBy(order_by).rangeBetween(start, -1)


def _old_daily(impressions: DataFrame, keys: list[str]) -> DataFrame:
    return impressions.groupBy(*keys, "dt").agg(
        F.count(F.lit(1)).alias("impressions"),
        F.sum(F.col("clicked").cast("long")).alias("clicks"),
        F.sum(F.col("ordered").cast("long")).alias("orders"),
    )


def _old_smoothed(hits: Column, trials: Column, prior_rate: Column, prior_strength: float) -> Column:
    s = F.lit(float(prior_strength))
    return F.when(trials + s > 0, (hits + s * prior_rate) / (trials + s)).otherwise(prior_rate)


def _old_global_stats(impressions: DataFrame, lookback_days: int) -> DataFrame:
    window = _old_history("_day", lookback_days, F.lit(0))
    daily = _old_daily(impressions, []).withColumn("_day", _old_day_number(F.col("dt")))
    sums = {name: F.coalesce(F.sum(name).over(window), F.lit(0)).cast("long") for name in stats.COUNTS}
    history = daily.select("dt", *[col.alias(f"global_{name}") for name, col in sums.items()])
    rate = lambda hits, trials: F.coalesce(  # noqa: E731
        F.col(hits) / F.when(F.col(trials) > 0, F.col(trials)), F.lit(0.0)
    )
    return history.withColumn("global_ctr", rate("global_clicks", "global_impressions")).withColumn(
        "global_cvr", rate("global_orders", "global_clicks")
    )


def _old_dense_grid_entity_stats(
    impressions: DataFrame,
    global_daily: DataFrame,
    keys: tuple[str, ...],
    prefix: str,
    prior_strength: float,
    lookback_days: int,
) -> DataFrame:
    keys = list(keys)
    daily = _old_daily(impressions, keys)
    calendar = impressions.select("dt").distinct()
    first_days = daily.groupBy(*keys).agg(F.min("dt").alias("_first_dt"))
    grid = first_days.join(F.broadcast(calendar), F.col("dt") >= F.col("_first_dt"))
    filled = grid.join(daily, [*keys, "dt"], "left").fillna(0, subset=list(stats.COUNTS))
    window = _old_history("_day", lookback_days, *keys)
    history = filled.withColumn("_day", _old_day_number(F.col("dt"))).select(
        *keys,
        "dt",
        "_first_dt",
        *[F.coalesce(F.sum(name).over(window), F.lit(0)).cast("long").alias(name) for name in stats.COUNTS],
    )
    rates = history.where(F.col("dt") > F.col("_first_dt")).join(
        global_daily.select("dt", "global_ctr", "global_cvr"), "dt"
    )
    return rates.select(
        *keys,
        *[F.col(name).alias(f"{prefix}_{name}") for name in stats.COUNTS],
        _old_smoothed(F.col("clicks"), F.col("impressions"), F.col("global_ctr"), prior_strength).alias(
            f"{prefix}_ctr"
        ),
        _old_smoothed(F.col("orders"), F.col("clicks"), F.col("global_cvr"), prior_strength).alias(
            f"{prefix}_cvr"
        ),
        "dt",
    )


def _old_dense_grid_sample_statistics(
    samples: DataFrame, impressions: DataFrame, prior_strength: float, lookback_days: int
) -> DataFrame:
    """samples (sample_id, user_id, poi_id, dt) -> sample_id and the 15 statistics, the old way:
    left joins on (entity, dt) to the dense grids, counts filled with 0, rates with the global rate."""
    events = impressions.select("user_id", "poi_id", "clicked", "ordered", "dt")
    global_daily = _old_global_stats(events, lookback_days)
    joined = samples
    for keys, prefix in stats.ENTITIES.values():
        grid = _old_dense_grid_entity_stats(events, global_daily, keys, prefix, prior_strength, lookback_days)
        joined = joined.join(grid, [*keys, "dt"], "left")
    joined = joined.join(global_daily.select("dt", "global_ctr", "global_cvr"), "dt", "left")
    filled = []
    for col in samples_job.STAT_COLUMNS:
        kind = col.rsplit("_", 1)[1]
        fill = F.lit(0).cast("long") if kind in stats.COUNTS else F.col(f"global_{kind}")
        filled.append(F.coalesce(F.col(col), fill).alias(col))
    return joined.select("sample_id", *filled)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookback_days", "mode"), [(0, "impressions"), (1, "positive_only"), (2, "impressions")]
)
def test_every_samples_statistics_equal_the_old_dense_grids(
    spark, catalog, world_catalog, tiny_world_config, lookback_days, mode
):
    users, pois, log = builders.clean_world(spark, world_catalog)
    write_schema(spark, catalog, world_schema(tiny_world_config))
    catalog.write(log, "clean.impressions", partition_by=["dt"])
    catalog.write(users, "clean.users")
    catalog.write(pois, "clean.pois")
    quiet = lambda _: None  # noqa: E731
    summary = stats.run(
        spark, catalog, StatsConfig(prior_strength=5.0, lookback_days=lookback_days), log=quiet
    )
    samples_job.run(spark, catalog, SamplesConfig(mode=mode, neg_rate=0.3), log=quiet)
    table = catalog.read(spark, samples_job.OUTPUT)
    columns = samples_job.STAT_COLUMNS
    new = {r["sample_id"]: r for r in table.select("sample_id", *columns).collect()}
    keys = table.select("sample_id", "user_id", "poi_id", "dt")
    old = {
        r["sample_id"]: r for r in _old_dense_grid_sample_statistics(keys, log, 5.0, lookback_days).collect()
    }
    assert set(new) == set(old) and len(new) == table.count() > 1000
    counts = [c for c in columns if c.rsplit("_", 1)[1] in stats.COUNTS]
    rates = [c for c in columns if c.rsplit("_", 1)[1] in stats.RATES]
    assert len(counts) == 9 and len(rates) == 6
    for sample_id, row in new.items():
        expected = old[sample_id]
        assert [row[c] for c in counts] == [expected[c] for c in counts], sample_id
        assert [row[c] for c in rates] == pytest.approx([expected[c] for c in rates], abs=1e-12, rel=0), (
            sample_id
        )
    # the check has teeth: some samples have history and some have none
    with_history = sum(1 for row in new.values() if row["user_poi_impressions"] > 0)
    assert 0 < with_history < len(new)
    # the stored pair rows are the log's distinct (user, POI, day)s: activity, not pairs x days
    assert summary["user_poi_stats_rows"] == log.select("user_id", "poi_id", "dt").distinct().count()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"prior_strength": -1.0}, "prior_strength"), ({"lookback_days": -2}, "lookback_days")],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        StatsConfig(**kwargs)
