"""clean.{impressions,users,pois} + features.*_stats + raw.dataset_schema -> samples.ctr; one row per sample; partition (split, dt).

Negatively sampled CTR samples with labels `click` and `ctcvr` (click and order), two modes:

- `impressions`: every clicked impression is kept; an unclicked one is kept when
  uniform(seed, "negative_sample", event_id) < `neg_rate` (a hash, never a random generator,
  so the choice does not depend on partitioning). Every row records `neg_rate` = r, the rate at
  which negatives were kept, so a model's probability p is re-calibrated with
  p' = p / (p + (1 - p) / r).
- `positive_only`: the log holds positive events only (an impression log is reduced to its
  clicked rows). Each positive gets `negatives_per_positive` = k negatives from a candidate pool
  grouped like the event, as the schema's `negatives` declare (on the synthetic world: the POIs
  of the event's city open in its time slot, opening hours "HH:MM-HH:MM", close < open = past
  midnight; a POI is open in a slot when it is open at the start of at least one hour of the
  slot; equal open and close = open all day; nothing declared = every POI), excluding every
  POI the user had a positive event with on that day. The draw (`draw_negatives`, generic over
  the group columns; no group columns = one group of all items) costs events x k, not
  events x items: the n_g items of each group are numbered 0..n_g-1 by poi_id; an event whose
  user excluded m_e of them draws d = min(n_g, k + m_e) distinct indices
  (b + j * a) mod n_g, j = 0..d-1, an affine permutation with offset b = hash(seed, event_id)
  mod n_g and stride a = P mod n_g, P a prime > 2^31 picked by hash from `STRIDE_PRIMES` (so a
  is coprime with n_g); the draws are joined to the numbered pool on (group, index), the user's
  same-day positives removed and the first k by j kept: exactly min(k, n_g - m_e) distinct
  negatives, chosen by hashes only, so the choice does not depend on partitioning. Negatives
  copy the positive's scene fields (and list position), have click = ctcvr = 0 and sample_id =
  xxhash64("negative", event_id, poi_id). The effective rate recorded on a positive and its
  negatives is min(1, k / n), n = n_g - m_e the event's eligible candidates (1.0 when n = 0).

Everything dataset-specific comes from the lakehouse's dataset schema (raw.dataset_schema): the
scene features, the users' / items' / events' fields (`core.dataset_schema.sample_fields`),
the request-item features (`request_item`) and the positive-only candidate pool (`negatives`:
group keys and opening hours).

Request-item features (`features/request_item.py`) are derived after the item is joined, from the
event's columns and the sample's own item (a negative's, not its positive's; its side computed
once per item, the opening hours parsed to minutes before the join): distance_km (the
haversine distance from the event's to the item's coordinates) and open_now (1.0 when the item's
opening hours include the event's UTC minute, else 0.0). A null input (missing coordinates,
unreadable hours) gives null, filled with 0.0, as the statistics' counts are zero-filled.

Columns (`sample_columns(schema)`): ids, the declared fields, the request-item features and the
hashed ids of the string ones, the point-in-time statistics of the user, the POI and the pair
as of the start of the sample's day (`stats.as_of` over the stored activity rows, with the
`prior_strength` and `lookback_days` recorded in features.global_stats; no earlier activity:
counts 0 and the day's global rates, the smoothed rate of zero counts), the scene value strings
and ids, labels, `neg_rate`, dt, split. Split: the log's last `events.test_days` days (by date)
are `test`, the `validation_days` days before them `validation` (model selection and early
stopping read it, so the test split is read once per final configuration), the earlier ones
`train`; `test_day_index` > 0 sets the first test day by a 1-based day index from the log's
first day.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from core.catalog import TableCatalog
from core.dataset_schema import SAMPLE_WEIGHT, DatasetSchema, SceneFeature, sample_fields
from core.randomness import randint, uniform
from core.schema_table import SCHEMA_TABLE, read_schema
from core.splits import SplitError
from features import request_item, stats
from features.scene_values import (
    add_scene_columns,
    as_text,
    from_hour,
    scene_columns,
    value_column,
    with_recent_values,
    with_scene_values,
)

OUTPUT = "samples.ctr"
INPUTS = ("clean.impressions", "clean.users", "clean.pois")
MODES = ("impressions", "positive_only")
SPLITS = ("train", "validation", "test")
STAT_COLUMNS = [col for _, prefix in stats.ENTITIES.values() for col in stats.stat_columns(prefix)]
LABEL_COLUMNS = ["click", "ctcvr", "neg_rate"]
# Primes above 2^31, so above any group size: one is picked per event by hash and its residue
# mod n_g is the stride of the event's affine permutation, coprime with n_g.
STRIDE_PRIMES = (2214592529, 2348822587, 2483052659, 2617282747, 2751512809, 2885742941,
                 3019972951, 3154203023, 3288433103, 3422663171, 3556893257, 3691123327,
                 3825353417, 3959583461, 4093813541, 4228043629)  # fmt: skip


@dataclass(frozen=True)
class SamplesConfig:
    mode: str = "impressions"  # impressions | positive_only
    neg_rate: float = 0.25  # impressions mode: share of unclicked impressions kept
    negatives_per_positive: int = 4  # positive_only mode: k
    seed: int = 17
    test_day_index: int = (
        0  # 0: the schema's last events.test_days days are `test`; > 0: from this 1-based day on
    )
    validation_days: int = 1  # the days just before the test split are `validation`; 0: none

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.neg_rate <= 1.0:
            raise ValueError(f"neg_rate must be in (0, 1], got {self.neg_rate}")
        if self.negatives_per_positive < 1:
            raise ValueError(f"negatives_per_positive must be >= 1, got {self.negatives_per_positive}")
        if self.test_day_index < 0:
            raise ValueError(
                f"test_day_index must be >= 0 (0 = from the dataset schema, 1 = the first day), got {self.test_day_index}"
            )
        if self.validation_days < 0:
            raise ValueError(f"validation_days must be >= 0, got {self.validation_days}")


def late_scene_features(schema: DatasetSchema) -> list[SceneFeature]:
    """The `recent` scene features a sample gets with its statistics, not from its event row: they
    depend on (user, day) alone, so they are joined to the narrow distinct (user, poi, day)s and
    the wide event rows are shuffled once (into that join) instead of twice. One that keys
    positive_only's candidate pool is needed before the draw and stays with the events."""
    pool = set(schema.negatives.pool_columns())
    return [f for f in schema.scene_features if f.recent and f.name not in pool]


