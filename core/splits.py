"""The test days of a log, from its data and the dataset schema's declared split (never a date
of the synthetic world): the last `events.test_days` days are the test split, and what pairs,
texts and statistics may see of the history ends before the first of them."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from core.dataset_schema import DatasetSchema


class SplitError(ValueError):
    pass


def first_test_day(impressions: DataFrame, schema: DatasetSchema) -> dt.date:
    """The first day of the test split: the log's last `dt` less `test_days - 1` (one aggregate row)."""
    last = impressions.agg(F.max("dt")).first()[0]
    if last is None:
        raise SplitError("the event log is empty: it has no test day")
    return last - dt.timedelta(days=schema.events.test_days - 1)


def history_end(configured: str, impressions: DataFrame, schema: DatasetSchema) -> str:
    """`configured` (YYYY-MM-DD) when set, else the first test day: history is dt < it."""
    return configured or first_test_day(impressions, schema).isoformat()
