"""The ScaNN index over gold.embeddings: shards by subject, each with its rows' outcomes, and a
manifest that pins the Delta versions and the model it was built from.

Layout under ``<run_dir>/index`` (a ``VersionedDir``): ``<index_version>/manifest.json``,
``<index_version>/shard-N/`` (``scann/``, ``rows.parquet`` and ``vectors.npy``, the rows in the
search space, in row order, for exact search of a filtered subset), ``scaling.npz`` (the search
space, ``SearchSpace``), and ``CURRENT`` naming the
version queries use. A shard's rows are sorted by (subject_id, prediction_time) and carry, at
that patient-time:

- the outcome of every task in gold.tasks, as ``<task>:label``, ``<task>:censored`` and
  ``<task>:category`` (``outcome_column``); a patient-time a task has no row for is censored;
- what a search may filter on, from gold.patient_states (sex, age, disease duration,
  serostatus, current and past drug classes, DAS28, mTSS);
- what followed, from gold.trajectories (follow-up, days to the first event, the DAS28 and mTSS
  course), which a twin report summarises over the neighbours.

The manifest pins the Delta version of each of those four tables and the model, and holds the
task catalogue (kind, outcome window, drug class of each task) and the course months.

The build runs on Ray and never gathers the population on the driver: shards are contiguous
subject-id ranges of about equal size (``shard_slices``); a first round of tasks, one per slice,
reads its slice and sums the moments the search space needs (``Moments``), a second builds each
shard from its own slice in parallel (``_build_shard``); the driver only adds up the moments and
writes the manifest.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import ray
import scann
from deltalake.exceptions import TableNotFoundError

from ray_training.settings import IndexConfig
from ray_training.versions import VersionedDir
from rdt_spark.lake_uris import open_delta

MANIFEST, ROWS, SCALING, VECTORS = "manifest.json", "rows.parquet", "scaling.npz", "vectors.npy"
KEYS = ["subject_id", "prediction_time"]
OUTCOME_FIELDS = ("label", "censored", "category")
STATE_COLUMNS = ["sex", "age", "disease_years", "seropositive", "current_classes",
                 "past_classes", "das28", "mtss"]
COURSE_COLUMNS = {"das28": "das28_course", "mtss": "mtss_course"}  # measure -> trajectory column
TRAJECTORY_COLUMNS = ["follow_up_days", "event_days", *COURSE_COLUMNS.values()]


def indexes(run_dir: str | Path) -> VersionedDir:
    """Where index versions are published; CURRENT is the one queries use."""
    return VersionedDir(Path(run_dir) / "index", "rdt index")


def current_index(run_dir: str | Path) -> tuple[Path, dict]:
    """The folder and manifest of the index queries use, without loading its shards."""
    folder = indexes(run_dir).current()
    return folder, json.loads((folder / MANIFEST).read_text())


def outcome_column(task: str, field: str) -> str:
    """``outcome_column("flare_within_180d", "label") == "flare_within_180d:label"``."""
    return f"{task}:{field}"


STATE_FEATURES = ("das28", "mtss", "disease_years", "age", "seropositive", "current_classes",
                  "past_classes")


def flags(values: pd.Series) -> np.ndarray:
    """True/False as 1.0/0.0, missing (None, NaN, NA) as NaN. (Not ``Series.map``: a query
    reads one row, and map's 0.15 ms was a tenth of a twin query's time.)"""
    v = values.to_numpy(object)
    out = np.full(len(v), np.nan)
    known = ~pd.isna(v)
    out[known] = v[known].astype(bool)
    return out


def state_features(frame: pd.DataFrame) -> np.ndarray:
    """The clinical state a search matches on, one row per patient-time (NaN: unknown): latest
    DAS28 and mTSS, disease duration, age, serostatus (1/0) and the number of current and of
    past drug classes (the line of therapy)."""
    def count(lists: pd.Series) -> np.ndarray:
        return np.array([np.nan if v is None else len(v) for v in lists], dtype=float)

    return np.column_stack([
        frame["das28"].to_numpy(float), frame["mtss"].to_numpy(float),
        frame["disease_years"].to_numpy(float), frame["age"].to_numpy(float),
        flags(frame["seropositive"]),
        count(frame["current_classes"]), count(frame["past_classes"]),
    ])


@dataclass
class Moments:
    """Sums over a slice of the reference population that add up across slices: enough for
    ``SearchSpace.from_moments`` to whiten and standardise as a fit on all of it would."""

    n: int
    total: np.ndarray  # (d,) sum of embeddings
    outer: np.ndarray  # (d, d) sum of their outer products
    state_n: np.ndarray  # per state feature: known values, their sum and sum of squares
    state_total: np.ndarray
    state_squares: np.ndarray

    @classmethod
    def of(cls, vectors: np.ndarray, states: np.ndarray) -> Moments:
        v = np.asarray(vectors, dtype=np.float64)
        known = ~np.isnan(states)
        s = np.where(known, states, 0.0)
        return cls(len(v), v.sum(axis=0), v.T @ v, known.sum(axis=0), s.sum(axis=0),
                   (s**2).sum(axis=0))

    def __add__(self, other: Moments) -> Moments:
        return Moments(*(getattr(self, f.name) + getattr(other, f.name)
                         for f in dataclasses.fields(self)))


@dataclass
class SearchSpace:
    """Where nearness is measured, by squared Euclidean distance.

    Two parts, each with an expected squared distance of 2 between random patient-times, then
    weighted so the clinical state holds ``state_weight`` of it:

    - the embedding, whitened (decorrelated, every principal direction at unit variance, with a
      small shrinkage so that noise directions do not dominate) and scaled to unit length:
      raw encoder states share large common directions that would make every pair look alike;
    - the clinical state (``state_features``), standardised, unknowns at the reference mean:
      neighbours stand where the patient stands on disease activity, damage, duration, age,
      serostatus and line of therapy, which the embedding of a small registry captures poorly.

    ``similarity = 1 - distance / 2``: the cosine of the whitened embeddings with state weight 0.
    """

    mean: np.ndarray
    whitening: np.ndarray  # (d, d)
    state_mean: np.ndarray
    state_std: np.ndarray
    state_weight: float

    @classmethod
    def fit(cls, vectors: np.ndarray, states: np.ndarray, state_weight: float,
            shrinkage: float) -> SearchSpace:
        return cls.from_moments(Moments.of(vectors, states), state_weight, shrinkage)

    @classmethod
    def from_moments(cls, m: Moments, state_weight: float, shrinkage: float) -> SearchSpace:
        """The space from the reference population's moments (summed over its slices)."""
        mean = m.total / m.n
        covariance = (m.outer - m.n * np.outer(mean, mean)) / max(m.n - 1, 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues = np.maximum(eigenvalues, 0.0)
        whitening = eigenvectors / np.sqrt(eigenvalues + shrinkage * eigenvalues.mean() + 1e-12)
        with np.errstate(invalid="ignore", divide="ignore"):
            state_mean = m.state_total / m.state_n
            state_var = m.state_squares / m.state_n - state_mean**2
        state_std = np.sqrt(np.maximum(np.nan_to_num(state_var), 0.0)) + 1e-6
        return cls(mean.astype(np.float32), whitening.astype(np.float32),
                   np.nan_to_num(state_mean), state_std, state_weight)

    def transform(self, vectors: np.ndarray, states: np.ndarray) -> np.ndarray:
        z = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.whitening
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        s = np.nan_to_num((states - self.state_mean) / self.state_std) / np.sqrt(states.shape[1])
        return np.hstack([z * math.sqrt(1 - self.state_weight),
                          s * math.sqrt(self.state_weight)]).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, whitening=self.whitening, state_mean=self.state_mean,
                 state_std=self.state_std, state_weight=self.state_weight)

    @classmethod
    def load(cls, path: Path) -> SearchSpace:
        f = np.load(path)
        return cls(f["mean"], f["whitening"], f["state_mean"], f["state_std"],
                   float(f["state_weight"]))


