"""The one registry of keyword slices and their special tokens.

Every piece of text the LLM sees is a sequence of slices, each wrapped in its own pair of special
tokens, e.g. `<POI_name>Aunt Li's Claypot</POI_name>`. The corpus builder (stage 1), the pair
builder (stage 2), the scene dictionary (stage 3) and the tokenizer all take the tokens from here,
so a slice is defined once. A slice's name is the text inside its tokens: `POI_name`,
`user_profile`, `scene_weather`. The stage-2/3 encoders read the hidden state at a closing token.

Scene slices are not listed here: each dataset declares its own scene features (the dataset
schema), and `scene_<feature>` is a slice for any lower-snake-case feature name. The tokens a
tokenizer gets are `special_tokens(scene_features)`: the fixed POI and user slices, then the
declared features' slices.

Wrapping a null text gives null, so `concat_ws` over wrapped slices simply leaves a missing slice
out. Text that itself contains a registry token has it removed before wrapping, so a token in a
shop's introduction can never open or close a slice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

POI, USER, SCENE = "poi", "user", "scene"
SIDES = (POI, USER, SCENE)

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
)
_BY_NAME = {s.name: s for s in SLICES}
_SCENE_SLICE = re.compile(r"^scene_[a-z][a-z0-9_]*$")
# any opening or closing registry token, a scene one of any feature (to strip tokens out of free text)
_TOKEN_PATTERN = "</?(?:" + "|".join(re.escape(s.name) for s in SLICES) + "|scene_[a-z][a-z0-9_]*)>"
_TOKEN_RE = re.compile(_TOKEN_PATTERN)
_WRAPPED_RE = re.compile(r"<(?P<name>[A-Za-z_]+)>(?P<text>.*?)</(?P=name)>", re.DOTALL)


class UnknownSliceError(ValueError):
    pass


def get_slice(slice_name: str) -> Slice:
    if slice_name in _BY_NAME:
        return _BY_NAME[slice_name]
    if _SCENE_SLICE.match(slice_name):
        feature = slice_name.removeprefix("scene_")
        return _slice(slice_name, SCENE, f"scene feature {feature}")
    raise UnknownSliceError(
        f"unknown slice {slice_name!r} (not in etl.tokens.SLICES, nor scene_<feature> of a snake-case feature)"
    )


def scene_slices(scene_features: Sequence[str]) -> tuple[Slice, ...]:
    """The slices of the declared scene features, in declared order."""
    return tuple(get_slice(scene_slice(f)) for f in scene_features)


def slices_of(side: str, scene_features: Sequence[str] = ()) -> tuple[Slice, ...]:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == SCENE:
        return scene_slices(scene_features)
    return tuple(s for s in SLICES if s.side == side)


def special_tokens(scene_features: Sequence[str]) -> list[str]:
    """Every token a tokenizer gets for a dataset: open, close per POI and user slice, then per
    declared scene feature (from the dataset schema)."""
    slices = (*SLICES, *scene_slices(scene_features))
    return [token for s in slices for token in (s.open, s.close)]


def is_closing_token(token: str) -> bool:
    """A registry slice's closing token (a scene one of any feature name)."""
    if not (token.startswith("</") and token.endswith(">")):
        return False
    try:
        get_slice(token[2:-1])
    except UnknownSliceError:
        return False
    return True


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


def strip_tokens(text: str | None) -> str:
    """`text` without any registry special token (a scene one of any feature name)."""
    return _TOKEN_RE.sub("", text or "")


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
