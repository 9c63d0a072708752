"""raw.dataset_schema: the dataset schema stored beside the data, one row, written by `generate`
and `etl ingest` and read by every later job (never a constant in code).

The row holds the schema as JSON (`DatasetSchema.to_dict`), its name and its format version.
A new ingest whose schema differs from the stored one is refused with the difference, unless
the caller allows the replacement (a new lakehouse, or `--set replace_schema=true`): the raw
tables are rewritten whole in that case, so no table mixes two schemas.
"""

from __future__ import annotations

import json

from pyspark.sql import SparkSession

from core.catalog import TableCatalog
from core.dataset_schema import (
    SCHEMA_VERSION,
    DatasetSchema,
    SchemaError,
    parse_schema,
    schema_difference,
)

SCHEMA_TABLE = "raw.dataset_schema"


class SchemaMismatchError(SchemaError):
    pass


def write_schema(spark: SparkSession, catalog: TableCatalog, schema: DatasetSchema) -> int:
    """Overwrite raw.dataset_schema with `schema`; returns the table's new version."""
    row = (schema.name, SCHEMA_VERSION, json.dumps(schema.to_dict(), sort_keys=True))
    df = spark.createDataFrame([row], "name string, schema_version int, schema_json string")
    return catalog.write(df.coalesce(1), SCHEMA_TABLE)


def stored_schema(
    spark: SparkSession, catalog: TableCatalog, version: int | None = None
) -> DatasetSchema | None:
    """The lakehouse's dataset schema (at `version`, else the latest), or None when no job has
    stored one yet."""
    if not catalog.exists(spark, SCHEMA_TABLE):
        return None
    row = catalog.read(spark, SCHEMA_TABLE, version=version).first()
    if row is None:
        return None
    return parse_schema(json.loads(row["schema_json"]), f"{catalog.location(SCHEMA_TABLE)}")


def read_schema(spark: SparkSession, catalog: TableCatalog, version: int | None = None) -> DatasetSchema:
    """The lakehouse's dataset schema (at `version`, the one a job records among its inputs, else
    the latest); a one-line error when there is none."""
    schema = stored_schema(spark, catalog, version)
    if schema is None:
        raise SchemaError(
            f"lakehouse {catalog.root} has no {SCHEMA_TABLE}: run `larr generate` or `larr etl ingest` first"
            " (a lakehouse written before the dataset schema existed needs one of them re-run)"
        )
    return schema


def check_replaceable(
    stored: DatasetSchema | None, new: DatasetSchema, allow_replace: bool, where: str
) -> None:
    """Refuse to write tables of `new` over a lakehouse of another schema, naming the difference."""
    if stored is None or allow_replace:
        return
    difference = schema_difference(stored, new)
    if difference:
        raise SchemaMismatchError(
            f"{where}: the lakehouse holds dataset {stored.name!r} of another schema ({'; '.join(difference)});"
            " use a new lakehouse, or --set replace_schema=true to rewrite every table with the new one"
        )
