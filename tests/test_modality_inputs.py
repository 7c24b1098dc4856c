"""Per-modality gold inputs (rdt_spark/modality_inputs.py) and the fusion inputs built from them:
chunking, accepted studies and samples only, train-only batch normalisation, and no modality row
at or after a prediction time ever reaching it."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
from conftest import small_config
from pyspark.sql import functions as F

from jobs.modalities import JOB, Options
from rdt_spark import sharp_score
from rdt_spark.ingest import OMICS_CODE
from rdt_spark.lake import read_table, write_table
from rdt_spark.modality_inputs import (
    fusion_inputs,
    imaging_inputs,
    note_chunks,
    omics_inputs,
)
from rdt_spark.schemas import (
    GOLD_EMBEDDINGS,
    GOLD_FUSION_INPUTS,
    GOLD_IMAGING,
    GOLD_NOTE_FEATURES,
    GOLD_NOTES,
    GOLD_OMICS,
    SILVER_EVENTS,
)
from rdt_spark.splits import split_of

T = dt.datetime
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
N_EROSION, N_JSN = len(sharp_score.EROSION_JOINTS), len(sharp_score.JSN_JOINTS)


def columns(df) -> list[tuple[str, str]]:
    return columns_of(df.schema)


def columns_of(schema) -> list[tuple[str, str]]:
    """Names and types; nullability aside (a cast keeps what Spark knows is never null)."""
    return [(f.name, f.dataType.simpleString()) for f in schema.fields]


def events_frame(spark, rows):
    """silver.events from (subject_id, time, code, numeric_value, text_value, source_table,
    source_row_id)."""
    return spark.createDataFrame([(s, t, c, v, x, None, table, rid, "run")
                                  for s, t, c, v, x, table, rid in rows], SILVER_EVENTS)


@pytest.fixture(scope="module")
def subjects_by_split(spark):
    ids = spark.range(1, 400).select(F.col("id").alias("subject_id"))
    rows = ids.select("subject_id", split_of(F.col("subject_id"), FRACTIONS).alias("split")).collect()
    by_split: dict[str, list[int]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row["subject_id"])
    return by_split


def test_notes_are_chunked_by_sentence_and_long_sentences_by_words_with_a_text_hash(spark):
    long_note = " ".join(f"w{i}" for i in range(200))
    events = events_frame(spark, [
        (1, T(2020, 1, 1, 10), "SOURCE/progress", None, "  a b\n\tc.  d e ", "note", 7),
        (1, T(2020, 1, 2, 10), "SOURCE/progress", None, long_note, "note", 8),
        (1, None, "SOURCE/progress", None, "no time", "note", 9),
        (1, T(2020, 1, 3, 10), "SOURCE/progress", None, None, "note", 10),
        (1, T(2020, 1, 4, 10), "SOURCE/progress", None, " \n ", "note", 11),
        (1, T(2020, 1, 5, 10), "SOURCE/comment", None, "not a note", "observation", 12),
    ])
    chunks = note_chunks(events, chunk_words=2)
    assert columns(chunks) == columns_of(GOLD_NOTES)
    short = sorted((r["chunk"], r["text"], r["text_hash"], r["time"])
                   for r in chunks.where(F.col("note_id") == 7).collect())
    assert [(c, t) for c, t, _, _ in short] == [(0, "a b"), (1, "c."), (2, "d e")]
    assert all(h == hashlib.sha256(t.encode()).hexdigest() for _, t, h, _ in short)
    assert {r["note_id"] for r in chunks.select("note_id").distinct().collect()} == {7, 8}

    default = note_chunks(events).where(F.col("note_id") == 8).orderBy("chunk").collect()
    assert [len(r["text"].split()) for r in default] == [96, 96, 8]
    assert " ".join(r["text"] for r in default) == long_note


def _scores(first: int) -> tuple[list[int], list[int]]:
    return [first] + [0] * (N_EROSION - 1), [0] * (N_JSN - 1) + [first % 5]


def test_imaging_keeps_accepted_studies_with_their_joint_scores(spark):
    source = spark.createDataFrame([
        (1, 1, T(2020, 1, 1, 9), *_scores(3)),
        (2, 1, T(2020, 6, 1, 9), *_scores(4)),  # refused by ingest: no event in silver
        (3, 1, T(2021, 1, 1, 9), *_scores(2)),  # a duplicate id: ingest kept the first by JSON
        (3, 1, T(2021, 1, 1, 9), *_scores(1)),
    ], "imaging_id long, person_id long, imaging_datetime timestamp, erosion_scores array<int>, "
       "jsn_scores array<int>")
    accepted = [(1, T(2020, 1, 1, 9), 1, 6.0), (3, T(2021, 1, 1, 9), 3, 2.0)]
    events = events_frame(spark, [
        row for sid, t, iid, total in accepted for row in [
            (sid, t, sharp_score.MTSS_CODE, total, None, "ext.imaging", iid),
            (sid, t, sharp_score.EROSION_CODE, total / 2, None, "ext.imaging", iid),
            (sid, t, sharp_score.JSN_CODE, total / 2, None, "ext.imaging", iid)]
    ] + [(1, T(2020, 6, 1, 9), sharp_score.MTSS_CODE, 5.0, None, "measurement", 2)])

    studies = imaging_inputs(events, source)
    assert columns(studies) == columns_of(GOLD_IMAGING)
    rows = {r["imaging_id"]: r for r in studies.collect()}
    assert sorted(rows) == [1, 3]
    assert rows[1]["erosion"] == [3.0] + [0.0] * (N_EROSION - 1)
    assert rows[1]["jsn"] == [0.0] * (N_JSN - 1) + [3.0]
    assert rows[3]["erosion"][0] == 1.0 and rows[3]["time"] == T(2021, 1, 1, 9)
    assert columns(imaging_inputs(events, None)) == columns_of(GOLD_IMAGING)
    assert imaging_inputs(events, None).count() == 0


def test_omics_normalisation_removes_batch_shifts_with_train_statistics_only(spark, subjects_by_split):
    train = iter(subjects_by_split["train"])
    held_out = iter(subjects_by_split["val"] + subjects_by_split["test"])
    bases = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [2.0, -1.0, 1.0], [3.0, 1.0, -2.0]])
    shifts = {"b1": np.array([1.0, -2.0, 0.5]), "b2": np.array([-1.0, 3.0, 0.0]),
              "b3": np.array([10.0, 10.0, 10.0]), "b4": np.array([-5.0, 0.0, 5.0])}
    samples = []  # (subject, batch, expression, split)
    for batch in ("b1", "b2"):  # the same train profiles in two batches, shifted
        samples += [(next(train), batch, base + shifts[batch], "train") for base in bases]
    samples.append((next(train), "b3", bases[1] + shifts["b3"], "train"))  # one train sample
    probe = np.array([5.0, 5.0, 5.0])
    for batch in ("b1", "b2", "b4"):  # b4: no train sample at all
        samples.append((next(held_out), batch, probe + shifts[batch], "held out"))
    samples.append((next(held_out), "b1", np.array([1e3, -1e3, 1e3]), "held out"))  # an outlier
    source = spark.createDataFrame(
        [(100 + i, s, T(2020, 1, 1, 9), b, [float(x) for x in e])
         for i, (s, b, e, _) in enumerate(samples)] + [(999, 1, T(2020, 1, 1, 9), "b1", [0.0] * 3)],
        "sample_id long, person_id long, sample_datetime timestamp, batch string, "
        "expression array<float>")
    events = events_frame(spark, [(s, T(2020, 1, 1, 9), OMICS_CODE, None, b, "ext.omics", 100 + i)
                                  for i, (s, b, _, _) in enumerate(samples)])  # 999: refused

    omics = omics_inputs(events, source, FRACTIONS)
    assert columns(omics) == columns_of(GOLD_OMICS)
    rows = {r["sample_id"]: r for r in omics.collect()}
    assert sorted(rows) == [100 + i for i in range(len(samples))]
    norm = {i: np.array(rows[100 + i]["expression_norm"]) for i in range(len(samples))}

    # The same profile gives the same standardised profile in any batch: the shift is gone.
    for i in range(len(bases)):
        np.testing.assert_allclose(norm[i], norm[len(bases) + i], atol=1e-5)
    probes = {b: i for i, (_, b, e, split) in enumerate(samples)
              if split == "held out" and e[0] != 1e3}
    np.testing.assert_allclose(norm[probes["b1"]], norm[probes["b2"]], atol=1e-5)

    # Statistics of train samples only: the held-out outlier in b1 moves nothing.
    train_values = np.array([e for _, _, e, split in samples if split == "train"])
    b1 = np.array([e for _, b, e, split in samples if split == "train" and b == "b1"])
    expected_b1 = (probe + shifts["b1"] - b1.mean(0)) / b1.std(0, ddof=1)
    np.testing.assert_allclose(norm[probes["b1"]], expected_b1, rtol=1e-5)
    # Under 2 train samples in a batch (b3) or none (b4): the pooled train statistics.
    pooled_mean, pooled_sd = train_values.mean(0), train_values.std(0, ddof=1)
    b3 = next(i for i, (_, b, _, _) in enumerate(samples) if b == "b3")
    np.testing.assert_allclose(norm[b3], (samples[b3][2] - pooled_mean) / pooled_sd, rtol=1e-5)
    np.testing.assert_allclose(norm[probes["b4"]], (probe + shifts["b4"] - pooled_mean) / pooled_sd,
                               rtol=1e-5)
    assert rows[100]["expression"] == [float(x) for x in samples[0][2]]

    # Asking for more train samples per batch than b1 has (4): b1 takes the pooled ones too.
    strict = omics_inputs(events, source, FRACTIONS, min_batch_samples=5)
    probe_b1 = strict.where(F.col("sample_id") == 100 + probes["b1"]).first()["expression_norm"]
    np.testing.assert_allclose(probe_b1, (probe + shifts["b1"] - pooled_mean) / pooled_sd, rtol=1e-5)
    assert omics_inputs(events, None, FRACTIONS).count() == 0


# The leak tests: subject 1 has rows before, at exactly and after the prediction time P1.
P0, P1, P2 = T(2019, 6, 1), T(2020, 1, 10), T(2020, 3, 1)


@pytest.fixture(scope="module")
def fused(spark):
    points = spark.createDataFrame(
        [(1, p, "m1", [float(i), 1.0], ["events"], "train") for i, p in enumerate([P0, P1, P2])]
        + [(2, P1, "m1", [9.0, 9.0], ["events"], "test")], GOLD_EMBEDDINGS)
    notes = [  # (subject, time, note_id, [chunk features]); None: features not computed yet
        (1, T(2020, 1, 1), 1, [[1.0, 0.0], [0.0, 1.0]]),
        (1, T(2020, 1, 5), 2, [[2.0, 2.0]]),
        (1, T(2020, 1, 8), 3, [[4.0, 0.0]]),
        (1, T(2020, 1, 9), 4, [[0.0, 4.0]]),
        (1, T(2020, 1, 9, 12), 5, [None]),
        (1, P1, 6, [[100.0, 100.0]]),
        (1, T(2020, 1, 20), 7, [[-100.0, 0.0]]),
        (2, P1, 8, [[50.0, 50.0]]),
        (2, T(2020, 2, 1), 9, [[60.0, 60.0]]),
    ]
    chunks = [(s, t, nid, c, f"note {nid} chunk {c}", f"h{nid}.{c}", f)
              for s, t, nid, feats in notes for c, f in enumerate(feats)]
    gold_notes = spark.createDataFrame([r[:6] for r in chunks], GOLD_NOTES)
    features = spark.createDataFrame([(r[5], "text-model", r[6]) for r in chunks if r[6]],
                                     GOLD_NOTE_FEATURES)
    imaging = spark.createDataFrame([
        (1, T(2019, 12, 1), 10, [1.0, 2.0], [3.0]),
        (1, T(2020, 1, 2), 11, [4.0, 5.0], [6.0]),
        (1, P1, 12, [90.0, 90.0], [90.0]),
        (1, T(2020, 2, 1), 13, [7.0, 8.0], [9.0]),
        (2, P1, 14, [80.0, 80.0], [80.0]),
    ], GOLD_IMAGING)
    omics = spark.createDataFrame([
        (1, T(2020, 1, 1), 20, "b1", [7.0, 7.0], [0.5, -0.5]),
        (1, P1, 21, "b2", [9.0, 9.0], [99.0, 99.0]),
        (1, T(2020, 2, 1), 22, "b3", [8.0, 8.0], [1.5, 2.5]),
        (2, T(2020, 2, 1), 23, "b1", [6.0, 6.0], [-1.0, 1.0]),
    ], GOLD_OMICS)
    out = fusion_inputs(points, features, gold_notes, imaging, omics, notes_per_time=3)
    assert columns(out) == columns_of(GOLD_FUSION_INPUTS)
    rows = out.collect()
    assert len(rows) == 4
    return {(r["subject_id"], r["prediction_time"]): r for r in rows}


def test_fusion_notes_never_at_or_after_the_prediction_time(fused):
    at_p1 = fused[(1, P1)]
    # notes 2, 3, 4: the newest three strictly before P1 with features (5 has none yet; 6 is at P1)
    assert at_p1["notes"] == pytest.approx([2.0, 2.0])
    assert at_p1["notes_count"] == 3 and at_p1["notes_time"] == T(2020, 1, 9)
    at_p2 = fused[(1, P2)]  # notes 4, 6, 7: chunks pooled
    assert at_p2["notes"] == pytest.approx([0.0, 104 / 3])
    assert at_p2["notes_count"] == 3 and at_p2["notes_time"] == T(2020, 1, 20)
    for key in [(1, P0), (2, P1)]:  # nothing before; subject 2's only notes are at P1 and after
        assert fused[key]["notes"] is None and fused[key]["notes_time"] is None
        assert fused[key]["notes_count"] == 0


def test_fusion_imaging_never_at_or_after_the_prediction_time(fused):
    assert fused[(1, P1)]["imaging"] == [4.0, 5.0, 6.0]  # erosion then jsn of study 11
    assert fused[(1, P1)]["imaging_time"] == T(2020, 1, 2)
    assert fused[(1, P2)]["imaging"] == [7.0, 8.0, 9.0]
    for key in [(1, P0), (2, P1)]:
        assert fused[key]["imaging"] is None and fused[key]["imaging_time"] is None


def test_fusion_omics_never_at_or_after_the_prediction_time(fused):
    assert fused[(1, P1)]["omics"] == [0.5, -0.5] and fused[(1, P1)]["omics_batch"] == "b1"
    assert fused[(1, P1)]["omics_time"] == T(2020, 1, 1)
    assert fused[(1, P2)]["omics"] == [1.5, 2.5] and fused[(1, P2)]["omics_batch"] == "b3"
    for key in [(1, P0), (2, P1)]:
        assert fused[key]["omics"] is None and fused[key]["omics_batch"] is None
        assert fused[key]["omics_time"] is None
    assert fused[(1, P1)]["events"] == [1.0, 1.0] and fused[(2, P1)]["split"] == "test"


def test_modalities_job_writes_empty_tables_for_absent_ext_sources(spark, tmp_path):
    cfg = small_config(tmp_path / "lake", patients=10)
    events = events_frame(spark, [
        (1, T(2020, 1, 1, 9), "SOURCE/progress", None, "one two three", "note", 5),
        (1, T(2020, 1, 1, 9), sharp_score.MTSS_CODE, 3.0, None, "ext.imaging", 1),
    ])
    write_table(events, cfg.lake, "silver.events")
    extract = tmp_path / "extract"  # as ingested with --source: an OMOP folder, no ext.omics
    spark.createDataFrame([(1, 1960)], "person_id long, year_of_birth int") \
        .write.parquet(str(extract / "person.parquet"))
    spark.createDataFrame([(1, 1, T(2020, 1, 1, 9), *_scores(3))],
                          "imaging_id long, person_id long, imaging_datetime timestamp, "
                          "erosion_scores array<int>, jsn_scores array<int>") \
        .write.parquet(str(extract / "ext_imaging.parquet"))

    result = JOB.run(cfg, Options(source=str(extract), chunk_words=2))
    assert {k: result[k] for k in ("note_chunks", "notes", "imaging_studies", "omics_samples")} == {
        "note_chunks": 2, "notes": 1, "imaging_studies": 1, "omics_samples": 0}
    assert columns(read_table(spark, cfg.lake, "gold.omics")) == columns_of(GOLD_OMICS)
    assert set(result["versions"]) == {"gold.notes", "gold.imaging", "gold.omics"}
