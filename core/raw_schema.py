"""The raw tables: their names, keys and partitions (the platform's), and their columns and types
(a dataset schema's, `core.dataset_schema.DatasetSchema.raw_columns`).

The validated `clean.*` tables have the raw tables' columns and types, minus the rejected rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from core.dataset_schema import DatasetSchema

TABLES: tuple[str, ...] = ("users", "pois", "impressions")
KEYS: dict[str, str] = {"users": "user_id", "pois": "poi_id", "impressions": "event_id"}
PARTITIONS: dict[str, list[str] | None] = {"users": None, "pois": None, "impressions": ["dt"]}
SPARK_TYPES: dict[str, DataType] = {
    "long": LongType(),
    "int": IntegerType(),
    "double": DoubleType(),
    "string": StringType(),
    "boolean": BooleanType(),
    "timestamp": TimestampType(),
    "date": DateType(),
}


def raw_struct(schema: DatasetSchema, table: str, order: Sequence[str] = ()) -> StructType:
    """A raw table's columns as a StructType: those named in `order` first (a DataFrame's own
    column order), then the rest in the schema's order."""
    columns = schema.raw_columns(table)
    names = [c for c in order if c in columns] + [c for c in columns if c not in order]
    return StructType([StructField(name, SPARK_TYPES[columns[name]], True) for name in names])
