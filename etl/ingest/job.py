"""ingest: your own CSV / Parquet / Delta logs or tables + a YAML mapping -> raw.users, raw.pois, raw.impressions, raw.ingest_mapping.

Grain: the raw tables' (one row per user, per POI, per impression event; raw.impressions is
partitioned by `dt`, derived from `ts` as the UTC day when the source has no dt). The mapping
(mapping.py) renames source columns, gives constants for missing optional columns and records
which columns are scene features and user / item text fields in the one-row raw.ingest_mapping.
Every source is checked before anything is written: a missing required column or a value that
cannot be cast to the raw type is a one-line error naming the file and the column. Rows that
parse but are malformed (unknown ids, values out of range) are left for `etl clean`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, NumericType, StringType, TimestampType

from etl.core.catalog import TableCatalog
from etl.core.raw_schema import PARTITIONS, RAW_SCHEMAS, TABLES
from etl.ingest.mapping import (
    LABELS,
    REQUIRED_SOURCE,
    SPARK_ENCODINGS,
    CsvOptions,
    IngestMapping,
    SourceTable,
    load_mapping,
)

MAPPING_TABLE = "raw.ingest_mapping"
JAVA_CHARSETS = "spark.sql.legacy.javaCharsets"  # Spark 4: CSV in any JDK charset, not only SPARK_ENCODINGS
SECONDS_PER_DAY = 86400


class IngestError(ValueError):
    pass


@dataclass(frozen=True)
class IngestConfig:
    mapping: str = ""  # path of the ingest mapping YAML (see etl/ingest/mapping.py)

    def __post_init__(self) -> None:
        if not self.mapping.strip():
            raise ValueError("mapping: set the path of the ingest mapping YAML (--set mapping=PATH)")


def required_columns(table: str, positive_only: bool) -> tuple[str, ...]:
    """Raw columns that must come from the source file."""
    labels = ("clicked",) if table == "impressions" and not positive_only else ()
    return REQUIRED_SOURCE[table] + labels


def check_source_columns(
    source_columns: list[str], table: str, source: SourceTable, positive_only: bool
) -> None:
    """A required column, or a column the mapping renames, that the file lacks: one-line error."""
    for raw in required_columns(table, positive_only):
        column = source.source_of(raw)
        if column not in source_columns:
            raise IngestError(
                f"ingest: {source.path}: required column {column} (-> raw.{table}.{raw}) is missing"
                f" (columns: {', '.join(source_columns)})"
            )
    for column, raw in source.columns.items():
        if column not in source_columns:
            raise IngestError(
                f"ingest: {source.path}: column {column} (-> raw.{table}.{raw}) named in the mapping is missing"
                f" (columns: {', '.join(source_columns)})"
            )


def cast_column(col: Column, source_type: DataType, target: DataType) -> Column:
    """Cast a source column to a raw type; null where the value cannot be read.

    Timestamps: numbers (or digit strings) are epoch seconds; other strings are parsed by Spark
    (ISO 8601; without an offset they are read in the session time zone).
    """
    if isinstance(target, TimestampType):
        if isinstance(source_type, NumericType):
            return F.timestamp_seconds(col.cast("long"))
        if isinstance(source_type, StringType):
            text = F.trim(col)
            return F.when(text.rlike(r"^-?[0-9]+$"), F.timestamp_seconds(text.try_cast("long"))).otherwise(
                text.try_cast(target)
            )
    if isinstance(source_type, StringType) and not isinstance(target, StringType):
        return F.trim(col).try_cast(target)
    return col.try_cast(target)


def _fed(df: DataFrame, table: str, source: SourceTable, positive_only: bool) -> dict[str, str]:
    """raw column -> the source column that feeds it (labels of a positive-only log are filled)."""
    fed = {}
    for name in RAW_SCHEMAS[table].names:
        if positive_only and table == "impressions" and name in LABELS:
            continue
        if source.source_of(name) in df.columns:
            fed[name] = source.source_of(name)
    return fed


def cast_failures(df: DataFrame, table: str, source: SourceTable, positive_only: bool) -> DataFrame:
    """One row: per fed raw column, how many set source values fail the cast, and the smallest one."""
    types = dict(df.dtypes)
    schema = {f.name: f.dataType for f in RAW_SCHEMAS[table].fields}
    source_types = {f.name: f.dataType for f in df.schema.fields}
    aggregates = []
    for raw, column in _fed(df, table, source, positive_only).items():
        if types[column] == schema[raw].simpleString():
            continue
        src = F.col(f"`{column}`")
        bad = src.isNotNull() & cast_column(src, source_types[column], schema[raw]).isNull()
        aggregates += [
            F.count(F.when(bad, 1)).alias(f"{raw}__bad"),
            F.min(F.when(bad, src.cast("string"))).alias(f"{raw}__example"),
        ]
    return df.agg(*aggregates) if aggregates else df.sparkSession.range(0)


def to_raw(df: DataFrame, table: str, source: SourceTable, positive_only: bool) -> DataFrame:
    """Source rows -> the raw schema: renamed, cast, defaults, derived dt / request_id / position."""
    schema = RAW_SCHEMAS[table]
    source_types = {f.name: f.dataType for f in df.schema.fields}
    fed = _fed(df, table, source, positive_only)
    columns = {}
    for f in schema.fields:
        if f.name in fed:
            value = cast_column(F.col(f"`{fed[f.name]}`"), source_types[fed[f.name]], f.dataType)
        elif positive_only and table == "impressions" and f.name in LABELS:
            value = F.lit(1)
        elif f.name in source.defaults:
            value = F.lit(source.defaults[f.name])
        elif table == "impressions" and f.name == "dt":
            value = F.date_from_unix_date(
                F.floor(F.unix_seconds(columns["ts"]) / SECONDS_PER_DAY).cast("int")
            )
        elif table == "impressions" and f.name == "request_id":
            value = columns["event_id"]
        elif table == "impressions" and f.name == "position":
            value = F.lit(1)
        else:
            value = F.lit(None)
        columns[f.name] = value.cast(f.dataType)
    return df.select(*[value.alias(name) for name, value in columns.items()])


def mapping_row(spark: SparkSession, mapping: IngestMapping, mapping_file: str) -> DataFrame:
    """The one-row raw.ingest_mapping table that later jobs read."""
    return spark.createDataFrame(
        [
            (
                list(mapping.scene_features),
                list(mapping.user_text_fields),
                list(mapping.item_text_fields),
                mapping.positive_only,
                mapping_file,
                {t: mapping.table(t).path for t in TABLES},
            )
        ],
        "scene_features array<string>, user_text_fields array<string>, item_text_fields array<string>,"
        " positive_only boolean, mapping_file string, sources map<string,string>",
    )


def csv_reader_options(options: CsvOptions) -> dict[str, str]:
    """The mapping's CSV options as Spark CSV reader options; every column is read as a string."""
    return {
        "sep": options.sep,
        "quote": options.quote,
        "escape": options.escape,
        "multiLine": str(options.multi_line).lower(),
        "encoding": options.encoding,
        "header": str(options.header).lower(),
        "nullValue": options.null_value,
        "inferSchema": "false",
    }


