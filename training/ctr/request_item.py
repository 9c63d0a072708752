"""Request-item features of raw scoring rows, in numpy: what `etl samples` derives in Spark
(features/request_item.py), with the same constants (core.dataset_schema) and the same semantics.

- `distance_km`: haversine distance in km from the event's (lat, lon) to the item's, earth radius
  EARTH_RADIUS_KM, the terms in Spark's order;
- `open_now`: 1.0 when the item's "HH:MM-HH:MM" hours (the whole value matches OPENING_HOURS;
  close before open = past midnight, equal = all day) include the UTC minute of day of `ts`
  (Spark's `floor((unix_timestamp(ts) % 86400) / 60)`: seconds truncated, remainder of the
  dividend's sign), else 0.0.

A missing input (NaN, None, NaT, unreadable hours) gives NaN; `with_request_item` fills it with
REQUEST_ITEM_FILL as `etl samples` does. A row carries either the feature's column itself or its
inputs (`RequestItemFeature.inputs`: events columns by name, `ts`, items columns as `poi_<c>`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.dataset_schema import EARTH_RADIUS_KM, OPENING_HOURS, REQUEST_ITEM_FILL

HOURS_PATTERN = f"^{OPENING_HOURS}\\Z"  # the whole value, as Spark's ^...\z
_NANOS, _DAY = 1_000_000_000, 86_400


def _numbers(values) -> np.ndarray:
    series = pd.to_numeric(pd.Series(values), errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between (lat, lon) points in degrees (NaN: a missing input)."""
    lat1, lon1, lat2, lon2 = (_numbers(v) for v in (lat1, lon1, lat2, lon2))
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlambda = np.radians(lon2) - np.radians(lon1)
    with np.errstate(invalid="ignore"):  # an infinite coordinate gives NaN, as in Spark
        sin_dphi, sin_dlambda = np.sin(dphi / 2), np.sin(dlambda / 2)
        a = sin_dphi * sin_dphi + np.cos(phi1) * np.cos(phi2) * sin_dlambda * sin_dlambda
        return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def utc_minute(ts) -> np.ndarray:
    """Minute of day in UTC of each time (naive = UTC, as Spark's session; strings in ISO 8601;
    NaN: missing)."""
    ts = pd.Series(ts)
    if ts.dtype == object or pd.api.types.is_string_dtype(ts.dtype):
        times = pd.to_datetime(ts, utc=True, format="ISO8601")
    else:
        times = pd.to_datetime(ts, utc=True)
    missing = times.isna().to_numpy()
    nanos = times.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    nanos = np.where(missing, 0, nanos)
    seconds = np.sign(nanos) * (np.abs(nanos) // _NANOS)  # truncated toward zero, as Spark's
    minute = np.floor(np.fmod(seconds, _DAY) / 60).astype(np.float64)
    return np.where(missing, np.nan, minute)


def open_at_minute(hours, minute) -> np.ndarray:
    """1.0 / 0.0 whether opening hours include a minute of the day (NaN: unreadable or no minute)."""
    text = pd.Series(hours, dtype=object)
    text = text.where(text.map(lambda v: isinstance(v, str)))
    parts = text.str.extract(HOURS_PATTERN).astype(np.float64).to_numpy()
    opens, closes = parts[:, 0] * 60 + parts[:, 1], parts[:, 2] * 60 + parts[:, 3]
    minute = np.asarray(minute, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        open_now = np.where(
            closes > opens,
            (minute >= opens) & (minute < closes),
            np.where(closes < opens, (minute >= opens) | (minute < closes), True),
        ).astype(np.float64)
    return np.where(np.isnan(opens) | np.isnan(minute), np.nan, open_now)


def derive(kind: str, inputs: list) -> np.ndarray:
    """A derivation's values from its input columns in `RequestItemFeature.inputs` order."""
    if kind == "distance_km":
        return haversine_km(*inputs)
    if kind == "open_now":
        ts, hours = inputs
        return open_at_minute(hours, utc_minute(ts))
    raise ValueError(f"no request-item derivation {kind!r}")


def with_request_item(frame: pd.DataFrame, request_item, error=ValueError, source: str = "request"):
    """`frame` plus every request-item column it lacks, derived from its inputs and filled.

    `request_item`: (name, derive, *inputs) per feature (FeatureLayout.request_item)."""
    out = frame
    for name, kind, *inputs in request_item:
        if name in frame.columns:
            continue
        missing = [c for c in inputs if c not in frame.columns]
        if missing:
            raise error(
                f"{source} has no column {name!r} nor {missing[0]!r} to derive it from ({', '.join(inputs)})"
            )
        values = derive(kind, [frame[c] for c in inputs])
        out = out.assign(**{name: np.where(np.isnan(values), REQUEST_ITEM_FILL, values)})
    return out
