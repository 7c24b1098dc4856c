"""Keyed pseudonyms: same key same pseudonym, another key another, Spark and Python alike."""

import os
import stat
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from rdt_spark.pseudonyms import (
    KEY_ENV,
    PrivacyConfig,
    PseudonymKey,
    default_key_file,
    pseudonym,
    pseudonym_column,
)
from rdt_spark.settings import ConfigError

KEY = PseudonymKey(b"0123456789abcdef", "test")
OTHER = PseudonymKey(b"another key, 16+ bytes", "test")


def test_same_key_same_pseudonym_another_key_another():
    ids = list(range(1, 2001)) + [2**62, 9_000_000_001]
    first = [pseudonym(i, KEY) for i in ids]
    assert first == [pseudonym(i, KEY) for i in ids]
    assert len(set(first)) == len(ids)
    assert not set(first) & {pseudonym(i, OTHER) for i in ids}
    assert all(0 <= p < 2**63 for p in first) and not set(first) & set(ids)


def test_spark_computes_the_same_pseudonyms_as_python(spark):
    long_key = PseudonymKey(b"k" * 100, "test")  # HMAC hashes a key longer than its block
    ids = [1, 2, 77, 123456789, 2**40 + 3]
    frame = spark.createDataFrame([(i,) for i in ids], "subject_id long")
    for key in (KEY, OTHER, long_key):
        got = dict(frame.select("subject_id", pseudonym_column(F.col("subject_id"), key))
                   .collect())
        assert got == {i: pseudonym(i, key) for i in ids}


def test_key_comes_from_the_environment_first(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, "an environment key of some length")
    key = PrivacyConfig(key_file=str(tmp_path / "absent")).key(str(tmp_path))
    assert key.secret == b"an environment key of some length" and key.source == f"${KEY_ENV}"


def test_key_file_named_in_config_is_read_and_must_exist(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "pseudonym.key"
    path.write_text("a secret of more than sixteen bytes\n")
    assert PrivacyConfig(key_file=str(path)).key("/nowhere").secret == (
        b"a secret of more than sixteen bytes")
    with pytest.raises(ConfigError, match="'privacy.key_file' names no file"):
        PrivacyConfig(key_file=str(tmp_path / "missing.key")).key(str(tmp_path))
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        PrivacyConfig(key_file=str(path)).key(str(tmp_path))


def test_default_key_is_created_once_private_and_kept(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    first = PrivacyConfig().key(str(tmp_path))
    path = default_key_file(str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert PrivacyConfig().key(str(tmp_path)) == first  # the same key on every later run
    assert len(first.secret) >= 32 and first.key_id != KEY.key_id


def test_a_key_never_shows_in_its_repr():
    assert "0123456789abcdef" not in repr(KEY) and KEY.key_id in repr(KEY)


def test_pseudonyms_need_no_spark():
    code = ("import sys; from rdt_spark.pseudonyms import pseudonym, PseudonymKey; "
            "import ray_training.disclosure; "
            "pseudonym(1, PseudonymKey(b'0123456789abcdef', 't')); "
            "sys.exit('pyspark' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
