"""Configuration of the synthetic food-delivery world (the `generate` job)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from etl.synthetic.vocab import CITIES

MAX_ID = 2**63 - 1  # ids are Spark longs: event_id = request_id x list_length + position - 1


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and the hidden model's strengths. Sizes scale to 10^9 impressions on a cluster."""

    seed: int = 7
    users: int = 3000
    pois: int = 720
    days: int = 8
    impressions_per_day: int = 30000
    list_length: int = 10  # POIs shown per request (list positions 1..list_length)
    start_date: str = "2026-04-06"  # day 1; a Monday in spring, when temperatures vary most
    away_rate: float = 0.08  # share of requests made while visiting another city
    partitions: int = 0  # input partitions of the generated ranges; 0 = Spark's default parallelism
    # skew, for scale tests: user 0 makes this share of the requests (so of the impressions), and
    # POI 0 (a chain's flagship, promoted in every city) takes the first slot of this share x
    # list_length of the lists, so this share of the impressions
    hot_user_share: float = 0.0
    hot_poi_share: float = 0.0
    # hidden click model: base rate and the weight of each effect on the logit
    ctr_base_logit: float = -2.2
    cvr_base_logit: float = -1.8
    collaborative_weight: float = 0.6
    popularity_weight: float = 0.5
    position_weight: float = 0.25
    semantic_weight: float = 1.0
    # the truth table also holds each term of the semantic logit (`semantic_<term>`), for `larr
    # gap`'s per-term oracles; off by default: eight more columns of every impression to write
    semantic_terms: bool = False

    def __post_init__(self) -> None:
        for name in ("users", "pois", "days", "impressions_per_day", "list_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"world.{name} must be positive, got {getattr(self, name)}")
        if self.pois < len(CITIES) * self.list_length:
            raise ValueError(
                f"world.pois must be at least cities x list_length = {len(CITIES) * self.list_length}"
                f" so that every request can show distinct shops, got {self.pois}"
            )
        if not 0.0 <= self.away_rate <= 1.0:
            raise ValueError(f"world.away_rate must be in [0, 1], got {self.away_rate}")
        if not 0.0 <= self.hot_user_share <= 1.0:
            raise ValueError(f"world.hot_user_share must be in [0, 1], got {self.hot_user_share}")
        if not 0.0 <= self.hot_poi_share <= 1.0 / self.list_length:
            raise ValueError(
                f"world.hot_poi_share must be in [0, 1/list_length = {1.0 / self.list_length:g}]: the hot "
                f"POI takes one slot of a list, so at most one impression in {self.list_length}; got "
                f"{self.hot_poi_share}"
            )
        if self.requests * self.list_length + self.list_length > MAX_ID:
            raise ValueError(
                f"world.impressions_per_day: days x impressions_per_day = "
                f"{self.days * self.impressions_per_day:,} impressions overflow the 64-bit event id "
                f"(request id x list_length + position must stay below {MAX_ID:,})"
            )
        try:  # checked here, before Spark starts, not when the first day is built
            dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            raise ValueError(f"world.start_date must be a date YYYY-MM-DD, got {self.start_date!r}") from None

    @property
    def requests(self) -> int:
        return self.days * self.impressions_per_day // self.list_length


@dataclass(frozen=True)
class DirtyConfig:
    """Malformed rows for the cleaning job to catch (nulls, unknown ids, bad times, duplicates)."""

    fraction: float = 0.002

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 0.5:
            raise ValueError(f"dirty.fraction must be in [0, 0.5), got {self.fraction}")


@dataclass(frozen=True)
class GenerateConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    dirty: DirtyConfig = field(default_factory=DirtyConfig)
    test_day: int = 8  # the day whose Bayes-optimal AUC is reported

    def __post_init__(self) -> None:
        if not 1 <= self.test_day <= self.world.days:
            raise ValueError(f"test_day must be within 1..world.days={self.world.days}, got {self.test_day}")
