"""Ingest is idempotent and incremental: a re-run commits nothing, new rows touch only their patients."""

import datetime as dt

import pytest
from conftest import small_config
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs import ingest
from rdt_spark.lake import read_table, table_path, table_version
from rdt_spark.simulator import GenerateConfig, generate_registry

TABLES = ["silver.events", "silver.rejects", "silver.ingest_state"]


@pytest.fixture(scope="module")
def registry(spark, tmp_path_factory):
    """A folder of OMOP Parquet tables (one folder per table, so rows can be appended) and a lake."""
    root = tmp_path_factory.mktemp("incremental")
    tables, records = generate_registry(spark, GenerateConfig(30, 3, 2, "2016-01-01", "2023-12-31"))
    for name, frame in tables.items():
        if not name.startswith("truth."):  # a registry has no truth tables
            frame.write.parquet(str(root / "source" / name.removeprefix("omop.").replace(".", "_")))
    records.unpersist()
    cfg = small_config(root / "lake", patients=30)
    return cfg, root / "source"


def _run(cfg, folder, full=False):
    return ingest.run(cfg, ingest.Options(source=str(folder), full=full))


def _versions(spark, cfg):
    return {t: table_version(spark, cfg.lake, t) for t in TABLES}


def test_first_run_is_full_and_a_rerun_commits_nothing(spark, registry):
    cfg, folder = registry
    first = _run(cfg, folder)
    assert first["mode"] == "full"
    before = _versions(spark, cfg)
    again = _run(cfg, folder)
    assert again["mode"] == "incremental" and again["touched"] == 0
    assert _versions(spark, cfg) == before
    assert again["tables"] == first["tables"]


def test_new_rows_update_only_the_patients_they_touch(spark, registry):
    cfg, folder = registry
    old = read_table(spark, cfg.lake, "silver.events").cache()
    old.count()
    old_versions = _versions(spark, cfg)
    # A new CRP for patient 5, a new patient 31 with a visit, and a bad row for patient 7.
    measurement = spark.read.parquet(str(folder / "measurement"))
    template = measurement.where(F.col("person_id") == 5).limit(1)
    new_rows = template.withColumn("measurement_id", F.lit(5_099_999).cast("long")) \
        .withColumn("value_as_number", F.lit(42.0)) \
        .withColumn("measurement_datetime", F.lit(dt.datetime(2023, 6, 1, 10))) \
        .unionByName(template.withColumn("measurement_id", F.lit(7_099_999).cast("long"))
                     .withColumn("person_id", F.lit(7).cast("long"))
                     .withColumn("value_as_number", F.lit(-3.0)))
    new_rows.write.mode("append").parquet(str(folder / "measurement"))
    person = spark.read.parquet(str(folder / "person"))
    person.where(F.col("person_id") == 1).withColumn("person_id", F.lit(31).cast("long")) \
        .write.mode("append").parquet(str(folder / "person"))

    result = _run(cfg, folder)

    assert result["mode"] == "incremental" and result["touched"] == 3
    assert all(row["rows_in"] == row["accepted"] + row["rejected"] for row in result["tables"])
    new = read_table(spark, cfg.lake, "silver.events")
    touched = F.col("subject_id").isin(5, 7, 31)
    # Other patients' rows are byte for byte the old ones, down to the run that wrote them.
    assert old.where(~touched).exceptAll(new.where(~touched)).count() == 0
    assert new.where(~touched).exceptAll(old.where(~touched)).count() == 0
    touched_runs = {r[0] for r in new.where(touched).select("ingest_run_id").distinct().collect()}
    assert touched_runs == {result["run_id"]}
    assert new.where(F.col("source_row_id") == 5_099_999).first().numeric_value == 42.0
    assert new.where(F.col("subject_id") == 31).count() == 2  # birth and gender
    rejects = read_table(spark, cfg.lake, "silver.rejects")
    assert rejects.where(F.col("source_row_id") == 7_099_999).first().reason == "impossible_value"
    for name in TABLES:
        history = DeltaTable.forPath(spark, table_path(cfg.lake, name)).history(1).first()
        assert history.operation == "MERGE", name
        assert table_version(spark, cfg.lake, name) == old_versions[name] + 1
    old.unpersist()


def test_full_run_rebuilds_the_same_rows(spark, registry):
    cfg, folder = registry
    incremental = read_table(spark, cfg.lake, "silver.events").drop("ingest_run_id").cache()
    incremental.count()
    assert _run(cfg, folder, full=True)["mode"] == "full"
    full = read_table(spark, cfg.lake, "silver.events").drop("ingest_run_id")
    assert incremental.exceptAll(full).count() == 0 and full.exceptAll(incremental).count() == 0
    incremental.unpersist()
