"""Table contracts from DESIGN.md, as Spark schemas, and the one way to conform a frame to them."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _schema(*fields: tuple[str, object]) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in fields])


# MEDS columns first, then lineage. visit_id is an extra MEDS column (MEDS allows them): the
# timelines' visit_ids and the visit-end prediction times are derived from it.
SILVER_EVENTS = _schema(
    ("subject_id", LongType()),
    ("time", TimestampType()),
    ("code", StringType()),
    ("numeric_value", FloatType()),
    ("text_value", StringType()),
    ("visit_id", LongType()),
    ("source_table", StringType()),
    ("source_row_id", LongType()),
    ("ingest_run_id", StringType()),
)

# subject_id (null where the row names no usable person) lets an incremental run replace one
# patient's rejects together with their events.
SILVER_REJECTS = _schema(
    ("source_table", StringType()),
    ("source_row_id", LongType()),
    ("subject_id", LongType()),
    ("reason", StringType()),
    ("raw", StringType()),
    ("ingest_run_id", StringType()),
)

GOLD_VOCAB = _schema(
    ("token_id", IntegerType()),
    ("code", StringType()),
    ("count", LongType()),
    ("value_mean", DoubleType()),
    ("value_std", DoubleType()),
    ("value_edges", ArrayType(DoubleType())),  # inner quantile edges; a value's bin = edges below it
    ("vocab_version", StringType()),
)

# Arrays are aligned by position. `times` (absolute, null for static facts) and
# `prediction_times` (the ends of visit days) let Ray cut each prefix without a join.
GOLD_TIMELINES = _schema(
    ("subject_id", LongType()),
    ("tokens", ArrayType(IntegerType())),
    ("ages", ArrayType(FloatType())),
    ("deltas", ArrayType(FloatType())),
    ("values", ArrayType(FloatType())),
    ("visit_ids", ArrayType(LongType())),
    ("times", ArrayType(TimestampType())),
    ("prediction_times", ArrayType(TimestampType())),
    ("split", StringType()),
    ("vocab_version", StringType()),
    ("dropped_events", IntegerType()),  # oldest timed events beyond tokenize.max_timeline_events
)

GOLD_TASKS = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("task", StringType()),
    ("label", BooleanType()),
    ("horizon_days", IntegerType()),
    ("censored", BooleanType()),
    ("split", StringType()),
    ("category", StringType()),  # a finer label where the task has one: EULAR good/moderate/none
)

GOLD_EMBEDDINGS = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("model_version", StringType()),
    ("embedding", ArrayType(FloatType())),
    ("modalities", ArrayType(StringType())),
    ("split", StringType()),
)

GOLD_EVALUATION = _schema(
    ("task", StringType()),
    ("method", StringType()),
    ("auroc", DoubleType()),
    ("brier", DoubleType()),
    ("n", LongType()),
    ("model_version", StringType()),
    ("index_version", StringType()),
    ("evaluated_at", TimestampType()),
)


# Modalities OMOP has no table for. One row per radiograph study (hands and feet read together):
# per-joint scores in the joint orders of rdt_spark.sharp_score, from which the mTSS follows.
EXT_IMAGING = _schema(
    ("imaging_id", LongType()),
    ("person_id", LongType()),
    ("visit_occurrence_id", LongType()),
    ("imaging_datetime", TimestampType()),
    ("imaging_date", DateType()),
    ("modality", StringType()),  # "XR"
    ("body_site", StringType()),  # "hands_feet"
    ("erosion_scores", ArrayType(IntegerType())),
    ("jsn_scores", ArrayType(IntegerType())),
)

# One row per baseline expression sample; `expression` (log2) follows ext.omics_genes' order.
EXT_OMICS = _schema(
    ("sample_id", LongType()),
    ("person_id", LongType()),
    ("visit_occurrence_id", LongType()),
    ("sample_datetime", TimestampType()),
    ("specimen", StringType()),  # "whole blood"
    ("platform", StringType()),
    ("batch", StringType()),
    ("expression", ArrayType(FloatType())),
)

EXT_OMICS_GENES = _schema(
    ("gene_index", IntegerType()),
    ("gene_symbol", StringType()),
)


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select the contract's columns in order, cast to its types; fail naming a missing column."""
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"frame lacks contract columns {missing}; it has {df.columns}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