def latest_version(path: str) -> int:
    """The Delta table's current version; a missing table names the job that writes it."""
    try:
        return open_delta(path).version()
    except TableNotFoundError:
        raise FileNotFoundError(f"no Delta table at {path}: run the job that writes it "
                                "(rdt states writes gold.patient_states and gold.trajectories)"
                                ) from None


@dataclass(frozen=True)
class Sources:
    """The gold tables an index reads, each pinned at a Delta version."""

    embeddings: tuple[str, int]
    tasks: tuple[str, int]
    states: tuple[str, int]
    trajectories: tuple[str, int]

    @classmethod
    def latest(cls, embeddings: str, tasks: str, states: str, trajectories: str) -> Sources:
        return cls(*((path, latest_version(path))
                     for path in (embeddings, tasks, states, trajectories)))

    def pinned(self) -> dict:
        return {name: {"path": path, "version": version}
                for name, (path, version) in dataclasses.asdict(self).items()}


Subjects = tuple[int, int]  # a slice of the reference population: subject ids in [low, high)


def _read(source: tuple[str, int], columns: list[str], splits: list[str],
          subjects: Subjects | None = None) -> pd.DataFrame:
    path, version = source
    where = pc.field("split").isin(splits)
    if subjects is not None:
        where &= (pc.field("subject_id") >= subjects[0]) & (pc.field("subject_id") < subjects[1])
    return open_delta(path, version=version).to_pyarrow_dataset().to_table(
        columns=columns, filter=where).to_pandas()


