"""Load and validate the YAML configs under conf/.

Every key is checked against the dataclasses below: an unknown key, a missing section or a
value of the wrong type fails with a ``ConfigError`` that names the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rdt_spark.tasks import TASK_KINDS, TaskSuite


class ConfigError(ValueError):
    """A config file that does not match the schema; the message names the key."""


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "rdt"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None
    num_cpus: int | None = None


@dataclass(frozen=True)
class GenerateConfig:
    patients: int = 2000
    seed: int = 7
    partitions: int = 8
    start_date: str = "2012-01-01"
    extract_date: str = "2025-12-31"


@dataclass(frozen=True)
class TokenizeConfig:
    min_code_count: int = 5  # rarer training codes fold into their vocabulary's [UNK:...]
    value_bins: int = 10  # per-code quantile bins of numeric values
    max_timeline_events: int = 20000  # timed events kept per timeline, the newest (timelines.py)
    split_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2}
    )
    tasks_file: str = "tasks.yaml"  # task definitions; relative to the config file's folder
    meds_subjects_per_shard: int = 10000  # rdt export-meds: subjects per data shard


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    max_seq_len: int = 512


@dataclass(frozen=True)
class TrainConfig:
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class EmbedConfig:
    batch_size: int = 64
    concurrency: int = 1


@dataclass(frozen=True)
class IndexConfig:
    splits: list[str] = field(default_factory=lambda: ["train"])
    num_shards: int = 1
    brute_force_below: int = 20000
    leaves_per_sqrt_n: float = 1.0
    leaves_to_search_fraction: float = 0.1
    reorder: int = 200


@dataclass(frozen=True)
class QueryConfig:
    k: int = 50
    min_cell_size: int = 10
    one_point_per_patient: bool = True


@dataclass(frozen=True)
class Config:
    lake: str
    run_dir: str | None = None  # checkpoints, index, staging; default <lake>/_runs
    spark: SparkConfig = field(default_factory=SparkConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query: QueryConfig = field(default_factory=QueryConfig)

    def replace(self, **sections: Any) -> Config:
        """A copy with some sections or fields changed, e.g. ``replace(lake="/tmp/l")``."""
        return dataclasses.replace(self, **sections)


def _absolute(path: str) -> str:
    # Ray workers and Spark executors do not share the driver's working directory.
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _check(value: Any, annotation: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], key, source)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return {str(k): _check(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # Spark conf values such as 8 or 4g are strings to Spark anyway
    if annotation in (int, float, bool, str):
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(
                f"{source}: '{key}' must be {annotation.__name__}, got {value!r}"
            )
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {annotation}")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
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
            values[name] = _check(data[name], hints[name], key, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
    return cls(**values)


def _read_yaml(path: str | os.PathLike, what: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_tasks(path: str | os.PathLike) -> TaskSuite:
    """Read and validate task definitions (conf/tasks.yaml); errors name the dotted key."""
    source = str(path)
    data = _read_yaml(path, "task file")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '<top>' must be a mapping, got {data!r}")
    unknown = sorted(set(data) - {"drug_classes", "tasks"})
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (expected one of: "
                          "drug_classes, tasks)")
    for key in ("drug_classes", "tasks"):
        if key not in data:
            raise ConfigError(f"{source}: missing required key '{key}'")
    classes = _check(data["drug_classes"], dict[str, list[str]], "drug_classes", source)
    if not isinstance(data["tasks"], dict) or not data["tasks"]:
        raise ConfigError(f"{source}: 'tasks' must be a non-empty mapping of task name to definition")
    tasks = {}
    for name, spec in data["tasks"].items():
        key = f"tasks.{name}"
        if not isinstance(spec, dict) or spec.get("kind") not in TASK_KINDS:
            raise ConfigError(f"{source}: '{key}.kind' must be one of {', '.join(TASK_KINDS)}")
        kind = TASK_KINDS[spec["kind"]]
        tasks[str(name)] = _build(kind, {k: v for k, v in spec.items() if k != "kind"}, key,
                                  source)
        for i, drug_class in enumerate(getattr(tasks[str(name)], "drug_classes", None) or []):
            if drug_class not in classes:
                raise ConfigError(f"{source}: '{key}.drug_classes[{i}]' names no class of "
                                  f"drug_classes: {drug_class!r}")
    return TaskSuite(classes, tasks)


def _validate(cfg: Config, source: str) -> Config:
    fractions = cfg.tokenize.split_fractions
    if set(fractions) != {"train", "val", "test"} or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(
            f"{source}: 'tokenize.split_fractions' needs train, val and test summing to 1"
        )
    if cfg.tokenize.max_timeline_events <= cfg.model.max_seq_len:
        raise ConfigError(f"{source}: 'tokenize.max_timeline_events' must exceed "
                          f"'model.max_seq_len' ({cfg.model.max_seq_len})")
    if cfg.model.d_model % cfg.model.n_heads:
        raise ConfigError(f"{source}: 'model.d_model' must be divisible by 'model.n_heads'")
    for key, value in [
        ("generate.patients", cfg.generate.patients),
        ("train.num_workers", cfg.train.num_workers),
        ("query.k", cfg.query.k),
        ("index.num_shards", cfg.index.num_shards),
        ("tokenize.value_bins", cfg.tokenize.value_bins),
        ("tokenize.max_timeline_events", cfg.tokenize.max_timeline_events),
        ("tokenize.meds_subjects_per_shard", cfg.tokenize.meds_subjects_per_shard),
    ]:
        if value < 1:
            raise ConfigError(f"{source}: '{key}' must be at least 1, got {value}")
    tasks_file = Path(source).parent / cfg.tokenize.tasks_file
    if not tasks_file.is_file():
        raise ConfigError(f"{source}: 'tokenize.tasks_file' names no file: {tasks_file} "
                          "(relative paths start at the config file's folder)")
    load_tasks(tasks_file)  # fail now, naming the key, rather than mid-job
    lake = _absolute(cfg.lake)
    return cfg.replace(lake=lake, run_dir=_absolute(cfg.run_dir or f"{lake}/_runs"),
                       tokenize=dataclasses.replace(cfg.tokenize,
                                                    tasks_file=_absolute(str(tasks_file))))


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config, apply dotted-key ``overrides`` and validate the result."""
    source = str(path)
    data = _read_yaml(path, "config file")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _validate(_build(Config, data, "", source), source)
