"""A declared slice's text as a Spark Column (core.dataset_schema.SliceText).

Each field is renamed by the slice's `values` (a value renamed to "" is left out), else
formatted by its printf `formats`, else cast to a string; the present fields are joined by the
separator and put into the template. All fields missing = null, so the wrapped slice is left out
of a joined text (etl.tokens.join_wrapped).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

from pyspark.sql import Column
from pyspark.sql import functions as F

from core.dataset_schema import SliceText
from etl.tokens import join_wrapped, wrap


def field_text(spec: SliceText, name: str, column: Column) -> Column:
    """One field's text, null when the value is missing or renamed to ""."""
    text = F.format_string(spec.formats[name], column) if name in spec.formats else column.cast("string")
    if name in spec.values:
        renames = F.create_map(*[F.lit(x) for pair in spec.values[name].items() for x in pair])
        text = F.coalesce(F.element_at(renames, column.cast("string")), text)
    return F.when(column.isNotNull() & (text != ""), text)


def templated(template: str, text: Column) -> Column:
    """`template` with every `{value}` replaced by `text` (null stays null)."""
    pieces: list[Column] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(F.lit(literal))
        if name is not None:
            pieces.append(text)
    return F.concat(*pieces)


def slice_value(spec: SliceText, columns: Mapping[str, Column] | None = None) -> Column:
    """The slice's unwrapped text; a field is `columns[name]` when given, else the column `name`."""
    columns = columns or {}
    parts = [field_text(spec, name, columns.get(name, F.col(name))) for name in spec.fields]
    joined = F.concat_ws(spec.separator, *parts)
    return templated(spec.template, F.when(joined != "", joined))


def wrapped_text(slices: Sequence[SliceText], columns: Mapping[str, Column] | None = None) -> Column:
    """The slices, each wrapped in its tokens, one after another ("" when none is present)."""
    return join_wrapped(*(wrap(s.name, slice_value(s, columns)) for s in slices))
