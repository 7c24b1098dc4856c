"""The YAML config (conf/local.yaml, conf/cluster.example.yaml): one section per library; a config
may `extends:` another and name only what it changes.

Each section is the typed settings dataclass of the library that reads it: the Spark side's next to
the code that reads them (``spark`` -> ``rdt_spark.session.SparkConfig``, ...), the Ray side's
together in ``ray_training.settings`` (``model``, ``index``, ``serve``, ...), which imports neither
torch nor Ray, so a job reads its config in well under a second. Every setting has one home.
Every key is checked (``rdt_spark.settings``): an unknown key, a missing section or a value of the
wrong type fails with a ``ConfigError`` that names the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_training.settings import (
    EmbedConfig,
    EventsConfig,
    FusionConfig,
    GBMConfig,
    IndexConfig,
    NotesConfig,
    QueryConfig,
    RayConfig,
    ReportConfig,
    ServeConfig,
    TrainConfig,
)
from rdt_spark.evaluation import EvaluateConfig
from rdt_spark.lake_uris import lake_root
from rdt_spark.pseudonyms import SUBJECT_ID_KINDS, PrivacyConfig
from rdt_spark.session import SparkConfig
from rdt_spark.settings import ConfigError, from_mapping, read_yaml
from rdt_spark.simulator import GenerateConfig
from rdt_spark.states import StatesConfig
from rdt_spark.tasks import load_tasks


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
class Config:
    lake: str
    run_dir: str | None = None  # checkpoints, index, staging, logs; default <lake>/_runs
    spark: SparkConfig = field(default_factory=SparkConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    states: StatesConfig = field(default_factory=StatesConfig)
    model: EventsConfig = field(default_factory=EventsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gbm: GBMConfig = field(default_factory=GBMConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def replace(self, **sections: Any) -> Config:
        """A copy with some sections or fields changed, e.g. ``replace(lake="/tmp/l")``."""
        return dataclasses.replace(self, **sections)


def _absolute(path: str) -> str:
    # Ray workers and Spark executors do not share the driver's working directory.
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _validate(cfg: Config, source: str) -> Config:
    fractions = cfg.tokenize.split_fractions
    if set(fractions) != {"train", "val", "test"} or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(
            f"{source}: 'tokenize.split_fractions' needs train, val and test summing to 1"
        )
    if cfg.tokenize.max_timeline_events <= cfg.model.max_seq_len:
        raise ConfigError(f"{source}: 'tokenize.max_timeline_events' must exceed "
                          f"'model.max_seq_len' ({cfg.model.max_seq_len})")
    if cfg.model.vocab_size:
        raise ConfigError(f"{source}: 'model.vocab_size' comes from gold.vocab; leave it out")
    if cfg.model.d_model % cfg.model.n_heads:
        raise ConfigError(f"{source}: 'model.d_model' must be divisible by 'model.n_heads'")
    for key, value in [
        ("generate.patients", cfg.generate.patients),
        ("train.num_workers", cfg.train.num_workers),
        ("train.batch_size_per_worker", cfg.train.batch_size_per_worker),
        ("notes.concurrency", cfg.notes.concurrency),
        ("fusion.num_workers", cfg.fusion.num_workers),
        ("fusion.batch_size_per_worker", cfg.fusion.batch_size_per_worker),
        ("query.k", cfg.query.k),
        ("serve.max_k", cfg.serve.max_k),
        ("index.num_shards", cfg.index.num_shards),
        ("tokenize.value_bins", cfg.tokenize.value_bins),
        ("tokenize.max_timeline_events", cfg.tokenize.max_timeline_events),
        ("tokenize.meds_subjects_per_shard", cfg.tokenize.meds_subjects_per_shard),
    ]:
        if value < 1:
            raise ConfigError(f"{source}: '{key}' must be at least 1, got {value}")
    if cfg.privacy.meds_subject_ids not in SUBJECT_ID_KINDS:
        raise ConfigError(f"{source}: 'privacy.meds_subject_ids' must be one of "
                          f"{', '.join(SUBJECT_ID_KINDS)}, got {cfg.privacy.meds_subject_ids!r}")
    tasks_file = Path(source).parent / cfg.tokenize.tasks_file
    if not tasks_file.is_file():
        raise ConfigError(f"{source}: 'tokenize.tasks_file' names no file: {tasks_file} "
                          "(relative paths start at the config file's folder)")
    load_tasks(tasks_file)  # fail now, naming the key, rather than mid-job
    try:
        lake = lake_root(cfg.lake)
    except ValueError as err:
        raise ConfigError(f"{source}: 'lake': {err}") from None
    return cfg.replace(lake=lake, run_dir=_absolute(cfg.run_dir or f"{lake}/_runs"),
                       tokenize=dataclasses.replace(cfg.tokenize,
                                                    tasks_file=_absolute(str(tasks_file))))


def _merged(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _read_with_base(path: str | os.PathLike, seen: tuple[str, ...] = ()) -> dict:
    """A config file's mapping; ``extends: other.yaml`` (relative to its folder) starts it from
    that config, so a variant holds only what it changes."""
    data = read_yaml(path, "config file" if not seen else "base config (extends)")
    base = data.pop("extends", None)
    if base is None:
        return data
    base_path = Path(path).parent / str(base)
    if str(base_path.resolve()) in seen + (str(Path(path).resolve()),):
        raise ConfigError(f"{path}: 'extends': {base} extends itself")
    return _merged(_read_with_base(base_path, seen + (str(Path(path).resolve()),)), data)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (and the config it ``extends``), apply dotted-key ``overrides`` and
    validate the result."""
    source = str(path)
    data = _read_with_base(path)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _validate(from_mapping(Config, data, "", source), source)
