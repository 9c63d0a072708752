"""The validation rules of `etl clean`, as Spark Column expressions, from the dataset schema.

A rule is a pair (reason code, failing condition). The rules of a table are ordered: types,
then required fields, then ranges, vocabularies and formats, then cross-field checks. Required
are the platform's own columns (ids, ts, labels, dt; `request_id` and `position` when the
schema declares them) and the schema's `required`; ranges are the platform's (labels 0..1,
position >= 1) and the schema's `ranges`; vocabularies the schema's, overridden by the config's
`vocab`; the format of declared opening hours (`negatives.open_hours.item`) is checked. The
reference and duplicate checks need joins and windows and live in the job. A row gets exactly
one reason: the code of the first rule it fails (`first_failure`), or null when it passes.

Reason codes:
    bad_type_<col>         a value that cannot be read as the column's type
    missing_<col>          a required field is null (or an empty string)
    out_of_range_<col>     a number, date or timestamp outside its range
    invalid_<col>          a string outside its vocabulary or format
    ordered_without_click  ordered = 1 but clicked = 0
    unknown_user, unknown_poi   an impression whose user / POI is not a valid user / POI
    duplicate_<key>        a second row with the same key (the first by content hash is kept)
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructType

from core.dataset_schema import DatasetSchema, EntitySchema, EventsSchema
from etl.clean.config import CleanConfig

Rule = tuple[str, Column]

SECONDS_PER_DAY = 86400
OWN_REQUIRED: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "pois": ("poi_id",),
    "impressions": ("event_id", "ts", "user_id", "poi_id", "clicked", "ordered", "dt"),
}
# "HH:MM-HH:MM" (closing before opening = past midnight)
OPENING_HOURS = r"^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"


def first_failure(rules: Sequence[Rule]) -> Column:
    """The reason code of the first rule whose condition is true, else null."""
    if not rules:
        return F.lit(None).cast("string")
    return F.coalesce(*[F.when(condition, F.lit(reason)) for reason, condition in rules])


def type_rules(source: StructType, target: StructType) -> list[Rule]:
    """A value that is set in the source but cannot be cast to the target type.

    Only columns whose source type differs get a rule, so typed raw tables pay nothing.
    """
    have = {f.name: f.dataType for f in source.fields}
    return [
        (f"bad_type_{f.name}", F.col(f.name).isNotNull() & F.col(f.name).try_cast(f.dataType).isNull())
        for f in target.fields
        if have[f.name] != f.dataType
    ]


def _declared(schema: DatasetSchema, table: str) -> EntitySchema | EventsSchema:
    return {"users": schema.users, "pois": schema.items, "impressions": schema.events}[table]


def required_columns(schema: DatasetSchema, table: str) -> set[str]:
    required = {*OWN_REQUIRED[table], *_declared(schema, table).required}
    if table == "impressions":
        required |= {c for c in ("request_id", "position") if getattr(schema.events, c)}
    return required


def ranges(schema: DatasetSchema, table: str) -> dict[str, tuple[float | None, float | None]]:
    """Inclusive (low, high) per column; None = unbounded."""
    own = {}
    if table == "impressions":
        own = {"clicked": (0, 1), "ordered": (0, 1)} | (
            {"position": (1, None)} if schema.events.position else {}
        )
    declared = {c: (r.low, r.high) for c, r in _declared(schema, table).ranges.items()}
    return {**declared, **own}


def required_rules(table: str, struct: StructType, schema: DatasetSchema) -> list[Rule]:
    """One rule per required column, in the table's column order."""
    types = {f.name: f.dataType for f in struct.fields}
    required = required_columns(schema, table)
    rules = []
    for name in [f.name for f in struct.fields if f.name in required]:
        col = F.col(name)
        missing = col.isNull() | (F.trim(col) == "") if types[name] == StringType() else col.isNull()
        rules.append((f"missing_{name}", missing))
    return rules


def range_rules(table: str, struct: StructType, schema: DatasetSchema) -> list[Rule]:
    bounds = ranges(schema, table)
    rules = []
    for name, (low, high) in [(f.name, bounds[f.name]) for f in struct.fields if f.name in bounds]:
        col = F.col(name)
        outside = F.lit(False)
        if low is not None:
            outside = outside | (col < F.lit(low))
        if high is not None:
            outside = outside | (col > F.lit(high)) | F.isnan(col.cast("double"))
        rules.append((f"out_of_range_{name}", outside))
    return rules


def vocabulary_rules(table: str, struct: StructType, schema: DatasetSchema, cfg: CleanConfig) -> list[Rule]:
    vocabularies = {**_declared(schema, table).vocabularies}
    vocabularies |= {c: v for c, v in cfg.vocab.items() if c in struct.names}
    rules = []
    for name in [f.name for f in struct.fields if vocabularies.get(f.name)]:
        rules.append((f"invalid_{name}", ~F.col(name).isin(*vocabularies[name])))
    return rules


def format_rules(table: str, schema: DatasetSchema) -> list[Rule]:
    hours = schema.negatives.open_hours
    if table == "pois" and hours is not None:
        return [(f"invalid_{hours.item}", ~F.col(hours.item).rlike(OPENING_HOURS))]
    return []


def event_rules(cfg: CleanConfig) -> list[Rule]:
    """Impressions: the day within the window, ts on its day (UTC, zone-free), order only after a click."""
    rules = []
    if cfg.min_date:
        rules.append(("out_of_range_dt", F.col("dt") < F.lit(cfg.min_date).cast("date")))
    if cfg.max_date:
        rules.append(("out_of_range_dt", F.col("dt") > F.lit(cfg.max_date).cast("date")))
    seconds_into_day = F.unix_seconds("ts") - F.unix_date("dt").cast("long") * SECONDS_PER_DAY
    slack = cfg.ts_tolerance_hours * 3600
    rules.append(
        (
            "out_of_range_ts",
            (seconds_into_day < F.lit(-slack)) | (seconds_into_day >= F.lit(SECONDS_PER_DAY + slack)),
        )
    )
    rules.append(("ordered_without_click", F.col("ordered") > F.col("clicked")))
    return rules


def row_rules(table: str, struct: StructType, schema: DatasetSchema, cfg: CleanConfig) -> list[Rule]:
    """Every single-row rule of a table, in order, over columns already cast to `struct`."""
    rules = required_rules(table, struct, schema) + range_rules(table, struct, schema)
    rules += vocabulary_rules(table, struct, schema, cfg) + format_rules(table, schema)
    if table == "impressions":
        rules += event_rules(cfg)
    return rules
