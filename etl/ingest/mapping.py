"""The ingest mapping: how files exported from another system become the raw tables.

A versioned YAML file (an input of the ingest job, like the files it names), checked strictly:
an unknown key, a wrong type or a column that the dataset schema does not declare is an error
naming the file and the key. Paths are relative to the mapping file's folder (for `format:
table`, `path` is a table name and is kept as written). Example: tests/data/byo/mapping.yaml.

    version: 1
    schema: {...}               # the dataset schema (docs/dataset_schema.md), or a path to its YAML
    users:      {path: users.csv, format: csv, columns: {uid: user_id, ...}, defaults: {device: ios}}
    pois:       {path: pois.csv, csv: {multi_line: true, escape: '"'}, ...}   # CSV options: CsvOptions
    impressions: {...}          # allow_empty: true accepts a source without rows (else an error)

`columns` renames source columns onto the platform's own (`event_id`, `ts`, `user_id`, `poi_id`,
`clicked`, `ordered`, `dt`) and the schema's declared columns; `defaults` gives constants for
declared columns the export lacks.
"""

from __future__ import annotations

import codecs
import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.dataset_schema import DatasetSchema, SchemaError, load_schema_file, parse_schema

MAPPING_VERSION = 1
FORMATS = ("csv", "parquet", "delta", "table")  # table: `path` is a Spark / metastore table name
# raw columns that must come from the source (besides the labels the schema declares)
REQUIRED_SOURCE: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "pois": ("poi_id",),
    "impressions": ("event_id", "user_id", "poi_id", "ts"),
}
# keys of mappings written before the dataset schema, and where they went
_MOVED = {
    "scene_features": "schema.scene_features",
    "user_text_fields": "schema.users.text",
    "item_text_fields": "schema.items.text",
    "positive_only": "schema.events.positive_only",
}
# Python's name of an encoding -> Spark's: Spark 4 reads CSV in these alone unless the session sets
# spark.sql.legacy.javaCharsets=true (then any JDK charset name: cp1252, GBK, GB18030, Shift_JIS, ...)
SPARK_ENCODINGS = {
    "utf-8": "UTF-8",
    "utf-16": "UTF-16",
    "utf-16-be": "UTF-16BE",
    "utf-16-le": "UTF-16LE",
    "utf-32": "UTF-32",
    "iso8859-1": "ISO-8859-1",
    "ascii": "US-ASCII",
}
# filled by the job when the source lacks them: dt from ts, request_id = event_id
DERIVED = {"dt", "request_id"}
LABELS = ("clicked", "ordered")


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV source is parsed (the `csv:` key of a source table). Defaults are Spark's, but a
    header row is expected. Every column is read as a string; the job casts to the raw types."""

    sep: str = ","  # one character
    quote: str = '"'  # one character, or "" for no quoting
    escape: str = "\\"  # escapes a quote inside a quoted value; '"' for RFC 4180 files ("" in a value)
    multi_line: bool = False  # quoted values may hold line breaks
    encoding: str = "UTF-8"  # Spark's name where it has one (SPARK_ENCODINGS), else as written
    header: bool = True  # false: the file has no header row and `names` gives its columns
    names: tuple[str, ...] = ()
    null_value: str = ""  # the text read as null


@dataclass(frozen=True)
class SourceTable:
    """One exported file (or folder of files) and how its columns map to a raw table."""

    path: str  # absolute, or relative to the mapping file (resolved by load_mapping); format table: a name
    format: str = "csv"
    columns: dict[str, str] = field(default_factory=dict)  # source column -> raw column
    defaults: dict[str, Any] = field(default_factory=dict)  # raw column -> constant, when not in the source
    csv: CsvOptions = field(default_factory=CsvOptions)  # format csv only
    allow_empty: bool = False  # true: a source without rows is ingested as an empty table, not refused

    def source_of(self, raw_column: str) -> str:
        """The source column that feeds a raw column (a renamed one, else the same name)."""
        renamed = {raw: src for src, raw in self.columns.items()}
        return renamed.get(raw_column, raw_column)


@dataclass(frozen=True)
class IngestMapping:
    users: SourceTable
    pois: SourceTable
    impressions: SourceTable
    schema: DatasetSchema

    @property
    def positive_only(self) -> bool:
        return self.schema.events.positive_only

    def table(self, name: str) -> SourceTable:
        return getattr(self, name)


_TOP_KEYS = {"users", "pois", "impressions", "schema"}
# delimiter: the deprecated name of csv.sep
_TABLE_KEYS = {"path", "format", "columns", "defaults", "csv", "delimiter", "allow_empty"}
_CSV_KEYS = {"sep", "quote", "escape", "multi_line", "encoding", "header", "names", "null_value"}


def load_mapping(path: str | Path) -> IngestMapping:
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"ingest mapping {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MappingError(f"ingest mapping {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_mapping(data, path)


def parse_mapping(data: Any, path: Path) -> IngestMapping:
    def fail(message: str) -> MappingError:
        return MappingError(f"ingest mapping {path}: {message}")

    if not isinstance(data, dict):
        raise fail("top level must be a mapping")
    data = dict(data)
    if data.pop("version", None) != MAPPING_VERSION:
        raise fail(f"key version must be {MAPPING_VERSION}")
    moved = sorted(set(data) & set(_MOVED))
    if moved:
        raise fail(
            f"key {moved[0]} moved into the dataset schema: declare {_MOVED[moved[0]]} (docs/dataset_schema.md)"
        )
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]} (known: {', '.join(sorted(_TOP_KEYS))})")
    schema = _parse_schema(data.get("schema"), path, fail)
    tables = {}
    for name in ("users", "pois", "impressions"):
        if name not in data:
            raise fail(f"key {name} is required")
        tables[name] = _parse_table(data[name], name, path, schema, fail)
    return IngestMapping(**tables, schema=schema)


def _parse_schema(data: Any, path: Path, fail) -> DatasetSchema:
    """The `schema:` key: the dataset schema inline, or the path of its own YAML file."""
    if data is None:
        raise fail("key schema is required: declare your dataset schema (docs/dataset_schema.md)")
    try:
        if isinstance(data, str):
            schema_file = Path(data) if Path(data).is_absolute() else path.parent / data
            return load_schema_file(schema_file)
        return parse_schema(data, f"ingest mapping {path}: key schema")
    except SchemaError as err:
        raise MappingError(str(err)) from None


def _parse_table(data: Any, name: str, path: Path, schema: DatasetSchema, fail) -> SourceTable:
    if not isinstance(data, dict):
        raise fail(f"key {name} must be a mapping")
    unknown = sorted(set(data) - _TABLE_KEYS)
    if unknown:
        raise fail(f"unknown key {name}.{unknown[0]} (known: {', '.join(sorted(_TABLE_KEYS))})")
    raw_columns = schema.raw_columns(name)
    fmt = data.get("format", "csv")
    if fmt not in FORMATS:
        raise fail(f"key {name}.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = data.get("path")
    if not isinstance(source, str) or not source.strip():
        what = "a table name" if fmt == "table" else "a file or folder path"
        raise fail(f"key {name}.path must be {what}")
    for key in ("csv", "delimiter"):
        if key in data and fmt != "csv":
            raise fail(f"key {name}.{key}: CSV options need format csv, not {fmt}")
    csv = _parse_csv(data.get("csv"), data.get("delimiter"), "delimiter" in data, name, fail)
    allow_empty = data.get("allow_empty", False)
    if not isinstance(allow_empty, bool):
        raise fail(f"key {name}.allow_empty must be true or false, got {allow_empty!r}")
    if "delimiter" in data:
        warnings.warn(
            f"ingest mapping {path}: key {name}.delimiter is deprecated, use {name}.csv.sep",
            FutureWarning,
            stacklevel=2,
        )
    columns = data.get("columns") or {}
    if not isinstance(columns, dict):
        raise fail(f"key {name}.columns must map source column -> raw column")
    for src, raw in columns.items():
        if raw not in raw_columns:
            raise fail(
                f"key {name}.columns.{src}: {raw!r} is not a column of raw.{name}: declare it in the dataset"
                f" schema (known: {', '.join(raw_columns)})"
            )
    targets = list(columns.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise fail(f"key {name}.columns: two source columns map to {twice[0]}")
    if name == "impressions":
        unlabelled = set(LABELS) - set(schema.events.labels())
        labelled = sorted(set(targets) & unlabelled)
        if labelled:
            raise fail(
                f"key {name}.columns.{labelled[0]}: the dataset schema declares no such label"
                " (events.positive_only fills clicked with 1; without events.conversion, ordered = clicked)"
            )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise fail(f"key {name}.defaults must map raw column -> constant")
    for column, value in defaults.items():
        if column not in raw_columns:
            raise fail(f"key {name}.defaults.{column}: not a column of raw.{name}")
        if column in REQUIRED_SOURCE[name]:
            raise fail(f"key {name}.defaults.{column}: a required column cannot have a default")
        if not _fits(value, raw_columns[column]):
            raise fail(f"key {name}.defaults.{column}: {value!r} is not a {raw_columns[column]}")
    if fmt == "table" or "://" in source or Path(source).is_absolute():
        resolved = source
    else:
        resolved = str((path.parent / source).resolve())
    return SourceTable(resolved, fmt, dict(columns), dict(defaults), csv, allow_empty)


def _parse_csv(data: Any, delimiter: Any, has_delimiter: bool, name: str, fail) -> CsvOptions:
    """The `csv:` options of a source table; `delimiter` (a key of the table) is the old name of sep."""
    key = f"{name}.csv"
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise fail(f"key {key} must be a mapping of CSV options ({', '.join(sorted(_CSV_KEYS))})")
    unknown = sorted(set(map(str, data)) - _CSV_KEYS)
    if unknown:
        raise fail(f"unknown key {key}.{unknown[0]} (known: {', '.join(sorted(_CSV_KEYS))})")
    if has_delimiter and "sep" in data:
        raise fail(f"key {name}.delimiter is the deprecated name of {key}.sep: give only {key}.sep")
    defaults = CsvOptions()
    sep_key, sep = (f"{name}.delimiter", delimiter) if has_delimiter else (f"{key}.sep", data.get("sep", ","))
    if not isinstance(sep, str) or len(sep) != 1:
        raise fail(f"key {sep_key} must be one character, got {sep!r}")
    quote = data.get("quote", defaults.quote)
    if not isinstance(quote, str) or len(quote) > 1:
        raise fail(f"key {key}.quote must be one character (or '' for no quoting), got {quote!r}")
    escape = data.get("escape", defaults.escape)
    if not isinstance(escape, str) or len(escape) != 1:
        raise fail(f"key {key}.escape must be one character, got {escape!r}")
    for option in ("multi_line", "header"):
        if not isinstance(data.get(option, False), bool):
            raise fail(f"key {key}.{option} must be true or false, got {data[option]!r}")
    encoding = data.get("encoding", defaults.encoding)
    if not isinstance(encoding, str):
        raise fail(f"key {key}.encoding must be an encoding name, got {encoding!r}")
    try:
        encoding = SPARK_ENCODINGS.get(codecs.lookup(encoding).name, encoding)
    except LookupError:
        raise fail(f"key {key}.encoding: unknown encoding {encoding!r}") from None
    null_value = data.get("null_value", defaults.null_value)
    if not isinstance(null_value, str):
        raise fail(f"key {key}.null_value must be a string, got {null_value!r}")
    header = data.get("header", True)
    names = data.get("names")
    if header and names is not None:
        raise fail(f"key {key}.names: only for a file without a header row ({key}.header: false)")
    if not header:
        if names is None:
            raise fail(f"key {key}.names is required when {key}.header is false (the file's column names)")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise fail(f"key {key}.names must be a list of column names, got {names!r}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise fail(f"key {key}.names: {twice[0]} is named twice")
    return CsvOptions(
        sep=sep,
        quote=quote,
        escape=escape,
        multi_line=data.get("multi_line", False),
        encoding=encoding,
        header=header,
        names=tuple(names or ()),
        null_value=null_value,
    )


def _fits(value: Any, kind: str) -> bool:
    if kind in ("long", "int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "date":
        if isinstance(value, dt.date):
            return True
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            return False
        return True
    return False  # no constant timestamps
