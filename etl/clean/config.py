"""Configuration of the `etl clean` job: vocabulary overrides, date window.

The rules themselves (required fields, ranges, vocabularies, formats) come from the lakehouse's
dataset schema (core/dataset_schema.py); `vocab` only overrides a column's vocabulary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CleanConfig:
    # column -> allowed values, over the dataset schema's; an empty list accepts any non-empty value
    vocab: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ts_tolerance_hours: int = 0  # an event's ts must fall on its dt (UTC day), give or take this
    min_date: str = ""  # "YYYY-MM-DD": earliest accepted dt ("" = no bound)
    max_date: str = ""  # latest accepted dt ("" = no bound)
    # keys held by several valid rows are found first and only their rows ranked; up to this many
    # are broadcast to the rows (8 bytes each), more are met by shuffling the rows (slower)
    broadcast_contested_keys: int = 2_000_000

    def __post_init__(self) -> None:
        for column, values in self.vocab.items():
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise ValueError(f"vocab.{column} must hold non-empty strings, got {list(values)!r}")
        if not 0 <= self.ts_tolerance_hours <= 48:
            raise ValueError(f"ts_tolerance_hours must be within 0..48, got {self.ts_tolerance_hours}")
        for key in ("min_date", "max_date"):
            value = getattr(self, key)
            if value:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"{key} must be a date YYYY-MM-DD or empty, got {value!r}") from None
        if self.broadcast_contested_keys < 0:
            raise ValueError(f"broadcast_contested_keys must be >= 0, got {self.broadcast_contested_keys}")
        if self.min_date and self.max_date and self.min_date > self.max_date:
            raise ValueError(f"min_date {self.min_date} is after max_date {self.max_date}")
