"""The validation rules of `etl clean`, as Spark Column expressions.

A rule is a pair (reason code, failing condition). The rules of a table are ordered: types,
then required fields, then ranges, vocabularies and formats, then cross-field checks. The
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

from etl.clean.config import CleanConfig
from etl.core.raw_schema import RAW_IMPRESSIONS

Rule = tuple[str, Column]

SECONDS_PER_DAY = 86400
REQUIRED: dict[str, tuple[str, ...]] = {
    "users": ("user_id", "gender", "age_band", "home_city", "device"),
    "pois": ("poi_id", "name", "city", "latitude", "longitude", "price_level", "rating", "monthly_sales"),
    # every impression column but the optional user coordinates
    "impressions": tuple(c for c in RAW_IMPRESSIONS.fieldNames() if c not in ("user_lat", "user_lon")),
}
# inclusive (low, high); None = unbounded
RANGES: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "users": {},
    "pois": {
        "latitude": (-90, 90),
        "longitude": (-180, 180),
        "price_level": (1, 4),
        "rating": (0, 5),
        "monthly_sales": (0, None),
    },
    "impressions": {
        "position": (1, None),
        "temperature_c": (-60, 60),
        "user_lat": (-90, 90),
        "user_lon": (-180, 180),
        "clicked": (0, 1),
        "ordered": (0, 1),
    },
}
VOCABULARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("gender", "age_band", "device"),
    "pois": (),
    "impressions": ("district_type", "location_type", "weather", "device"),
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


def required_rules(table: str, schema: StructType) -> list[Rule]:
    types = {f.name: f.dataType for f in schema.fields}
    rules = []
    for name in REQUIRED[table]:
        col = F.col(name)
        missing = col.isNull() | (F.trim(col) == "") if types[name] == StringType() else col.isNull()
        rules.append((f"missing_{name}", missing))
    return rules


def range_rules(table: str) -> list[Rule]:
    rules = []
    for name, (low, high) in RANGES[table].items():
        col = F.col(name)
        outside = F.lit(False)
        if low is not None:
            outside = outside | (col < F.lit(low))
        if high is not None:
            outside = outside | (col > F.lit(high)) | F.isnan(col.cast("double"))
        rules.append((f"out_of_range_{name}", outside))
    return rules


def vocabulary_rules(table: str, cfg: CleanConfig) -> list[Rule]:
    rules = []
    for name in VOCABULARY_COLUMNS[table]:
        allowed = getattr(cfg.vocab, name)
        if allowed:
            rules.append((f"invalid_{name}", ~F.col(name).isin(*allowed)))
    return rules


def format_rules(table: str) -> list[Rule]:
    if table == "pois":
        return [("invalid_opening_hours", ~F.col("opening_hours").rlike(OPENING_HOURS))]
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


def row_rules(table: str, schema: StructType, cfg: CleanConfig) -> list[Rule]:
    """Every single-row rule of a table, in order, over columns already cast to `schema`."""
    rules = required_rules(table, schema) + range_rules(table) + vocabulary_rules(table, cfg)
    rules += format_rules(table)
    if table == "impressions":
        rules += event_rules(cfg)
    return rules