def event_scene_features(schema: DatasetSchema) -> list[SceneFeature]:
    """The scene features computed on the event rows: all but the `late_scene_features`."""
    late = late_scene_features(schema)
    return [f for f in schema.scene_features if f not in late]


def event_columns(schema: DatasetSchema) -> list[str]:
    """What a sample takes from its event: ids, the declared event fields, the scene (but its
    `late_scene_features`), the day and the inputs of the request-item features (as
    `_request_event_<column>`, dropped once derived)."""
    return [
        "user_id",
        "poi_id",
        *sample_fields(schema).event_fields,
        *scene_columns(event_scene_features(schema)),
        "dt",
        *[_event_input(c) for c in _request_inputs(schema)],
    ]


def _request_inputs(schema: DatasetSchema) -> list[str]:
    """The event's columns the request-item features read, once each."""
    columns = [c for f in schema.request_item for c in f.event_columns]
    return list(dict.fromkeys(columns))


def _event_input(column: str) -> str:
    return f"_request_event_{column}"


def _item_input(name: str) -> str:
    return f"_request_item_{name}"


def _item_inputs(schema: DatasetSchema) -> dict[str, Column]:
    """The items' side of the request-item features, computed per item (`request_item.item_inputs`)."""
    inputs: dict[str, Column] = {}
    for feature in schema.request_item:
        inputs.update(request_item.item_inputs(feature, F.col))
    return inputs


def request_item_columns(schema: DatasetSchema) -> list[Column]:
    """The request-item features of the joined sample rows (`features/request_item.py`): a null
    input (missing coordinates, unreadable hours) gives null, filled with 0.0."""
    event, item = (lambda c: F.col(_event_input(c))), (lambda c: F.col(_item_input(c)))
    return [
        request_item.filled(request_item.derived(f, event, item)).alias(f.name) for f in schema.request_item
    ]


