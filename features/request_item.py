"""Request-item features as Spark column expressions: the dataset schema's `request_item`
derivations of an event's columns and its item's columns (core.dataset_schema.RequestItemFeature).

- `distance_km`: the haversine distance between the event's and the item's (lat, lon) in km,
  earth radius `EARTH_RADIUS_KM`;
- `open_now`: 1.0 when the item's "HH:MM-HH:MM" opening hours (the whole value must match
  `OPENING_HOURS`; close before open = past midnight, equal = all day) include the event's UTC
  minute of day (core.clock.utc_minute), else 0.0.

A null input (missing coordinates, a NaN, unreadable hours, no ts) gives null; `filled` turns it
into `REQUEST_ITEM_FILL` (0.0). The scoring model computes the same in numpy
(training/ctr/request_item.py; tests/training/ctr/test_request_item.py checks they agree).
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column
from pyspark.sql import functions as F

from core.clock import utc_minute
from core.dataset_schema import EARTH_RADIUS_KM, OPENING_HOURS, REQUEST_ITEM_FILL, RequestItemFeature

# the whole value: Java's \z is the very end (its $ also matches before a final line terminator)
HOURS_PATTERN = f"^{OPENING_HOURS}\\z"


def opening_minutes(hours: Column) -> tuple[Column, Column]:
    """(opens, closes) as minutes after midnight; both null when the hours are unreadable."""
    part = lambda i: F.regexp_extract(hours, HOURS_PATTERN, i).try_cast("int")  # noqa: E731
    return part(1) * 60 + part(2), part(3) * 60 + part(4)


def open_at_minute(hours: Column, minute: Column) -> Column:
    """Whether opening hours include a minute of the day (null: unreadable hours or no minute)."""
    return open_between(*opening_minutes(hours), minute)


def open_between(opens: Column, closes: Column, minute: Column) -> Column:
    """Whether a minute of the day lies in [opens, closes) (`opening_minutes`; null: no hours or minute)."""
    return (
        F.when(opens.isNull() | minute.isNull(), F.lit(None).cast("boolean"))
        .when(closes > opens, (minute >= opens) & (minute < closes))
        .when(closes < opens, (minute >= opens) | (minute < closes))
        .otherwise(F.lit(True))
    )


def haversine_km(lat1: Column, lon1: Column, lat2: Column, lon2: Column) -> Column:
    """Great-circle distance in km between two (lat, lon) points in degrees (null: a null or NaN input)."""
    phi1, phi2 = F.radians(lat1.cast("double")), F.radians(lat2.cast("double"))
    dphi = phi2 - phi1
    dlambda = F.radians(lon2.cast("double")) - F.radians(lon1.cast("double"))
    sin_dphi, sin_dlambda = F.sin(dphi / 2), F.sin(dlambda / 2)
    a = sin_dphi * sin_dphi + F.cos(phi1) * F.cos(phi2) * sin_dlambda * sin_dlambda
    root = F.sqrt(a)  # at most 1 but for rounding; null and NaN stay (least skips nulls, NaN sorts last)
    clamped = F.when(~F.isnan(root) & (root > 1.0), F.lit(1.0)).otherwise(root)
    distance = 2 * EARTH_RADIUS_KM * F.asin(clamped)
    return F.nanvl(distance, F.lit(None).cast("double"))


def item_inputs(feature: RequestItemFeature, item: Callable[[str], Column]) -> dict[str, Column]:
    """What a feature reads of its item, by name, to compute once per item before the items are
    joined to the sample rows (`item(c)`: the item's declared column c): coordinates as they are,
    opening hours parsed to their (opens, closes) minutes, so no regex runs per sample row."""
    if feature.derive == "open_now":
        opens, closes = opening_minutes(item(feature.item))
        return {_opens(feature.item): opens, _closes(feature.item): closes}
    return {c: item(c) for c in feature.item_columns}


def _opens(hours: str) -> str:
    return f"{hours}__opens"


def _closes(hours: str) -> str:
    return f"{hours}__closes"


def derived(
    feature: RequestItemFeature, event: Callable[[str], Column], item_input: Callable[[str], Column]
) -> Column:
    """A feature's value (double, null for a missing input); `event(c)` gives the event's declared
    column c (`event("ts")`: the event time), `item_input(name)` the column of one of
    `item_inputs(feature, ...)`."""
    if feature.derive == "distance_km":
        (lat, lon), (item_lat, item_lon) = feature.event, feature.item
        return haversine_km(event(lat), event(lon), item_input(item_lat), item_input(item_lon))
    if feature.derive == "open_now":
        opens, closes = item_input(_opens(feature.item)), item_input(_closes(feature.item))
        return open_between(opens, closes, utc_minute(event("ts"))).cast("double")
    raise ValueError(f"request_item {feature.name}: no derivation {feature.derive!r}")


def filled(value: Column) -> Column:
    return F.coalesce(value, F.lit(REQUEST_ITEM_FILL))
