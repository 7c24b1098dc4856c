"""Delta tables by name: ``schema.name`` lives at ``<lake>/<schema>/<name>``.

Writes replace the whole table, or the rows of some subjects (``replace_subjects``), in one Delta
commit, so a re-run never duplicates and a killed job leaves the previous version readable.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def table_path(lake: str, name: str) -> str:
    """``table_path("/lake", "silver.events") == "/lake/silver/events"``."""
    schema, _, table = name.partition(".")
    if not schema or not table or "." in table:
        raise ValueError(f"table name must look like 'schema.name', got {name!r}")
    return f"{lake.rstrip('/')}/{schema}/{table}"


def table_exists(spark: SparkSession, lake: str, name: str) -> bool:
    return DeltaTable.isDeltaTable(spark, table_path(lake, name))


def read_table(
    spark: SparkSession, lake: str, name: str, version: int | None = None
) -> DataFrame:
    if not table_exists(spark, lake, name):
        raise FileNotFoundError(
            f"Delta table {name} not found at {table_path(lake, name)}: run the job that writes it"
        )
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(table_path(lake, name))


def write_table(
    df: DataFrame, lake: str, name: str, partition_by: list[str] | None = None
) -> int:
    """Replace table ``name`` with ``df`` atomically; returns the new Delta version."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(table_path(lake, name))
    return table_version(df.sparkSession, lake, name)


def replace_where(df: DataFrame, lake: str, name: str, condition: str) -> int:
    """Replace the rows of table ``name`` matching the SQL ``condition`` (every row of ``df``
    must match it) with ``df`` in one Delta commit; other rows stay. Creates a missing table.

    ``replace_where(cohort, lake, "gold.cohorts", "cohort = 'mtx'")`` replaces cohort mtx only.
    """
    writer = df.write.format("delta").mode("overwrite")
    if table_exists(df.sparkSession, lake, name):
        writer = writer.option("replaceWhere", condition)
    writer.save(table_path(lake, name))
    return table_version(df.sparkSession, lake, name)


def table_version(spark: SparkSession, lake: str, name: str) -> int:
    history = DeltaTable.forPath(spark, table_path(lake, name)).history(1)
    return history.select("version").first()[0]  # small: one row


def replace_subjects(rows: DataFrame, touched: DataFrame, lake: str, name: str) -> int:
    """Replace the rows of the ``touched`` subjects (a frame of ``subject_id``, null allowed)
    in table ``name`` with ``rows``, in one Delta MERGE; other subjects' rows stay untouched.

    One marker row per touched subject deletes that subject's rows (``<=>``, so the null
    subject of rows that name no usable person is a subject too); the new rows, which match no
    marker, are inserted. Returns the new Delta version.
    """
    spark = rows.sparkSession
    markers = touched.select("subject_id").distinct().withColumn("_marker", F.lit(True))
    source = rows.withColumn("_marker", F.lit(False)).unionByName(markers, allowMissingColumns=True)
    (DeltaTable.forPath(spark, table_path(lake, name)).alias("t")
     .merge(source.alias("s"), "s._marker AND t.subject_id <=> s.subject_id")
     .whenMatchedDelete()
     .whenNotMatchedInsert(condition="NOT s._marker",
                           values={c: F.col(f"s.`{c}`") for c in rows.columns})
     .execute())
    return table_version(spark, lake, name)
