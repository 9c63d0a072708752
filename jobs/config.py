"""Strict YAML -> typed dataclass loading, with `--set section.key=value` overrides.

The dataclasses beside each job are the source of truth; the YAML files in jobs/ are versioned
instances of them. An unknown key, a missing version or a wrong type is an error that names the
key. Only the entry point calls this module: nothing below jobs/ reads YAML or argv.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.strict import ConfigError, build

CONFIG_VERSION = 1

T = TypeVar("T")
__all__ = ["ConfigError", "default_config_path", "load_config"]


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set expects section.key=value, got {override!r}")
    dotted, raw = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted}: {part} is not a section")
    node[parts[-1]] = _override_value(dotted, raw)


def _override_value(dotted: str, raw: str) -> Any:
    """The YAML value of `--set key=raw`, as one line naming the key when it is not one. A date stays
    the text it was typed as: every date in the configs is a string field (`2014-04-20`)."""
    if not raw.strip():
        return ""
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError) as err:  # ValueError: a date YAML cannot build (2026-13-45)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"--set {dotted}: {raw!r} is not a valid value ({reason})") from None
    return raw.strip() if isinstance(value, dt.date) else value


def load_config(
    cls: type[T], path: str | Path | Traversable | None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Load `path` (or the dataclass defaults when None), apply overrides, validate strictly."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path) if isinstance(path, str) else path
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        version = loaded.pop("version", None)
        if version != CONFIG_VERSION:
            raise ConfigError(f"config file {path}: key version must be {CONFIG_VERSION}, got {version!r}")
        data = loaded
    for override in overrides:
        _apply_override(data, override)
    return build(cls, data)


def default_config_path(job: str) -> Traversable:
    """The job's YAML as a package resource: found inside a wheel or zip on `--py-files` too."""
    return resources.files("jobs") / f"{job}.yaml"
