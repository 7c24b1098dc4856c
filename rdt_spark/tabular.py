"""Tabularised history for the baselines, as MEDS-Tab does it: per patient-time, per code of
the vocabulary and per look-back window, how often it was recorded, the mean of its values and,
over the whole history, its last value and the days since it was last recorded.

Only events strictly before the prediction time count. The features of one patient-time are one
dense ``array<float>`` (NaN where a value or a last time is unknown) in the order of
``feature_names``, so a Ray Dataset read from the table feeds a gradient-boosted model directly,
and the all-history counts alone are the code-count logistic regression's input.

Example, windows [30, 0] (0: all history) and vocabulary {RDT/FLARE, RDT/DAS28_ESR (numeric)}:
flares on 2020-01-01 and 2020-03-01 and a DAS28 of 5.1 on 2020-03-01, at t = 2020-03-15, give
``count:RDT/FLARE@30d = 1``, ``count:RDT/FLARE@all = 2``, ``days_since:RDT/FLARE = 14``,
``last:RDT/DAS28_ESR = 5.1``, ``mean:RDT/DAS28_ESR@30d = 5.1``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType, TimestampType

DAY_US = 86_400_000_000
STATIC = np.iinfo(np.int64).min  # a static fact's time (NaT): before every prediction time
FEATURES_SCHEMA = StructType([
    StructField("subject_id", LongType()),
    StructField("prediction_time", TimestampType()),
    StructField("features", ArrayType(FloatType())),
])


def _window(days: int) -> str:
    return f"{days}d" if days else "all"


def feature_names(codes: list[str], numeric: list[str], windows_days: list[int]) -> list[str]:
    """The features in array order: counts per window, days since last, then for numeric codes
    the mean per window and the last value; ``count:<code>@all`` are the code counts."""
    names = [f"count:{c}@{_window(w)}" for c in codes for w in windows_days]
    names += [f"days_since:{c}" for c in codes]
    names += [f"mean:{c}@{_window(w)}" for c in numeric for w in windows_days]
    names += [f"last:{c}" for c in numeric]
    return names


def vocabulary_codes(vocab: DataFrame) -> tuple[list[str], list[str]]:
    """(codes, numeric codes) of gold.vocab that have a token of their own, by token id."""
    kept = vocab.where(~F.col("code").startswith("[")).orderBy("token_id")
    rows = kept.select("code", F.col("value_edges").isNotNull().alias("numeric")).collect()  # small: vocab
    return [r["code"] for r in rows], [r["code"] for r in rows if r["numeric"]]


def _patient_features(events: pd.DataFrame, points: pd.DataFrame, codes: list[str],
                      numeric: list[str], windows_days: list[int]) -> np.ndarray:
    """(points x features) for one patient, in ``feature_names`` order."""
    at = np.sort(points["prediction_time"].to_numpy("datetime64[us]").astype(np.int64))
    n, nw = len(at), len(windows_days)
    counts = np.zeros((n, len(codes), nw), np.float32)
    since = np.full((n, len(codes)), np.nan, np.float32)
    means = np.full((n, len(numeric), nw), np.nan, np.float32)
    last = np.full((n, len(numeric)), np.nan, np.float32)
    # Static facts (no time) come before every prediction time.
    times = events["time"].to_numpy("datetime64[us]").astype(np.int64)  # NaT: int64 min
    order = np.argsort(times, kind="stable")
    ev_code = events["code"].to_numpy(object)[order]
    ev_time, ev_value = times[order], events["numeric_value"].to_numpy(float)[order]
    position = {c: i for i, c in enumerate(codes)}
    numeric_position = {c: i for i, c in enumerate(numeric)}
    for code in pd.unique(ev_code):
        i = position.get(code)
        if i is None:
            continue
        mine = ev_code == code
        t = ev_time[mine]
        upto = np.searchsorted(t, at, side="left")  # recorded strictly before each t
        for j, w in enumerate(windows_days):
            start = np.searchsorted(t, at - w * DAY_US, side="left") if w else 0
            counts[:, i, j] = upto - start
        seen = upto > 0
        previous = t[upto[seen] - 1]
        since[seen, i] = np.where(previous == STATIC, np.nan,
                                  (at[seen].astype(float) - previous.astype(float)) / DAY_US)
        m = numeric_position.get(code)
        if m is None:
            continue
        v = ev_value[mine]
        has = ~np.isnan(v)
        cum_sum = np.r_[0.0, np.cumsum(np.where(has, v, 0.0))]
        cum_n = np.r_[0, np.cumsum(has)]
        for j, w in enumerate(windows_days):
            start = np.searchsorted(t, at - w * DAY_US, side="left") if w else np.zeros(n, int)
            k = cum_n[upto] - cum_n[start]
            with np.errstate(invalid="ignore", divide="ignore"):
                means[:, m, j] = np.where(k > 0, (cum_sum[upto] - cum_sum[start]) / k, np.nan)
        valued = np.flatnonzero(has)
        last_idx = np.searchsorted(valued, upto, side="left") - 1  # last valued row before t
        ok = last_idx >= 0
        last[ok, m] = v[valued[last_idx[ok]]]
    return np.hstack([counts.reshape(n, -1), since, means.reshape(n, -1), last])


def tabular_features(events: DataFrame, points: DataFrame, codes: list[str], numeric: list[str],
                     windows_days: list[int]) -> DataFrame:
    """(subject_id, prediction_time, features) for every point, patient by patient."""

    def per_patient(key, ev: pd.DataFrame, pts: pd.DataFrame) -> pd.DataFrame:
        if pts.empty:
            return pd.DataFrame(columns=FEATURES_SCHEMA.fieldNames())
        matrix = _patient_features(ev, pts, codes, numeric, windows_days)
        at = np.sort(pts["prediction_time"].to_numpy("datetime64[us]"))
        return pd.DataFrame({"subject_id": key[0], "prediction_time": pd.to_datetime(at, utc=True),
                             "features": list(matrix)})

    return (events.select("subject_id", "time", "code", "numeric_value").groupBy("subject_id")
            .cogroup(points.select("subject_id", "prediction_time").distinct()
                     .groupBy("subject_id"))
            .applyInPandas(per_patient, FEATURES_SCHEMA))