def read_source(spark: SparkSession, source: SourceTable) -> DataFrame:
    """A source as a DataFrame: a CSV / Parquet file or folder, a Delta table folder, or a table by name."""
    if source.format == "table":
        try:
            exists = spark.catalog.tableExists(source.path)
        except AnalysisException as err:  # not a valid table name
            raise IngestError(f"ingest: table {source.path}: {str(err).strip().splitlines()[0]}") from None
        if not exists:
            raise IngestError(f"ingest: table {source.path} does not exist")
        return spark.read.table(source.path)
    if "://" not in source.path and not Path(source.path).exists():
        raise IngestError(f"ingest: source file {source.path} does not exist")
    if source.format == "delta":
        if not DeltaTable.isDeltaTable(spark, source.path):
            raise IngestError(f"ingest: {source.path} is not a Delta table (format: delta)")
        return spark.read.format("delta").load(source.path)
    if source.format == "parquet":
        return spark.read.parquet(source.path)
    encoding = source.csv.encoding
    if encoding not in SPARK_ENCODINGS.values() and spark.conf.get(JAVA_CHARSETS, "false").lower() != "true":
        raise IngestError(
            f"ingest: {source.path}: csv.encoding {encoding} needs the Spark setting {JAVA_CHARSETS}=true"
            f" (without it Spark reads CSV only in {', '.join(SPARK_ENCODINGS.values())})"
        )
    try:
        df = spark.read.options(**csv_reader_options(source.csv)).csv(source.path)
    except IllegalArgumentException as err:
        if "CHARSET" not in str(err):
            raise
        raise IngestError(
            f"ingest: {source.path}: csv.encoding {encoding} is not a charset that Java knows"
        ) from None
    if source.csv.header:
        return df
    if len(df.columns) != len(source.csv.names):
        raise IngestError(
            f"ingest: {source.path}: the file has {len(df.columns)} column(s), csv.names lists"
            f" {len(source.csv.names)} ({', '.join(source.csv.names)})"
        )
    return df.toDF(*source.csv.names)


def run(spark: SparkSession, catalog: TableCatalog, cfg: IngestConfig, log=print) -> dict:
    """Check every source, then overwrite the raw tables and raw.ingest_mapping."""
    mapping = load_mapping(cfg.mapping)
    frames = {}
    for table in TABLES:
        source = mapping.table(table)
        df = read_source(spark, source)
        check_source_columns(df.columns, table, source, mapping.positive_only)
        frames[table] = df
    for table, df in frames.items():
        source = mapping.table(table)
        row = cast_failures(df, table, source, mapping.positive_only).first()
        failures = row.asDict() if row is not None else {}
        for raw, column in _fed(df, table, source, mapping.positive_only).items():
            bad = failures.get(f"{raw}__bad", 0)
            if bad:
                kind = RAW_SCHEMAS[table][raw].dataType.simpleString()
                raise IngestError(
                    f"ingest: {source.path}: column {column} (-> raw.{table}.{raw}): {bad} value(s) cannot be"
                    f" read as {kind}, e.g. {failures[f'{raw}__example']!r}"
                )
        unused = sorted(set(df.columns) - set(_fed(df, table, source, mapping.positive_only).values()))
        if unused:
            log(f"ingest: {source.path}: columns not in the raw schema, ignored: {', '.join(unused)}")
    output_versions, rows = {}, {}
    for table, df in frames.items():
        name = f"raw.{table}"
        output_versions[name] = catalog.write(
            to_raw(df, table, mapping.table(table), mapping.positive_only),
            name,
            partition_by=PARTITIONS[table],
        )
        rows[table] = catalog.last_commit_rows(spark, name)
        log(f"ingest: wrote {name}: {rows[table]} rows (version {output_versions[name]})")
    mapping_file = str(Path(cfg.mapping).resolve())
    output_versions[MAPPING_TABLE] = catalog.write(mapping_row(spark, mapping, mapping_file), MAPPING_TABLE)
    return {
        **rows,
        "positive_only": mapping.positive_only,
        "scene_features": list(mapping.scene_features),
        "user_text_fields": list(mapping.user_text_fields),
        "item_text_fields": list(mapping.item_text_fields),
        "input_files": {f"raw.{t}": mapping.table(t).path for t in TABLES},
        "input_versions": {},
        "output_versions": output_versions,
    }
