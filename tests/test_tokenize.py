import datetime as dt

import pytest
from pyspark.sql import functions as F

from rdt_spark.splits import split_of
from rdt_spark.tasks import flare_tasks
from rdt_spark.timelines import build_timelines, prediction_times
from rdt_spark.vocab import build_vocab

T = dt.datetime
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SCHEMA = ("subject_id long, time timestamp, code string, numeric_value float, "
          "text_value string, visit_id long, source_table string, source_row_id long")


def events(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def test_vocab_keeps_frequent_codes_and_folds_rare_ones(spark):
    ev = events(spark, [(1, T(2020, 1, i + 1), c, None, None, None, "x", i)
                        for i, c in enumerate("AABACC")])
    vocab = {r.code: r.token_id for r in build_vocab(ev, min_count=2).collect()}
    assert vocab == {"[PAD]": 0, "[UNK]": 1, "A": 2, "C": 3}


def test_timeline_puts_static_facts_first_and_breaks_ties_by_code(spark):
    ev = events(spark, [
        (1, T(2020, 1, 1, 9), "Visit/OP", None, None, 100, "visit_occurrence", 100),
        (1, T(2020, 1, 1, 9), "LOINC/1988-5", 12.0, None, 100, "measurement", 101),
        (1, None, "Gender/F", None, None, None, "person", 1),
        (1, T(1960, 1, 1), "MEDS_BIRTH", None, None, None, "person", 1),
        (1, T(2020, 3, 1, 9), "RDT/FLARE", None, None, 200, "condition_occurrence", 201),
    ])
    vocab = build_vocab(ev, min_count=1)
    ids = {r.code: r.token_id for r in vocab.collect()}
    row = build_timelines(ev, vocab, FRACTIONS, "v").first()
    assert row.tokens == [ids["Gender/F"], ids["MEDS_BIRTH"], ids["LOINC/1988-5"],
                          ids["Visit/OP"], ids["RDT/FLARE"]]
    assert row.ages[0] is None and row.ages[1] == 0.0 and 59.9 < row.ages[2] < 60.1
    assert row.deltas[3] == 0.0 and row.deltas[4] == pytest.approx(60.0, abs=0.01)
    assert row.values[0] is None and row.values[2] is not None
    assert row.prediction_times == [T(2020, 1, 2), T(2020, 3, 2)]


def test_prediction_time_is_after_every_event_of_the_visit_day(spark):
    ev = events(spark, [(1, T(2020, 1, 1, h), "X", None, None, 7, "m", h) for h in (9, 17)])
    (row,) = prediction_times(ev).collect()
    assert row.prediction_time == T(2020, 1, 2)


def test_splits_hash_subjects_stably(spark):
    ids = spark.range(20000).select(F.col("id").alias("subject_id"))
    first = ids.select("subject_id", split_of(F.col("subject_id"), FRACTIONS).alias("s"))
    again = ids.repartition(7).select("subject_id",
                                      split_of(F.col("subject_id"), FRACTIONS).alias("s"))
    assert first.exceptAll(again).count() == 0
    shares = {r.s: r["count"] / 20000 for r in first.groupBy("s").count().collect()}
    assert shares["train"] == pytest.approx(0.7, abs=0.02)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)


def test_flare_labels_look_only_after_the_prediction_time(spark):
    visit = lambda d, vid: (1, d, "Visit/OP", None, None, vid, "v", vid)  # noqa: E731
    flare = lambda d, rid: (1, d, "RDT/FLARE", None, None, None, "c", rid)  # noqa: E731
    ev = events(spark, [
        visit(T(2020, 1, 1, 9), 1), flare(T(2020, 1, 1, 10), 90),  # same day: history, not label
        visit(T(2021, 1, 1, 9), 2), flare(T(2021, 6, 30), 91),  # 180 days after 2021-01-02
        visit(T(2022, 1, 1, 9), 3), flare(T(2022, 7, 2), 92),  # 181 days: outside the window
        visit(T(2023, 1, 1, 9), 4),  # nothing follows: censored
    ])
    got = {r.prediction_time.year: (r.label, r.censored)
           for r in flare_tasks(ev, "RDT/FLARE", 180, FRACTIONS).collect()}
    assert got[2020] == (False, False)
    assert got[2021] == (True, False)
    assert got[2022] == (False, False)
    assert got[2023] == (False, True)
