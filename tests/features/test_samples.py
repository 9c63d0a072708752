import datetime as dt
import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from core.dataset_schema import GroupKey, RequestItemFeature
from core.randomness import uniform
from core.schema_table import write_schema
from core.splits import SplitError
from etl.synthetic.job import world_schema
from features import samples, stats
from features.samples import SamplesConfig
from features.scene_values import scene_columns, value_column, with_scene_values
from features.stats import StatsConfig
from tests.etl.text_fixtures import SCHEMA
from tests.features import builders

D1, D2, D3 = dt.date(2026, 4, 6), dt.date(2026, 4, 7), dt.date(2026, 4, 8)
# (poi_id, city, cuisine, opening hours)
POIS = [
    (10, "A", "Noodles", "10:00-22:00"),
    (11, "A", "Rice", "10:00-22:00"),
    (12, "A", "BBQ", "17:00-03:00"),  # past midnight: dinner, evening, late night
    (13, "A", "Breakfast", "06:00-10:00"),  # breakfast only
    (14, "A", "Dumplings", "08:00-23:00"),
    (15, "A", "Tea", "09:00-21:00"),
    (20, "B", "Noodles", "10:00-22:00"),
    (21, "B", "Rice", "11:00-14:00"),
]
# (event_id, user_id, poi_id, day, UTC time, city, clicked, ordered)
LOG = [
    (1, 1, 10, "2026-04-06", "12:30", "A", 1, 1),  # lunch
    (2, 1, 12, "2026-04-06", "23:30", "A", 1, 0),  # evening
    (3, 2, 20, "2026-04-06", "12:00", "B", 1, 1),  # lunch in city B
    (4, 2, 10, "2026-04-06", "12:00", "A", 0, 0),
    (5, 1, 11, "2026-04-07", "02:00", "A", 1, 0),  # late night
    (6, 2, 13, "2026-04-07", "07:00", "A", 1, 0),  # breakfast
    (7, 2, 14, "2026-04-07", "07:00", "A", 0, 0),
    (8, 1, 14, "2026-04-08", "18:00", "A", 1, 1),  # dinner
    (9, 1, 15, "2026-04-08", "18:00", "A", 0, 0),
    # unclicked impressions of user 3, for the down-sampling
    *[(e, 3, 10 + e % 2, f"2026-04-0{6 + e % 3}", "12:00", "A", 0, 0) for e in range(10, 30)],
]
# positive event -> its eligible negatives: open in the event's city and slot, not a POI the user
# had a positive with that day (user 1 on day 1: 10 and 12)
ELIGIBLE = {
    1: {11, 14, 15},
    2: {11, 14},
    3: {21},
    5: {12},
    6: {14, 15},
    8: {10, 11, 12, 15},
}
SLOT = {1: "lunch", 2: "evening", 3: "lunch", 5: "late night", 6: "breakfast", 8: "dinner"}
EVENTS = {row[0]: row for row in LOG}
DAY = {"2026-04-06": D1, "2026-04-07": D2, "2026-04-08": D3}


def _inputs(spark, catalog, partitions=None, log=LOG, pois=POIS):
    log = builders.impressions(spark, log)
    if partitions:
        log = log.repartition(partitions)
    catalog.write(log, "clean.impressions", partition_by=["dt"])
    write_schema(spark, catalog, SCHEMA)
    catalog.write(builders.users(spark, [1, 2, 3]), "clean.users")
    catalog.write(builders.pois(spark, pois), "clean.pois")
    stats.run(spark, catalog, StatsConfig(prior_strength=2.0), log=lambda _: None)


def _cfg(**kwargs):
    return SamplesConfig(**{"seed": 5, "test_day_index": 3, "validation_days": 0, **kwargs})


def _projection(df):
    cols = ["user_id", "poi_id", "dt", "split", "click", "ctcvr", "neg_rate", "position", "scene_time_slot"]
    return sorted(tuple(r) for r in df.select(*cols).collect())


def _expected_row(event_id, poi_id, click, ctcvr, neg_rate):
    _, user, _, day, _, _, _, _ = EVENTS[event_id]
    split = "test" if DAY[day] == D3 else "train"
    return (user, poi_id, DAY[day], split, click, ctcvr, neg_rate, event_id % 3 + 1, SLOT[event_id])


