"""Score the twin against the simulator's truth and against the tools a registry already has.

Everything population-sized stays in Spark; the models are fitted on Ray (``jobs/evaluate.py``
wires the stages). The pieces, each a DataFrame -> DataFrame stage:

- *points*: the uncensored prediction times of each event task (``labelled_points``) and, for
  treatment response, every test decision under every drug class with the simulator's
  counterfactual EULAR response (``response_truth``; truth.treatment_response holds the response
  under each class, not only the one chosen).
- *baselines*: the population prior (the training split's rate: AUROC 0.5 by construction), the
  code-count logistic regression (all-history counts of every vocabulary code, Spark ML), and the
  gradient-boosted model on tabularised history with and without the true latent variables
  (the *oracle*; ``latent_features`` reads truth.patient_latent) fitted by Ray Train LightGBM.
- *metrics*: AUROC (average ranks for ties), average precision (AUPRC), Brier score and
  calibration bins for every (evaluation, task, method) at once, partitioned by that key so no
  step gathers the population on one partition (``binary_metrics``); the disease course's
  absolute error against the observed DAS28 next to the last value carried forward
  (``course_errors``); the phenotype purity of the neighbours and its chance level
  (``phenotype_purity``).

Every method of a task is scored on the same points: those the twin could forecast (it is
suppressed where fewer than the minimum cell size of neighbours can answer). Calibration bins
with fewer points than the minimum cell size are left out.

Only this module (and the job that runs it) reads truth.*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from rdt_spark.columns import end_of_day, union_all

KEYS = ["subject_id", "prediction_time"]
SCORED = ["evaluation", "task", "method", *KEYS, "score", "label"]
GROUP = ["evaluation", "task", "method"]
PRIOR, LOGISTIC = "population prior", "code-count logistic regression"
GBM, ORACLE = "gradient-boosted (tabular history)", "oracle (gradient-boosted + true latent)"
TWIN, LOCF = "digital twin (k nearest neighbours)", "last DAS28 carried forward"


@dataclass(frozen=True)
class EvaluateConfig:
    split: str = "test"  # the patients evaluated; baselines are fitted on train, tuned on val
    exact: bool = True  # the twin's search: exact (brute force) or the index's ScaNN pools
    temporal_cutoff: str | None = "2021-01-01"  # null: no temporal evaluation
    max_points_per_patient: int = 0  # 0: every prediction time of an evaluated patient
    windows_days: list[int] = field(default_factory=lambda: [30, 365, 0])  # 0: all history
    calibration_bins: int = 10
    logistic_reg: float = 0.01
    course_months: list[int] = field(default_factory=lambda: [6, 12, 24])


def labelled_points(tasks: DataFrame, names: list[str]) -> DataFrame:
    """Uncensored (subject_id, prediction_time, split, task, label) rows of the tasks ``names``."""
    return (tasks.where(F.col("task").isin(names) & ~F.col("censored"))
            .select(*KEYS, "split", "task", F.col("label").cast("double")))


def sampled(points: DataFrame, per_patient: int, seed: int = 7) -> DataFrame:
    """At most ``per_patient`` prediction times per patient, chosen by a stable hash (0: all)."""
    if not per_patient:
        return points
    order = Window.partitionBy("subject_id").orderBy(F.xxhash64(F.lit(seed), *KEYS), *KEYS)
    return points.withColumn("_n", F.row_number().over(order)).where(
        F.col("_n") <= per_patient).drop("_n")


def response_truth(truth: DataFrame, splits: DataFrame, task_of_class: dict[str, str],
                   split: str) -> DataFrame:
    """Every decision of the ``split``'s patients under every class (task ``<eular>/<class>``),
    at the end of the decision day, labelled with the counterfactual good-or-moderate response.

    (1, 2013-09-04 16:45, tnf_inhibitor, good) -> (1, 2013-09-05, eular_response_6m/tnf_inhibitor,
    1.0).
    """
    mapping = truth.sparkSession.createDataFrame(list(task_of_class.items()),
                                                 "drug_class string, task string")
    return (truth.join(F.broadcast(mapping), "drug_class")
            .select(F.col("person_id").alias("subject_id"),
                    end_of_day(F.col("decision_time")).alias("prediction_time"), "task",
                    F.col("response").isin("good", "moderate").cast("double").alias("label"))
            .join(splits.where(F.col("split") == split), "subject_id")
            .dropDuplicates([*KEYS, "task"]))


def with_treatment(frame: DataFrame, classes: list[str], task_of_class: dict[str, str]) -> DataFrame:
    """``treatment``: a one-hot of the row's drug class (from its task), which ``training_set``
    appends to the features: the response model is one model over every class."""
    onehot = F.array(*[F.when(F.col("task") == task_of_class[c], 1.0).otherwise(0.0)
                       .cast("float") for c in classes])
    return frame.withColumn("treatment", onehot)


def latent_features(latent: DataFrame, classes: list[str], phenotypes: int) -> DataFrame:
    """(subject_id, latent): the simulator's true variables as the oracle's extra inputs:
    phenotype (one-hot), sex, age and symptom duration at diagnosis, serostatus, untreated
    activity, activity floor, flare rate, responsiveness and each class's first-line efficacy.
    What happened later (flares, decisions, end of follow-up) is left out."""
    efficacy = F.from_json("drug_response", "map<string,double>")
    values = [(F.col("phenotype_id") == i).cast("float") for i in range(phenotypes)]
    values += [F.col(c).cast("float") for c in (
        "female", "age_at_diagnosis", "symptom_months", "rf_positive", "ccp_positive",
        "untreated_activity", "activity_floor", "flare_rate_per_year", "responsiveness")]
    values += [efficacy[c].cast("float") for c in classes]
    return latent.select(F.col("person_id").alias("subject_id"), F.array(*values).alias("latent"))


def training_set(points: DataFrame, features: DataFrame, latent: DataFrame) -> DataFrame:
    """Points with their tabular features, ``treatment`` appended (empty for a task's own
    model), and true latent variables: the points' columns plus ``features`` and ``latent``."""
    return (points.join(features.select(*KEYS, "features"), KEYS).join(latent, "subject_id")
            .withColumn("features", F.concat("features", "treatment")))


