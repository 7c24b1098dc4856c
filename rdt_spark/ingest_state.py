"""Which patients an incremental ingest must redo: a fingerprint of each patient's source rows.

Every source row that names a person counts towards that person's fingerprint (its row count
and the sum of its rows' 64-bit hashes); rows that name no usable person share the null subject.
A patient whose fingerprint changed, appeared or vanished is *touched*: only their events and
rejects are recomputed and replaced. Reference data (the concept table, the omics panel) and the
extract date affect every patient, so a change there asks for a full run.

Example: the state {1: (3 rows, f1), 2: (5 rows, f2)} against new fingerprints
{1: (3 rows, f1), 2: (6 rows, f2'), 3: (1 row, f3)} touches subjects 2 and 3.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rdt_spark.columns import union_all
from rdt_spark.ingest import SOURCE_TABLES
from rdt_spark.omop_source import MALFORMED, Source, SourceError, parse_field

REFERENCE_TABLES = ["concept", "ext.omics_genes"]


def row_hash(df: DataFrame, table: str) -> Column:
    """A 64-bit hash of the whole row. Spark's hash skips nulls, so the null pattern is hashed too
    ((a, null) and (null, a) differ)."""
    columns = [F.col(f"`{c}`") for c in df.columns]
    return F.xxhash64(F.lit(table), F.array(*[c.isNull() for c in columns]), *columns)


def _hash_sums(h: Column) -> list[Column]:
    # Two 32-bit halves summed as longs: exact, overflow-free and cheaper than a decimal sum.
    return [F.sum(F.shiftright(h, 32)), F.sum(h.bitwiseAND(0xFFFFFFFF))]


def source_fingerprints(source: Source) -> DataFrame:
    """(subject_id, rows, fingerprint): one row per subject named anywhere in the source."""
    parts = []
    for table in SOURCE_TABLES:
        if table in source.tables:
            df = source.tables[table]
            subject, _ = parse_field(df, "person_id", "long", table)
            parts.append(df.select(subject.alias("subject_id"), row_hash(df, table).alias("h")))
    high, low = _hash_sums(F.col("h"))
    return union_all(parts).groupBy("subject_id").agg(
        F.count("*").alias("rows"), F.concat_ws(":", high, low).alias("fingerprint"))


def reference_fingerprint(source: Source, extract_time: dt.datetime) -> str:
    """One string for what every patient depends on: reference tables and the extract date."""
    parts = [extract_time.isoformat()]
    for table in REFERENCE_TABLES:
        if table in source.tables:
            df = source.tables[table]
            malformed = F.count(MALFORMED) if MALFORMED in df.columns else F.lit(0)
            row = df.select(F.count("*"), *_hash_sums(row_hash(df, table)),
                            malformed).first()  # small: 1 row
            if row[3]:
                # Every patient's codes depend on it: a damaged file stops the run.
                raise SourceError(f"{source.origin(table)}: table {table} has {row[3]:,} line(s) "
                                  "whose fields do not match the header (cut short?)")
            parts.append(f"{table}:{row[0]}:{row[1]}:{row[2]}")
    return "|".join(parts)


def touched_subjects(old: DataFrame, new: DataFrame) -> DataFrame:
    """(subject_id) of subjects whose fingerprint changed, appeared or vanished."""
    o = old.select(F.col("subject_id").alias("_old_subject"), F.col("rows").alias("_old_rows"),
                   F.col("fingerprint").alias("_old_fingerprint"), F.lit(True).alias("_in_old"))
    n = new.select("subject_id", "rows", "fingerprint", F.lit(True).alias("_in_new"))
    joined = n.join(o, n.subject_id.eqNullSafe(o._old_subject), "full_outer")
    same = (F.col("rows").eqNullSafe(F.col("_old_rows"))
            & F.col("fingerprint").eqNullSafe(F.col("_old_fingerprint"))
            & F.col("_in_new").isNotNull() & F.col("_in_old").isNotNull())
    return joined.where(~same).select(
        F.when(F.col("_in_new").isNotNull(), F.col("subject_id"))
        .otherwise(F.col("_old_subject")).alias("subject_id"))


def restrict_to(source: Source, touched: DataFrame) -> Source:
    """The source with only the touched subjects' rows in its per-patient tables."""
    tables = dict(source.tables)
    for table in SOURCE_TABLES:
        if table in tables:
            df = tables[table]
            subject, _ = parse_field(df, "person_id", "long", table)
            tables[table] = df.join(touched.select(F.col("subject_id").alias("_touched")),
                                    subject.eqNullSafe(F.col("_touched")), "left_semi")
    return Source(tables, dict(source.origins))
