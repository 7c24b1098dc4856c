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
    quality = load_config(CONF / "quality20k.yaml")  # extends local.yaml
    assert quality.generate.patients == 20000 and quality.train.epochs == 2
    assert quality.spark.conf["spark.driver.memory"] == "8g"
    assert quality.spark.conf["spark.sql.shuffle.partitions"] == local.spark.conf[
        "spark.sql.shuffle.partitions"]  # a mapping merges key by key
    assert quality.model == local.model and quality.fusion.d_model == local.fusion.d_model


def test_a_config_extends_another_and_overrides_only_what_it_names(tmp_path):
    (tmp_path / "tasks.yaml").write_text((CONF / "tasks.yaml").read_text())
    (tmp_path / "base.yaml").write_text("lake: ./lake\nquery:\n  k: 30\n  exact: true\n"
                                        "index:\n  splits: [train, val]\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\nquery:\n  k: 10\n"
                                           "index:\n  splits: [train]\n")
    cfg = load_config(tmp_path / "variant.yaml")
    assert cfg.query.k == 10 and cfg.query.exact is True
    assert cfg.index.splits == ["train"]  # a list replaces, it does not merge
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nlake: ./lake\n")
    with pytest.raises(ConfigError, match=r"'extends': loop.yaml extends itself"):
        load_config(tmp_path / "loop.yaml")


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
