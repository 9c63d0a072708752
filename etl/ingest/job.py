"""ingest: your own CSV / Parquet / Delta logs or tables + a YAML mapping -> raw.dataset_schema, raw.users, raw.pois, raw.impressions, raw.ingest_mapping.

Grain: the raw tables' (one row per user, per POI, per impression event; raw.impressions is
partitioned by `dt`, derived from `ts` as the UTC day when the source has no dt). The mapping
(mapping.py) declares the dataset schema (stored as raw.dataset_schema: every later job reads it),
renames source columns and gives constants for declared columns the export lacks; the one-row
raw.ingest_mapping records where the tables came from. Everything is checked before anything is
written: a lakehouse that holds another schema (unless `replace_schema`), an empty or binary file,
a source without rows (unless its `allow_empty`), a missing required or declared column, or a
value that cannot be cast to its raw type is a one-line error naming the file and the column.
Rows that parse but are malformed (unknown ids, values out of range) are left for `etl clean`.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, NumericType, StringType, TimestampType

from core.catalog import TableCatalog
from core.dataset_schema import DatasetSchema
from core.raw_schema import PARTITIONS, TABLES, raw_struct
from core.schema_table import SCHEMA_TABLE, check_replaceable, stored_schema, write_schema
from etl.ingest.mapping import (
    DERIVED,
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
SNIFF_BYTES = 4096  # a file's head: enough to tell text from binary
SNIFF_FILES = 8  # files of a folder whose head is checked: a cheap guard, not a scan
COMPRESSED = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")  # Spark decompresses these by name
NOT_PARQUET = re.compile(r"(\S+) is not a Parquet file")  # Spark's footer error names the file


class IngestError(ValueError):
    pass


@dataclass(frozen=True)
class IngestConfig:
    mapping: str = ""  # path of the ingest mapping YAML (see etl/ingest/mapping.py)
    replace_schema: bool = False  # true: overwrite a lakehouse that holds another dataset schema

    def __post_init__(self) -> None:
        if not self.mapping.strip():
            raise ValueError("mapping: set the path of the ingest mapping YAML (--set mapping=PATH)")


def required_columns(table: str, schema: DatasetSchema) -> tuple[str, ...]:
    """Raw columns that must come from the source file: ids, ts, the declared labels, and every
    declared column (a constant default may stand in for one of those)."""
    own = REQUIRED_SOURCE[table] + (schema.events.labels() if table == "impressions" else ())
    declared = [c for c in schema.raw_columns(table) if c not in own and c not in LABELS and c not in DERIVED]
    return (*own, *declared)


def check_source_columns(
    source_columns: list[str], table: str, source: SourceTable, schema: DatasetSchema
) -> None:
    """A required or declared column, or a column the mapping renames, that the file lacks: one-line error."""
    for raw in required_columns(table, schema):
        column = source.source_of(raw)
        if column not in source_columns and raw not in source.defaults:
            what = "required" if raw in REQUIRED_SOURCE[table] or raw in LABELS else "declared"
            raise IngestError(
                f"ingest: {source.path}: {what} column {column} (-> raw.{table}.{raw}) is missing"
                f" (columns: {', '.join(source_columns)})"
                + (
                    ""
                    if what == "required"
                    else f"; give it a default under {table}.defaults or drop it from the schema"
                )
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


def _fed(df: DataFrame, table: str, source: SourceTable, schema: DatasetSchema) -> dict[str, str]:
    """raw column -> the source column that feeds it (labels the schema does not declare are filled)."""
    undeclared = set(LABELS) - set(schema.events.labels()) if table == "impressions" else set()
    fed = {}
    for name in schema.raw_columns(table):
        if name not in undeclared and source.source_of(name) in df.columns:
            fed[name] = source.source_of(name)
    return fed


def cast_failures(df: DataFrame, table: str, source: SourceTable, schema: DatasetSchema) -> DataFrame:
    """One row: per fed raw column, how many set source values fail the cast, and the smallest one."""
    types = dict(df.dtypes)
    target = {f.name: f.dataType for f in raw_struct(schema, table).fields}
    source_types = {f.name: f.dataType for f in df.schema.fields}
    aggregates = []
    for raw, column in _fed(df, table, source, schema).items():
        if types[column] == target[raw].simpleString():
            continue
        src = F.col(f"`{column}`")
        bad = src.isNotNull() & cast_column(src, source_types[column], target[raw]).isNull()
        aggregates += [
            F.count(F.when(bad, 1)).alias(f"{raw}__bad"),
            F.min(F.when(bad, src.cast("string"))).alias(f"{raw}__example"),
        ]
    return df.agg(*aggregates) if aggregates else df.sparkSession.range(0)


def to_raw(df: DataFrame, table: str, source: SourceTable, schema: DatasetSchema) -> DataFrame:
    """Source rows -> the schema's raw table: renamed, cast, defaults, derived dt / request_id and
    the labels it does not declare (positive-only: clicked = 1; no conversion: ordered = clicked)."""
    source_types = {f.name: f.dataType for f in df.schema.fields}
    fed = _fed(df, table, source, schema)
    columns: dict[str, Column] = {}
    for f in raw_struct(schema, table).fields:
        if f.name in fed:
            value = cast_column(F.col(f"`{fed[f.name]}`"), source_types[fed[f.name]], f.dataType)
        elif table == "impressions" and f.name == "clicked":
            value = F.lit(1)
        elif table == "impressions" and f.name == "ordered" and not schema.events.conversion:
            value = columns["clicked"]
        elif f.name in source.defaults:
            value = F.lit(source.defaults[f.name])
        elif table == "impressions" and f.name == "dt":
            value = F.date_from_unix_date(
                F.floor(F.unix_seconds(columns["ts"]) / SECONDS_PER_DAY).cast("int")
            )
        elif table == "impressions" and f.name == "request_id":
            value = columns["event_id"]
        else:
            value = F.lit(None)
        columns[f.name] = value.cast(f.dataType)
    return df.select(*[value.alias(name) for name, value in columns.items()])


def mapping_row(spark: SparkSession, mapping: IngestMapping, mapping_file: str) -> DataFrame:
    """The one-row raw.ingest_mapping table: where the raw tables came from."""
    return spark.createDataFrame(
        [(mapping.schema.name, mapping_file, {t: mapping.table(t).path for t in TABLES})],
        "dataset string, mapping_file string, sources map<string,string>",
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


def data_files(path: Path) -> list[Path]:
    """The files Spark reads from a file or folder: hidden and _-prefixed ones (_SUCCESS, .crc) are not."""
    if path.is_file():
        return [path]
    hidden = ("_", ".")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(s.startswith(hidden) for s in p.relative_to(path).parts)
    )


def not_csv(table: str, path: str | Path, encoding: str, binary: bool) -> IngestError:
    """A CSV source that is binary, or text in another encoding than the mapping's (with a hint)."""
    hint = "" if binary else f" in {encoding} (if it is one, set {table}.csv.encoding)"
    return IngestError(f"ingest: {table} source {path} is not a CSV file{hint}")


