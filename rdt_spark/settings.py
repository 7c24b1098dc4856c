"""Typed settings from YAML: a mapping becomes a frozen dataclass, checked key by key.

Every library declares its settings as a dataclass (``rdt_spark.tasks.EventWithin`` next to the
code that reads it; the Ray side's in ``ray_training.settings``, ...); ``from_mapping``
builds one from parsed YAML. An unknown key, a missing required key or a value of the wrong type
fails with a ``ConfigError`` that names the file and the dotted key.

Example: ``from_mapping(IndexConfig, {"num_shards": "two"}, "index", "conf/local.yaml")`` raises
``ConfigError("conf/local.yaml: 'index.num_shards' must be int, got 'two'")``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file that does not match its schema; the message names the file and the key."""


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parsed YAML (an empty file is ``{}``); a missing or malformed file names itself."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def checked(value: Any, annotation: Any, key: str, source: str) -> Any:
    """``value`` as the type ``annotation`` names (dataclasses, dicts, lists, unions, scalars)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return checked(value, inner[0], key, source)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {str(k): checked(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [checked(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # Spark conf values such as 8 or 4g are strings to Spark anyway
    if annotation in (int, float, bool, str):
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(f"{source}: '{key}' must be {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {annotation}")


def from_mapping(cls: type[T], data: Any, prefix: str, source: str) -> T:
    """An instance of dataclass ``cls`` from ``data``; ``prefix`` is the dotted key of ``data``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}' (expected one of: {', '.join(fields)})"
        )
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = checked(data[name], hints[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
    return cls(**values)
