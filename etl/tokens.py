"""Keyword slices and their special tokens: how a slice is wrapped, stripped and found.

Every piece of text the LLM sees is a sequence of slices, each wrapped in its own pair of special
tokens, e.g. `<POI_name>Aunt Li's Claypot</POI_name>`. A slice's name is the text inside its
tokens. Which slices a dataset has is declared by its dataset schema (the users' and items' text
slices, the user action slices, and `scene_<feature>` per scene feature);
`etl.text.slices.token_slices(schema)` lists them in the one order the tokenizer gets them, and
the corpus builder (stage 1), the pair builder (stage 2), the scene dictionary (stage 3) and the
trainers all take them from there. The stage-2/3 encoders read the hidden state at a closing token.

Wrapping a null text gives null, so `concat_ws` over wrapped slices simply leaves a missing slice
out. Anything shaped like a slice token (`<name>` or `</name>`) is removed from a text before it
is wrapped, so a tag in a shop's introduction can never open or close a slice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_SLICE_NAME = re.compile(rf"^{_NAME}$")
# any opening or closing token of any slice name: stripped out of free text before wrapping
_TOKEN_PATTERN = rf"</?{_NAME}>"
_TOKEN_RE = re.compile(_TOKEN_PATTERN)
_WRAPPED_RE = re.compile(r"<(?P<name>[A-Za-z_][A-Za-z0-9_]*)>(?P<text>.*?)</(?P=name)>", re.DOTALL)
SCENE_PREFIX = "scene_"


@dataclass(frozen=True)
class Slice:
    name: str
    open: str
    close: str


class UnknownSliceError(ValueError):
    pass


def scene_slice(feature: str) -> str:
    """The slice name of a scene feature: `weather` -> `scene_weather`."""
    return f"{SCENE_PREFIX}{feature}"


def get_slice(slice_name: str) -> Slice:
    if not isinstance(slice_name, str) or not _SLICE_NAME.match(slice_name):
        raise UnknownSliceError(f"bad slice name {slice_name!r} (letters, digits and underscores)")
    return Slice(name=slice_name, open=f"<{slice_name}>", close=f"</{slice_name}>")


def special_tokens(slice_names: Sequence[str]) -> list[str]:
    """Every token a tokenizer gets for a dataset: open, close per slice, in the given order
    (`etl.text.slices.token_slices(schema)`: items', users', user actions', scene features')."""
    if len(set(slice_names)) != len(slice_names):
        raise ValueError(f"slice names repeat: {list(slice_names)}")
    return [token for s in map(get_slice, slice_names) for token in (s.open, s.close)]


def closing_tokens(tokens: Iterable[str]) -> set[str]:
    """Those of `tokens` that close a slice whose opening token is among them too (a tokenizer's
    added tokens: its own special tokens, like `<|im_end|>`, come in no such pair)."""
    known = set(tokens)
    return {t for t in known if is_closing_token(t) and "<" + t[2:] in known}


def is_closing_token(token: str) -> bool:
    """A slice's closing token, `</name>`."""
    return token.startswith("</") and token.endswith(">") and bool(_SLICE_NAME.match(token[2:-1]))


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
    """`text` without anything shaped like a slice token."""
    return _TOKEN_RE.sub("", text or "")


def join_wrapped(*wrapped: Column) -> Column:
    """Wrapped slices one after another; null slices are left out."""
    return F.concat_ws("", *wrapped)


def unwrap_text(text: str) -> list[tuple[str, str]]:
    """Split a wrapped text back into (slice name, text) pairs, in order.

    Raises ValueError for text outside any slice.
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