def read_reference(sources: Sources, splits: list[str], subjects: Subjects | None = None,
                   task_names: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Reference patient-times (embedding, state, course and every task's outcome) from pinned
    table versions, sorted by subject and time, and the task names: of ``subjects`` (a slice)
    or everyone, with a column for each of ``task_names`` (default: the tasks found)."""
    emb = _read(sources.embeddings, [*KEYS, "model_version", "embedding", "split"], splits,
                subjects)
    tasks = _read(sources.tasks, [*KEYS, "task", *OUTCOME_FIELDS], splits, subjects)
    names = sorted(tasks["task"].unique()) if task_names is None else list(task_names)
    wide = tasks.pivot(index=KEYS, columns="task", values=list(OUTCOME_FIELDS))
    wide.columns = [outcome_column(task, f) for f, task in wide.columns]
    ref = emb.merge(wide.reset_index(), on=KEYS, how="left")
    ref = ref.reindex(columns=[*emb.columns, *(outcome_column(t, f) for t in names
                                                for f in OUTCOME_FIELDS)])
    for task in names:
        # A patient-time without a label cannot inform a forecast: keep it searchable, unusable.
        censored, label = outcome_column(task, "censored"), outcome_column(task, "label")
        ref[censored] = ref[censored].astype("boolean").fillna(True).astype(bool)
        ref[label] = ref[label].astype("boolean").fillna(False).astype(bool)
        category = outcome_column(task, "category")
        ref[category] = ref[category].astype(object).where(ref[category].notna(), None)
    ref = (ref.merge(_read(sources.states, [*KEYS, *STATE_COLUMNS], splits, subjects), on=KEYS,
                     how="left")
           .merge(_read(sources.trajectories, [*KEYS, *TRAJECTORY_COLUMNS], splits, subjects),
                  on=KEYS, how="left"))
    return ref.sort_values(KEYS, ignore_index=True), names


def shard_slices(sources: Sources, splits: list[str], num_shards: int) -> list[Subjects]:
    """Contiguous subject-id ranges holding about equal numbers of reference rows, one per
    shard, so each shard reads only its own slice of the tables. Reads the subject_id column
    of gold.embeddings alone (8 bytes a row)."""
    ids = _read(sources.embeddings, ["subject_id"], splits)["subject_id"].to_numpy()
    subjects, counts = np.unique(ids, return_counts=True)
    if not len(subjects):
        return []
    cuts = np.searchsorted(np.cumsum(counts), np.arange(1, num_shards) * len(ids) / num_shards,
                           side="right")
    edges = np.unique(np.r_[subjects[0], subjects[np.minimum(cuts, len(subjects) - 1)],
                            subjects[-1] + 1])
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


@dataclass
class SliceSummary:
    """What a slice's first pass reports: its moments and what the build checks over all."""

    moments: Moments
    rows: int
    task_names: list[str]
    model_versions: list[str]
    with_trajectory: int
    dim: int


@ray.remote(num_cpus=1)
def _summarise_slice(sources: Sources, splits: list[str], subjects: Subjects) -> SliceSummary:
    ref, names = read_reference(sources, splits, subjects)
    vectors = np.stack(ref["embedding"].to_numpy()).astype(np.float32)
    return SliceSummary(Moments.of(vectors, state_features(ref)), len(ref), names,
                        sorted(ref["model_version"].unique()),
                        int(ref["follow_up_days"].notna().sum()), vectors.shape[1])


@ray.remote(num_cpus=1)
def _build_shard(sources: Sources, splits: list[str], subjects: Subjects, task_names: list[str],
                 space: SearchSpace, cfg: IndexConfig, shard: int, staging: str) -> dict:
    """Read the slice, place it in the search space, build its searcher and write the shard."""
    rows, _ = read_reference(sources, splits, subjects, task_names)
    shard_dir = Path(staging) / f"shard-{shard}"
    (shard_dir / "scann").mkdir(parents=True)
    db = space.transform(np.stack(rows["embedding"].to_numpy()).astype(np.float32),
                         state_features(rows))
    build_searcher(db, cfg).serialize(str(shard_dir / "scann"))
    np.save(shard_dir / VECTORS, db)
    rows.drop(columns=["embedding", "model_version", "split"]).to_parquet(shard_dir / ROWS)
    leaves, searched = tree_shape(len(rows), cfg)
    return {"shard": shard, "rows": len(rows), "subjects": int(rows["subject_id"].nunique()),
            "leaves": leaves, "leaves_searched": searched, "path": shard_dir.name}


def _course_months(sources: Sources) -> list[int]:
    path, version = sources.trajectories
    first = open_delta(path, version=version).to_pyarrow_dataset().head(
        1, columns=["course_months"]).to_pylist()
    return list(first[0]["course_months"]) if first else []


def tree_shape(n: int, cfg: IndexConfig) -> tuple[int, int]:
    """(leaves, leaves searched by default); (0, 0) for exact search of a small shard."""
    if n < cfg.brute_force_below:
        return 0, 0
    leaves = max(2, int(cfg.leaves_per_sqrt_n * math.sqrt(n)))
    return leaves, max(1, int(leaves * cfg.leaves_to_search_fraction))


def build_searcher(db: np.ndarray, cfg: IndexConfig):
    """Exact squared-L2 search for small shards, a ScaNN tree with AH scoring above."""
    builder = scann.scann_ops_pybind.builder(db, 10, "squared_l2")
    leaves, searched = tree_shape(len(db), cfg)
    if not leaves:
        return builder.score_brute_force().build()
    return (builder.tree(num_leaves=leaves, num_leaves_to_search=searched,
                         training_sample_size=min(len(db), 250_000))
            .score_ah(2)
            .reorder(cfg.reorder).build())


def index_version(sources: Sources, model_version: str, catalogue: dict, cfg: IndexConfig) -> str:
    key = json.dumps([sources.pinned(), model_version, catalogue, dataclasses.asdict(cfg)],
                     sort_keys=True)
    return "idx-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def build_index(sources: Sources, catalogue: dict[str, dict], default_task: str,
                cfg: IndexConfig, run_dir: str) -> dict:
    """Build every shard (Ray tasks, one per slice), then publish the new version; returns
    the manifest.

    ``catalogue`` describes each task (``rdt_spark.tasks.task_catalogue``); ``default_task`` is
    the forecast a twin report leads with; the rows carry every task.
    """
    embeddings_path = sources.embeddings[0]
    slices = shard_slices(sources, cfg.splits, cfg.num_shards)
    summaries = ray.get([_summarise_slice.remote(sources, cfg.splits, s) for s in slices])
    if not sum(s.rows for s in summaries):
        raise ValueError(f"no embeddings in splits {cfg.splits} at {embeddings_path}")
    task_names = sorted({t for s in summaries for t in s.task_names})
    if default_task not in task_names:
        raise ValueError(f"gold.tasks at {sources.tasks[0]} has no task {default_task!r}")
    if not sum(s.with_trajectory for s in summaries):
        raise ValueError("no gold.trajectories rows for the embeddings: re-run rdt states")
    models = sorted({m for s in summaries for m in s.model_versions})
    if len(models) != 1:
        raise ValueError(f"{embeddings_path} mixes model versions {models}: re-run embed")
    catalogue = {task: catalogue.get(task, {"kind": "unknown", "window_days": 0,
                                            "drug_class": None}) for task in task_names}
    version = index_version(sources, models[0], catalogue, cfg)
    published = indexes(run_dir)
    staging, target = published.staging(version), published.path(version)
    moments = summaries[0].moments
    for summary in summaries[1:]:
        moments = moments + summary.moments
    space = SearchSpace.from_moments(moments, cfg.state_weight, cfg.whitening_shrinkage)
    space.save(staging / SCALING)
    shards = ray.get([_build_shard.remote(sources, cfg.splits, s, task_names, space, cfg, i,
                                          str(staging)) for i, s in enumerate(slices)])
    manifest = {
        "index_version": version,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_version": models[0],
        **sources.pinned(),
        "task_names": task_names, "default_task": default_task, "catalogue": catalogue,
        "course_months": _course_months(sources),
        "splits": cfg.splits,
        "distance": "squared L2 in the search space (whitened embedding and clinical state)",
        "state_features": list(STATE_FEATURES),
        "dim": summaries[0].dim, "rows": sum(s.rows for s in summaries), "shards": shards,
        "config": dataclasses.asdict(cfg),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for assets in staging.glob("shard-*/scann/scann_assets.pbtxt"):
        # ScaNN records absolute asset paths: point them at where the shard will live.
        assets.write_text(assets.read_text().replace(str(staging), str(target)))
    published.publish(version)
    return manifest
