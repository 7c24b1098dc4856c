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

# What was known of a patient at a prediction time: events strictly before it only
# (rdt_spark/states.py defines each column). Twin filters, cohorts and the evaluation read it.
GOLD_PATIENT_STATES = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("split", StringType()),
    ("sex", StringType()),  # "F" / "M"
    ("age", DoubleType()),  # years
    ("disease_years", DoubleType()),  # since the first diagnosis code
    ("seropositive", BooleanType()),  # RF or anti-CCP above its cut-off; null: never tested
    ("current_classes", ArrayType(StringType())),  # drug classes recorded at the latest visit
    ("current_days", ArrayType(DoubleType())),  # days since each current class was first recorded
    ("past_classes", ArrayType(StringType())),  # recorded before, not at the latest visit
    ("das28", DoubleType()),  # the latest DAS28 (ESR preferred at equal times)
    ("mtss", DoubleType()),  # the latest modified total Sharp score
    ("modalities", ArrayType(StringType())),  # data recorded so far: events, notes, imaging, omics
)

# What followed a prediction time: events at or after it only. Outcomes, never features.
GOLD_TRAJECTORIES = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("split", StringType()),
    ("follow_up_days", DoubleType()),  # to the patient's last recorded event
    ("event_days", DoubleType()),  # to the first event of states.event_codes; null: none
    ("das28_course", ArrayType(DoubleType())),  # nearest t + course_months[i]; null: none near
    ("mtss_course", ArrayType(DoubleType())),
    ("course_months", ArrayType(IntegerType())),
)

# A batch of twin forecasts (rdt forecast): one row per patient-time and question. A question is
# a task (share of usable neighbours with the event), `<eular task>/<class>` (share with a good or
# moderate response among neighbours who started the class), `time_to_event` (Kaplan-Meier
# median days, low/high its 95% interval) or `das28@<m>m` / `mtss@<m>m` (the neighbours' median,
# low/high the interquartile range). Suppressed rows (fewer usable neighbours than the minimum
# cell size) carry no estimate.
GOLD_TWIN_FORECASTS = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("split", StringType()),
    ("question", StringType()),
    ("kind", StringType()),  # event / response / time_to_event / course
    ("estimate", DoubleType()),
    ("low", DoubleType()),
    ("high", DoubleType()),
    ("usable", IntegerType()),  # neighbours the estimate rests on
    ("suppressed", BooleanType()),
    ("model_version", StringType()),
    ("index_version", StringType()),
    ("forecast_at", TimestampType()),
)

# Who qualifies for a trial, and why (rdt cohort): one row per selected patient at the
# patient-time the criteria were judged at.
GOLD_COHORTS = _schema(
    ("cohort", StringType()),
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("reasons", ArrayType(StringType())),  # each criterion met, in words
    ("similarity", DoubleType()),  # nearness to the reference patients; null when not ranked
    ("rank", IntegerType()),
    ("criteria_hash", StringType()),
    ("selected_at", TimestampType()),
)

# Per-modality inputs (rdt_spark/modality_inputs.py defines each). Keyed by subject_id and time;
# a row may inform a prediction time only when its time lies strictly before it.
# One row per note chunk of at most modality_inputs.CHUNK_WORDS whitespace words (joined by one
# space); text_hash, sha2-256 hex of text, is the cache key of the chunk's text features.
GOLD_NOTES = _schema(
    ("subject_id", LongType()),
    ("time", TimestampType()),
    ("note_id", LongType()),  # silver.events source_row_id of the note
    ("chunk", IntegerType()),  # 0-based position within the note
    ("text", StringType()),
    ("text_hash", StringType()),
)

# Text features of note chunks, computed off Spark (one model per table): one row per text_hash.
GOLD_NOTE_FEATURES = _schema(
    ("text_hash", StringType()),
    ("model", StringType()),
    ("features", ArrayType(FloatType())),
)

# One row per radiograph study that ingest accepted: per-joint scores in rdt_spark.sharp_score's
# EROSION_JOINTS and JSN_JOINTS orders (silver.events keeps only the totals).
GOLD_IMAGING = _schema(
    ("subject_id", LongType()),
    ("time", TimestampType()),
    ("imaging_id", LongType()),
    ("erosion", ArrayType(FloatType())),
    ("jsn", ArrayType(FloatType())),
)

# One row per expression sample that ingest accepted, in ext.omics_genes' order: raw log2 and
# standardised per (batch, gene) with statistics of train-split subjects' samples only.
GOLD_OMICS = _schema(
    ("subject_id", LongType()),
    ("time", TimestampType()),
    ("sample_id", LongType()),
    ("batch", StringType()),
    ("expression", ArrayType(FloatType())),
    ("expression_norm", ArrayType(FloatType())),
)

# What the fusion model reads per patient-time: the events embedding and each other modality
# from strictly before prediction_time (null, with null time, where there was none).
GOLD_FUSION_INPUTS = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("split", StringType()),
    ("events", ArrayType(FloatType())),
    ("notes", ArrayType(FloatType())),  # mean of the notes used, each the mean of its chunks
    ("notes_count", IntegerType()),  # notes used: the newest notes_per_time with features
    ("notes_time", TimestampType()),  # the newest used note's
    ("imaging", ArrayType(FloatType())),  # the newest study's erosion then jsn scores
    ("imaging_time", TimestampType()),
    ("omics", ArrayType(FloatType())),  # the newest sample's expression_norm
    ("omics_batch", StringType()),
    ("omics_time", TimestampType()),
)

# Tabularised history for the baselines (rdt_spark/tabular.py): per patient-time, one dense array
# of counts, means, last values and days since last per vocabulary code, from events strictly
# before the prediction time; <run_dir>/evaluation/tabular_features.json names the positions.
GOLD_TABULAR_FEATURES = _schema(
    ("subject_id", LongType()),
    ("prediction_time", TimestampType()),
    ("split", StringType()),
    ("features", ArrayType(FloatType())),
)

# Metrics of one evaluation run, long: one row per (evaluation, task, method, metric).
GOLD_EVALUATION = _schema(
    ("evaluation", StringType()),  # "test split" or "temporal <cut-off>"
    ("task", StringType()),
    ("method", StringType()),
    ("metric", StringType()),  # auroc, auprc, brier, mae, purity, coverage, ...
    ("value", DoubleType()),
    ("n", LongType()),  # points the metric was computed on
    ("search", StringType()),  # exact / scann
    ("k", IntegerType()),
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
