"""Item-side texts from the items' declared text slices (the dataset schema's `items.text`).

Stage 1 (the corpus): input = the `role: input` slices, target = the `role: target` slices.
Stage 2 and the embeddings: business = the `contrastive: business` slices (text a of the
item-item pairs), basic = the `contrastive: basic` ones (text b), comprehensive = business then
basic.
Input: rows with the clean.pois columns. An item whose slices are all missing has "" texts.
"""

from __future__ import annotations

from pyspark.sql import Column

from core.dataset_schema import DatasetSchema
from etl.text.slice_text import wrapped_text
from etl.text.slices import BASIC, BUSINESS, INPUT, TARGET, item_slices

COMPREHENSIVE = "comprehensive"
PARTS = {BUSINESS: (BUSINESS,), BASIC: (BASIC,), COMPREHENSIVE: (BUSINESS, BASIC)}


def corpus_text(schema: DatasetSchema, role: str) -> Column:
    """The wrapped slices of one stage-1 role (input or target), in declared order."""
    if role not in (INPUT, TARGET):
        raise ValueError(f"role must be {INPUT} or {TARGET}, got {role!r}")
    return wrapped_text(item_slices(schema, role=role))


def item_text(schema: DatasetSchema, part: str) -> Column:
    """The wrapped slices of one stage-2 part: business, basic or comprehensive."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    return wrapped_text(tuple(s for name in PARTS[part] for s in item_slices(schema, parts=(name,))))
