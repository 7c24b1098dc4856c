"""Score the twin's forecasts against baselines on the test split, all in Spark.

Baselines: the population prior (the training split's event rate, the same for everyone, so its
AUROC is 0.5 by construction) and a logistic regression on counts of each code strictly before
the prediction time, fitted on the training split.
"""

from __future__ import annotations

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import CountVectorizer
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def labelled_points(tasks: DataFrame, task: str) -> DataFrame:
    """Uncensored (subject_id, prediction_time, label, split) rows of one task."""
    return (tasks.where((F.col("task") == task) & ~F.col("censored"))
            .select("subject_id", "prediction_time", F.col("label").cast("double"), "split"))


def codes_before(events: DataFrame, points: DataFrame) -> DataFrame:
    """Each point with the list of codes recorded strictly before it (static facts included)."""
    ev = events.select(F.col("subject_id").alias("_s"), F.col("time").alias("_t"), "code")
    joined = points.join(
        ev, (F.col("subject_id") == F.col("_s"))
        & (F.col("_t").isNull() | (F.col("_t") < F.col("prediction_time"))), "left")
    return (joined.groupBy(*points.columns)
            .agg(F.collect_list("code").alias("codes")))


def logistic_baseline(events: DataFrame, points: DataFrame, reg_param: float = 0.01) -> DataFrame:
    """Test-split points scored by a code-count logistic regression trained on the train split."""
    featured = codes_before(events, points)
    train = featured.where(F.col("split") == "train")
    vectoriser = CountVectorizer(inputCol="codes", outputCol="counts", minDF=5).fit(train)
    scaled = (vectoriser.transform(featured)
              .withColumn("features", F.col("counts")))  # counts as they are: interpretable
    model = LogisticRegression(featuresCol="features", labelCol="label", regParam=reg_param,
                               maxIter=100).fit(scaled.where(F.col("split") == "train"))
    return (model.transform(scaled.where(F.col("split") == "test"))
            .select("subject_id", "prediction_time",
                    vector_to_array("probability")[1].alias("score")))


def score_metrics(scored: DataFrame) -> dict:
    """AUROC and Brier score of ``score`` against ``label``, and the row count."""
    auroc = BinaryClassificationEvaluator(
        rawPredictionCol="score", labelCol="label", metricName="areaUnderROC").evaluate(scored)
    row = scored.agg(F.mean((F.col("score") - F.col("label")) ** 2).alias("brier"),
                     F.count("*").alias("n")).first()  # small: one row
    return {"auroc": float(auroc), "brier": float(row["brier"]), "n": int(row["n"])}


def evaluate_forecasts(tasks: DataFrame, events: DataFrame, twin_scores: DataFrame,
                       task: str) -> tuple[list[dict], dict]:
    """Rows (method, auroc, brier, n) on the test points the twin could forecast, and coverage."""
    points = labelled_points(tasks, task)
    test = points.where(F.col("split") == "test")
    twin = test.join(twin_scores.where(F.col("twin_score").isNotNull())
                     .select("subject_id", "prediction_time", F.col("twin_score").alias("score")),
                     ["subject_id", "prediction_time"]).persist()
    covered = twin.select("subject_id", "prediction_time", "label")
    prior_rate = points.where(F.col("split") == "train").agg(F.mean("label")).first()[0]  # small
    prior = covered.withColumn("score", F.lit(float(prior_rate)))
    logistic = covered.join(logistic_baseline(events, points),
                            ["subject_id", "prediction_time"])
    rows = [{"method": name, **score_metrics(frame)} for name, frame in [
        ("population prior", prior), ("code-count logistic regression", logistic),
        ("digital twin (k nearest neighbours)", twin)]]
    n_test = test.count()
    twin.unpersist()
    return rows, {"test_points": n_test, "forecast": rows[-1]["n"],
                  "coverage": rows[-1]["n"] / n_test if n_test else 0.0,
                  "prior_rate": float(prior_rate)}
