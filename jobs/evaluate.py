"""rdt evaluate: the twin's forecasts scored against the simulator's truth and the baselines ->
gold.evaluation, gold.tabular_features and calibration plots.

For every task of conf/tasks.yaml on the test split: AUROC, AUPRC and Brier score of the twin,
the population prior, the code-count logistic regression, a gradient-boosted model on
tabularised history and the oracle (that model given the true latent variables); for treatment
response, the twin's predicted response to each drug class against the counterfactual truth; for
the disease course, the error of the neighbours' median DAS28 against the observed course next to
carrying the last DAS28 forward; the phenotype purity of the neighbours. Then the same for a
temporal split: reference outcomes closed before ``evaluate.temporal_cutoff``, queries after it.
rdt_spark/evaluation.py defines each piece; this module runs them in order on any lake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark import evaluation as ev
from rdt_spark.calibration import plot_calibration
from rdt_spark.columns import end_of_day, plus_days, union_all
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_EVALUATION, GOLD_TABULAR_FEATURES, conform
from rdt_spark.splits import split_of
from rdt_spark.tabular import feature_names, tabular_features, vocabulary_codes
from rdt_spark.tasks import load_tasks
from rdt_spark.timelines import prediction_times
from rdt_spark.twin_points import query_points

log = logging.getLogger(__name__)
KEYS = ev.KEYS
RESPONSE = "treatment response"  # the problem name of the one response model over every class


@dataclass(frozen=True)
class Options:
    scann: bool = option("search with the index's ScaNN pools instead of exactly", False)
    no_temporal: bool = option("skip the temporal evaluation", False)
    twin_only: bool = option("score the twin alone, without the baselines (prior, logistic "
                             "regression, gradient-boosted, oracle), to compare models or index "
                             "settings quickly; gold.evaluation then holds the twin's rows (the "
                             "full evaluation stays in its history)", False)


@dataclass
class Run:
    """What every stage of one evaluation reads."""

    cfg: Config
    settings: ev.EvaluateConfig
    spark: object
    manifest: dict
    index_dir: str
    baselines: bool  # False: the twin alone is scored (--twin-only)
    features: DataFrame | None  # gold.tabular_features; None without baselines
    latent: DataFrame | None  # (subject_id, latent): the oracle's extra inputs
    count_positions: list[int]  # the all-history code counts in ``features``
    event_tasks: list[str]
    response_tasks: dict[str, str]  # drug class -> task
    window_days: dict[str, int]

    def staging(self, name: str) -> str:
        return context.staging(self.cfg, f"evaluate/{name}")


def run(cfg: Config, opts: Options) -> dict:
    settings = dataclasses.replace(
        cfg.evaluate, exact=cfg.evaluate.exact and not opts.scann,
        temporal_cutoff=None if opts.no_temporal else cfg.evaluate.temporal_cutoff)
    r = prepare(cfg, settings, baselines=not opts.twin_only)
    rows = [evaluate_split(r)]
    if settings.temporal_cutoff:
        rows.append(evaluate_temporal(r, dt.datetime.fromisoformat(settings.temporal_cutoff)))
    metrics = union_all(rows).persist()
    evaluated_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    table = (metrics.withColumn("search", F.lit("exact" if settings.exact else "scann"))
             .withColumn("k", F.lit(cfg.query.k))
             .withColumn("model_version", F.lit(r.manifest["model_version"]))
             .withColumn("index_version", F.lit(r.manifest["index_version"]))
             .withColumn("evaluated_at", F.lit(evaluated_at)))
    version = write_table(conform(table, GOLD_EVALUATION), cfg.lake, "gold.evaluation")
    result = [row.asDict() for row in read_table(r.spark, cfg.lake, "gold.evaluation", version)
              .drop("evaluated_at").collect()]  # small: a few rows per task and method
    metrics.unpersist()
    shutil.rmtree(Path(cfg.run_dir) / "staging" / "evaluate", ignore_errors=True)
    print(format_table(result))
    return {"rows": result, "version": version, "plots": str(plots_dir(cfg)),
            "search": "exact" if settings.exact else "scann"}


def plots_dir(cfg: Config) -> Path:
    return Path(cfg.run_dir) / "evaluation"


def prepare(cfg: Config, settings: ev.EvaluateConfig, baselines: bool = True) -> Run:
    """Pinned inputs and, for the baselines, the tabular features (written to
    gold.tabular_features) and the oracle's latent variables."""
    from ray_training.index import current_index

    index_dir, manifest = current_index(cfg.run_dir)
    spark = context.spark(cfg)
    catalogue = manifest["catalogue"]
    run = Run(
        cfg=cfg, settings=settings, spark=spark, manifest=manifest, index_dir=str(index_dir),
        baselines=baselines, features=None, latent=None, count_positions=[],
        event_tasks=[t for t, m in catalogue.items() if not m["drug_class"]],
        response_tasks={m["drug_class"]: t for t, m in catalogue.items() if m["drug_class"]},
        window_days={t: m["window_days"] for t, m in catalogue.items()},
    )
    if not baselines:
        log.info("the twin alone is scored (--twin-only): no baselines")
        return run
    suite = load_tasks(cfg.tokenize.tasks_file)
    events = read_table(spark, cfg.lake, "silver.events")
    codes, numeric = vocabulary_codes(read_table(spark, cfg.lake, "gold.vocab"))
    names = feature_names(codes, numeric, settings.windows_days)
    log.info(f"tabularising history: {len(names):,} features ({len(codes)} codes, windows "
             f"{settings.windows_days} days, 0 = all)")
    features = tabular_features(events, prediction_times(events), codes, numeric,
                                settings.windows_days).withColumn(
        "split", split_of(F.col("subject_id"), cfg.tokenize.split_fractions))
    version = write_table(conform(features, GOLD_TABULAR_FEATURES), cfg.lake,
                          "gold.tabular_features")
    plots_dir(cfg).mkdir(parents=True, exist_ok=True)
    (plots_dir(cfg) / "tabular_features.json").write_text(json.dumps(names, indent=1))
    latent_table = read_table(spark, cfg.lake, "truth.patient_latent")
    phenotypes = latent_table.agg(F.max("phenotype_id")).first()[0] + 1  # small: one row
    classes = sorted(suite.drug_classes)
    return dataclasses.replace(
        run, features=read_table(spark, cfg.lake, "gold.tabular_features", version),
        latent=ev.latent_features(latent_table, classes, phenotypes),
        count_positions=[i for i, n in enumerate(names) if n.startswith("count:")
                         and n.endswith("@all")])