def test_positive_only_takes_open_pois_of_the_city_and_slot_never_the_users_own(spark, catalog):
    _inputs(spark, catalog)
    samples.run(spark, catalog, _cfg(mode="positive_only", negatives_per_positive=5), log=lambda _: None)
    table = catalog.read(spark, samples.OUTPUT)
    expected = []
    for event_id, negatives in ELIGIBLE.items():
        _, _, poi, _, _, _, _, ordered = EVENTS[event_id]
        expected.append(_expected_row(event_id, poi, 1, ordered, 1.0))
        expected += [_expected_row(event_id, n, 0, 0, 1.0) for n in negatives]
    assert _projection(table) == sorted(expected)
    assert table.columns == samples.sample_columns(SCHEMA)
    positive_ids = {r["sample_id"] for r in table.where("click = 1").collect()}
    assert positive_ids == set(ELIGIBLE)
    assert table.select("sample_id").distinct().count() == table.count()


def test_positive_only_keeps_k_of_the_eligible_and_records_the_effective_rate(spark, catalog):
    _inputs(spark, catalog)
    summary = samples.run(
        spark, catalog, _cfg(mode="positive_only", negatives_per_positive=2), log=lambda _: None
    )
    negatives = catalog.read(spark, samples.OUTPUT).where("click = 0").collect()
    by_event = {}
    for event_id, (_, user, _, day, *_rest) in EVENTS.items():
        if event_id in ELIGIBLE:
            by_event[(user, DAY[day], SLOT[event_id])] = event_id
    drawn, rates = {}, {}
    for r in negatives:
        event_id = by_event[(r["user_id"], r["dt"], r["scene_time_slot"])]
        drawn.setdefault(event_id, set()).add(r["poi_id"])
        rates[event_id] = r["neg_rate"]
    for event_id, eligible in ELIGIBLE.items():
        assert drawn[event_id] <= eligible
        assert len(drawn[event_id]) == min(2, len(eligible))
        assert rates[event_id] == pytest.approx(min(1.0, 2 / len(eligible)))
    assert summary["train_rows"] + summary["test_rows"] == 6 + sum(min(2, len(e)) for e in ELIGIBLE.values())
    assert summary["test_click_rate"] == pytest.approx(1 / 3)  # event 8 and its two negatives


def test_impressions_mode_keeps_clicks_and_hash_chosen_negatives(spark, catalog):
    _inputs(spark, catalog)
    summary = samples.run(spark, catalog, _cfg(mode="impressions", neg_rate=0.5), log=lambda _: None)
    log = builders.impressions(spark, LOG)
    draws = {
        r["event_id"]: r["u"]
        for r in log.select("event_id", uniform(5, "negative_sample", "event_id").alias("u")).collect()
    }
    kept = {e for e, row in EVENTS.items() if row[6] == 1 or draws[e] < 0.5}
    assert (
        0 < len(kept - {e for e, row in EVENTS.items() if row[6] == 1}) < 23
    )  # of 23 negatives some go, some stay
    table = catalog.read(spark, samples.OUTPUT)
    expected = []
    for e in kept:
        _, user, poi, day, _, _, clicked, ordered = EVENTS[e]
        split = "test" if DAY[day] == D3 else "train"
        expected.append((e, user, poi, DAY[day], split, clicked, clicked * ordered, 0.5, e % 3 + 1))
    cols = ["sample_id", "user_id", "poi_id", "dt", "split", "click", "ctcvr", "neg_rate", "position"]
    assert sorted(tuple(r) for r in table.select(*cols).collect()) == sorted(expected)
    assert summary["neg_rate"] == 0.5
    assert summary["train_rows"] == sum(1 for e in kept if EVENTS[e][3] != "2026-04-08")
    assert summary["test_rows"] == sum(1 for e in kept if EVENTS[e][3] == "2026-04-08")


