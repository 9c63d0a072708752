"""User-side texts: the profile (the users' declared text slices) and the action texts built from
each user's positives (the dataset schema's `user_actions`): the items of the latest positives,
the scenes they happened in, and statistics of numeric item fields over clicks (and conversions).

Inputs: rows with the clean.users columns; impressions (clean.impressions columns) that the
caller has already restricted to the history window, and items (clean.pois columns).
A positive is a conversion (`ordered`; a log without conversions has ordered = clicked).
No Python loops over rows: histories are a window rank, `collect_list` of structs, `sort_array`
by time and `array_join`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from core.dataset_schema import DatasetSchema, SliceText
from etl.text.slice_text import slice_value, wrapped_text
from etl.text.slices import profile_slices
from etl.tokens import join_wrapped, wrap
from features.scene_values import derived, scene_value

ITEM_SEPARATOR = "; "  # between the items (and the environments) of a history


def profile_text(schema: DatasetSchema) -> Column:
    """The user's wrapped profile slices (clean.users columns)."""
    return wrapped_text(profile_slices(schema))


def environment_columns(schema: DatasetSchema, spec: SliceText) -> dict[str, Column]:
    """Fields of the environment slice that are not plain event columns: a scene feature's text
    value, or a derivation from the event time."""
    features = {f.name: f for f in schema.scene_features}
    event_columns = schema.event_column_types()
    columns = {}
    for name in spec.fields:
        if name in features:
            columns[name] = scene_value(features[name])
        elif name not in event_columns:
            columns[name] = derived(name, F.col("ts"), F.col("dt"))
    return columns


def clicked_events(impressions: DataFrame, items: DataFrame, schema: DatasetSchema) -> DataFrame:
    """The clicked impressions with the item fields the history and statistics slices read."""
    actions = schema.user_actions
    fields = {
        name for spec in (actions.history, actions.statistics) if spec is not None for name in spec.fields
    }
    renamed = [F.col(name).alias(f"_item_{name}") for name in sorted(fields)]
    return impressions.where(F.col("clicked") == 1).join(items.select("poi_id", *renamed), "poi_id")


def recent_positives(clicks: DataFrame, schema: DatasetSchema, last: int) -> DataFrame:
    """user_id -> hist (the items of the last `last` positives, oldest first) and env (their scenes)."""
    actions = schema.user_actions
    latest_first = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("event_id").desc())
    parts = {}
    if actions.history is not None:
        item_columns = {name: F.col(f"_item_{name}") for name in actions.history.fields}
        parts["hist"] = slice_value(actions.history, item_columns)
    if actions.environment is not None:
        parts["env"] = slice_value(actions.environment, environment_columns(schema, actions.environment))
    if not parts:
        return clicks.select("user_id").distinct()
    recent = (
        clicks.where(F.col("ordered") == 1)
        .withColumn("_rank", F.row_number().over(latest_first))
        .where(F.col("_rank") <= last)
        .select("user_id", F.struct("ts", "event_id", *[c.alias(n) for n, c in parts.items()]).alias("o"))
    )
    history = F.sort_array(F.collect_list("o"))  # by ts, then event_id: oldest first
    texts = [
        F.array_join(F.transform("history", _getter(name)), ITEM_SEPARATOR).alias(name) for name in parts
    ]
    return recent.groupBy("user_id").agg(history.alias("history")).select("user_id", *texts)


def _getter(name: str):
    """`o -> o[name]` for F.transform (a default argument would read as Spark's index argument)."""
    return lambda o: o[name]


def _means(spec: SliceText, schema: DatasetSchema, mean: str) -> Column:
    """'mean price level 2.3 of 4, mean rating 4.1 of 5' from `<mean>_<field>` columns."""
    parts = []
    for name in spec.fields:
        value = F.col(f"{mean}_{name}")
        high = schema.items.ranges[name].high if name in schema.items.ranges else None
        of = f" of {high:g}" if high is not None else ""
        label = name.replace("_", " ")
        text = F.format_string(f"mean {label} {spec.formats.get(name, '%.1f')}{of}", value)
        parts.append(F.when(value.isNotNull(), text))
    return F.concat_ws(", ", *parts)


def statistics(clicks: DataFrame, schema: DatasetSchema) -> DataFrame:
    """user_id -> stats: the mean of each statistics field over clicks (and conversions), with counts."""
    spec = schema.user_actions.statistics
    ordered = F.col("ordered") == 1
    aggregates = [F.count("*").alias("clicks"), F.count(F.when(ordered, 1)).alias("orders")]
    for name in spec.fields:
        aggregates.append(F.avg(f"_item_{name}").alias(f"click_{name}"))
        aggregates.append(F.avg(F.when(ordered, F.col(f"_item_{name}"))).alias(f"order_{name}"))
    stats = clicks.groupBy("user_id").agg(*aggregates)
    text = F.concat(
        F.lit("clicked: "), _means(spec, schema, "click"), F.format_string(" over %d clicks", "clicks")
    )
    if schema.events.conversion:
        order_text = F.when(
            F.col("orders") > 0,
            F.concat(
                F.lit("ordered: "),
                _means(spec, schema, "order"),
                F.format_string(" over %d orders", "orders"),
            ),
        ).otherwise(F.lit("no orders"))
        text = F.concat_ws(ITEM_SEPARATOR, text, order_text)
    return stats.select("user_id", text.alias("stats"))


def action_text(schema: DatasetSchema) -> Column:
    """The wrapped action slices from the hist, env and stats columns."""
    actions = schema.user_actions
    slices = [
        wrap(spec.name, F.col(column))
        for spec, column in (
            (actions.history, "hist"),
            (actions.environment, "env"),
            (actions.statistics, "stats"),
        )
        if spec is not None
    ]
    return join_wrapped(*slices)


def user_texts(
    users: DataFrame, impressions: DataFrame, items: DataFrame, schema: DatasetSchema, last: int
) -> DataFrame:
    """One row per user with at least one click in `impressions`:
    user_id, profile_text, action_text, comprehensive_text (all wrapped; "" when empty)."""
    clicks = clicked_events(impressions, items, schema)
    actions = recent_positives(clicks, schema, last)
    if schema.user_actions.statistics is not None:
        actions = statistics(clicks, schema).join(actions, "user_id", "left")
    else:
        actions = clicks.select("user_id").distinct().join(actions, "user_id", "left")
    for column in ("hist", "env", "stats"):
        if column not in actions.columns:
            actions = actions.withColumn(column, F.lit(None).cast("string"))
    profile, action = profile_text(schema), action_text(schema)
    return users.join(actions, "user_id").select(
        "user_id",
        profile.alias("profile_text"),
        action.alias("action_text"),
        F.concat(profile, action).alias("comprehensive_text"),
    )