def sample_columns(schema: DatasetSchema) -> list[str]:
    """The columns of samples.ctr for a dataset schema, in table order."""
    fields = sample_fields(schema)
    return [
        "sample_id",
        "user_id",
        "poi_id",
        *fields.user_fields.values(),
        *[c for c in fields.event_fields if c != "position"],
        *fields.item_fields.values(),
        *[c for c in fields.event_fields if c == "position"],
        *[f.name for f in schema.request_item],
        *[f"{name}_id" for name in fields.hashed],
        *STAT_COLUMNS,
        *scene_columns(schema.scene_features),
        *LABEL_COLUMNS,
        *([SAMPLE_WEIGHT] if schema.events.weight else []),
        "dt",
        "split",
    ]


def event_weight(schema: DatasetSchema) -> list[Column]:
    """The `weight` column of a logged event (missing: 1), when the schema declares one."""
    if not schema.events.weight:
        return []
    return [F.coalesce(F.col(schema.events.weight).cast("double"), F.lit(1.0)).alias(SAMPLE_WEIGHT)]


def is_open_at(hours: Column, hour: Column) -> Column:
    """Whether "HH:MM-HH:MM" opening hours include the start of `hour` (close before open = past
    midnight; equal times = open all day; unreadable hours = closed)."""
    return F.coalesce(request_item.open_at_minute(hours, hour * 60), F.lit(False))


def candidate_pool(pois: DataFrame, schema: DatasetSchema) -> DataFrame:
    """positive_only's candidate pool: (pool columns, poi_id), one row per group an item is in.

    Group keys take the item's column through the scene feature's own buckets and renames, so
    they compare with the event's scene value; open hours put an item in every value of the
    hour-derived feature at whose hours it is open.
    """
    negatives = schema.negatives
    keys = [as_text(schema.scene_feature(g.scene), F.col(g.item)).alias(g.scene) for g in negatives.group]
    if negatives.open_hours is None:
        return pois.select(*keys, "poi_id").distinct()
    hours = negatives.open_hours
    hour = F.col("_hour")
    exploded = pois.select(
        *keys,
        "poi_id",
        F.col(hours.item).alias("_hours"),
        F.explode(F.sequence(F.lit(0), F.lit(23))).alias("_hour"),
    )
    value = from_hour(schema.scene_feature(hours.scene), hour)
    return (
        exploded.where(is_open_at(F.col("_hours"), hour))
        .select(*[g.scene for g in negatives.group], value.alias(hours.scene), "poi_id")
        .distinct()
    )


def _kept(mode: str, neg_rate: float, seed: int) -> Column:
    """The logged events a mode samples from: every click and the hash-chosen unclicked ones
    (`impressions`), or the positives alone (`positive_only`)."""
    if mode == "positive_only":
        return F.col("clicked") == 1
    return (F.col("clicked") == 1) | (uniform(seed, "negative_sample", "event_id") < F.lit(neg_rate))


def sample_impressions(scene: DataFrame, schema: DatasetSchema, neg_rate: float, seed: int) -> DataFrame:
    return scene.where(_kept("impressions", neg_rate, seed)).select(
        F.col("event_id").alias("sample_id"),
        *event_columns(schema),
        F.col("clicked").alias("click"),
        (F.col("clicked") * F.col("ordered")).alias("ctcvr"),
        F.lit(float(neg_rate)).alias("neg_rate"),
        *event_weight(schema),
    )


def number_pool(pool: DataFrame, group_columns: list[str]) -> DataFrame:
    """(group columns, poi_id, _idx): the distinct items of each group numbered 0..n_g-1 by poi_id."""
    items = pool.select(*group_columns, "poi_id").distinct()
    order = (Window.partitionBy(*group_columns) if group_columns else Window).orderBy("poi_id")
    return items.withColumn("_idx", (F.row_number().over(order) - 1).cast("long"))


