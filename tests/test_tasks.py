"""Task labels from conf/tasks.yaml: one test per task kind, and the leak tests.

Features for a prediction time are the timeline events strictly before it (what the embedding
reads); labels read only events at or after it, except a kind's declared baseline.
"""

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from rdt_spark.settings import ConfigError
from rdt_spark.splits import split_of
from rdt_spark.tasks import TaskSuite, load_tasks, task_labels
from rdt_spark.timelines import build_timelines
from rdt_spark.vocab import build_vocab

T = dt.datetime
D = dt.timedelta
CONF = Path(__file__).resolve().parents[1] / "conf"
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SCHEMA = ("subject_id long, time timestamp, code string, numeric_value float, "
          "text_value string, visit_id long, source_table string, source_row_id long")
SUITE = load_tasks(CONF / "tasks.yaml")


class Rows:
    """Hand-built silver.events rows with unique row ids."""

    def __init__(self):
        self.rows = []

    def add(self, subject, time, code, value=None, visit=None):
        self.rows.append((subject, time, code, None if value is None else float(value), None,
                          visit, "x", len(self.rows)))
        return self

    def visit(self, subject, time):
        return self.add(subject, time, "Visit/OP", visit=len(self.rows) + 10_000)

    def frame(self, spark):
        return spark.createDataFrame(self.rows, SCHEMA)


def only(suite: TaskSuite, *names: str) -> TaskSuite:
    return dataclasses.replace(suite, tasks={n: suite.tasks[n] for n in names})


def labels(spark, rows: Rows, *names: str) -> dict:
    got = task_labels(rows.frame(spark), only(SUITE, *names), FRACTIONS).collect()
    return {(r.subject_id, r.task, r.prediction_time): (r.label, r.censored, r.category)
            for r in got}


def test_shipped_task_definitions_name_the_required_tasks():
    assert set(SUITE.tasks) == {"flare_within_180d", "das28_remission_12m", "eular_response_6m",
                                "radiographic_progression_2y"}
    assert SUITE.drug_classes["tnf_inhibitor"][0] == "RxNorm/327361"
    assert len(SUITE.drug_classes) == 7


def test_a_misspelt_task_key_is_named(tmp_path):
    bad = tmp_path / "tasks.yaml"
    bad.write_text((CONF / "tasks.yaml").read_text().replace("tolerance_days: 90",
                                                            "tolerence_days: 90"))
    with pytest.raises(ConfigError, match=r"unknown key 'tasks.das28_remission_12m.tolerence_days'"):
        load_tasks(bad)


def test_event_within_labels_and_censors_a_flare_window(spark):
    rows = (Rows().visit(1, T(2020, 1, 1, 9)).add(1, T(2020, 5, 1), "RDT/FLARE")
            .visit(2, T(2020, 1, 1, 9)).add(2, T(2020, 12, 1), "Visit/OP")
            .visit(3, T(2020, 1, 1, 9)).add(3, T(2020, 3, 1), "LOINC/1988-5", 3))
    got = labels(spark, rows, "flare_within_180d")
    t = T(2020, 1, 2)
    assert got[(1, "flare_within_180d", t)] == (True, False, None)
    assert got[(2, "flare_within_180d", t)] == (False, False, None)  # followed beyond 180 days
    assert got[(3, "flare_within_180d", t)] == (False, True, None)  # last event before the end


def test_das28_remission_reads_the_measurement_nearest_twelve_months(spark):
    task = "das28_remission_12m"
    rows = Rows()
    for s in (1, 2, 3, 4):
        rows.visit(s, T(2020, 1, 1, 9))  # t = 2020-01-02, target 2021-01-01
    rows.add(1, T(2020, 11, 1), "RDT/DAS28_ESR", 3.5).add(1, T(2021, 1, 5), "RDT/DAS28_ESR", 2.1)
    rows.add(2, T(2020, 12, 20), "RDT/DAS28_CRP", 3.0)
    rows.add(3, T(2020, 6, 1), "RDT/DAS28_ESR", 1.5)  # outside 365 d +- 90 d
    rows.add(4, T(2021, 1, 1), "RDT/DAS28_CRP", 2.4).add(4, T(2021, 1, 1), "RDT/DAS28_ESR", 2.8)
    got = labels(spark, rows, task)
    t = T(2020, 1, 2)
    assert got[(1, task, t)] == (True, False, None)
    assert got[(2, task, t)] == (False, False, None)
    assert got[(3, task, t)] == (False, True, None)
    assert got[(4, task, t)] == (False, False, None)  # same time: ESR is listed first


