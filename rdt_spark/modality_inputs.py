"""Per-modality gold inputs of the multimodal twin, and what the fusion model reads per patient-time.

Tables (contracts in ``rdt_spark.schemas``):

- ``gold.notes`` (``note_chunks``): one row per chunk of a clinical note, for a text encoder that
  reads a bounded number of tokens. From silver.events rows of source_table "note" with a time and
  a text; a chunk is a sentence, split on whitespace into pieces of at most ``chunk_words`` words
  (joined by one space) when it is longer. ``note_id`` is the note's silver ``source_row_id``,
  ``chunk`` its 0-based position, ``text_hash`` the sha2-256 hex of the chunk's text: the key
  under which ``gold.note_features`` caches its features, so an unchanged chunk is never encoded
  twice.
- ``gold.imaging`` (``imaging_inputs``): one row per radiograph study ingest accepted (its mTSS is
  in silver.events), with the per-joint ``erosion`` and ``jsn`` scores from ext.imaging in
  ``rdt_spark.sharp_score`` joint order (silver keeps only the totals). A study ingest refused
  never appears.
- ``gold.omics`` (``omics_inputs``): one row per expression sample ingest accepted, with its raw
  ``expression`` (log2, ext.omics_genes order) and ``expression_norm``: each gene standardised
  with the mean and sd of that gene in the sample's batch, over samples of train-split subjects
  only, so the platform's per-batch shift is removed without looking at val or test. A batch
  with fewer than ``min_batch_samples`` (default 2) train samples takes the pooled train
  statistics; a gene with sd 0 is only centred; without any train sample ``expression_norm`` is
  null.
- ``gold.fusion_inputs`` (``fusion_inputs``): per patient-time of gold.event_embeddings, its
  events embedding and, from strictly before the prediction time, the element-wise mean of its
  newest ``notes_per_time`` notes' vectors (each note the mean of its chunks' features), the
  newest study's scores (erosion then jsn) and the newest sample's ``expression_norm``; null
  (time null, ``notes_count`` 0) where there was none. A row at exactly the prediction time is
  not before it and never reaches it.
  Only chunks with features count; a note without any yet is skipped.

Absent ext tables (an OMOP extract has none) give empty tables, not an error.

Example: a note "a b c. d e" (source_row_id 7, 2020-01-01 10:00) with ``chunk_words`` 2 gives
chunks (7, 0, "a b"), (7, 1, "c."), (7, 2, "d e"); with features [1, 0], [0, 1] and [1, 1] for
them, the patient-time 2020-01-02 00:00 gets notes [0.667, 0.667] (the note's mean), notes_count 1, notes_time
2020-01-01 10:00, and the patient-time 2020-01-01 10:00 gets no notes.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from rdt_spark import sharp_score
from rdt_spark.ingest import OMICS_CODE, row_json
from rdt_spark.omop_source import parse_field
from rdt_spark.schemas import (
    GOLD_FUSION_INPUTS,
    GOLD_IMAGING,
    GOLD_NOTES,
    GOLD_OMICS,
    conform,
)
from rdt_spark.splits import split_of

CHUNK_WORDS = 96
NOTES_PER_TIME = 3
# An sd needs two samples; two give a noisy one, so a registry with small batches may ask for more.
MIN_BATCH_SAMPLES = 2
KEYS = ["subject_id", "prediction_time"]

# Interleaving a patient's prediction times with their modality rows in one time order: at equal
# times the prediction time sorts first, so a row at exactly that time is not counted before it.
_POINT, _ROW = 0, 1


def note_chunks(events: DataFrame, chunk_words: int = CHUNK_WORDS) -> DataFrame:
    """``gold.notes`` from silver.events: every note's text in chunks, one per sentence, a sentence
    longer than ``chunk_words`` whitespace-separated words in pieces of at most that many.

    Sentences, because clinical notes are built of them and repeat them: the demo's 35,081 notes
    are all distinct texts but hold only 3,790 distinct sentences among 251,444, so the text
    features (cached by chunk text) cost a sixtieth of what whole notes would.
    """
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")

    def words(sentence: Column) -> Column:
        return F.filter(F.split(sentence, r"\s+"), lambda w: w != "")

    def pieces(sentence: Column) -> Column:
        last = F.floor((F.size(words(sentence)) - 1) / chunk_words).cast("int")
        return F.transform(F.sequence(F.lit(0), last), lambda i: F.array_join(
            F.slice(words(sentence), i * chunk_words + 1, chunk_words), " "))

    sentences = F.filter(F.split(F.col("text_value"), r"(?<=[.!?])\s+"),
                         lambda s: F.size(words(s)) > 0)
    notes = (events
             .where((F.col("source_table") == "note") & F.col("text_value").isNotNull()
                    & F.col("time").isNotNull())
             .select("subject_id", "time", F.col("source_row_id").alias("note_id"),
                     F.flatten(F.transform(sentences, pieces)).alias("_chunks"))
             .where(F.size("_chunks") > 0))  # a blank note has nothing to encode
    chunks = notes.select("subject_id", "time", "note_id",
                          F.posexplode("_chunks").alias("chunk", "text"))
    return conform(chunks.withColumn("text_hash", F.sha2(F.col("text"), 256)), GOLD_NOTES)


def _accepted(events: DataFrame, table: str, code: str, id_name: str) -> DataFrame:
    """The source rows of ``table`` that ingest turned into a ``code`` event, by their row id."""
    return (events.where((F.col("source_table") == table) & (F.col("code") == code))
            .select("subject_id", "time", F.col("source_row_id").alias(id_name), "text_value"))


def _as_ingested(source: DataFrame, table: str, id_name: str) -> DataFrame:
    """One source row per row id, the one ingest accepted: among rows sharing an id it keeps the
    first by the row's JSON and refuses the others as duplicate_row_id (rdt_spark.ingest)."""
    row_id, _ = parse_field(source, id_name, "long", table)
    first = Window.partitionBy("_row_id").orderBy("_row")
    return (source.select("*", row_id.alias("_row_id"), row_json(source).alias("_row"))
            .where(F.col("_row_id").isNotNull())
            .withColumn("_n", F.row_number().over(first))
            .where(F.col("_n") == 1)
            .drop(id_name, "_n", "_row")
            .withColumnRenamed("_row_id", id_name))


