"""Time-of-day helpers that do not depend on the Spark session's time zone."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def utc_hour(ts: Column) -> Column:
    """Hour of day in UTC, whatever the session time zone (epoch seconds are zone-free)."""
    return F.floor((F.unix_timestamp(ts) % 86400) / 3600).cast("int")


def utc_date(ts: Column) -> Column:
    """The UTC day of a timestamp, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_seconds(ts) / 86400).cast("int"))


def utc_minute(ts: Column) -> Column:
    """Minute of day in UTC (0-1439), on the clock of `utc_hour`."""
    return F.floor((F.unix_timestamp(ts) % 86400) / 60).cast("int")
