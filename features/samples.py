"""clean.{impressions,users,pois} + features.*_stats -> samples.ctr; one row per sample; partition (split, dt).

Negatively sampled CTR samples with labels `click` and `ctcvr` (click and order), two modes:

- `impressions`: every clicked impression is kept; an unclicked one is kept when
  uniform(seed, "negative_sample", event_id) < `neg_rate` (a hash, never a random generator,
  so the choice does not depend on partitioning). Every row records `neg_rate` = r, the rate at
  which negatives were kept, so a model's probability p is re-calibrated with
  p' = p / (p + (1 - p) / r).
- `positive_only`: the log holds positive events only (an impression log is reduced to its
  clicked rows). Each positive gets `negatives_per_positive` = k negatives from the POIs open in
  the event's city and time slot (opening hours "HH:MM-HH:MM", close < open = past midnight; a
  POI is open in a slot when it is open at the start of at least one hour of the slot; equal
  open and close = open all day), excluding every POI the user had a positive event with on
  that day. Candidates are ranked per event by xxhash64(seed, event_id, poi_id) and the first k
  kept, as one join on (city, time slot) and one window, no loops. Negatives copy the
  positive's scene fields (and list position), have click = ctcvr = 0 and sample_id =
  xxhash64("negative", event_id, poi_id). The effective rate recorded on a positive and its
  negatives is min(1, k / n), n = the event's eligible candidates (1.0 when n = 0).

Columns: ids, categorical fields and their hashed ids, the point-in-time statistics (counts
zero-filled, rates filled with the day's global rate, which is the smoothed rate of zero
counts), the 10 scene value strings and ids, labels, `neg_rate`, dt, split. Split: days whose
1-based index from the log's first day (by date) is >= `test_day_index` are `test`, the earlier
ones `train`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from etl.core.catalog import TableCatalog
from etl.core.randomness import uniform
from features import stats
from features.scene_values import (
    SCENE_FEATURES,
    id_column,
    time_slot_of_hour,
    value_column,
    with_scene_values,
)

OUTPUT = "samples.ctr"
INPUTS = ("clean.impressions", "clean.users", "clean.pois")
MODES = ("impressions", "positive_only")
USER_FIELDS = {"gender": "user_gender", "age_band": "user_age_band", "home_city": "user_home_city",
               "member_level": "user_member_level"}  # fmt: skip
POI_FIELDS = {"city": "poi_city", "cuisine": "poi_cuisine", "price_level": "poi_price_level"}
HASHED_FIELDS = ("user_gender", "user_age_band", "user_home_city", "user_member_level", "device",
                 "poi_city", "poi_cuisine")  # fmt: skip
SCENE_COLUMNS = [value_column(f) for f in SCENE_FEATURES] + [id_column(f) for f in SCENE_FEATURES]
EVENT_COLUMNS = ["user_id", "poi_id", "position", "device", *SCENE_COLUMNS, "dt"]
STAT_COLUMNS = [col for _, prefix in stats.ENTITIES.values() for col in stats.stat_columns(prefix)]
SAMPLE_COLUMNS = [
    "sample_id",
    "user_id",
    "poi_id",
    *USER_FIELDS.values(),
    "device",
    *POI_FIELDS.values(),
    "position",
    *[f"{name}_id" for name in HASHED_FIELDS],
    *STAT_COLUMNS,
    *SCENE_COLUMNS,
    "click",
    "ctcvr",
    "neg_rate",
    "dt",
    "split",
]
_HOURS = r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$"


@dataclass(frozen=True)
class SamplesConfig:
    mode: str = "impressions"  # impressions | positive_only
    neg_rate: float = 0.25  # impressions mode: share of unclicked impressions kept
    negatives_per_positive: int = 4  # positive_only mode: k
    seed: int = 17
    test_day_index: int = 8  # 1-based day from the log's first day; that day and later are `test`

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.neg_rate <= 1.0:
            raise ValueError(f"neg_rate must be in (0, 1], got {self.neg_rate}")
        if self.negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1, got {self.negatives_per_positive}")
        if self.test_day_index < 1:
            raise ValueError(f"test_day_index must be >= 1 (1 = the first day), got {self.test_day_index}")


def open_slots(pois: DataFrame) -> DataFrame:
    """(poi_id, city, time_slot) for every time slot in which a POI is open."""
    part = lambda i: F.regexp_extract("opening_hours", _HOURS, i).try_cast("int")  # noqa: E731
    opens, closes = part(1) * 60 + part(2), part(3) * 60 + part(4)
    start = F.col("hour") * 60
    is_open = (
        F.when(closes > opens, (start >= opens) & (start < closes))
        .when(closes < opens, (start >= opens) | (start < closes))
        .otherwise(opens.isNotNull())  # equal times: open all day
    )
    hours = pois.select(
        "poi_id", "city", "opening_hours", F.explode(F.sequence(F.lit(0), F.lit(23))).alias("hour")
    )
    return (
        hours.where(is_open)
        .select("poi_id", "city", time_slot_of_hour(F.col("hour")).alias("time_slot"))
        .distinct()
    )


def sample_impressions(scene: DataFrame, neg_rate: float, seed: int) -> DataFrame:
    keep = (F.col("clicked") == 1) | (uniform(seed, "negative_sample", "event_id") < F.lit(neg_rate))
    return scene.where(keep).select(
        F.col("event_id").alias("sample_id"),
        *EVENT_COLUMNS,
        F.col("clicked").alias("click"),
        (F.col("clicked") * F.col("ordered")).alias("ctcvr"),
        F.lit(float(neg_rate)).alias("neg_rate"),
    )


def sample_positive_only(
    scene: DataFrame, pois: DataFrame, negatives_per_positive: int, seed: int
) -> DataFrame:
    positives = scene.where(F.col("clicked") == 1)
    done = positives.select("user_id", "dt", "poi_id").distinct()
    candidates = (
        positives.select(
            "event_id",
            "user_id",
            "dt",
            F.col(value_column("city")).alias("city"),
            F.col(value_column("time_slot")).alias("time_slot"),
        )
        .join(open_slots(pois), ["city", "time_slot"])
        .join(done, ["user_id", "dt", "poi_id"], "left_anti")
    )
    per_event = Window.partitionBy("event_id")
    ranked = candidates.select(
        "event_id",
        "poi_id",
        F.row_number()
        .over(per_event.orderBy(F.xxhash64(F.lit(seed), "event_id", "poi_id"), "poi_id"))
        .alias("_rank"),
        F.count(F.lit(1)).over(per_event).alias("_eligible"),
    )
    k = F.lit(negatives_per_positive)
    rates = ranked.groupBy("event_id").agg(F.least(F.lit(1.0), k / F.max("_eligible")).alias("neg_rate"))
    chosen = ranked.where(F.col("_rank") <= k).select("event_id", F.col("poi_id").alias("_negative_poi"))
    events = positives.join(rates, "event_id", "left").withColumn(
        "neg_rate", F.coalesce("neg_rate", F.lit(1.0))
    )
    positive_rows = events.select(
        F.col("event_id").alias("sample_id"),
        *EVENT_COLUMNS,
        F.lit(1).alias("click"),
        F.col("ordered").alias("ctcvr"),
        "neg_rate",
    )
    negative_rows = events.join(chosen, "event_id").select(
        F.xxhash64(F.lit("negative"), "event_id", "_negative_poi").alias("sample_id"),
        *[F.col("_negative_poi").alias("poi_id") if c == "poi_id" else F.col(c) for c in EVENT_COLUMNS],
        F.lit(0).alias("click"),
        F.lit(0).alias("ctcvr"),
        "neg_rate",
    )
    return positive_rows.unionByName(negative_rows)


def _fill_stats(df: DataFrame) -> list[Column]:
    """Counts: 0 without history; rates: the day's global rate (the smoothed rate of zero counts)."""
    columns = []
    for col in STAT_COLUMNS:
        kind = col.rsplit("_", 1)[1]
        fill = F.lit(0).cast("long") if kind in stats.COUNTS else F.col(f"global_{kind}")
        columns.append(F.coalesce(F.col(col), fill).alias(col))
    return columns


