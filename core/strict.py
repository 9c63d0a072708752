"""Strict building of typed frozen dataclasses from plain data (parsed YAML or JSON).

An unknown key or a wrong type is a `ConfigError` that names the dotted key; a dataclass's own
`__post_init__` check becomes one too. Job configs (jobs/config.py) and the dataset schema
(core/dataset_schema.py) are both built here, so every declared object is checked alike.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, label: str) -> Any:
    """Check `value` against the annotation `tp` and build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, label)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{label} key {key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{label} key {key}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, f"{key}.", label)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{label} key {key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]", label) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{label} key {key}: expected a mapping, got {type(value).__name__}")
        key_tp, value_tp = typing.get_args(tp)
        return {
            _coerce(k, key_tp, key, label): _coerce(v, value_tp, f"{key}.{k}", label)
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{label} key {key}: expected int, got bool {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"{label} key {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def build(cls: type[T], data: dict[str, Any], prefix: str = "", label: str = "config") -> T:
    """`cls(**data)` with every key and type checked; `label` starts each message (config, schema)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {label} key {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    values = {name: _coerce(value, hints[name], f"{prefix}{name}", label) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{label} {prefix.rstrip('.') or cls.__name__}: {err}") from None
