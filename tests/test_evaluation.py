"""The evaluation's metrics in Spark against direct computations, and the criteria file."""

import datetime as dt

import numpy as np
import pytest
from scipy.stats import rankdata

from rdt_spark import evaluation as ev
from rdt_spark.cohorts import load_criteria
from rdt_spark.settings import ConfigError


def _auroc(y, s):
    r = rankdata(s)
    n1 = y.sum()
    return (r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


def _average_precision(y, s):
    total = 0.0
    for t in np.unique(s)[::-1]:  # thresholds, highest first; ties enter together
        at = s >= t
        total += y[s == t].sum() * y[at].sum() / at.sum()
    return total / y.sum()


def test_metrics_match_direct_computation_with_tied_scores(spark):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    s = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, 400), 0, 1), 1)  # many ties
    when = dt.datetime(2020, 1, 1)
    rows = [("test", "flare", method, i, when, float(score), float(label))
            for method, scores in (("twin", s), ("flat", np.full(400, 0.3)))
            for i, (score, label) in enumerate(zip(scores, y, strict=True))]
    scored = spark.createDataFrame(rows, "evaluation string, task string, method string, "
                                         "subject_id long, prediction_time timestamp, "
                                         "score double, label double")
    metrics, calibration = ev.binary_metrics(scored, bins=10, min_cell_size=50)
    m = {(r["method"], r["metric"]): r["value"] for r in metrics.collect()}  # small: 10 rows
    assert m[("twin", "auroc")] == pytest.approx(_auroc(y, s))
    assert m[("twin", "auprc")] == pytest.approx(_average_precision(y, s))
    assert m[("twin", "brier")] == pytest.approx(np.mean((s - y) ** 2))
    assert m[("flat", "auroc")] == pytest.approx(0.5)
    assert m[("twin", "points")] == 400 and m[("twin", "positives")] == y.sum()
    assert calibration.count() == 0  # 10 bins of 40 points, each under the cell size of 50
    _, calibration = ev.binary_metrics(scored, bins=5, min_cell_size=50)
    twin = sorted((b for b in calibration.collect() if b["method"] == "twin"),  # small: 5 bins
                  key=lambda b: b["bin"])
    assert [b["n"] for b in twin] == [80] * 5
    assert twin[0]["predicted"] < twin[-1]["predicted"] and twin[0]["observed"] < twin[-1]["observed"]


def test_response_truth_labels_every_class_at_the_end_of_the_decision_day(spark):
    truth = spark.createDataFrame(
        [(1, 1, dt.datetime(2013, 9, 4, 16, 45), "tnf_inhibitor", "good"),
         (1, 1, dt.datetime(2013, 9, 4, 16, 45), "csdmard", "none"),
         (2, 1, dt.datetime(2014, 1, 1, 9, 0), "tnf_inhibitor", "moderate")],
        "person_id long, decision_number int, decision_time timestamp, drug_class string, "
        "response string")
    splits = spark.createDataFrame([(1, "test"), (2, "train")], "subject_id long, split string")
    tasks = {"tnf_inhibitor": "eular/tnf_inhibitor", "csdmard": "eular/csdmard"}
    rows = ev.response_truth(truth, splits, tasks, "test").orderBy("task").collect()  # small
    assert [(r["task"], r["label"]) for r in rows] == [("eular/csdmard", 0.0),
                                                        ("eular/tnf_inhibitor", 1.0)]
    assert rows[0]["prediction_time"] == dt.datetime(2013, 9, 5)


def test_criteria_files_fail_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninclude:\n  age: [80, 18]\n")
    with pytest.raises(ConfigError, match="include.age"):
        load_criteria(path)
    path.write_text("name: x\ninclude:\n  agee: [18, 80]\n")
    with pytest.raises(ConfigError, match="include.agee"):
        load_criteria(path)
    assert load_criteria("conf/cohort.example.yaml").include.das28_above == 3.2
