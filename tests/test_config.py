from pathlib import Path

import pytest

from jobs.config import load_config
from rdt_spark.settings import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_shipped_configs_load_and_validate():
    local = load_config(CONF / "local.yaml")
    cluster = load_config(CONF / "cluster.example.yaml")
    assert local.spark.master == "local[*]" and local.ray.address is None
    assert cluster.train.num_workers > 1
    assert Path(local.lake).is_absolute()
    assert local.run_dir == f"{local.lake}/_runs"


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: ./lake\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.epochz'"):
        load_config(bad)


def test_wrong_type_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: ./lake\nquery:\n  k: fifty\n")
    with pytest.raises(ConfigError, match=r"'query.k' must be int"):
        load_config(bad)


def test_missing_lake_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"missing required key 'lake'"):
        load_config(bad)


def test_split_fractions_must_sum_to_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: ./lake\ntokenize:\n  split_fractions: {train: 0.7, val: 0.2, test: 0.2}\n")
    with pytest.raises(ConfigError, match="split_fractions"):
        load_config(bad)


def test_overrides_apply_dotted_keys(tmp_path):
    cfg = load_config(CONF / "local.yaml", {"lake": str(tmp_path), "train.epochs": 2})
    assert cfg.lake == str(tmp_path) and cfg.train.epochs == 2