def twin_forecasts(r: Run, points: DataFrame, name: str, closed_before: dt.datetime | None,
                   with_neighbours: bool) -> DataFrame:
    """The twin's answers for the query ``points`` (with embedding and state), via Ray Data."""
    from ray_training.twin import forecast_points

    staged_points, staged = r.staging(f"{name}-points"), r.staging(f"{name}-forecasts")
    points.write.parquet(staged_points)
    context.ray(r.cfg)
    query = dataclasses.replace(r.cfg.query, exact=r.settings.exact)
    cutoff_us = None if closed_before is None else int(
        closed_before.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    forecast_points(r.index_dir, staged_points, staged, query, r.cfg.embed.concurrency,
                    closed_before_us=cutoff_us, with_neighbours=with_neighbours)
    return r.spark.read.parquet(staged)


@dataclass
class Part:
    """One kind of question scored: the frames scored so far (twin, prior, ...), and the rows
    the gradient-boosted models train on and score (``model`` names the booster of a row)."""

    frames: list[DataFrame]
    fit: DataFrame | None  # (subject_id, prediction_time, split, task, label, model, treatment)
    covered: DataFrame  # the points every method is scored on, same columns but split


def gbm_frames(r: Run, evaluation: str, parts: list[Part], oracle: bool) -> list[DataFrame]:
    """The gradient-boosted model (and its oracle) of every part, fitted in one Ray Train run on
    the parts' training rows and scored on their covered points."""
    import ray

    from ray_training.gbm import fit_gbm, score

    folder = r.staging(f"gbm-{evaluation.replace(' ', '_')}")
    fit, covered = union_all([p.fit for p in parts]), union_all([p.covered for p in parts])
    columns = [*KEYS, "split", "task", "model", "label", "features", "latent"]
    ev.training_set(fit, r.features, r.latent).select(*columns).write.parquet(f"{folder}/fit")
    ev.training_set(covered.withColumn("split", F.lit("scored")), r.features, r.latent).select(
        *columns).write.parquet(f"{folder}/scored")  # the points every method is scored on
    context.ray(r.cfg)
    rows = ray.data.read_parquet(f"{folder}/fit")
    variants = {"gbm": False, **({"oracle": True} if oracle else {})}
    models = fit_gbm(rows.filter(expr="split == 'train'"), rows.filter(expr="split == 'val'"),
                     r.cfg.gbm, variants, storage=f"{folder}/ray")
    trees = ", ".join(f"{name} {model}: {m.current_iteration()}" for (model, name), m in
                      models.items())
    log.info(f"{evaluation}: gradient-boosted models fitted (trees: {trees})")
    labels = covered.select(*KEYS, "task", "label")
    frames = []
    for name, sees_latent in variants.items():
        score(ray.data.read_parquet(f"{folder}/scored"), models, name, sees_latent).write_parquet(
            f"{folder}/{name}")
        scores = r.spark.read.parquet(f"{folder}/{name}").join(labels, [*KEYS, "task"])
        frames.append(ev.scored_frame(scores, evaluation, ev.GBM if name == "gbm" else ev.ORACLE))
    return frames


def event_part(r: Run, evaluation: str, points: DataFrame, train: DataFrame,
               forecasts: DataFrame) -> Part:
    """Every event task: the twin, the prior and the logistic regression scored (one per task),
    and the rows of one booster per task."""
    twin = (forecasts.where((F.col("kind") == "event") & ~F.col("suppressed"))
            .select(*KEYS, F.col("question").alias("task"), F.col("estimate").alias("score"))
            .join(points.select(*KEYS, "task", "label"), [*KEYS, "task"]))
    covered = twin.select(*KEYS, "task", "label")
    frames = [ev.scored_frame(twin, evaluation, ev.TWIN)]
    if not r.baselines:
        return Part(frames, fit=None, covered=covered)
    frames.append(ev.scored_frame(ev.prior_scores(train.where(F.col("split") == "train"),
                                                  covered), evaluation, ev.PRIOR))
    with_features = train.join(r.features.select(*KEYS, "features"), KEYS)
    test_features = covered.join(r.features.select(*KEYS, "features"), KEYS)
    for task in r.event_tasks:
        mine = F.col("task") == task
        lr = ev.logistic_scores(with_features.where(mine & (F.col("split") == "train")),
                                test_features.where(mine), r.count_positions,
                                r.settings.logistic_reg)
        frames.append(ev.scored_frame(lr.join(covered, [*KEYS, "task"]), evaluation, ev.LOGISTIC))

    def per_task(frame: DataFrame) -> DataFrame:
        return frame.withColumn("model", F.col("task")).withColumn(
            "treatment", F.array().cast("array<float>"))

    return Part(frames, per_task(train.select(*KEYS, "split", "task", "label")),
                per_task(covered))


def response_part(r: Run, evaluation: str, forecasts: DataFrame) -> Part:
    """Treatment response per class against the counterfactual truth: the twin and the prior
    scored, and the rows of one booster over every class (a one-hot of the class among its
    inputs), trained on the responses observed after real starts."""
    tasks = read_table(r.spark, r.cfg.lake, "gold.tasks", r.manifest["tasks"]["version"])
    classes = sorted(r.response_tasks)
    splits = read_table(r.spark, r.cfg.lake, "gold.timelines").select("subject_id", "split")
    truth = ev.response_truth(read_table(r.spark, r.cfg.lake, "truth.treatment_response"), splits,
                              r.response_tasks, r.settings.split)
    twin = (forecasts.where((F.col("kind") == "response") & ~F.col("suppressed"))
            .select(*KEYS, F.col("question").alias("task"), F.col("estimate").alias("score"))
            .join(truth, [*KEYS, "task"]))
    covered = twin.select(*KEYS, "task", "label")
    frames = [ev.scored_frame(twin, evaluation, ev.TWIN)]
    if not r.baselines:
        return Part(frames, fit=None, covered=covered)
    observed = ev.labelled_points(tasks, list(r.response_tasks.values())).where(
        F.col("split").isin("train", "val"))
    frames.append(ev.scored_frame(ev.prior_scores(observed.where(F.col("split") == "train"),
                                                  covered), evaluation, ev.PRIOR))

    def one_model(frame: DataFrame) -> DataFrame:
        return ev.with_treatment(frame, classes, r.response_tasks).withColumn(
            "model", F.lit(RESPONSE))

    return Part(frames, one_model(observed), one_model(covered))


def evaluate_split(r: Run) -> DataFrame:
    """The patient split: every task, treatment response, course and phenotype purity."""
    from ray_training.index import STATE_FEATURES

    name = f"{r.settings.split} split"
    tasks = read_table(r.spark, r.cfg.lake, "gold.tasks", r.manifest["tasks"]["version"])
    points = ev.labelled_points(tasks, r.event_tasks)
    evaluated = ev.sampled(points.where(F.col("split") == r.settings.split),
                           r.settings.max_points_per_patient)
    queries = query_points(
        read_table(r.spark, r.cfg.lake, "gold.embeddings", r.manifest["embeddings"]["version"]),
        read_table(r.spark, r.cfg.lake, "gold.patient_states", r.manifest["states"]["version"]),
        list(STATE_FEATURES), r.settings.split, r.manifest["model_version"])
    if r.settings.max_points_per_patient:
        # The sampled points, and every treatment decision (scored against the truth).
        decisions = (read_table(r.spark, r.cfg.lake, "truth.treatment_response")
                     .select(F.col("person_id").alias("subject_id"),
                             end_of_day(F.col("decision_time")).alias("prediction_time")))
        wanted = evaluated.select(*KEYS).unionByName(decisions).distinct()
        queries = queries.join(wanted, KEYS, "left_semi")
    forecasts = twin_forecasts(r, queries, "split", None, with_neighbours=True).persist()
    log.info(f"{name}: twin forecasts for {forecasts.select(*KEYS).distinct().count():,} "
             "patient-times")
    train = points.where(F.col("split").isin("train", "val"))
    parts = [event_part(r, name, evaluated, train, forecasts), response_part(r, name, forecasts)]
    frames = [f for p in parts for f in p.frames]
    if r.baselines:
        frames += gbm_frames(r, name, parts, oracle=True)
    rows = [metrics_and_plots(r, union_all(frames), name)]
    states = read_table(r.spark, r.cfg.lake, "gold.patient_states", r.manifest["states"]["version"])
    trajectories = read_table(r.spark, r.cfg.lake, "gold.trajectories",
                              r.manifest["trajectories"]["version"])
    rows.append(ev.course_errors(forecasts, trajectories, states, r.settings.course_months, name))
    reference = (read_table(r.spark, r.cfg.lake, "gold.embeddings",
                            r.manifest["embeddings"]["version"])
                 .where(F.col("split").isin(*r.manifest["splits"])).select("subject_id")
                 .distinct())
    neighbours = forecasts.where(F.col("neighbours").isNotNull()).select(*KEYS, "neighbours")
    rows.append(ev.phenotype_purity(neighbours, read_table(r.spark, r.cfg.lake,
                                                           "truth.patient_latent"), name,
                                    reference))
    return union_all(rows)


def evaluate_temporal(r: Run, cutoff: dt.datetime) -> DataFrame:
    """Reference outcomes whose windows closed before ``cutoff``, queries at or after it: the
    twin, prior, logistic regression and GBM on every event task, as a registry deploying the
    twin at that date would have scored."""
    from ray_training.index import STATE_FEATURES

    name = f"temporal {cutoff.date().isoformat()}"
    tasks = read_table(r.spark, r.cfg.lake, "gold.tasks", r.manifest["tasks"]["version"])
    points = ev.labelled_points(tasks, r.event_tasks)
    window = F.create_map(*[x for t in r.event_tasks for x in (F.lit(t), F.lit(r.window_days[t]))])
    closed = plus_days(F.col("prediction_time"), window[F.col("task")]) <= F.lit(cutoff)
    train = points.where(F.col("split").isin("train", "val") & closed)
    evaluated = ev.sampled(points.where((F.col("split") == r.settings.split)
                                        & (F.col("prediction_time") >= F.lit(cutoff))),
                           r.settings.max_points_per_patient)
    queries = query_points(
        read_table(r.spark, r.cfg.lake, "gold.embeddings", r.manifest["embeddings"]["version"]),
        read_table(r.spark, r.cfg.lake, "gold.patient_states", r.manifest["states"]["version"]),
        list(STATE_FEATURES), r.settings.split, r.manifest["model_version"], since=cutoff
    ).join(evaluated.select(*KEYS).distinct(), KEYS, "left_semi")
    forecasts = twin_forecasts(r, queries, "temporal", cutoff, with_neighbours=False)
    part = event_part(r, name, evaluated, train, forecasts)
    frames = part.frames + (gbm_frames(r, name, [part], oracle=False) if r.baselines else [])
    return metrics_and_plots(r, union_all(frames), name)


def metrics_and_plots(r: Run, scored: DataFrame, evaluation: str) -> DataFrame:
    """AUROC, AUPRC, Brier and counts per task and method, and one calibration plot per task."""
    scored = scored.persist()
    metrics, calibration = ev.binary_metrics(scored, r.settings.calibration_bins,
                                             r.cfg.query.min_cell_size)
    metrics = metrics.persist()
    bins = [row.asDict() for row in calibration.collect()]  # small: bins x methods x tasks
    folder = plots_dir(r.cfg) / evaluation.replace(" ", "-")
    written = plot_calibration(bins, folder)
    log.info(f"{evaluation}: {metrics.count():,} metrics; {len(written)} calibration plots in "
             f"{folder}")
    return metrics


def format_table(rows: list[dict]) -> str:
    """gold.evaluation as a reader scans it: per evaluation and task, the methods side by side."""
    lines = []
    evaluations = sorted({r["evaluation"] for r in rows}, key=lambda e: (e.startswith("temp"), e))
    for evaluation in evaluations:
        mine = [r for r in rows if r["evaluation"] == evaluation]
        first = mine[0]
        lines.append(f"Evaluation: {evaluation} (k = {first['k']}, {first['search']} search, "
                     f"model {first['model_version']}, index {first['index_version']})")
        lines.append(f"  {'task':<34} {'method':<40} {'AUROC':>6} {'AUPRC':>6} {'Brier':>6} "
                     f"{'n':>7}")
        tasks = sorted({r["task"] for r in mine if r["metric"] == "auroc"})
        for task in tasks:
            by_method = {}
            for r in mine:
                if r["task"] == task:
                    by_method.setdefault(r["method"], {})[r["metric"]] = r
            for method, m in by_method.items():
                cells = " ".join("  -   " if m.get(x, {}).get("value") is None
                                 else f"{m[x]['value']:6.3f}" for x in ("auroc", "auprc", "brier"))
                lines.append(f"  {task:<34} {method:<40} {cells} {int(m['points']['value']):>7,}")
        for r in mine:
            if r["metric"] in ("mae", "purity"):
                n = "" if r["n"] is None else f" (n {r['n']:,})"
                lines.append(f"  {r['task']:<34} {r['method']:<40} {r['metric']} "
                             f"{r['value']:.3f}{n}")
    return "\n".join(lines)


JOB = Job("evaluate", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