def transform(
    impressions: DataFrame,
    users: DataFrame,
    pois: DataFrame,
    user_stats: DataFrame,
    poi_stats: DataFrame,
    user_poi_stats: DataFrame,
    global_stats: DataFrame,
    *,
    mode: str,
    neg_rate: float,
    negatives_per_positive: int,
    seed: int,
    test_day_index: int,
) -> DataFrame:
    """The sampled CTR table (SAMPLE_COLUMNS) from the validated log and the stats tables."""
    scene = with_scene_values(impressions, pois)
    if mode == "impressions":
        sampled = sample_impressions(scene, neg_rate, seed)
    elif mode == "positive_only":
        sampled = sample_positive_only(scene, pois, negatives_per_positive, seed)
    else:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    user_fields = users.select("user_id", *[F.col(k).alias(v) for k, v in USER_FIELDS.items()])
    poi_fields = pois.select("poi_id", *[F.col(k).alias(v) for k, v in POI_FIELDS.items()])
    first_day = impressions.agg(F.min("dt").alias("_first_dt"))
    day_index = F.datediff("dt", "_first_dt") + 1
    joined = (
        sampled.join(user_fields, "user_id", "left")
        .join(poi_fields, "poi_id", "left")
        .join(user_stats, ["user_id", "dt"], "left")
        .join(poi_stats, ["poi_id", "dt"], "left")
        .join(user_poi_stats, ["user_id", "poi_id", "dt"], "left")
        .join(global_stats.select("dt", "global_ctr", "global_cvr"), "dt", "left")
        .crossJoin(F.broadcast(first_day))
    )
    filled = joined.select(
        *[c for c in joined.columns if c not in STAT_COLUMNS],
        *_fill_stats(joined),
        *[F.xxhash64(F.lit(name), F.col(name)).alias(f"{name}_id") for name in HASHED_FIELDS],
        F.when(day_index >= test_day_index, "test").otherwise("train").alias("split"),
    )
    return filled.select(*SAMPLE_COLUMNS)