def prior_scores(train: DataFrame, scored_points: DataFrame) -> DataFrame:
    """Each point scored with its task's training rate."""
    rates = train.groupBy("task").agg(F.mean("label").alias("score"))
    return scored_points.join(F.broadcast(rates), "task")


def logistic_scores(train: DataFrame, test: DataFrame, count_positions: list[int],
                    reg_param: float) -> DataFrame:
    """Test points (with ``features``) scored by a logistic regression on the all-history code
    counts, fitted on ``train``: (subject_id, prediction_time, task, score)."""
    def counts(frame: DataFrame) -> DataFrame:
        return frame.withColumn("x", array_to_vector(
            F.array(*[F.col("features")[i].cast("double") for i in count_positions])))

    model = LogisticRegression(featuresCol="x", labelCol="label", regParam=reg_param,
                               maxIter=100).fit(counts(train))
    return (model.transform(counts(test))
            .select(*KEYS, "task", vector_to_array("probability")[1].alias("score")))


def binary_metrics(scored: DataFrame, bins: int, min_cell_size: int) -> tuple[DataFrame,
                                                                               DataFrame]:
    """Per (evaluation, task, method): AUROC, AUPRC, Brier and counts, as long rows
    (evaluation, task, method, metric, value, n); and calibration bins (mean score, observed
    rate, n; bins under the minimum cell size dropped).

    AUROC uses average ranks, so tied scores count one half; AUPRC is the average precision
    over distinct score thresholds, highest first.
    """
    by_score = (scored.groupBy(*GROUP, "score")
                .agg(F.count("*").alias("n"), F.sum("label").alias("pos")))
    ascending = Window.partitionBy(*GROUP).orderBy("score").rowsBetween(
        Window.unboundedPreceding, 0)
    descending = Window.partitionBy(*GROUP).orderBy(F.desc("score")).rowsBetween(
        Window.unboundedPreceding, 0)
    ranked = (by_score
              .withColumn("upto", F.sum("n").over(ascending))
              .withColumn("avg_rank", F.col("upto") - (F.col("n") - 1) / 2.0)
              .withColumn("cum_pos", F.sum("pos").over(descending))
              .withColumn("cum_n", F.sum("n").over(descending)))
    totals = scored.groupBy(*GROUP).agg(
        F.count("*").alias("n"), F.sum("label").alias("positives"),
        F.mean((F.col("score") - F.col("label")) ** 2).alias("brier"))
    sums = ranked.groupBy(*GROUP).agg(
        F.sum(F.col("avg_rank") * F.col("pos")).alias("rank_sum"),
        F.sum(F.col("pos") * F.col("cum_pos") / F.col("cum_n")).alias("precision_sum"))
    n1, n0 = F.col("positives"), F.col("n") - F.col("positives")
    both = totals.join(sums, GROUP)
    auroc = F.when((n1 > 0) & (n0 > 0), (F.col("rank_sum") - n1 * (n1 + 1) / 2) / (n1 * n0))
    auprc = F.when(n1 > 0, F.col("precision_sum") / n1)
    metrics = both.select(*GROUP, F.col("n"), F.explode(F.array(
        *[F.struct(F.lit(name).alias("metric"), value.cast("double").alias("value"))
          for name, value in [("auroc", auroc), ("auprc", auprc), ("brier", F.col("brier")),
                              ("positives", n1), ("points", F.col("n"))]])).alias("m")
    ).select(*GROUP, "m.metric", "m.value", "n")
    binned = scored.withColumn("bin", F.ntile(bins).over(
        Window.partitionBy(*GROUP).orderBy("score", *KEYS)))
    calibration = (binned.groupBy(*GROUP, "bin")
                   .agg(F.mean("score").alias("predicted"), F.mean("label").alias("observed"),
                        F.count("*").alias("n"))
                   .where(F.col("n") >= min_cell_size))
    return metrics, calibration