def test_eular_response_indexes_at_the_end_of_the_day_a_class_starts(spark):
    rows = Rows()
    mtx, ada, eta = "RxNorm/6851", "RxNorm/327361", "RxNorm/214555"
    cases = {1: (6.0, 3.0), 2: (6.0, 4.5), 3: (5.0, 4.2), 4: (6.0, 5.3), 5: (6.0, None)}
    for s, (base, out) in cases.items():
        rows.add(s, T(2020, 3, 4, 8), "RDT/DAS28_ESR", base)
        rows.visit(s, T(2020, 3, 4, 9)).add(s, T(2020, 3, 4, 10), mtx, visit=1)
        if out is not None:
            rows.add(s, T(2020, 9, 1), "RDT/DAS28_ESR", out)  # index + 180 d, target + 182 d
        rows.add(s, T(2020, 5, 1), mtx)  # a later prescription does not move the start
    # a second class; its baseline is older than the 90-day lookback: censored
    rows.add(1, T(2021, 1, 1), "RDT/DAS28_ESR", 6.0).add(1, T(2021, 6, 1), eta)
    rows.add(1, T(2021, 12, 1), "RDT/DAS28_ESR", 2.0).add(1, T(2021, 6, 2), ada)
    got = labels(spark, rows, "eular_response_6m")
    t, mtx_task = T(2020, 3, 5), "eular_response_6m/methotrexate"
    assert got[(1, mtx_task, t)] == (True, False, "good")
    assert got[(2, mtx_task, t)] == (True, False, "moderate")
    assert got[(3, mtx_task, t)] == (True, False, "moderate")
    assert got[(4, mtx_task, t)] == (False, False, "none")
    assert got[(5, mtx_task, t)] == (False, True, None)
    assert got[(1, "eular_response_6m/tnf_inhibitor", T(2021, 6, 2))] == (False, True, None)
    assert len([k for k in got if k[1].endswith("tnf_inhibitor")]) == 1  # first start only


def test_radiographic_progression_compares_later_studies_with_the_baseline(spark):
    task = "radiographic_progression_2y"
    rows = Rows()
    for s in (1, 2, 3):
        rows.add(s, T(2020, 1, 1, 8), "RDT/MTSS", 10).visit(s, T(2020, 1, 1, 9))
    rows.add(1, T(2021, 6, 1), "RDT/MTSS", 16)  # +6 within 2 years
    rows.add(2, T(2021, 12, 1), "RDT/MTSS", 12).add(2, T(2022, 3, 1), "RDT/MTSS", 40)  # late
    rows.add(3, T(2020, 2, 1), "RDT/MTSS", 12)  # a month on: too short to call it stable
    rows.add(4, T(2017, 1, 1), "RDT/MTSS", 10).visit(4, T(2020, 1, 1, 9))  # baseline too old
    got = labels(spark, rows, task)
    t = T(2020, 1, 2)
    assert got[(1, task, t)] == (True, False, None)
    assert got[(2, task, t)] == (False, False, None)
    assert got[(3, task, t)] == (False, True, None)
    assert not [k for k in got if k[0] == 4]


def _subject_in(spark, split: str) -> int:
    ids = spark.range(1, 200).select(F.col("id").alias("s"),
                                     split_of(F.col("id"), FRACTIONS).alias("split"))
    return ids.where(F.col("split") == split).orderBy("s").first().s


def _history(subject: int) -> Rows:
    """Five years of visits with DAS28, flares, two drug starts and yearly radiographs."""
    rows = Rows().add(subject, None, "Gender/F").add(subject, T(1960, 1, 1), "MEDS_BIRTH")
    day = T(2018, 1, 1, 9)
    for i in range(30):
        rows.visit(subject, day).add(subject, day + D(hours=1), "RDT/DAS28_ESR", 2.0 + (i % 7) / 2)
        if i % 5 == 2:
            rows.add(subject, day + D(days=20), "RDT/FLARE")
        if i % 6 == 0:
            rows.add(subject, day + D(hours=2), "RDT/MTSS", 10 + i)
        if i == 3:
            rows.add(subject, day + D(hours=3), "RxNorm/6851")
        if i == 14:
            rows.add(subject, day + D(hours=3), "RxNorm/327361")
        day += D(days=60)
    return rows


AT = T(2018, 1, 1) + D(days=60 * 15 + 1)  # the end of the 16th visit's day, after both starts


def _prefix(row, at: dt.datetime, context: int | None = None) -> tuple:
    before = sum(1 for t in row.times if t is None or t < at)
    start = 0 if context is None else max(0, before - context)
    return tuple(tuple(row[k][start:before]) for k in ("tokens", "ages", "deltas", "values",
                                                        "visit_ids", "times"))


