"""One ingest run into the lake: full or incremental, every source row accounted for.

Incremental by default: a fingerprint of each patient's source rows (``ingest_state``) picks the
patients whose rows changed, appeared or vanished since the last run, and only their events,
rejects and fingerprints are replaced, by one Delta MERGE per table; a re-run on the same input
commits nothing. The run is full (every table replaced in one commit each) when asked, on the
first run, or when the reference data every patient depends on (the concept table, the omics
panel, the extract date) changed.

Example: a lake ingested from an extract, then the same extract with one new measurement for
patient 5 -> ``{"mode": "incremental", "touched": 1, ...}``; the same extract again ->
``{"mode": "incremental", "touched": 0, ...}`` and no new table version.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rdt_spark.ingest import account_rows, ingest_omop
from rdt_spark.ingest_state import (
    reference_fingerprint,
    restrict_to,
    source_fingerprints,
    touched_subjects,
)
from rdt_spark.lake import read_table, replace_subjects, table_exists, write_table
from rdt_spark.omop_source import (
    ColumnTypeError,
    Source,
    SourceError,
    extract_time,
    read_omop_folder,
    read_omop_lake,
)
from rdt_spark.schemas import SILVER_EVENTS, SILVER_REJECTS, conform

STATE = "silver.ingest_state"
OUTPUTS = ["silver.events", "silver.rejects", STATE]
log = logging.getLogger(__name__)


def new_run_id() -> str:
    """``20260101T120000Z-3fa2c1``: when the run started, and a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def previous_state(spark: SparkSession, lake: str, reference: str) -> DataFrame | None:
    """The last run's fingerprints, or None when this run must be a full one."""
    if not all(table_exists(spark, lake, name) for name in OUTPUTS):
        return None
    state = read_table(spark, lake, STATE)
    last = state.select("reference").limit(1).first()  # small: one row
    return state if last is not None and last[0] == reference else None


def _write(lake: str, events: DataFrame, rejects: DataFrame, fingerprints: DataFrame,
           touched: DataFrame | None) -> None:
    events, rejects = conform(events, SILVER_EVENTS), conform(rejects, SILVER_REJECTS)
    if touched is None:
        write_table(events, lake, "silver.events")
        write_table(rejects, lake, "silver.rejects")
        write_table(fingerprints, lake, STATE)  # last: a killed run redoes its patients
        return
    replace_subjects(events, touched, lake, "silver.events")
    replace_subjects(rejects, touched, lake, "silver.rejects")
    fresh = fingerprints.join(touched, fingerprints.subject_id.eqNullSafe(touched.subject_id),
                              "left_semi")
    replace_subjects(fresh, touched, lake, STATE)


def ingest_into_lake(spark: SparkSession, lake: str, folder: str | None = None,
                     full: bool = False) -> dict:
    """Ingest the extract in ``folder`` (OMOP Parquet or CSV), or the lake's own omop.* and ext.*
    tables, into the lake's silver tables. Returns the run id, the mode, the patients touched and
    the per-table accounting (``ingest.account_rows``); input that cannot be read at all is a
    SourceError naming the file, table and column."""
    try:
        source = read_omop_folder(spark, folder) if folder else read_omop_lake(spark, lake)
    except PySparkException as err:
        raise SourceError(f"cannot read the source: {str(err).strip().splitlines()[0]}") from None
    try:
        return _ingest(spark, lake, source, full)
    except ColumnTypeError as err:
        raise SourceError(f"{source.origin(err.table)}: {err}") from None
    except (PySparkException, Py4JJavaError) as err:
        # A file that fails mid-run (a gzip cut short) comes back as a bare SparkException.
        raise SourceError(unreadable(source, err)) from None


def unreadable(source: Source, err: Exception) -> str:
    """One line for a read that failed mid-run (a gzip cut short, a damaged Parquet file):
    Spark names the file in its first line, the rest is a JVM trace."""
    text = str(err).strip().splitlines()[0]
    if isinstance(err, Py4JJavaError):  # its first line names only the py4j call
        java, root = err.java_exception, err.java_exception
        while root.getCause() is not None:
            root = root.getCause()
        text = str(java.getMessage()).strip().splitlines()[0] + (
            f" ({root.getMessage()})" if root is not java else "")
    tables = [t for t, origin in source.origins.items() if origin in text]
    where = f"table {tables[0]} ({source.origin(tables[0])})" if tables else "the source"
    return f"cannot read {where}: {text}"


def _ingest(spark: SparkSession, lake: str, source: Source, full: bool) -> dict:
    run_id = new_run_id()
    extract = extract_time(source)
    reference = reference_fingerprint(source, extract)
    fingerprints = source_fingerprints(source).withColumn("reference", F.lit(reference)).persist()
    previous = None if full else previous_state(spark, lake, reference)
    touched, n_touched = None, None
    if previous is not None:
        touched = touched_subjects(previous, fingerprints).persist()
        n_touched = touched.count()
    mode = "full" if touched is None else f"incremental, {n_touched:,} patients touched"
    log.info(f"run {run_id}: tables {sorted(source.tables)}, extract date {extract:%Y-%m-%d}, {mode}")
    if n_touched != 0:
        todo = source if touched is None else restrict_to(source, touched)
        events, rejects, flagged = ingest_omop(todo, extract, run_id)
        _write(lake, events, rejects, fingerprints, touched)
        flagged.unpersist()
    else:
        log.info("no source row changed since the last run: nothing to commit")
    fingerprints.unpersist()
    if touched is not None:
        touched.unpersist()
    summary = account_rows(source, read_table(spark, lake, "silver.events"),
                           read_table(spark, lake, "silver.rejects"))
    return {"run_id": run_id, "mode": "full" if touched is None else "incremental",
            "touched": n_touched, "tables": summary}