def _draw_plan(
    positives: DataFrame, numbered: DataFrame, group_columns: list[str], k: int, seed: int
) -> DataFrame:
    """Per positive event: n_g (its group's items), m_e (those the user had a positive with that
    day), the draw count d = min(n_g, k + m_e), the permutation's offset and stride, neg_rate.
    `numbered` is the pool of `number_pool` (distinct items per group)."""
    items = numbered.select(*group_columns, "poi_id")
    sizes = items.groupBy(*group_columns).agg(F.count(F.lit(1)).alias("_n_g"))
    done = positives.select("user_id", "dt", "poi_id").distinct()
    excluded = (
        done.join(items, "poi_id").groupBy("user_id", "dt", *group_columns).agg(F.count(F.lit(1)).alias("_m"))
    )
    events = positives.select("event_id", "user_id", "dt", *group_columns)
    if group_columns:  # one row per group: small next to the events
        events = events.join(F.broadcast(sizes), group_columns, "left")
    else:  # one group of every item: one row
        events = events.crossJoin(F.broadcast(sizes))
    events = events.join(excluded, ["user_id", "dt", *group_columns], "left")
    n_g = F.coalesce(F.col("_n_g"), F.lit(0)).cast("long")
    m = F.coalesce(F.col("_m"), F.lit(0)).cast("long")
    eligible = n_g - m
    prime = F.element_at(
        F.array(*[F.lit(p) for p in STRIDE_PRIMES]),
        (randint(seed, "negative_stride", len(STRIDE_PRIMES), "event_id") + 1).cast("int"),
    )
    has_items = n_g > 0  # pmod by 0 fails under ANSI mode
    return events.select(
        "event_id",
        "user_id",
        "dt",
        *group_columns,
        n_g.alias("_n_g"),
        m.alias("_m"),
        F.least(n_g, F.lit(k) + m).alias("_d"),
        F.when(has_items, randint(seed, "negative_offset", n_g, "event_id")).alias("_offset"),
        F.when(has_items, F.pmod(prime, n_g)).alias("_stride"),
        F.when(eligible > 0, F.least(F.lit(1.0), F.lit(float(k)) / eligible))
        .otherwise(F.lit(1.0))
        .alias("neg_rate"),
    )


def candidate_draws(
    positives: DataFrame, pool: DataFrame, group_columns: list[str], k: int, seed: int
) -> DataFrame:
    """(event_id, user_id, dt, _j, poi_id, neg_rate): the d = min(n_g, k + m_e) distinct items each
    positive draws from its group, index (offset + j * stride) mod n_g for j = 0..d-1, joined to
    the numbered pool on (group columns, index). Rows: sum over events of d, never events x items.

    `positives` has event_id, user_id, dt, poi_id and the group columns; `pool` has the group
    columns and poi_id (an item may sit in several groups); no group columns = one group.
    """
    numbered = number_pool(pool, group_columns)
    plan = _draw_plan(positives, numbered, group_columns, k, seed).where(F.col("_d") > 0)
    j = F.explode(F.sequence(F.lit(0).cast("long"), F.col("_d") - 1)).alias("_j")
    exploded = plan.select(
        "event_id", "user_id", "dt", *group_columns, "_n_g", "_offset", "_stride", "neg_rate", j
    )
    # j < d <= n_g < 2^31 and stride < n_g: offset + j * stride < 2^63, no long overflow
    draws = exploded.withColumn(
        "_idx", F.pmod(F.col("_offset") + F.col("_j") * F.col("_stride"), F.col("_n_g"))
    )
    return draws.join(numbered, [*group_columns, "_idx"]).select(
        "event_id", "user_id", "dt", "_j", "poi_id", "neg_rate"
    )


def draw_negatives(
    positives: DataFrame, pool: DataFrame, group_columns: list[str], k: int, seed: int
) -> DataFrame:
    """(event_id, poi_id, neg_rate): min(k, n) distinct negatives per positive event, n = the items
    of its group that its user had no positive with on that day; neg_rate = min(1, k / n).

    The draws of `candidate_draws` less the user's same-day positives, the first k by j kept.
    """
    done = positives.select("user_id", "dt", "poi_id").distinct()
    kept = candidate_draws(positives, pool, group_columns, k, seed).join(
        done, ["user_id", "dt", "poi_id"], "left_anti"
    )
    rank = F.row_number().over(Window.partitionBy("event_id").orderBy("_j"))
    return kept.withColumn("_rank", rank).where(F.col("_rank") <= k).select("event_id", "poi_id", "neg_rate")


