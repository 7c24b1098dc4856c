"""Read an OMOP CDM extract as it is, with the modality tables OMOP has no place for.

Three layouts: ``omop.*`` and ``ext.*`` Delta tables in the lake; a folder of Parquet files or
folders; a folder of CSV exports (OHDSI's usual export). File and column names may be upper- or
lower-case; columns come out lower-case, tables are named as in the lake (``person``,
``measurement``, ..., ``ext.imaging``, ``ext.omics``, ``ext.omics_genes``). macOS ``._*`` resource
files and other hidden files are skipped.

CSV columns stay strings here: ingest parses each field itself, so a value that does not parse
becomes a rejected row with its reason instead of a failed job. A CSV line whose fields do not
match the header's (cut short in transfer, or with an extra separator) keeps its raw text in
``MALFORMED`` (null on a sound line), and ingest refuses it as ``malformed_line``. That needs
the CSV parser to read every field of a line, whichever columns a query uses
(``spark.sql.csv.parser.columnPruning.enabled`` is off in ``rdt_spark.session``). A line cut
inside its last field still has every field and cannot be told from a sound one.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass, field
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    AtomicType,
    DateType,
    NumericType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from rdt_spark.lake import read_table, table_exists, table_path

OMOP_TABLES = ["person", "death", "observation_period", "visit_occurrence",
               "condition_occurrence", "drug_exposure", "procedure_occurrence", "device_exposure",
               "measurement", "observation", "note", "concept", "cdm_source"]
EXT_TABLES = ["ext.imaging", "ext.omics", "ext.omics_genes"]
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
MALFORMED = "_malformed_line"  # a CSV line's raw text where its fields do not match the header


class SourceError(ValueError):
    """Input that cannot be read as an extract; the message names the file, table and column."""


class ColumnTypeError(SourceError):
    """A column whose type cannot hold its field; ingest prefixes the table's file."""

    def __init__(self, table: str, message: str):
        super().__init__(message)
        self.table = table


@dataclass
class Source:
    """Tables by name, and where each came from (a file, a folder or a Delta path)."""

    tables: dict[str, DataFrame]
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, table: str) -> str:
        return self.origins.get(table, table)


def _lower_columns(df: DataFrame) -> DataFrame:
    return df.select([F.col(f"`{c}`").alias(c.lower()) for c in df.columns])


def read_omop_lake(spark: SparkSession, lake: str) -> Source:
    source = Source({})
    for name in [f"omop.{t}" for t in OMOP_TABLES] + EXT_TABLES:
        if table_exists(spark, lake, name):
            key = name.removeprefix("omop.")
            source.tables[key] = _lower_columns(read_table(spark, lake, name))
            source.origins[key] = table_path(lake, name)
    if "person" not in source.tables:
        raise SourceError(f"{table_path(lake, 'omop.person')}: the lake has no omop.person table; "
                          "run `rdt generate` or pass --source FOLDER")
    return source


def _table_name(entry: Path) -> str | None:
    """``PERSON.csv`` -> person, ``ext_imaging.parquet`` / ``imaging`` -> ext.imaging."""
    stem = entry.name.lower()
    for suffix in CSV_SUFFIXES + (".parquet",):
        stem = stem.removesuffix(suffix)
    if stem in OMOP_TABLES:
        return stem
    bare = stem.removeprefix("ext_").removeprefix("ext.")
    return f"ext.{bare}" if f"ext.{bare}" in EXT_TABLES else None


_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def _first_bytes(entry: Path) -> bytes:
    files = sorted(p for p in entry.iterdir() if p.is_file()) if entry.is_dir() else [entry]
    if not files:
        return b""
    opener = gzip.open if files[0].name.lower().endswith(".gz") else open
    try:
        with opener(files[0], "rb") as f:
            return f.read(4)
    except (OSError, EOFError):
        return b""  # unreadable: Spark's own read names the failure


