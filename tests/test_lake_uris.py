"""The lake root as a local path, a file:// URI or an object store: one spelling per engine."""

from __future__ import annotations

import pytest
from conftest import ROOT

from jobs.config import load_config
from rdt_spark.lake import read_table, table_path, write_table
from rdt_spark.lake_uris import delta_rs_uri, lake_root, open_delta
from rdt_spark.settings import ConfigError


@pytest.mark.parametrize("given, spark, delta_rs", [
    ("s3://bucket/lake", "s3a://bucket/lake/silver/events", "s3://bucket/lake/silver/events"),
    ("s3a://bucket/lake/", "s3a://bucket/lake/silver/events", "s3://bucket/lake/silver/events"),
    ("file:///data/my%20lake", "/data/my lake/silver/events", "/data/my lake/silver/events"),
    ("file:///data/my lake", "/data/my lake/silver/events", "/data/my lake/silver/events"),
    ("/data/lake/", "/data/lake/silver/events", "/data/lake/silver/events"),
    ("gs://bucket/lake", "gs://bucket/lake/silver/events", "gs://bucket/lake/silver/events"),
])
def test_each_engine_gets_its_spelling_of_the_same_table(given, spark, delta_rs):
    path = table_path(lake_root(given), "silver.events")
    assert path == spark
    assert delta_rs_uri(path) == delta_rs


def test_a_config_lake_is_kept_in_one_spelling_and_a_remote_file_uri_is_refused(tmp_path):
    assert load_config(ROOT / "conf" / "local.yaml", {"lake": "s3://b/l"}).lake == "s3a://b/l"
    with pytest.raises(ConfigError, match="'lake': .*not a host"):
        load_config(ROOT / "conf" / "local.yaml", {"lake": "file://server/share/lake"})


def test_spark_writes_and_delta_rs_reads_a_lake_given_as_a_file_uri_with_a_space(spark, tmp_path):
    folder = tmp_path / "a lake"
    lake = lake_root(folder.as_uri())
    assert lake == str(folder) and "%20" in folder.as_uri()
    write_table(spark.range(5).withColumnRenamed("id", "subject_id"), lake, "gold.things")
    assert read_table(spark, lake, "gold.things").count() == 5
    assert open_delta(table_path(lake, "gold.things")).to_pyarrow_table().num_rows == 5
    assert (folder / "gold" / "things" / "_delta_log").is_dir()