def _empty(events: DataFrame, schema: StructType) -> DataFrame:
    return events.sparkSession.createDataFrame([], schema)


def imaging_inputs(events: DataFrame, imaging: DataFrame | None) -> DataFrame:
    """``gold.imaging``: the accepted studies of silver.events with their per-joint scores from
    the source ``ext.imaging`` (None when the source has none)."""
    if imaging is None:
        return _empty(events, GOLD_IMAGING)
    studies = _accepted(events, "ext.imaging", sharp_score.MTSS_CODE, "imaging_id")
    scores = _as_ingested(imaging, "ext.imaging", "imaging_id").select(
        "imaging_id", F.col("erosion_scores").alias("erosion"), F.col("jsn_scores").alias("jsn"))
    return conform(studies.join(scores, "imaging_id"), GOLD_IMAGING)


def _batch_key(batch: Column) -> Column:
    # Samples without a batch are standardised together, as one more batch.
    return F.coalesce(batch, F.lit(""))


def batch_gene_stats(train_samples: DataFrame, batches: DataFrame,
                     min_batch_samples: int = MIN_BATCH_SAMPLES) -> DataFrame:
    """Per batch key of ``batches``: ``_stats``, an array of (gene, mean, sd) in gene order, from
    the (batch, expression) rows of ``train_samples``; the pooled train statistics where the batch
    has under ``min_batch_samples`` train samples of the gene; sd 1 where the chosen sd is 0
    (centre only)."""
    if min_batch_samples < 2:
        raise ValueError(f"min_batch_samples must be at least 2 (an sd needs two samples), "
                         f"got {min_batch_samples}")
    cells = train_samples.select(_batch_key(F.col("batch")).alias("_batch"),
                                 F.posexplode("expression").alias("gene", "value"))
    pooled = cells.groupBy("gene").agg(F.avg("value").alias("pooled_mean"),
                                       F.stddev_samp("value").alias("pooled_sd"))
    per_batch = cells.groupBy("_batch", "gene").agg(
        F.count("value").alias("n"), F.avg("value").alias("batch_mean"),
        F.stddev_samp("value").alias("batch_sd"))
    own = F.col("n") >= min_batch_samples
    sd = F.when(own, F.col("batch_sd")).otherwise(F.col("pooled_sd"))
    return (batches.select(_batch_key(F.col("batch")).alias("_batch")).distinct()
            .crossJoin(pooled)  # one row per gene of the panel
            .join(per_batch, ["_batch", "gene"], "left")
            .select("_batch", F.struct(
                "gene",
                F.when(own, F.col("batch_mean")).otherwise(F.col("pooled_mean")).alias("mean"),
                F.when(sd > 0, sd).otherwise(F.lit(1.0)).alias("sd")).alias("_gene"))
            .groupBy("_batch")
            .agg(F.array_sort(F.collect_list("_gene")).alias("_stats")))