def test_fields_and_point_in_time_statistics_are_joined_and_zero_filled(spark, catalog):
    _inputs(spark, catalog)
    samples.run(spark, catalog, _cfg(mode="impressions", neg_rate=1.0), log=lambda _: None)
    table = catalog.read(spark, samples.OUTPUT)
    global_d3 = catalog.read(spark, stats.GLOBAL_STATS).where(F.col("dt") == F.lit(D3)).first()
    row = table.where("sample_id = 8").first()  # user 1 at POI 14 on day 3
    assert (row["user_gender"], row["user_age_band"], row["poi_city"], row["poi_cuisine"]) == (
        "female",
        "25-34",
        "A",
        "Dumplings",
    )
    assert row["user_gender_id"] is not None and row["poi_cuisine_id"] is not None
    # user 1 before day 3: events 1, 2, 5 (3 clicks, 1 order); POI 14: event 7 (no click); the pair: nothing
    assert (row["user_impressions"], row["user_clicks"], row["user_orders"]) == (3, 3, 1)
    assert (row["poi_impressions"], row["poi_clicks"], row["poi_orders"]) == (1, 0, 0)
    assert (row["user_poi_impressions"], row["user_poi_clicks"], row["user_poi_orders"]) == (0, 0, 0)
    assert row["user_poi_ctr"] == pytest.approx(global_d3["global_ctr"])
    assert row["user_poi_cvr"] == pytest.approx(global_d3["global_cvr"])
    assert row["scene_city"] == "A" and row["scene_time_slot"] == "dinner"
    first_day = table.where("dt = '2026-04-06'").select(*samples.STAT_COLUMNS).distinct().collect()
    assert [tuple(r) for r in first_day] == [(0, 0, 0, 0.0, 0.0) * 3]  # no history on day 1
    assert table.where(F.col("neg_rate") != 1.0).count() == 0
    assert table.count() == len(LOG)


# positive_only (the draw) runs in CI; impressions in `make test-extended`
@pytest.mark.parametrize("mode", [pytest.param("impressions", marks=pytest.mark.extended), "positive_only"])
def test_same_result_under_any_partitioning_and_when_run_twice(spark, tmp_path, mode):
    from core.catalog import TableCatalog

    tables = []
    for partitions in (1, 5):
        catalog = TableCatalog.resolve(str(tmp_path / f"p{partitions}"))
        _inputs(spark, catalog, partitions=partitions)
        cfg = _cfg(mode=mode, neg_rate=0.4, negatives_per_positive=1)
        first = samples.run(spark, catalog, cfg, log=lambda _: None)
        rows = sorted(tuple(r) for r in catalog.read(spark, samples.OUTPUT).collect())
        second = samples.run(spark, catalog, cfg, log=lambda _: None)
        assert sorted(tuple(r) for r in catalog.read(spark, samples.OUTPUT).collect()) == rows
        assert second["output_versions"][samples.OUTPUT] == first["output_versions"][samples.OUTPUT] + 1
        figures = lambda summary: {k: v for k, v in summary.items() if k != "output_versions"}  # noqa: E731
        assert figures(first) == figures(second)
        tables.append(rows)
    assert tables[0] == tables[1]


def test_on_the_test_world_every_click_is_kept(spark, catalog, world_catalog, tiny_world_config):
    users, pois, log = builders.clean_world(spark, world_catalog)
    write_schema(spark, catalog, world_schema(tiny_world_config))  # test days: the world's last one
    catalog.write(log, "clean.impressions", partition_by=["dt"])
    catalog.write(users, "clean.users")
    catalog.write(pois, "clean.pois")
    stats.run(spark, catalog, StatsConfig(), log=lambda _: None)
    summary = samples.run(spark, catalog, SamplesConfig(neg_rate=0.2), log=lambda _: None)
    totals = log.agg(F.sum("clicked").alias("clicks"), F.count(F.lit(1)).alias("rows")).first()
    table = catalog.read(spark, samples.OUTPUT)
    assert table.where("click = 1").count() == totals["clicks"]
    negatives = table.where("click = 0").count()
    assert 0.15 < negatives / (totals["rows"] - totals["clicks"]) < 0.25
    assert summary["train_rows"] + summary["validation_rows"] + summary["test_rows"] == table.count()
    assert summary["test_rows"] == table.where(F.col("dt") == F.lit(D3)).count() > 0
    assert summary["validation_rows"] == table.where(F.col("dt") == F.lit(D2)).count() > 0  # the day before
    assert summary["train_click_rate"] > 0.2  # clicks are over-represented after down-sampling
    assert table.where(F.col("user_gender").isNull() | F.col("poi_cuisine").isNull()).count() == 0
    # every scene value is its event's, the `recent` ones joined with the statistics included
    features = world_schema(tiny_world_config).scene_features
    recent = [f for f in features if f.recent]
    assert recent and table.where(F.col(value_column(recent[0].name)) != recent[0].default).count() > 0
    got = table.select("sample_id", *scene_columns(features))
    events = with_scene_values(log, pois, features).select(
        F.col("event_id").alias("sample_id"), *scene_columns(features)
    )
    assert got.exceptAll(events.join(got.select("sample_id"), "sample_id")).count() == 0


