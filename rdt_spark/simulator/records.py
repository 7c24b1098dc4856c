"""The one long record every simulated row is written as, and the collector of a patient's rows.

A patient's simulation (``patient``) writes rows of every table it produces (``person``,
``visit_occurrence``, ``measurement``, ..., ``imaging``, ``omics``, ``truth_latent``) as lists in
RECORD_SCHEMA order; ``registry`` hands them to Spark as one frame and selects each table from
it. Columns a table does not use stay null (cheap in Arrow and Parquet). Row ids are
``person_id * ROWS_PER_PATIENT + sequence``, so they depend only on the patient, never on the
partitioning.

Example:

    >>> rows = Rows(person_id=3)
    >>> rows.add("death", 0, 1_600_000_000_000_000)
    300001
    >>> rows.add("observation_period", 0, 1_500_000_000_000_000, end=1_600_000_000_000_000)
    300002
    >>> rows.rows[1][:6]
    ['observation_period', 300002, 3, 0, 1500000000000000, 1600000000000000]
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from rdt_spark.sharp_score import EROSION_MAX, JSN_MAX
from rdt_spark.simulator import concepts as C

RECORD_SCHEMA = StructType([
    StructField("table", StringType()),
    StructField("row_id", LongType()),
    StructField("person_id", LongType()),
    StructField("concept_id", LongType()),
    StructField("start", LongType()),  # microseconds since the epoch (UTC)
    StructField("end", LongType()),
    StructField("value", DoubleType()),
    StructField("value2", DoubleType()),
    StructField("unit", StringType()),
    StructField("unit_concept_id", LongType()),
    StructField("source_value", StringType()),
    StructField("text", StringType()),
    StructField("extra", StringType()),
    StructField("visit_id", LongType()),
    StructField("care_site_id", IntegerType()),
    StructField("flag", BooleanType()),
    StructField("ints", ArrayType(IntegerType())),  # imaging: N_EROSION then N_JSN joint scores
    StructField("floats", ArrayType(FloatType())),
])
FIELDS = RECORD_SCHEMA.fieldNames()
_WIDTH = len(FIELDS)
_I = {name: i for i, name in enumerate(FIELDS)}  # column index by name: row[_I["end"]]

ROWS_PER_PATIENT = 100_000  # row ids are person_id * ROWS_PER_PATIENT + sequence
N_EROSION = len(EROSION_MAX)  # per-joint scores in sharp_score's joint order
N_JSN = len(JSN_MAX)


class Rows:
    """Collects one patient's rows (as lists, so drug end dates can be settled later)."""

    def __init__(self, person_id: int):
        self.person_id, self.seq, self.rows = person_id, 0, []

    def add(self, table: str, concept: int = 0, start: int | None = None, **cols) -> int:
        self.seq += 1
        row_id = self.person_id * ROWS_PER_PATIENT + self.seq
        row = [table, row_id, self.person_id, concept, start] + [None] * (_WIDTH - 5)
        for name, value in cols.items():
            row[_I[name]] = value
        self.rows.append(row)
        return row_id

    def measurement(self, concept: C.Concept, start: int, visit_id: int, value: float,
                    unit: str, unit_concept: int) -> None:
        """The commonest row, built without keyword handling (a patient has hundreds)."""
        self.seq += 1
        self.rows.append(["measurement", self.person_id * ROWS_PER_PATIENT + self.seq,
                          self.person_id, concept.concept_id, start, None, value, None, unit,
                          unit_concept, concept.concept_code, None, None, visit_id, None, None,
                          None, None])