def sample_positive_only(
    scene: DataFrame, pois: DataFrame, schema: DatasetSchema, negatives_per_positive: int, seed: int
) -> DataFrame:
    positives = scene.where(F.col("clicked") == 1)
    group = list(schema.negatives.pool_columns())
    events = positives.select(
        "event_id", "user_id", "dt", "poi_id", *[F.col(value_column(c)).alias(c) for c in group]
    )
    pool = candidate_pool(pois, schema)
    negatives = draw_negatives(events, pool, group, negatives_per_positive, seed)
    rates = negatives.groupBy("event_id").agg(F.max("neg_rate").alias("neg_rate"))
    events = positives.join(rates, "event_id", "left").withColumn(
        "neg_rate", F.coalesce("neg_rate", F.lit(1.0))
    )
    columns = event_columns(schema)
    positive_rows = events.select(
        F.col("event_id").alias("sample_id"),
        *columns,
        F.lit(1).alias("click"),
        F.col("ordered").alias("ctcvr"),
        "neg_rate",
        *event_weight(schema),
    )
    chosen = negatives.select("event_id", F.col("poi_id").alias("_negative_poi"))
    negative_rows = events.join(chosen, "event_id").select(
        F.xxhash64(F.lit("negative"), "event_id", "_negative_poi").alias("sample_id"),
        *[F.col("_negative_poi").alias("poi_id") if c == "poi_id" else F.col(c) for c in columns],
        F.lit(0).alias("click"),
        F.lit(0).alias("ctcvr"),
        "neg_rate",
        *([F.lit(1.0).alias(SAMPLE_WEIGHT)] if schema.events.weight else []),
    )
    return positive_rows.unionByName(negative_rows)


def transform(
    impressions: DataFrame,
    users: DataFrame,
    pois: DataFrame,
    user_stats: DataFrame,
    poi_stats: DataFrame,
    user_poi_stats: DataFrame,
    global_stats: DataFrame,
    *,
    schema: DatasetSchema,
    mode: str,
    neg_rate: float,
    negatives_per_positive: int,
    seed: int,
    test_day_index: int,
    validation_days: int = 0,
    stats_config: stats.StatsConfig,
) -> DataFrame:
    """The sampled CTR table (`sample_columns(schema)`) from the validated log and the stats tables;
    `stats_config` = the settings the stats were computed with (`stats.recorded_config`)."""
    # only the events a mode keeps get their scene, read against the whole log (the late `recent`
    # features come with the statistics); the modes' own filters below then keep them all
    kept = impressions.where(_kept(mode, neg_rate, seed))
    late = late_scene_features(schema)
    scene = with_scene_values(kept, pois, event_scene_features(schema), history=impressions)
    scene = scene.select("*", *[F.col(c).alias(_event_input(c)) for c in _request_inputs(schema)])
    if mode == "impressions":
        sampled = sample_impressions(scene, schema, neg_rate, seed)
    elif mode == "positive_only":
        sampled = sample_positive_only(scene, pois, schema, negatives_per_positive, seed)
    else:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    fields = sample_fields(schema)
    user_fields = users.select("user_id", *[F.col(k).alias(v) for k, v in fields.user_fields.items()])
    poi_fields = pois.select(
        "poi_id",
        *[F.col(k).alias(v) for k, v in fields.item_fields.items()],
        *[value.alias(_item_input(name)) for name, value in _item_inputs(schema).items()],
    )
    days = impressions.agg(F.min("dt").alias("_first_dt"), F.max("dt").alias("_last_dt"))
    # days before the first test day (0 = it is the first test day); validation is the last few
    before_test = _days_before_test(F.col("dt"), schema, test_day_index)
    split = (
        F.when(before_test <= 0, "test").when(before_test <= validation_days, "validation").otherwise("train")
    )
    # the as-of windows and the late scene features run over the narrow distinct (user, poi, day)s,
    # then one join: the sample rows are shuffled once, not once per stats table or feature, and
    # before the users' and items' fields widen them
    statistics = with_recent_values(
        sampled.select("user_id", "poi_id", "dt").distinct(), pois, late, history=impressions
    )
    stored = {stats.USER_STATS: user_stats, stats.POI_STATS: poi_stats, stats.USER_POI_STATS: user_poi_stats}
    for name, (keys, prefix) in stats.ENTITIES.items():
        statistics = stats.as_of(
            statistics,
            stored[name],
            keys,
            prefix,
            stats_config.lookback_days,
            global_stats,
            stats_config.prior_strength,
        )
    statistics = add_scene_columns(statistics, late)
    joined = (
        sampled.join(statistics, ["user_id", "poi_id", "dt"], "left")
        .join(user_fields, "user_id", "left")
        .join(poi_fields, "poi_id", "left")
        .crossJoin(F.broadcast(days))
    )
    filled = joined.select(
        *joined.columns,
        *request_item_columns(schema),
        *[F.xxhash64(F.lit(name), F.col(name)).alias(f"{name}_id") for name in fields.hashed],
        split.alias("split"),
    )
    return filled.select(*sample_columns(schema))


