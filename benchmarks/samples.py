"""`larr bench samples`: seconds of positive_only's negative draw (`features.samples.draw_negatives`)
for a fixed number of positive events and ONE group holding every item, at growing item counts.

The positive log is made in Spark (no tables): `events` positives of `events // events_per_user`
users on one day, each at a hash-chosen item, so every draw also skips the user's same-day
positives. The draw costs events x k, so its time should barely grow with the items; the old
per-event ranking joined every event with every item of its group (`ranking_join_rows` =
events x items rows: 2e9 at 20,000 events and 100,000 items). Each size is forced with a count
(its `rows`, events x k when every event has k eligible items). The smallest size is run once
untimed first (JVM warm-up), then each size once; baseline: the smallest size in the same run,
`ratio` = a size's seconds over the baseline's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchmarks.etl import _timed
from core.catalog import TableCatalog
from core.randomness import randint
from features.samples import draw_negatives


@dataclass(frozen=True)
class BenchSamplesConfig:
    events: int = 20_000
    items: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000])
    events_per_user: int = 5  # positives per user on the day: each one excluded from the others' draws
    negatives_per_positive: int = 4
    seed: int = 17

    def __post_init__(self) -> None:
        for name in ("events", "events_per_user", "negatives_per_positive"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.items or min(self.items) < 1:
            raise ValueError(f"items must be a non-empty list of sizes >= 1, got {self.items}")


def positives(spark: SparkSession, cfg: BenchSamplesConfig, items: int) -> DataFrame:
    """(event_id, user_id, dt, poi_id): `cfg.events` positives on one day at items 0..items-1."""
    users = max(1, cfg.events // cfg.events_per_user)
    return spark.range(cfg.events).select(
        F.col("id").alias("event_id"),
        (F.col("id") % users).alias("user_id"),
        F.to_date(F.lit("2026-04-06")).alias("dt"),
        randint(cfg.seed, "bench_samples_poi", items, "id").alias("poi_id"),
    )


def _negatives(spark: SparkSession, cfg: BenchSamplesConfig, items: int) -> DataFrame:
    pool = spark.range(items).select(F.col("id").alias("poi_id"))  # one group: every item
    return draw_negatives(positives(spark, cfg, items), pool, [], cfg.negatives_per_positive, cfg.seed)


def bench_samples(spark: SparkSession, catalog: TableCatalog, cfg: BenchSamplesConfig, log=print) -> dict:
    sizes = sorted(set(cfg.items))
    _negatives(spark, cfg, sizes[0]).count()  # warm-up, untimed
    results = []
    for items in sizes:
        negatives = _negatives(spark, cfg, items)
        counted = []
        seconds = _timed(lambda: counted.append(negatives.count()))  # noqa: B023
        entry = {
            "items": items,
            "seconds": round(seconds, 3),
            "rows": counted[0],
            "rows_per_s": round(counted[0] / seconds),
            "ranking_join_rows": cfg.events * items,
        }
        log(f"bench samples: {entry}")
        results.append((seconds, entry))
    baseline = results[0][0]
    for seconds, entry in results:
        entry["ratio"] = round(seconds / baseline, 3)
    return {
        "events": cfg.events,
        "negatives_per_positive": cfg.negatives_per_positive,
        "baseline_items": sizes[0],
        "sizes": [entry for _, entry in results],
        "time_growth": results[-1][1]["ratio"],
        "item_growth": round(sizes[-1] / sizes[0], 2),
        "cores": spark.sparkContext.defaultParallelism,
    }
