"""POI-side slice texts: one wrapped text per keyword slice of a POI, and the slice groups that
the corpus (input / target) and the pair builder (business / basic / comprehensive) use.

Input: rows with the clean.pois columns. Every function returns a Spark Column; a null field
leaves its slice out of the joined text.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from etl.tokens import join_wrapped, wrap

PRICE_WORDS = {1: "budget", 2: "moderate", 3: "upscale", 4: "premium"}

# stage 1: x = name + location, y = every other POI slice
POI_INPUT_SLICES = ("POI_name", "POI_loc")
POI_TARGET_SLICES = (
    "POI_intro",
    "POI_cuisine",
    "POI_dishes",
    "POI_tags",
    "POI_hours",
    "POI_price",
    "POI_stats",
)
# stage 2: delivery-business text vs basic-information text
POI_BUSINESS_SLICES = ("POI_name", "POI_loc", "POI_cuisine", "POI_dishes")
POI_BASIC_SLICES = ("POI_intro", "POI_tags")
POI_COMPREHENSIVE_SLICES = POI_BUSINESS_SLICES + POI_BASIC_SLICES


def _if_present(value: Column, text: Column) -> Column:
    return F.when(value.isNotNull(), text)


def _price(level: Column) -> Column:
    words = F.create_map(*[x for k, v in PRICE_WORDS.items() for x in (F.lit(k), F.lit(v))])
    return _if_present(
        level,
        F.concat_ws(
            " ", F.element_at(words, level), F.lit("price, level"), level.cast("string"), F.lit("of 4")
        ),
    )


def _stats(rating: Column, monthly_sales: Column) -> Column:
    return F.concat_ws(
        ", ",
        _if_present(rating, F.format_string("rating %.1f of 5", rating)),
        _if_present(monthly_sales, F.format_string("%d orders a month", monthly_sales)),
    )


def slice_value(slice_name: str) -> Column:
    """The unwrapped text of one POI slice."""
    values = {
        "POI_name": lambda: F.col("name"),
        "POI_loc": lambda: F.concat_ws(", ", "city", "district", "address"),
        "POI_intro": lambda: F.col("introduction"),
        "POI_cuisine": lambda: F.col("cuisine"),
        "POI_dishes": lambda: F.col("main_dishes"),
        "POI_tags": lambda: F.col("tags"),
        "POI_hours": lambda: _if_present(F.col("opening_hours"), F.concat(F.lit("open "), "opening_hours")),
        "POI_price": lambda: _price(F.col("price_level")),
        "POI_stats": lambda: _stats(F.col("rating"), F.col("monthly_sales")),
    }
    if slice_name not in values:
        raise ValueError(f"no POI text builder for slice {slice_name!r}")
    return values[slice_name]()


def poi_text(slice_names: tuple[str, ...]) -> Column:
    """The wrapped slices, in the given order, as one text."""
    return join_wrapped(*(wrap(name, slice_value(name)) for name in slice_names))