def test_a_recent_feature_keying_the_candidate_pool_stays_with_the_events(tiny_world_config):
    schema = world_schema(tiny_world_config)
    recent = [f for f in schema.scene_features if f.recent]
    assert samples.late_scene_features(schema) == recent
    assert value_column(recent[0].name) not in samples.event_columns(schema)
    keyed = replace(
        schema,
        negatives=replace(schema.negatives, group=(GroupKey(scene=recent[0].name, item=recent[0].recent),)),
    )
    assert samples.late_scene_features(keyed) == []
    assert value_column(recent[0].name) in samples.event_columns(keyed)


# request-item features: every user stands at (23.1, 113.3) (builders.impressions)
NORTH_KM = 6371.0 * math.radians(0.1)  # 0.1 degree of latitude due north: 11.1195 km
RI_POIS = [
    (30, "A", "BBQ", "17:00-03:00", 23.2, 113.3),  # open past midnight, 0.1 degree north
    (31, "A", "Tea", "08:00-08:00"),  # open all day, where the user is: 0 km
    (32, "A", "Rice", "10:00-22:00", None, None),  # no coordinates: distance filled with 0.0
    (33, "A", "Noodles", "ask the owner"),  # unreadable hours: open_now filled with 0.0
]
RI_LOG = [
    (1, 1, 30, "2026-04-06", "02:30", "A", 1, 0),  # late night
    (2, 1, 30, "2026-04-06", "12:00", "A", 0, 0),
    (3, 2, 31, "2026-04-07", "04:00", "A", 1, 0),  # late night
    (4, 2, 32, "2026-04-07", "21:59", "A", 0, 0),
    (5, 2, 32, "2026-04-08", "22:00", "A", 1, 1),  # evening
    (6, 3, 33, "2026-04-08", "12:00", "A", 1, 0),  # lunch
]


def _request_item(table):
    cols = ["user_id", "poi_id", "dt", "click", "distance_km", "open_now"]
    return sorted(tuple(r) for r in table.select(*cols).collect())


def test_request_item_features_of_every_logged_impression(spark, catalog):
    _inputs(spark, catalog, log=RI_LOG, pois=RI_POIS)
    samples.run(spark, catalog, _cfg(mode="impressions", neg_rate=1.0), log=lambda _: None)
    table = catalog.read(spark, samples.OUTPUT)
    assert table.columns == samples.sample_columns(SCHEMA)
    rows = {r["sample_id"]: (r["distance_km"], r["open_now"]) for r in table.collect()}
    assert rows == {
        1: (pytest.approx(NORTH_KM, abs=1e-9), 1.0),  # 02:30 at 17:00-03:00: open past midnight
        2: (pytest.approx(NORTH_KM, abs=1e-9), 0.0),  # noon: closed
        3: (0.0, 1.0),  # open all day
        4: (0.0, 1.0),  # 21:59 at 10:00-22:00; no coordinates: 0.0
        5: (0.0, 0.0),  # 22:00: just closed
        6: (0.0, 0.0),  # unreadable hours
    }


def test_a_drawn_negative_gets_the_request_item_features_of_its_own_item(spark, catalog):
    _inputs(spark, catalog, log=RI_LOG, pois=RI_POIS)
    cfg = _cfg(mode="positive_only", negatives_per_positive=5)
    samples.run(spark, catalog, cfg, log=lambda _: None)
    north = pytest.approx(NORTH_KM, abs=1e-9)
    assert (
        _request_item(catalog.read(spark, samples.OUTPUT))
        == sorted(
            [
                (1, 30, D1, 1, north, 1.0),  # event 1, 02:30 late night: its negative is the all-day 31
                (1, 31, D1, 0, 0.0, 1.0),
                (2, 31, D2, 1, 0.0, 1.0),  # event 3, 04:00: BBQ 30 is in the late-night pool, shut at 04:00
                (2, 30, D2, 0, north, 0.0),
                (2, 32, D3, 1, 0.0, 0.0),  # event 5, 22:00 evening
                (2, 30, D3, 0, north, 1.0),
                (2, 31, D3, 0, 0.0, 1.0),
                (3, 33, D3, 1, 0.0, 0.0),  # event 6, noon
                (3, 31, D3, 0, 0.0, 1.0),
                (3, 32, D3, 0, 0.0, 1.0),
            ],
            key=lambda r: r[:4],
        )
    )


