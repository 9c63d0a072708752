"""The ingest mapping: how files exported from another system become the raw tables.

A versioned YAML file (an input of the ingest job, like the files it names), checked strictly:
an unknown key, a wrong type or a column that the raw schema lacks is an error naming the file
and the key. Paths are relative to the mapping file's folder. Example: tests/data/byo/mapping.yaml.

    version: 1
    positive_only: false           # true: the log holds only positive events (orders)
    scene_features: [city, weather, ...]      # raw.impressions columns
    user_text_fields: [nickname, ...]         # raw.users columns
    item_text_fields: [name, cuisine, ...]    # raw.pois columns
    users:      {path: users.csv, format: csv, columns: {uid: user_id, ...}, defaults: {device: ios}}
    pois:       {...}
    impressions: {...}
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from etl.core.raw_schema import RAW_SCHEMAS

MAPPING_VERSION = 1
FORMATS = ("csv", "parquet")
# raw columns that must come from the source; everything else may be defaulted or left null
REQUIRED_SOURCE: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "pois": ("poi_id",),
    "impressions": ("event_id", "user_id", "poi_id", "ts"),
}
# filled by the job when absent: dt from ts, request_id = event_id, position 1, labels if positive-only
DERIVED = {"dt", "request_id"}
LABELS = ("clicked", "ordered")


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class SourceTable:
    """One exported file (or folder of files) and how its columns map to a raw table."""

    path: str  # absolute, or relative to the mapping file (resolved by load_mapping)
    format: str = "csv"
    columns: dict[str, str] = field(default_factory=dict)  # source column -> raw column
    defaults: dict[str, Any] = field(default_factory=dict)  # raw column -> constant, when not in the source
    delimiter: str = ","  # csv only

    def source_of(self, raw_column: str) -> str:
        """The source column that feeds a raw column (a renamed one, else the same name)."""
        renamed = {raw: src for src, raw in self.columns.items()}
        return renamed.get(raw_column, raw_column)


@dataclass(frozen=True)
class IngestMapping:
    users: SourceTable
    pois: SourceTable
    impressions: SourceTable
    scene_features: tuple[str, ...] = ()
    user_text_fields: tuple[str, ...] = ()
    item_text_fields: tuple[str, ...] = ()
    positive_only: bool = False

    def table(self, name: str) -> SourceTable:
        return getattr(self, name)


_TOP_KEYS = {
    "users",
    "pois",
    "impressions",
    "scene_features",
    "user_text_fields",
    "item_text_fields",
    "positive_only",
}
_TABLE_KEYS = {"path", "format", "columns", "defaults", "delimiter"}
_FIELD_LISTS = {"scene_features": "impressions", "user_text_fields": "users", "item_text_fields": "pois"}


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
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]} (known: {', '.join(sorted(_TOP_KEYS))})")
    positive_only = data.get("positive_only", False)
    if not isinstance(positive_only, bool):
        raise fail(f"key positive_only must be true or false, got {positive_only!r}")
    tables = {}
    for name in ("users", "pois", "impressions"):
        if name not in data:
            raise fail(f"key {name} is required")
        tables[name] = _parse_table(data[name], name, path.parent, positive_only, fail)
    lists = {}
    for key, table in _FIELD_LISTS.items():
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"key {key} must be a list of column names, got {value!r}")
        for column in value:
            if column not in RAW_SCHEMAS[table].names:
                raise fail(f"key {key}: {column} is not a column of raw.{table}")
        lists[key] = tuple(value)
    return IngestMapping(**tables, **lists, positive_only=positive_only)


def _parse_table(data: Any, name: str, folder: Path, positive_only: bool, fail) -> SourceTable:
    if not isinstance(data, dict):
        raise fail(f"key {name} must be a mapping")
    unknown = sorted(set(data) - _TABLE_KEYS)
    if unknown:
        raise fail(f"unknown key {name}.{unknown[0]} (known: {', '.join(sorted(_TABLE_KEYS))})")
    raw_columns = {f.name: f.dataType.simpleString() for f in RAW_SCHEMAS[name].fields}
    source = data.get("path")
    if not isinstance(source, str) or not source:
        raise fail(f"key {name}.path must be a file or folder path")
    fmt = data.get("format", "csv")
    if fmt not in FORMATS:
        raise fail(f"key {name}.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    delimiter = data.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise fail(f"key {name}.delimiter must be one character, got {delimiter!r}")
    columns = data.get("columns") or {}
    if not isinstance(columns, dict):
        raise fail(f"key {name}.columns must map source column -> raw column")
    for src, raw in columns.items():
        if raw not in raw_columns:
            raise fail(f"key {name}.columns.{src}: {raw!r} is not a column of raw.{name}")
    targets = list(columns.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise fail(f"key {name}.columns: two source columns map to {twice[0]}")
    if positive_only and name == "impressions":
        labelled = sorted(set(targets) & set(LABELS))
        if labelled:
            raise fail(
                f"key {name}.columns.{labelled[0]}: a positive-only log has no label columns (filled with 1)"
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
    resolved = source if "://" in source or Path(source).is_absolute() else str((folder / source).resolve())
    return SourceTable(resolved, fmt, dict(columns), dict(defaults), delimiter)


def _fits(value: Any, kind: str) -> bool:
    if kind in ("bigint", "int"):
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