def omics_inputs(events: DataFrame, omics: DataFrame | None, fractions: dict[str, float],
                 min_batch_samples: int = MIN_BATCH_SAMPLES) -> DataFrame:
    """``gold.omics``: the accepted samples of silver.events with their expression from the
    source ``ext.omics`` (None when the source has none), standardised per batch and gene with
    the statistics of train-split subjects (``splits.split_of`` with ``fractions``); a batch with
    fewer than ``min_batch_samples`` train samples takes the pooled train statistics."""
    if omics is None:
        return _empty(events, GOLD_OMICS)
    profiles = _as_ingested(omics, "ext.omics", "sample_id").select(
        "sample_id", F.col("expression").cast("array<float>"))
    samples = (_accepted(events, "ext.omics", OMICS_CODE, "sample_id")
               .withColumnRenamed("text_value", "batch")  # ingest keeps the batch as the text
               .join(profiles, "sample_id")
               .withColumn("split", split_of(F.col("subject_id"), fractions)))
    stats = batch_gene_stats(samples.where(F.col("split") == "train"), samples, min_batch_samples)
    standardised = F.zip_with("expression", "_stats",
                              lambda x, gene: (x - gene["mean"]) / gene["sd"])
    return conform(samples.withColumn("_batch", _batch_key(F.col("batch")))
                   .join(F.broadcast(stats), "_batch", "left")  # one row per batch
                   .withColumn("expression_norm", standardised), GOLD_OMICS)