def sniff_csv(table: str, file: Path, head: bytes, encoding: str) -> None:
    """A CSV file's head must decode in its encoding without a NUL: gzip, PNG, Parquet and random bytes do not."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:  # a JDK charset Python lacks: Spark alone can read it
        return
    if name in ("utf-16", "utf-32") and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name += "-be"  # as Java reads them without a byte order mark
    try:
        # final=False: the head may end mid-character
        text = codecs.getincrementaldecoder(name)().decode(head, final=False)
    except UnicodeDecodeError:
        raise not_csv(table, file, encoding, binary=b"\x00" in head) from None
    if "\x00" in text:
        raise not_csv(table, file, encoding, binary=True)


def check_local_files(table: str, source: SourceTable) -> None:
    """An empty or binary local CSV / Parquet file is one line naming it, before Spark reads it (and would echo
    its bytes as column names or in a stack trace). Remote files are left to read_source."""
    files = data_files(Path(source.path))
    if not any(f.stat().st_size for f in files):
        what = "file" if Path(source.path).is_file() else "folder"
        raise IngestError(f"ingest: {table} source {source.path} is an empty {what}")
    for file in files[:SNIFF_FILES]:
        with file.open("rb") as f:
            head = f.read(SNIFF_BYTES)
        if not head and source.format == "parquet":  # Spark skips an empty CSV among others, not a Parquet
            raise IngestError(f"ingest: {table} source {file} is an empty file")
        if not head or file.suffix in COMPRESSED:
            continue
        if source.format == "parquet" and not head.startswith(b"PAR1"):
            raise IngestError(f"ingest: {table} source {file} is not a Parquet file")
        if source.format == "csv":
            sniff_csv(table, file, head, source.csv.encoding)


def read_parquet(spark: SparkSession, table: str, path: str) -> DataFrame:
    """A Parquet source; a file that is not Parquet (remote ones are not sniffed) is named, not dumped."""
    try:
        return spark.read.parquet(path)
    except Exception as err:  # py4j and Spark Connect raise different classes: the text tells
        bad = NOT_PARQUET.search(str(err))
        if bad is None:
            raise
        raise IngestError(f"ingest: {table} source {bad.group(1)} is not a Parquet file") from None


def read_source(spark: SparkSession, source: SourceTable, table: str) -> DataFrame:
    """A source as a DataFrame: a CSV / Parquet file or folder, a Delta table folder, or a table by name."""
    if source.format == "table":
        try:
            exists = spark.catalog.tableExists(source.path)
        except AnalysisException as err:  # not a valid table name
            raise IngestError(f"ingest: table {source.path}: {str(err).strip().splitlines()[0]}") from None
        if not exists:
            raise IngestError(f"ingest: table {source.path} does not exist")
        return spark.read.table(source.path)
    local = "://" not in source.path
    if local and not Path(source.path).exists():
        raise IngestError(f"ingest: source file {source.path} does not exist")
    if local and source.format in ("csv", "parquet"):
        check_local_files(table, source)
    if source.format == "delta":
        if not DeltaTable.isDeltaTable(spark, source.path):
            raise IngestError(f"ingest: {source.path} is not a Delta table (format: delta)")
        return spark.read.format("delta").load(source.path)
    if source.format == "parquet":
        return read_parquet(spark, table, source.path)
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
    if not df.columns:  # a remote empty file (local ones were refused above)
        raise IngestError(f"ingest: {table} source {source.path} is an empty file")
    names = "".join(df.columns)
    if "\x00" in names or "\ufffd" in names:  # a remote binary file read as text: do not echo its bytes
        raise not_csv(table, source.path, encoding, binary="\x00" in names)
    if source.csv.header:
        return df
    if len(df.columns) != len(source.csv.names):
        raise IngestError(
            f"ingest: {source.path}: the file has {len(df.columns)} column(s), csv.names lists"
            f" {len(source.csv.names)} ({', '.join(source.csv.names)})"
        )
    return df.toDF(*source.csv.names)


def check_rows(df: DataFrame, table: str, source: SourceTable) -> None:
    """A source without rows (often an export that failed half-way) is refused unless its allow_empty."""
    if source.allow_empty or not df.isEmpty():  # isEmpty: Spark reads up to one row
        return
    what = "has a header but no rows" if source.format == "csv" and source.csv.header else "has no rows"
    raise IngestError(
        f"ingest: {table} source {source.path} {what} (set {table}.allow_empty: true to ingest it empty)"
    )


def run(spark: SparkSession, catalog: TableCatalog, cfg: IngestConfig, log=print) -> dict:
    """Check the mapping, its schema and every source, then overwrite the raw tables,
    raw.dataset_schema and raw.ingest_mapping."""
    mapping = load_mapping(cfg.mapping)
    schema = mapping.schema
    check_replaceable(stored_schema(spark, catalog), schema, cfg.replace_schema, f"ingest: {cfg.mapping}")
    frames = {}
    for table in TABLES:
        source = mapping.table(table)
        df = read_source(spark, source, table)
        check_source_columns(df.columns, table, source, schema)
        check_rows(df, table, source)
        frames[table] = df
    for table, df in frames.items():
        source = mapping.table(table)
        row = cast_failures(df, table, source, schema).first()
        failures = row.asDict() if row is not None else {}
        for raw, column in _fed(df, table, source, schema).items():
            bad = failures.get(f"{raw}__bad", 0)
            if bad:
                kind = schema.raw_columns(table)[raw]
                raise IngestError(
                    f"ingest: {source.path}: column {column} (-> raw.{table}.{raw}): {bad} value(s) cannot be"
                    f" read as {kind}, e.g. {failures[f'{raw}__example']!r}"
                )
        unused = sorted(set(df.columns) - set(_fed(df, table, source, schema).values()))
        if unused:
            log(
                f"ingest: {source.path}: columns the dataset schema does not declare, ignored: {', '.join(unused)}"
            )
    output_versions, rows = {SCHEMA_TABLE: write_schema(spark, catalog, schema)}, {}
    for table, df in frames.items():
        name = f"raw.{table}"
        output_versions[name] = catalog.write(
            to_raw(df, table, mapping.table(table), schema), name, partition_by=PARTITIONS[table]
        )
        rows[table] = catalog.last_commit_rows(spark, name)
        log(f"ingest: wrote {name}: {rows[table]} rows (version {output_versions[name]})")
    mapping_file = str(Path(cfg.mapping).resolve())
    output_versions[MAPPING_TABLE] = catalog.write(mapping_row(spark, mapping, mapping_file), MAPPING_TABLE)
    return {
        **rows,
        "dataset": schema.name,
        "positive_only": schema.events.positive_only,
        "scene_features": list(schema.scene_names),
        "input_files": {f"raw.{t}": mapping.table(t).path for t in TABLES},
        "input_versions": {},
        "output_versions": output_versions,
    }
