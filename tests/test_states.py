"""gold.patient_states reads only events before each prediction time, gold.trajectories only
events at or after it (rdt_spark/states.py), on hand-made events."""

import datetime as dt

import pytest

from rdt_spark.states import StatesConfig, states_and_trajectories
from rdt_spark.tabular import feature_names, tabular_features
from rdt_spark.timelines import prediction_times

SCHEMA = ("subject_id long, time timestamp, code string, numeric_value float, visit_id long, "
          "source_table string")
CLASSES = {"methotrexate": ["RxNorm/6851"], "tnf_inhibitor": ["RxNorm/327361"]}


def _t(day: str, hour: int = 10) -> dt.datetime:
    return dt.datetime.fromisoformat(day) + dt.timedelta(hours=hour)


@pytest.fixture(scope="module")
def events(spark):
    rows = [
        (1, None, "Gender/F", None, None, "person"),
        (1, dt.datetime(1960, 1, 1), "MEDS_BIRTH", None, None, "person"),
        (1, _t("2020-01-01"), "SNOMED/69896004", None, 1, "condition_occurrence"),
        (1, _t("2020-01-01"), "LOINC/11572-5", 35.0, 1, "measurement"),  # RF positive
        (1, _t("2020-01-01"), "RxNorm/6851", None, 1, "drug_exposure"),
        (1, _t("2020-01-01"), "RDT/DAS28_ESR", 5.1, 1, "measurement"),
        (1, _t("2020-01-01"), "RDT/DAS28_CRP", 4.8, 1, "measurement"),  # same time: ESR wins
        (1, _t("2020-04-01"), "RxNorm/327361", None, 2, "drug_exposure"),  # tnf only: mtx past
        (1, _t("2020-04-01"), "RDT/DAS28_ESR", 3.0, 2, "measurement"),
        (1, _t("2020-04-01"), "RDT/NOTE_RHEUM_VISIT", None, 2, "note"),
        (1, _t("2020-05-01"), "RDT/FLARE", None, 3, "condition_occurrence"),
        (1, _t("2020-07-01"), "RDT/DAS28_ESR", 2.5, 4, "measurement"),
    ]
    return spark.createDataFrame(rows, SCHEMA)


def test_states_see_only_the_past_and_trajectories_only_the_future(events):
    both = states_and_trajectories(events, prediction_times(events), StatesConfig(), CLASSES,
                                   {"train": 0.7, "val": 0.1, "test": 0.2})
    rows = {r["prediction_time"].date().isoformat(): r
            for r in both.orderBy("prediction_time").collect()}  # small: four rows
    first, second = rows["2020-01-02"], rows["2020-04-02"]
    assert first["sex"] == "F" and first["age"] == pytest.approx(60.0, abs=0.01)
    assert first["seropositive"] is True and first["das28"] == pytest.approx(5.1)
    assert first["current_classes"] == ["methotrexate"] and first["past_classes"] == []
    assert first["modalities"] == ["events"]  # the note comes later
    assert second["current_classes"] == ["tnf_inhibitor"]
    assert second["past_classes"] == ["methotrexate"] and second["das28"] == pytest.approx(3.0)
    assert second["modalities"] == ["events", "notes"]
    # Trajectories: the flare 120 days after 2020-01-02, the DAS28 of 2020-04-01 nearest +3m.
    assert first["event_days"] == pytest.approx(120 + 10 / 24, abs=1e-6)
    assert first["das28_course"][0] == pytest.approx(3.0)  # 90 days on, within 45 of +3 months
    assert first["das28_course"][1] == pytest.approx(2.5)  # +6 months: 2020-07-01
    assert first["das28_course"][2] is None  # nothing near +12 months
    assert rows["2020-07-02"]["event_days"] is None  # no flare after that visit


def test_tabular_history_counts_windows_and_last_values_before_each_time(events):
    codes, numeric = ["RDT/FLARE", "RDT/DAS28_ESR", "Gender/F"], ["RDT/DAS28_ESR"]
    names = feature_names(codes, numeric, [30, 0])
    rows = {r["prediction_time"].date().isoformat(): dict(zip(names, r["features"], strict=True))
            for r in tabular_features(events, prediction_times(events), codes, numeric, [30, 0])
            .collect()}  # small: four rows
    late = rows["2020-07-02"]
    assert late["count:RDT/FLARE@all"] == 1 and late["count:RDT/FLARE@30d"] == 0
    assert late["count:RDT/DAS28_ESR@all"] == 3 and late["last:RDT/DAS28_ESR"] == pytest.approx(2.5)
    assert late["mean:RDT/DAS28_ESR@30d"] == pytest.approx(2.5)
    assert late["count:Gender/F@all"] == 1  # a static fact precedes every time
    assert rows["2020-01-02"]["count:RDT/FLARE@all"] == 0  # the flare is still to come
