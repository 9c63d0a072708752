"""The declared real-time scene features of an impression, as text values, and their stable ids.

Input: impressions (the raw/clean log) and items (for `recent` features), and the dataset
schema's scene features (core/dataset_schema.py), read by the caller from the lakehouse.
Output: the impressions with one string column per feature (`scene_<feature>`) and one id column
per feature (`scene_<feature>_id`). Ids are a hash of (feature, value), so the scene dictionary,
the CTR samples and the scoring model agree on them without sharing state.

A feature's value comes from its source (an event column; a derivation from the timestamp; the
item field of the user's latest positive on an earlier day), then its buckets, its value
renames and its default. Derivations by day (weekday, weekend, month) read the event's day `dt`,
the UTC day of `ts`; the hour is the UTC hour of `ts`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.clock import utc_date, utc_hour
from core.dataset_schema import LABELS, PART_OF_DAY_EDGES, PART_OF_DAY_LABELS, Buckets, SceneFeature


def value_column(feature: str) -> str:
    return f"scene_{feature}"


def id_column(feature: str) -> str:
    return f"scene_{feature}_id"


def scene_columns(features: Sequence[SceneFeature]) -> list[str]:
    """The value columns, then the id columns, in declared order."""
    return [value_column(f.name) for f in features] + [id_column(f.name) for f in features]


def scene_id(feature: str | Column, value: Column) -> Column:
    """Stable 64-bit id of a (feature, value) pair."""
    feature_col = F.lit(feature) if isinstance(feature, str) else feature
    return F.xxhash64(feature_col, value)


def bucketed(value: Column, buckets: Buckets) -> Column:
    """The label of a numeric value's bucket (null stays null)."""
    labelled = F.when(value < F.lit(buckets.edges[0]), F.lit(buckets.labels[0]))
    for edge, label in zip(buckets.edges[1:], buckets.labels[1:-1], strict=True):
        labelled = labelled.when(value < F.lit(edge), F.lit(label))
    return F.when(value.isNotNull(), labelled.otherwise(F.lit(buckets.labels[-1])))


def derived(derive: str, ts: Column, day: Column) -> Column:
    """A derivation (core.dataset_schema.DERIVATIONS) of an event time and its day."""
    hour = utc_hour(ts)
    return {
        "hour": lambda: hour,
        "part_of_day": lambda: bucketed(hour, Buckets(PART_OF_DAY_EDGES, PART_OF_DAY_LABELS)),
        "weekday": lambda: F.date_format(day, "EEEE"),
        "weekend": lambda: F.when(F.dayofweek(day).isin(1, 7), "weekend").when(day.isNotNull(), "weekday"),
        "month": lambda: F.month(day),
    }[derive]()


def as_text(feature: SceneFeature, raw: Column) -> Column:
    """A source value -> the feature's text value: buckets, then renames, then the default."""
    value = bucketed(raw, feature.buckets) if feature.buckets is not None else raw.cast("string")
    if feature.values:
        renames = F.create_map(*[F.lit(x) for pair in feature.values.items() for x in pair])
        value = F.coalesce(F.element_at(renames, value), value)
    if feature.default:
        value = F.coalesce(value, F.lit(feature.default))
    return value


def from_hour(feature: SceneFeature, hour: Column) -> Column:
    """The value of an hour-derived feature at a given hour (0-23): for availability by hour."""
    if feature.derive not in ("hour", "part_of_day") or feature.column:
        raise ValueError(f"scene feature {feature.name} is not derived from the event hour")
    raw = hour if feature.derive == "hour" else bucketed(hour, Buckets(PART_OF_DAY_EDGES, PART_OF_DAY_LABELS))
    return as_text(feature, raw)


def recent_values(
    impressions: DataFrame, items: DataFrame, feature: SceneFeature, events: DataFrame | None = None
) -> DataFrame:
    """(user_id, dt) -> the `recent` item field of the user's latest positive on an earlier day,
    for the (user, day)s of `events` (None: of `impressions`, the history read), among others.

    Point in time: a day's value uses only positives of strictly earlier days.
    """
    label = LABELS[feature.recent_label]
    positives = (
        impressions.where(F.col(label) == 1)
        .join(items.select("poi_id", F.col(feature.recent).alias("_field")), "poi_id")
        .groupBy("user_id", "dt")
        # the shops of one request share its ts: ties go to the larger value, not to row order
        .agg(F.max_by("_field", F.struct("ts", "_field")).alias("_last"))
    )
    # the days asked for and the days of positives: a subset of the log need not hold the latter
    days = (impressions if events is None else events).select("user_id", "dt").distinct()
    earlier = Window.partitionBy("user_id").orderBy("dt").rowsBetween(Window.unboundedPreceding, -1)
    return days.join(positives, ["user_id", "dt"], "full").select(
        "user_id", "dt", F.last("_last", ignorenulls=True).over(earlier).alias(_recent(feature))
    )


def scene_value(feature: SceneFeature) -> Column:
    """The text value of a feature that is not `recent`, from an event row's own columns."""
    if feature.recent:
        raise ValueError(f"scene feature {feature.name} is `recent`: it needs the user's earlier events")
    if feature.derive:
        ts = F.col(feature.column) if feature.column else F.col("ts")
        day = utc_date(ts) if feature.column else F.col("dt")
        return as_text(feature, derived(feature.derive, ts, day))
    return as_text(feature, F.col(feature.column))


def _recent(feature: SceneFeature) -> str:
    return f"_recent_{feature.name}"


def with_recent_values(
    rows: DataFrame, items: DataFrame, features: Sequence[SceneFeature], history: DataFrame
) -> DataFrame:
    """`rows` (any rows with user_id and dt) plus `_recent_<feature>` for every `recent` feature,
    from the users' earlier positives in `history`: one join on (user_id, dt) per such feature."""
    for feature in features:
        if feature.recent:
            rows = rows.join(recent_values(history, items, feature, events=rows), ["user_id", "dt"], "left")
    return rows


def add_scene_columns(rows: DataFrame, features: Sequence[SceneFeature]) -> DataFrame:
    """`scene_<feature>` (text value) and `scene_<feature>_id` for `features`, from the rows' own
    columns (a `recent` feature's from its `_recent_<feature>`, dropped here)."""
    for feature in features:
        value = as_text(feature, F.col(_recent(feature))) if feature.recent else scene_value(feature)
        rows = rows.withColumn(value_column(feature.name), value)
    for feature in features:
        rows = rows.withColumn(
            id_column(feature.name), scene_id(feature.name, F.col(value_column(feature.name)))
        )
    return rows.drop(*[_recent(f) for f in features if f.recent])


def with_scene_values(
    impressions: DataFrame,
    items: DataFrame,
    features: Sequence[SceneFeature],
    history: DataFrame | None = None,
) -> DataFrame:
    """Add `scene_<feature>` (text value) and `scene_<feature>_id` for every declared feature.

    A `recent` feature reads the users' earlier positives from `history` (None: `impressions`), so
    a caller may pass only the events it keeps and the whole log as history."""
    history = impressions if history is None else history
    return add_scene_columns(with_recent_values(impressions, items, features, history), features)