def test_events_at_or_after_a_prediction_time_never_change_its_features(spark):
    subject, other = _subject_in(spark, "test"), _subject_in(spark, "train")
    base = _history(subject)
    base.rows += _history(other).rows
    at = AT
    future = Rows()
    future.rows = list(base.rows)
    for rid, r in enumerate(base.rows):  # change every value from t on, add events after it
        if r[0] == subject and r[1] is not None and r[1] >= at and r[3] is not None:
            future.rows[rid] = (*r[:3], r[3] * 3 + 1, *r[4:])
    future.add(subject, at, "RDT/FLARE").add(subject, at + D(days=3), "LOINC/NEW", 99)
    for i in range(10):
        future.visit(subject, at + D(days=5 + i)).add(subject, at + D(days=5 + i), "RxNorm/612865")

    def timeline(rows, **cap):
        ev = rows.frame(spark)
        train = ev.where(split_of(F.col("subject_id"), FRACTIONS) == "train")
        vocab = build_vocab(train, min_count=1)
        tl = build_timelines(ev, vocab, FRACTIONS, **cap).where(F.col("subject_id") == subject)
        return vocab.first().vocab_version, tl.first()

    (v0, row0), (v1, row1) = timeline(base), timeline(future)
    assert v0 == v1  # the vocabulary is counted on training subjects only
    assert at in row0.prediction_times and at in row1.prediction_times
    assert _prefix(row0, at) == _prefix(row1, at)
    assert len(row1.tokens) > len(row0.tokens)  # the perturbation did reach the timeline

    # with a cap, future events push old ones out; a prediction time stays only while the
    # model's window before it is untouched
    (_, cut0), (_, cut1) = (timeline(r, max_events=90, context=10) for r in (base, future))
    assert cut1.dropped_events > cut0.dropped_events
    kept = [t for t in cut1.prediction_times if t <= at]
    assert kept and len(kept) < len([t for t in row1.prediction_times if t <= at])
    for t in kept:
        assert _prefix(cut1, t, 10) == _prefix(row0, t, 10)


TNF_INDEX = T(2018, 1, 1) + D(days=60 * 14 + 1)  # the end of the day the TNF inhibitor starts


@pytest.mark.parametrize("at", [AT, TNF_INDEX], ids=["visit_end", "drug_start"])
def test_events_before_a_prediction_time_never_change_its_labels(spark, at):
    subject = _subject_in(spark, "test")
    base = _history(subject)
    # the declared baselines stay: mTSS within the radiographic lookback, DAS28 within the EULAR
    # lookback before the start day; drug events stay too, as they define the EULAR index
    declared = {"RDT/MTSS": at - D(days=365), "RDT/DAS28_ESR": at - D(days=1 + 90)}
    past = Rows()
    for r in base.rows:
        kept = r[2].startswith("RxNorm/") or r[2] == "Visit/OP" or (
            r[2] in declared and r[1] >= declared[r[2]])
        if r[1] is not None and r[1] < at and r[3] is not None and not kept:
            r = (*r[:3], 9.0 - r[3] / 2, *r[4:])  # every other earlier value changed
        if r[2] == "RDT/FLARE" and r[1] < at:
            continue  # earlier flares removed
        past.rows.append(r)
    past.add(subject, at - D(hours=1), "RDT/FLARE").add(subject, at - D(days=2), "LOINC/NEW", 1)
    past.add(subject, at - D(days=400), "RDT/MTSS", 200)  # outside every lookback from t on

    def later_labels(rows):
        got = task_labels(rows.frame(spark), SUITE, FRACTIONS).where(F.col("prediction_time") >= at)
        return {(r.task, r.prediction_time): (r.label, r.censored, r.category)
                for r in got.collect()}

    before, after = later_labels(base), later_labels(past)
    assert before == after
    tasks = {task for task, _ in before}
    assert {"flare_within_180d", "das28_remission_12m", "radiographic_progression_2y"} <= tasks
    if at == TNF_INDEX:
        assert before[("eular_response_6m/tnf_inhibitor", at)][1] is False  # not censored
    assert any(label for label, _, _ in before.values())


def test_a_config_whose_task_file_is_missing_names_the_key(tmp_path):
    from jobs.config import load_config

    cfg = tmp_path / "mine.yaml"
    cfg.write_text("lake: ./lake\n")
    with pytest.raises(ConfigError, match=r"'tokenize.tasks_file' names no file"):
        load_config(cfg)
    (tmp_path / "tasks.yaml").write_text((CONF / "tasks.yaml").read_text())
    assert load_config(cfg).tokenize.tasks_file == str(tmp_path / "tasks.yaml")


def test_tokenize_plans_never_funnel_through_one_partition(spark):
    from conftest import single_partition_steps

    rows = Rows()
    for s in range(1, 6):
        rows.visit(s, T(2020, 1, 1, 9)).add(s, T(2020, 1, 1, 10), "RDT/DAS28_ESR", 5.0)
        rows.add(s, T(2020, 1, 1, 10), "RxNorm/6851", visit=1).add(s, T(2020, 3, 1), "RDT/FLARE")
        rows.add(s, T(2020, 1, 1, 11), "RDT/MTSS", 10.0).visit(s, T(2021, 1, 1, 9))
        rows.add(s, T(2021, 1, 1, 10), "RDT/MTSS", 20.0)
    events = rows.frame(spark)
    vocab = build_vocab(events, 1)
    timelines = build_timelines(events, vocab, FRACTIONS, 1000, context=8)
    assert single_partition_steps(timelines) == []
    assert single_partition_steps(task_labels(events, SUITE, FRACTIONS)) == []