def course_errors(forecasts: DataFrame, trajectories: DataFrame, states: DataFrame,
                  months: list[int], evaluation: str) -> DataFrame:
    """Mean absolute error of the neighbours' median DAS28 at each month against the patient's
    observed DAS28 there, next to carrying the last DAS28 forward, on the points where the twin
    answered, the patient has an observed value and a last one: long metric rows."""
    observed = trajectories.select(*KEYS, "course_months", "das28_course")
    rows = []
    for month in months:
        index = F.array_position("course_months", month)
        truth = (observed.where(index > 0)
                 .select(*KEYS, F.element_at("das28_course", index.cast("int")).alias("truth"))
                 .where(F.col("truth").isNotNull()))
        twin = (forecasts.where((F.col("question") == f"das28@{month}m") & ~F.col("suppressed"))
                .select(*KEYS, F.col("estimate").alias("twin")))
        both = (truth.join(twin, KEYS).join(states.select(*KEYS, F.col("das28").alias("locf")),
                                            KEYS).where(F.col("locf").isNotNull()))
        task = f"das28 at {month} months"
        for method, column in ((TWIN, "twin"), (LOCF, "locf")):
            rows.append(both.agg(F.mean(F.abs(F.col(column) - F.col("truth"))).alias("value"),
                                 F.count("*").alias("n"))
                        .select(F.lit(evaluation).alias("evaluation"), F.lit(task).alias("task"),
                                F.lit(method).alias("method"), F.lit("mae").alias("metric"),
                                "value", "n"))
    return union_all(rows)


def phenotype_purity(neighbours: DataFrame, latent: DataFrame, evaluation: str,
                     reference_split: DataFrame) -> DataFrame:
    """The share of each query's neighbours with the query's true phenotype, averaged over
    queries, and its chance level: the purity of neighbours drawn at random from the reference
    population (sum over phenotypes of query share x reference share). Long metric rows."""
    phenotype = latent.select(F.col("person_id").alias("subject_id"), "phenotype_id")
    queries = neighbours.join(phenotype, "subject_id")
    pairs = (queries.select(*KEYS, F.col("phenotype_id").alias("own"),
                            F.explode("neighbours").alias("neighbour"))
             .join(phenotype.select(F.col("subject_id").alias("neighbour"),
                                    F.col("phenotype_id").alias("theirs")), "neighbour"))
    per_query = pairs.groupBy(*KEYS).agg(F.mean((F.col("own") == F.col("theirs")).cast("double"))
                                         .alias("purity"))
    purity = per_query.agg(F.mean("purity").alias("value"), F.count("*").alias("n"))
    query_share = queries.groupBy("phenotype_id").agg(F.count("*").alias("q"))
    reference = reference_split.join(phenotype, "subject_id").groupBy("phenotype_id").agg(
        F.count("*").alias("r"))
    # One row per phenotype: the shares are products of small totals.
    chance = (query_share.join(reference, "phenotype_id")
              .agg((F.sum(F.col("q") * F.col("r")) / (F.sum("q") * F.sum("r"))).alias("value"))
              .withColumn("n", F.lit(None).cast("long")))

    def rows(frame: DataFrame, method: str) -> DataFrame:
        return frame.select(F.lit(evaluation).alias("evaluation"),
                            F.lit("phenotype purity").alias("task"), F.lit(method).alias("method"),
                            F.lit("purity").alias("metric"), "value", "n")

    return union_all([rows(purity, TWIN), rows(chance, "chance (random reference patients)")])


def scored_frame(frame: DataFrame, evaluation: str, method: str,
                 score: Column | str = "score") -> DataFrame:
    """A scored frame in the common shape (``SCORED``)."""
    return frame.select(F.lit(evaluation).alias("evaluation"), "task", F.lit(method).alias("method"),
                        *KEYS, F.col(score).cast("double").alias("score"),
                        F.col("label").cast("double").alias("label"))
