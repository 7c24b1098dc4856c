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


def coded(spark, codes, values=None):
    values = values or [None] * len(codes)
    return events(spark, [(1, T(2020, 1, 1) + dt.timedelta(days=i), c, v, None, None, "x", i)
                          for i, (c, v) in enumerate(zip(codes, values, strict=True))])


def test_vocab_folds_rare_codes_into_their_vocabularys_unknown_token(spark):
    ev = coded(spark, ["LOINC/A"] * 3 + ["LOINC/B", "RDT/C", "RDT/C", "MEDS_BIRTH"])
    rows = {r.code: (r.token_id, r["count"]) for r in build_vocab(ev, min_count=2).collect()}
    assert rows == {"[PAD]": (0, 0), "[UNK]": (1, 1), "[UNK:LOINC]": (2, 1), "[UNK:RDT]": (3, 0),
                    "LOINC/A": (4, 3), "RDT/C": (5, 2)}


def test_vocab_version_changes_with_the_bins_and_is_shared_by_every_row(spark):
    codes = ["LOINC/A"] * 20
    first = build_vocab(coded(spark, codes, [float(i) for i in range(20)]), 2)
    same = build_vocab(coded(spark, codes, [float(i) for i in range(20)]), 2)
    other = build_vocab(coded(spark, codes, [float(2 * i) for i in range(20)]), 2)
    versions = {r.vocab_version for r in first.collect()}
    assert len(versions) == 1
    assert versions == {r.vocab_version for r in same.collect()}
    assert versions != {r.vocab_version for r in other.collect()}


def test_numeric_codes_get_per_code_quantile_bins_mapped_to_minus_one_to_one(spark):
    values = [float(v) for v in range(1, 101)]
    ev = coded(spark, ["LOINC/A"] * 100 + ["LOINC/B"] * 100, values + [v * 10 for v in values])
    vocab = build_vocab(ev, min_count=1, n_bins=4)
    edges = {r.code: r.value_edges for r in vocab.collect()}
    assert edges["LOINC/A"] == [25.0, 50.0, 75.0]
    assert edges["LOINC/B"] == [250.0, 500.0, 750.0]
    assert edges["[UNK:LOINC]"] is None
    probe = events(spark, [(1, T(2021, 1, 1), "LOINC/A", v, None, None, "x", i)
                           for i, v in enumerate([1.0, 30.0, 60.0, 100.0, None])]
                   + [(1, T(2021, 1, 2), "LOINC/B", 30.0, None, None, "x", 9)])
    row = build_timelines(probe, vocab, FRACTIONS).first()
    assert row.values[:4] == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])
    assert row.values[4] is None and row.values[5] == pytest.approx(-1.0)


def test_codes_unseen_in_training_become_their_vocabularys_unknown_token(spark):
    vocab = build_vocab(coded(spark, ["LOINC/A", "LOINC/A", "RxNorm/1", "RxNorm/1"]), 2)
    ids = {r.code: r.token_id for r in vocab.collect()}
    row = build_timelines(coded(spark, ["LOINC/A", "LOINC/Z", "RxNorm/9", "SNOMED/1", "X"],
                                [1.0, 2.0, None, None, None]), vocab, FRACTIONS).first()
    assert row.tokens == [ids["LOINC/A"], ids["[UNK:LOINC]"], ids["[UNK:RxNorm]"], 1, 1]
    assert row.values[1] is None  # an unknown token carries no value
    assert row.vocab_version == vocab.first().vocab_version


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
    row = build_timelines(ev, vocab, FRACTIONS).first()
    assert row.tokens == [ids["Gender/F"], ids["MEDS_BIRTH"], ids["LOINC/1988-5"],
                          ids["Visit/OP"], ids["RDT/FLARE"]]
    assert row.ages[0] is None and row.ages[1] == 0.0 and 59.9 < row.ages[2] < 60.1
    assert row.deltas[3] == 0.0 and row.deltas[4] == pytest.approx(60.0, abs=0.01)
    assert row.values[0] is None and row.values[2] is not None
    assert row.visit_ids == [None, None, 100, 100, 200]
    assert row.prediction_times == [T(2020, 1, 2), T(2020, 3, 2)]
    assert row.dropped_events == 0


def test_long_histories_keep_statics_and_the_newest_events_and_count_the_rest(spark):
    ev = events(spark, [(1, None, "Gender/F", None, None, None, "person", 1)]
                + [(1, T(2020, 1, d, 9), "Visit/OP", None, None, d, "v", d) for d in range(1, 11)])
    vocab = build_vocab(ev, min_count=1)
    full = build_timelines(ev, vocab, FRACTIONS).first()
    cut = build_timelines(ev, vocab, FRACTIONS, max_events=4).first()
    assert cut.dropped_events == 6 and full.dropped_events == 0
    assert cut.tokens == [full.tokens[0]] + full.tokens[-4:]
    assert cut.times == [None] + full.times[-4:]
    assert cut.deltas == [0.0] + full.deltas[-4:]  # the gap to the dropped event is kept
    # prediction times whose history was cut away (at or before the first kept event) go
    assert cut.prediction_times == [T(2020, 1, d) for d in range(8, 12)]


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
        visit(T(2021, 1, 1, 9), 2), flare(T(2021, 6, 30), 91),  # 179 days after 2021-01-02
        visit(T(2022, 1, 1, 9), 3), flare(T(2022, 7, 1), 92),  # 180 days: outside [t, t+180d)
        visit(T(2023, 1, 1, 9), 4),  # nothing follows: censored
    ])
    got = {r.prediction_time.year: (r.label, r.censored)
           for r in flare_tasks(ev, "RDT/FLARE", 180, FRACTIONS).collect()}
    assert got[2020] == (False, False)
    assert got[2021] == (True, False)
    assert got[2022] == (False, False)
    assert got[2023] == (False, True)
