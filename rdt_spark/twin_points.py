"""The patient-times a batch of twin queries asks about, and the table their answers go to.

``query_points`` joins each embedding of the chosen split (at the index's pinned versions) with
the clinical state at that time: the twin's search space is built from both. Ray reads the
result (Parquet) and forecasts (``ray_training.twin.forecast_points``); ``forecast_table`` shapes
what comes back into gold.twin_forecasts.

Example: ``query_points(embeddings, states, STATE_FEATURES, "test", model)`` has one row per test patient-time
with an embedding of that model: (subject_id, prediction_time, split, embedding, das28, mtss,
disease_years, age, seropositive, current_classes, past_classes).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rdt_spark.schemas import GOLD_TWIN_FORECASTS, conform

KEYS = ["subject_id", "prediction_time"]


def query_points(embeddings: DataFrame, states: DataFrame, state_columns: list[str],
                 split: str | None, model_version: str,
                 since: dt.datetime | None = None) -> DataFrame:
    """Embeddings of ``split`` (None: every split) made by ``model_version``, at or after
    ``since`` if given, each with the patient's ``state_columns`` then (the index's
    ``STATE_FEATURES``)."""
    chosen = embeddings.where(F.col("model_version") == model_version)
    if split is not None:
        chosen = chosen.where(F.col("split") == split)
    if since is not None:
        chosen = chosen.where(F.col("prediction_time") >= F.lit(since))
    return (chosen.select(*KEYS, "split", "embedding")
            .join(states.select(*KEYS, *state_columns), KEYS, "left"))


def forecast_table(forecasts: DataFrame, points: DataFrame, manifest: dict,
                   forecast_at: dt.datetime) -> DataFrame:
    """Ray's forecast rows as gold.twin_forecasts: with each point's split and what made them."""
    return conform(
        forecasts.join(points.select(*KEYS, "split"), KEYS)
        .withColumn("model_version", F.lit(manifest["model_version"]))
        .withColumn("index_version", F.lit(manifest["index_version"]))
        .withColumn("forecast_at", F.lit(forecast_at)), GOLD_TWIN_FORECASTS)
