"""Read an OMOP CDM extract as it is: ``omop.*`` Delta tables in the lake, or a folder of
Parquet files (one file or folder per table, any case, macOS ``._*`` resource files skipped)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rdt_spark.lake import read_table, table_exists

OMOP_TABLES = ["person", "death", "observation_period", "visit_occurrence",
               "condition_occurrence", "drug_exposure", "measurement", "note", "concept",
               "cdm_source"]


def _lower_columns(df: DataFrame) -> DataFrame:
    return df.select([F.col(f"`{c}`").alias(c.lower()) for c in df.columns])


def read_omop_lake(spark: SparkSession, lake: str) -> dict[str, DataFrame]:
    return {t: _lower_columns(read_table(spark, lake, f"omop.{t}"))
            for t in OMOP_TABLES if table_exists(spark, lake, f"omop.{t}")}


def read_omop_parquet(spark: SparkSession, folder: str) -> dict[str, DataFrame]:
    found = {}
    for entry in sorted(Path(folder).iterdir()):
        name = entry.name.split(".")[0].lower()
        if entry.name.startswith(".") or entry.name.startswith("_") or name not in OMOP_TABLES:
            continue
        if entry.suffix.lower() == ".parquet" or entry.is_dir():
            found[name] = _lower_columns(spark.read.parquet(str(entry)))
    if "person" not in found:
        raise FileNotFoundError(f"{folder}: no person table (person.parquet) in this OMOP extract")
    return found


def extract_time(tables: dict[str, DataFrame]) -> dt.datetime:
    """End of the extract's release day (cdm_source.source_release_date), else now."""
    if "cdm_source" in tables and "source_release_date" in tables["cdm_source"].columns:
        row = tables["cdm_source"].select(F.max("source_release_date")).first()  # small: 1 row
        if row and row[0]:
            return dt.datetime.combine(row[0], dt.time(23, 59, 59))
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