def summarize(samples: DataFrame) -> dict:
    """Rows, the mean recorded neg_rate and the label rates per split (one small aggregate)."""
    rows = {
        r["split"]: r
        for r in samples.groupBy("split")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg("click").alias("click_rate"),
            F.avg("ctcvr").alias("ctcvr_rate"),
            F.sum("neg_rate").alias("neg_rate_sum"),
        )
        .collect()
    }
    total = sum(r["rows"] for r in rows.values())
    figures = {"train_rows": 0, "test_rows": 0}
    for split in ("train", "test"):
        r = rows.get(split)
        figures[f"{split}_rows"] = int(r["rows"]) if r else 0
    figures["neg_rate"] = round(sum(r["neg_rate_sum"] for r in rows.values()) / total, 6) if total else None
    for split in ("train", "test"):
        r = rows.get(split)
        figures[f"{split}_click_rate"] = round(float(r["click_rate"]), 6) if r else None
        figures[f"{split}_ctcvr_rate"] = round(float(r["ctcvr_rate"]), 6) if r else None
    return figures


def run(spark: SparkSession, catalog: TableCatalog, cfg: SamplesConfig, log=print) -> dict:
    """Rebuild samples.ctr in full (a full overwrite: idempotent by construction)."""
    names = (*INPUTS, stats.USER_STATS, stats.POI_STATS, stats.USER_POI_STATS, stats.GLOBAL_STATS)
    versions = {name: catalog.version(spark, name) for name in names}
    frames = {name: catalog.read(spark, name, version=versions[name]) for name in names}
    samples = transform(
        frames["clean.impressions"],
        frames["clean.users"],
        frames["clean.pois"],
        frames[stats.USER_STATS],
        frames[stats.POI_STATS],
        frames[stats.USER_POI_STATS],
        frames[stats.GLOBAL_STATS],
        mode=cfg.mode,
        neg_rate=cfg.neg_rate,
        negatives_per_positive=cfg.negatives_per_positive,
        seed=cfg.seed,
        test_day_index=cfg.test_day_index,
    )
    output_version = catalog.write(samples, OUTPUT, partition_by=["split", "dt"])
    log(
        f"etl samples: wrote {OUTPUT}: {catalog.last_commit_rows(spark, OUTPUT)} rows (version {output_version})"
    )
    figures = summarize(catalog.read(spark, OUTPUT, version=output_version))
    return {
        "mode": cfg.mode,
        **figures,
        "input_versions": versions,
        "output_versions": {OUTPUT: output_version},
    }
