"""Configuration of the `etl clean` job: vocabularies of the categorical fields, date window."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

from etl.synthetic import vocab


@dataclass(frozen=True)
class Vocabularies:
    """Allowed values of the categorical fields; an empty list accepts any non-empty value.

    Defaults are the synthetic world's (etl/synthetic/vocab.py); set your own for your own logs.
    """

    gender: tuple[str, ...] = vocab.GENDERS
    age_band: tuple[str, ...] = vocab.AGE_BANDS
    device: tuple[str, ...] = vocab.DEVICES  # users.device and impressions.device
    weather: tuple[str, ...] = vocab.WEATHERS
    location_type: tuple[str, ...] = vocab.LOCATION_TYPES
    district_type: tuple[str, ...] = tuple(dict.fromkeys(vocab.DISTRICT_TYPE_OF_LOCATION.values()))

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise ValueError(f"vocab.{f.name} must hold non-empty strings, got {list(values)!r}")


@dataclass(frozen=True)
class CleanConfig:
    vocab: Vocabularies = field(default_factory=Vocabularies)
    ts_tolerance_hours: int = 0  # an event's ts must fall on its dt (UTC day), give or take this
    min_date: str = ""  # "YYYY-MM-DD": earliest accepted dt ("" = no bound)
    max_date: str = ""  # latest accepted dt ("" = no bound)

    def __post_init__(self) -> None:
        if not 0 <= self.ts_tolerance_hours <= 48:
            raise ValueError(f"ts_tolerance_hours must be within 0..48, got {self.ts_tolerance_hours}")
        for key in ("min_date", "max_date"):
            value = getattr(self, key)
            if value:
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"{key} must be a date YYYY-MM-DD or empty, got {value!r}") from None
        if self.min_date and self.max_date and self.min_date > self.max_date:
            raise ValueError(f"min_date {self.min_date} is after max_date {self.max_date}")