def test_a_request_item_feature_may_not_take_the_name_of_any_sample_column():
    own = {f.name for f in SCHEMA.request_item}
    for column in samples.sample_columns(SCHEMA):
        if column in own:
            continue
        feature = RequestItemFeature(name=column, derive="open_now", item="opening_hours")
        with pytest.raises(
            ValueError, match=f"request_item\\[0\\].name: {column} clashes with a sample column"
        ):
            replace(SCHEMA, request_item=(feature,))


def _positives(spark, rows, group_columns=()):
    """(event_id, user_id, dt, poi_id, *group columns) from tuples in that order."""
    schema = "event_id long, user_id long, dt date, poi_id long" + "".join(
        f", {c} string" for c in group_columns
    )
    return spark.createDataFrame(rows, schema)


def _pool(spark, poi_ids):
    return spark.createDataFrame([(p,) for p in poi_ids], "poi_id long")


def _one_group_log(seed=3, events=400, items=3000):
    """A log of `events` positives in one group of `items` POIs: 80 users over two days, 1 to 9
    positives a user-day, some at the same POI twice and some at POIs outside the pool."""
    rng = random.Random(seed)
    pool = [7 * i + 3 for i in range(items)]  # not 0..n-1: the numbering is the sampler's
    rows, event_id = [], 0
    while event_id < events:
        user, day = rng.randrange(80), rng.choice([D1, D2])
        picks = rng.sample(pool, rng.randint(1, 8))
        picks += [picks[0]] if rng.random() < 0.3 else []  # the same POI twice that day
        picks += [-1] if rng.random() < 0.2 else []  # a POI outside the pool
        for poi in picks:
            rows.append((event_id, user, day, poi))
            event_id += 1
    return pool, rows


def _same_day(rows):
    done = {}
    for _, user, day, poi in rows:
        done.setdefault((user, day), set()).add(poi)
    return done


def test_one_group_of_every_item_gives_k_distinct_eligible_negatives_from_events_x_k_draws(spark):
    pool, rows = _one_group_log()
    k, n_g = 4, len(pool)
    positives, pool_df = _positives(spark, rows), _pool(spark, pool)
    done, in_pool = _same_day(rows), set(pool)
    m = {e: len(done[(u, d)] & in_pool) for e, u, d, _ in rows}
    assert len(set(m.values())) > 3  # events exclude different numbers of items

    draws = samples.candidate_draws(positives, pool_df, [], k, seed=11)
    assert draws.count() == sum(min(n_g, k + m_e) for m_e in m.values())  # events x (k + m_e), not x items
    assert draws.select("event_id", "poi_id").distinct().count() == draws.count()

    negatives = samples.draw_negatives(positives, pool_df, [], k, seed=11).collect()
    drawn = {}
    for r in negatives:
        drawn.setdefault(r["event_id"], []).append(r["poi_id"])
        assert r["neg_rate"] == k / (n_g - m[r["event_id"]])  # exactly k / n
    assert set(drawn) == set(m)
    for e, u, d, _ in rows:
        assert len(drawn[e]) == len(set(drawn[e])) == k
        assert set(drawn[e]) <= in_pool and not set(drawn[e]) & done[(u, d)]


def test_negatives_do_not_depend_on_partitioning(spark):
    pool, rows = _one_group_log(seed=4, events=300, items=500)
    results = []
    for partitions in (1, 7):
        positives = _positives(spark, rows).repartition(partitions)
        pool_df = _pool(spark, pool).repartition(partitions)
        results.append(
            sorted(tuple(r) for r in samples.draw_negatives(positives, pool_df, [], 4, seed=5).collect())
        )
    assert results[0] == results[1] and len(results[0]) == 4 * len(rows)
    other_seed = samples.draw_negatives(_positives(spark, rows), _pool(spark, pool), [], 4, seed=6).collect()
    assert sorted(tuple(r) for r in other_seed) != results[0]