def _read_entry(spark: SparkSession, entry: Path, table: str) -> DataFrame:
    name = entry.name.lower()
    if name.endswith(CSV_SUFFIXES) or (entry.is_dir() and any(
            p.name.lower().endswith(CSV_SUFFIXES) for p in entry.iterdir())):
        if _first_bytes(entry).startswith(_UTF16_MARKS):
            # Spark would read UTF-16 as UTF-8 and report its header as missing columns.
            raise SourceError(f"{entry}: table {table} is UTF-16 text (its byte-order mark says "
                              "so); export the table as UTF-8")
        sep = "\t" if ".tsv" in name else ","
        # Strings only, quotes escaped by doubling as OHDSI's exporters write them; notes may
        # hold line breaks inside quotes.
        reader = spark.read.options(header=True, inferSchema=False, sep=sep, quote='"', escape='"',
                                    multiLine=table == "note", mode="PERMISSIVE")
        header = reader.csv(str(entry)).columns
        fields = [StructField(c, StringType()) for c in header] + [StructField(MALFORMED, StringType())]
        return (reader.schema(StructType(fields)).option("columnNameOfCorruptRecord", MALFORMED)
                .csv(str(entry)))
    return spark.read.parquet(str(entry))


def _first_line(err: Exception) -> str:
    """The cause in one line: a JVM error (a Parquet footer Spark cannot read, say) arrives as a
    Py4JJavaError whose first line only names the Java call."""
    if isinstance(err, Py4JJavaError):
        return str(err.java_exception.getMessage() or err.java_exception).splitlines()[0]
    return str(err).splitlines()[0]


def read_omop_folder(spark: SparkSession, folder: str) -> Source:
    """Every recognised table file in ``folder`` (Parquet or CSV, any case)."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"{folder}: not a folder; --source takes a folder of OMOP table files")
    source = Source({})
    for entry in sorted(root.iterdir()):
        table = _table_name(entry)
        if entry.name.startswith((".", "_")) or table is None:
            continue
        if table in source.tables:
            raise SourceError(f"{entry}: a second file for table {table} "
                              f"(first: {source.origins[table]})")
        try:
            source.tables[table] = _lower_columns(_read_entry(spark, entry, table))
        except (PySparkException, Py4JJavaError) as err:
            raise SourceError(f"{entry}: cannot read table {table}: {_first_line(err)}") from None
        source.origins[table] = str(entry)
    if "person" not in source.tables:
        raise SourceError(f"{folder}: no person table (person.parquet or PERSON.csv) in this "
                          "OMOP extract")
    return source


# Besides ISO 8601 (with or without time, 'T' or space), the compact forms some exporters write.
TIME_FORMATS = ["yyyyMMdd", "yyyyMMdd HH:mm:ss", "yyyyMMddHHmmss"]
_CASTS = {"long": "long", "float": "double", "string": "string"}


def parse_field(df: DataFrame, name: str | None, kind: str, table: str = "") -> tuple[Column, Column]:
    """(value, unparseable) for column ``name`` read as ``kind``: time, long, float or string.

    Typed columns (Parquet, Delta) are cast; strings (CSV) are parsed without ever failing the
    job: a non-empty string that does not parse gives a null value and ``unparseable`` true.
    An absent column reads as null. A column whose type cannot hold the field (a struct where
    a date belongs) is a ColumnTypeError naming the table and column.
    """
    if name is None or name not in df.columns:
        target = "timestamp" if kind == "time" else _CASTS[kind]
        return F.lit(None).cast(target), F.lit(False)
    dtype = df.schema[name].dataType
    col = F.col(name)
    if isinstance(dtype, StringType) and kind != "string":
        text = F.trim(col)
        if kind == "time":
            value = F.coalesce(F.try_to_timestamp(text),
                               *[F.try_to_timestamp(text, F.lit(f)) for f in TIME_FORMATS])
        else:
            value = text.try_cast(_CASTS[kind])
        return value, (text != "") & value.isNull()
    usable = (DateType, TimestampType, TimestampNTZType) if kind == "time" else (
        NumericType, StringType) if kind in ("long", "float") else (AtomicType,)
    if not isinstance(dtype, usable):
        raise ColumnTypeError(table, f"table {table}, column {name}: type "
                                     f"{dtype.simpleString()} cannot hold a {kind}")
    value = col.cast("timestamp") if kind == "time" else col.try_cast(_CASTS[kind])
    return value, col.isNotNull() & value.isNull()


def extract_time(source: Source) -> dt.datetime:
    """End of the extract's release day (cdm_source.source_release_date), else now."""
    cdm = source.tables.get("cdm_source")
    if cdm is not None and "source_release_date" in cdm.columns:
        release, _ = parse_field(cdm, "source_release_date", "time", "cdm_source")
        row = cdm.select(F.max(release)).first()  # small: one row
        if row and row[0]:
            return dt.datetime.combine(row[0], dt.time(23, 59, 59))
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