def _interleaved(keys: DataFrame, rows: DataFrame) -> tuple[DataFrame, Window]:
    """Each patient's prediction times (``_kind`` _POINT) and modality rows (_ROW, ordered among
    themselves by ``_id``) as one frame, and the window running over them in time order."""
    points = keys.select("subject_id", F.col("prediction_time").alias("time"),
                         F.lit(_POINT).alias("_kind"))
    both = points.unionByName(rows.withColumn("_kind", F.lit(_ROW)), allowMissingColumns=True)
    running = (Window.partitionBy("subject_id").orderBy("time", "_kind", "_id")
               .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    return both, running


def _points_of(interleaved: DataFrame) -> DataFrame:
    return (interleaved.where(F.col("_kind") == _POINT)
            .withColumnRenamed("time", "prediction_time"))


def newest_before(keys: DataFrame, rows: DataFrame, id_name: str, values: dict[str, Column],
                  time_name: str) -> DataFrame:
    """Per (subject_id, prediction_time) of ``keys``: ``values`` of the patient's newest row of
    ``rows`` strictly before prediction_time, and its time as ``time_name``; nulls where none.
    Rows at equal times are ordered by ``id_name``."""
    found = F.struct(*[v.alias(k) for k, v in values.items()], F.col("time").alias(time_name))
    both, running = _interleaved(keys, rows.where(F.col("time").isNotNull()).select(
        "subject_id", "time", F.col(id_name).alias("_id"), found.alias("_found")))
    return (_points_of(both.withColumn("_found", F.last("_found", ignorenulls=True).over(running)))
            .select(*KEYS, "_found.*"))


def _elementwise_mean(vectors: Column) -> Column:
    total = F.aggregate(F.slice(vectors, 2, F.size(vectors)), vectors[0],
                        lambda acc, v: F.zip_with(acc, v, lambda a, b: a + b))
    return F.transform(total, lambda s: s / F.size(vectors))


def notes_before(keys: DataFrame, notes: DataFrame, notes_features: DataFrame,
                 notes_per_time: int) -> DataFrame:
    """Per (subject_id, prediction_time) of ``keys`` with a note strictly before it: ``notes``,
    the element-wise mean over the patient's newest ``notes_per_time`` such notes of each note's
    mean chunk features, ``notes_count`` and ``notes_time`` (the newest used note's time).

    Only chunks with features count; a note none of whose chunks has features yet is not a note
    here. Notes at equal times are ordered by note_id.
    """
    if notes_per_time < 1:
        raise ValueError(f"notes_per_time must be at least 1, got {notes_per_time}")
    # Each note is pooled once (the mean of its chunks' features), so a prediction time gathers
    # at most notes_per_time vectors, not every chunk of its notes: several times less data moved.
    per_note = (notes.where(F.col("time").isNotNull())
                .join(notes_features.where(F.col("features").isNotNull())
                      .select("text_hash", "features"), "text_hash")
                .groupBy("subject_id", "time", F.col("note_id").alias("_id"))
                .agg(F.collect_list("features").alias("_chunks"))
                .select("subject_id", "time", "_id", _elementwise_mean(F.col("_chunks")).alias("_vector")))
    # The running count numbers each patient's notes 1, 2, ... in time order and tells each
    # prediction time how many lie strictly before it, so its notes are an equi-join away.
    both, running = _interleaved(keys, per_note)
    counted = both.withColumn("_number", F.count("_vector").over(running))
    numbered = counted.where(F.col("_kind") == _ROW).select("subject_id", "_number", "time",
                                                            "_vector")
    last = F.col("_number")
    wanted = (_points_of(counted).where(last > 0)
              .select(*KEYS, F.explode(F.sequence(F.greatest(F.lit(1).cast("long"),
                                                             last - notes_per_time + 1), last))
                      .alias("_number")))
    return (wanted.join(numbered, ["subject_id", "_number"])
            .groupBy(*KEYS)
            .agg(F.collect_list("_vector").alias("_vectors"),
                 F.count("*").alias("notes_count"), F.max("time").alias("notes_time"))
            .select(*KEYS, _elementwise_mean(F.col("_vectors")).alias("notes"), "notes_count",
                    "notes_time"))


def fusion_inputs(points: DataFrame, notes_features: DataFrame, notes: DataFrame,
                  imaging: DataFrame, omics: DataFrame,
                  notes_per_time: int = NOTES_PER_TIME) -> DataFrame:
    """``gold.fusion_inputs``: one row per row of ``points`` (gold.event_embeddings: subject_id,
    prediction_time, split, embedding) with each modality from strictly before prediction_time.

    ``notes_features`` holds one model's features, one row per text_hash (gold.note_features);
    ``notes``, ``imaging`` and ``omics`` are gold.notes, gold.imaging and gold.omics.
    """
    keys = points.select(*KEYS).distinct()
    texts = notes_before(keys, notes, notes_features, notes_per_time)
    studies = newest_before(keys, imaging, "imaging_id",
                            {"imaging": F.concat("erosion", "jsn")}, "imaging_time")
    samples = newest_before(keys, omics, "sample_id",
                            {"omics": F.col("expression_norm"), "omics_batch": F.col("batch")},
                            "omics_time")
    inputs = (points.withColumnRenamed("embedding", "events")
              .join(texts, KEYS, "left")
              .join(studies, KEYS, "left")
              .join(samples, KEYS, "left")
              .withColumn("notes_count", F.coalesce(F.col("notes_count"), F.lit(0))))
    return conform(inputs, GOLD_FUSION_INPUTS)