def test_a_small_group_gives_all_its_eligible_items_and_an_empty_one_none(spark):
    pool = spark.createDataFrame(
        [("A", p) for p in (1, 2, 3, 4, 5)] + [("B", 6), ("B", 7)], "city string, poi_id long"
    )
    rows = [
        (1, 1, D1, 1, "A"),  # user 1 clicked 1 and 2 in A: n = 5 - 2 = 3 < k
        (2, 1, D1, 2, "A"),
        (3, 2, D1, 6, "B"),  # user 2 clicked both POIs of B: n = 0
        (4, 2, D1, 7, "B"),
        (5, 3, D1, 9, "C"),  # no POI in C
        (6, 1, D2, 6, "A"),  # user 1 on another day, at a POI of B: all 5 of A eligible, k taken
    ]
    negatives = samples.draw_negatives(_positives(spark, rows, ["city"]), pool, ["city"], 4, seed=2).collect()
    drawn = {}
    for r in negatives:
        drawn.setdefault(r["event_id"], set()).add(r["poi_id"])
        assert r["neg_rate"] == {1: 1.0, 2: 1.0, 6: 0.8}[r["event_id"]]
    assert drawn[1] == drawn[2] == {3, 4, 5}
    assert len(drawn[6]) == 4 and drawn[6] <= {1, 2, 3, 4, 5}
    assert set(drawn) == {1, 2, 6}


def test_every_eligible_item_is_drawn_about_equally_often(spark):
    """10,000 events in one group of 50 items, each user having clicked the same 10 popular items
    that day: every other item should be drawn about 10,000 * 4 / 40 = 1,000 times. A broken
    permutation shows: with stride 1 the items just after the popular block are drawn 2.8x as often."""
    pool = list(range(100, 150))
    popular = pool[:10]
    rows = [(user * 10 + i, user, D1, poi) for user in range(1000) for i, poi in enumerate(popular)]
    negatives = samples.draw_negatives(_positives(spark, rows), _pool(spark, pool), [], 4, seed=8)
    counts = Counter(r["poi_id"] for r in negatives.select("poi_id").collect())
    assert set(counts) == set(pool[10:])  # every eligible item, never a popular one
    mean = sum(counts.values()) / len(counts)
    assert mean == 1000
    assert 0.65 * mean < min(counts.values()) <= max(counts.values()) < 1.35 * mean, sorted(counts.values())


def test_the_splits_are_the_schemas_last_days_then_validation_days_unless_a_day_index_is_given(
    spark, catalog
):
    _inputs(spark, catalog)

    def days_by_split(cfg):
        samples.run(spark, catalog, cfg, log=lambda _: None)
        rows = catalog.read(spark, samples.OUTPUT).select("split", "dt").distinct().collect()
        return {
            split: sorted(r["dt"] for r in rows if r["split"] == split)
            for split in {r["split"] for r in rows}
        }

    # the schema's one test day is the log's last; the day before it is the validation day
    assert days_by_split(_cfg(test_day_index=0, validation_days=1)) == {
        "train": [D1],
        "validation": [D2],
        "test": [D3],
    }
    assert days_by_split(_cfg(test_day_index=0)) == {"train": [D1, D2], "test": [D3]}  # validation_days 0
    write_schema(spark, catalog, replace(SCHEMA, events=replace(SCHEMA.events, test_days=2)))
    assert days_by_split(_cfg(test_day_index=0)) == {"train": [D1], "test": [D2, D3]}
    assert days_by_split(_cfg(test_day_index=3)) == {"train": [D1, D2], "test": [D3]}  # a day index wins
    with pytest.raises(SplitError) as refused:  # before any work: nothing is left to train on
        samples.run(spark, catalog, _cfg(test_day_index=0, validation_days=1), log=lambda _: None)
    assert str(refused.value) == (
        f"validation_days: the log has 3 days ({D1} to {D3}); 2 test and 1 validation days leave no "
        "train day: lower validation_days (0: no validation split) or test the later days"
    )


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mode": "clicks"}, "mode"),
        ({"neg_rate": 0.0}, "neg_rate"),
        ({"negatives_per_positive": 0}, "negatives_per_positive"),
        ({"test_day_index": -1}, "test_day_index"),
        ({"validation_days": -1}, "validation_days"),
    ],
)
def test_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SamplesConfig(**kwargs)