def _days_before_test(day: Column, schema: DatasetSchema, test_day_index: int) -> Column:
    """How many days `day` lies before the first test day (<= 0: a test day), over the one-row
    (_first_dt, _last_dt) of the log."""
    if test_day_index > 0:
        return F.lit(test_day_index - 1) - F.datediff(day, F.col("_first_dt"))
    return F.datediff(F.col("_last_dt"), day) - (schema.events.test_days - 1)


def check_split_days(impressions: DataFrame, schema: DatasetSchema, cfg: SamplesConfig) -> None:
    """Fail up front, naming the setting, when the log leaves no train day (one aggregate row)."""
    first, last = impressions.agg(F.min("dt"), F.max("dt")).first()
    if first is None:
        return
    span = (last - first).days + 1
    test_days = span - cfg.test_day_index + 1 if cfg.test_day_index > 0 else schema.events.test_days
    if span - test_days - cfg.validation_days < 1:
        raise SplitError(
            f"validation_days: the log has {span} days ({first} to {last}); {test_days} test and "
            f"{cfg.validation_days} validation days leave no train day: lower validation_days "
            "(0: no validation split) or test the later days"
        )


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
    figures = {}
    for split in SPLITS:
        r = rows.get(split)
        figures[f"{split}_rows"] = int(r["rows"]) if r else 0
    figures["neg_rate"] = round(sum(r["neg_rate_sum"] for r in rows.values()) / total, 6) if total else None
    for split in SPLITS:
        r = rows.get(split)
        figures[f"{split}_click_rate"] = round(float(r["click_rate"]), 6) if r else None
        figures[f"{split}_ctcvr_rate"] = round(float(r["ctcvr_rate"]), 6) if r else None
    return figures


def run(spark: SparkSession, catalog: TableCatalog, cfg: SamplesConfig, log=print) -> dict:
    """Rebuild samples.ctr in full (a full overwrite: idempotent by construction)."""
    names = (*INPUTS, stats.USER_STATS, stats.POI_STATS, stats.USER_POI_STATS, stats.GLOBAL_STATS)
    versions = {name: catalog.version(spark, name) for name in (*names, SCHEMA_TABLE)}
    schema = read_schema(spark, catalog, versions[SCHEMA_TABLE])
    frames = {name: catalog.read(spark, name, version=versions[name]) for name in names}
    check_split_days(frames["clean.impressions"], schema, cfg)
    stats_config = stats.recorded_config(frames[stats.GLOBAL_STATS])
    samples = transform(
        frames["clean.impressions"],
        frames["clean.users"],
        frames["clean.pois"],
        frames[stats.USER_STATS],
        frames[stats.POI_STATS],
        frames[stats.USER_POI_STATS],
        frames[stats.GLOBAL_STATS],
        schema=schema,
        mode=cfg.mode,
        neg_rate=cfg.neg_rate,
        negatives_per_positive=cfg.negatives_per_positive,
        seed=cfg.seed,
        test_day_index=cfg.test_day_index,
        validation_days=cfg.validation_days,
        stats_config=stats_config,
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
