"""The one registry of keyword slices and their special tokens.

Every piece of text the LLM sees is a sequence of slices, each wrapped in its own pair of special
tokens, e.g. `<POI_name>Aunt Li's Claypot</POI_name>`. The corpus builder (stage 1), the pair
builder (stage 2), the scene dictionary (stage 3) and the tokenizer all take the tokens from here,
so a slice is defined once. A slice's name is the text inside its tokens: `POI_name`,
`user_profile`, `scene_weather`. The stage-2/3 encoders read the hidden state at a closing token.

Wrapping a null text gives null, so `concat_ws` over wrapped slices simply leaves a missing slice
out. Text that itself contains a registry token has it removed before wrapping, so a token in a
shop's introduction can never open or close a slice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

POI, USER, SCENE = "poi", "user", "scene"
SIDES = (POI, USER, SCENE)

# The n = 10 real-time scene features (features.scene_values computes their values).
SCENE_FEATURES: tuple[str, ...] = (
    "city",
    "district_type",
    "time_slot",
    "day_type",
    "weather",
    "temperature_band",
    "season",
    "travel_status",
    "location_type",
    "recent_intent",
)

_POI_SLICES = (
    ("POI_name", "shop name"),
    ("POI_loc", "location: city, district, address"),
    ("POI_intro", "introduction"),
    ("POI_cuisine", "cuisine / category"),
    ("POI_dishes", "main dishes (the menu)"),
    ("POI_tags", "tags"),
    ("POI_hours", "opening hours"),
    ("POI_price", "price level"),
    ("POI_stats", "statistics: rating, monthly sales"),
)
_USER_SLICES = (
    ("user_profile", "nickname, gender, age band, home city, member level"),
    ("user_hist", "recent orders: shop names and their main dishes"),
    ("user_env", "the environments (scenes) of those orders"),
    ("user_price", "click and order price statistics"),
)


@dataclass(frozen=True)
class Slice:
    name: str
    side: str  # poi, user or scene
    open: str
    close: str
    description: str = ""


def _slice(name: str, side: str, description: str) -> Slice:
    return Slice(name=name, side=side, open=f"<{name}>", close=f"</{name}>", description=description)


def scene_slice(feature: str) -> str:
    """The slice name of a scene feature: `weather` -> `scene_weather`."""
    return f"scene_{feature}"


SLICES: tuple[Slice, ...] = (
    *(_slice(name, POI, description) for name, description in _POI_SLICES),
    *(_slice(name, USER, description) for name, description in _USER_SLICES),
    *(_slice(scene_slice(f), SCENE, f"scene feature {f}") for f in SCENE_FEATURES),
)
_BY_NAME = {s.name: s for s in SLICES}
# any opening or closing registry token (used to strip tokens out of free text)
_TOKEN_PATTERN = "</?(?:" + "|".join(re.escape(s.name) for s in SLICES) + ")>"
_TOKEN_RE = re.compile(_TOKEN_PATTERN)
_WRAPPED_RE = re.compile(r"<(?P<name>[A-Za-z_]+)>(?P<text>.*?)</(?P=name)>", re.DOTALL)


class UnknownSliceError(ValueError):
    pass


def get_slice(slice_name: str) -> Slice:
    try:
        return _BY_NAME[slice_name]
    except KeyError:
        raise UnknownSliceError(f"unknown slice {slice_name!r} (not in etl.tokens.SLICES)") from None


def slices_of(side: str) -> tuple[Slice, ...]:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return tuple(s for s in SLICES if s.side == side)


def all_special_tokens() -> list[str]:
    """Every token the tokenizer adds, in registry order (open, close per slice)."""
    return [token for s in SLICES for token in (s.open, s.close)]


def opening_token(slice_name: str) -> str:
    return get_slice(slice_name).open


def closing_token(slice_name: str) -> str:
    return get_slice(slice_name).close


def wrap(slice_name: str, text: Column | str) -> Column:
    """Spark: `<slice>text</slice>`, null when `text` is null (a column or a column name)."""
    s = get_slice(slice_name)
    column = F.col(text) if isinstance(text, str) else text
    return F.concat(F.lit(s.open), F.regexp_replace(column, _TOKEN_PATTERN, ""), F.lit(s.close))


def wrap_text(slice_name: str, text: str | None) -> str | None:
    """Pure Python twin of `wrap`."""
    s = get_slice(slice_name)
    if text is None:
        return None
    return f"{s.open}{_TOKEN_RE.sub('', text)}{s.close}"


def join_wrapped(*wrapped: Column) -> Column:
    """Wrapped slices one after another; null slices are left out."""
    return F.concat_ws("", *wrapped)


def unwrap_text(text: str) -> list[tuple[str, str]]:
    """Split a wrapped text back into (slice name, text) pairs, in order.

    Raises UnknownSliceError for a slice not in the registry and ValueError for text outside
    any slice.
    """
    pairs, position = [], 0
    for match in _WRAPPED_RE.finditer(text):
        if match.start() != position:
            raise ValueError(
                f"text outside any slice at character {position}: {text[position : match.start()]!r}"
            )
        pairs.append((get_slice(match["name"]).name, match["text"]))
        position = match.end()
    if position != len(text):
        raise ValueError(f"text outside any slice at character {position}: {text[position:]!r}")
    return pairs
