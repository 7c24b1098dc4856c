"""A large reference population for the index benchmarks (ann.py, serve.py), built by the real
``rdt index`` code (``ray_training.index.build_index``) from gold-shaped Delta tables.

Patients fall into ``phenotypes`` clusters; each patient-time's embedding is its phenotype's
centre plus a patient offset plus a per-visit drift, so that (as in gold.embeddings) a patient's
time points lie close together and phenotypes overlap. The flare label and the DAS28 follow the
phenotype, so neighbours carry a signal and a forecast has an AUROC worth comparing between exact
and approximate search. Clinical states are drawn over the same ranges as the simulator's.

    from benchmarks.synthetic_index import build
    index_dir = build("/tmp/ann1m", patient_times=1_000_000, dim=128, cfg=IndexConfig())
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from ray_training.cluster import connect
from ray_training.index import Sources, build_index
from ray_training.settings import IndexConfig, RayConfig

POINTS_PER_PATIENT = 8
TASK = "flare_within_180d"
CLASSES = ["methotrexate", "csdmard", "tnf_inhibitor", "jak_inhibitor"]
COURSE_MONTHS = [3, 6, 12, 24]
CATALOGUE = {TASK: {"kind": "event_within", "window_days": 180, "drug_class": None}}


def draw(patients: int, dim: int, seed: int, phenotypes: int = 64) -> dict[str, np.ndarray]:
    """Embeddings, the phenotype of each patient and its flare probability, POINTS_PER_PATIENT
    time points per patient (rows ordered by patient, then time)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(phenotypes, dim)).astype(np.float32)
    phenotype = rng.integers(0, phenotypes, patients)
    patient = (centres[phenotype] + 0.8 * rng.normal(size=(patients, dim))).astype(np.float32)
    rows = patients * POINTS_PER_PATIENT
    who = np.repeat(np.arange(patients), POINTS_PER_PATIENT)
    vectors = patient[who]
    vectors += 0.5 * rng.normal(size=(rows, dim)).astype(np.float32)
    flare_p = rng.uniform(0.05, 0.6, phenotypes)
    return {"vectors": vectors, "who": who, "phenotype": phenotype[who],
            "flare_p": flare_p[phenotype[who]]}


def _list_column(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """A (rows, width) matrix as a list<dtype> column (NaN: null)."""
    rows, width = values.shape
    flat = pa.array(values.reshape(-1), dtype, from_pandas=True)
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1) * width, pa.int32()), flat)


def _classes(bits: np.ndarray) -> pa.Array:
    lists = [[c for i, c in enumerate(CLASSES) if b >> i & 1] for b in bits.tolist()]
    return pa.array(lists, pa.list_(pa.string()))


def write_tables(root: Path, patients: int, dim: int, seed: int = 0,
                 query_patients: int = 0) -> tuple[Sources, dict]:
    """gold.embeddings, gold.tasks, gold.patient_states and gold.trajectories under ``root``,
    and the drawn arrays: ``patients`` in the train split (the index's reference population),
    then ``query_patients`` more in the test split (queries from outside the index)."""
    drawn = draw(patients + query_patients, dim, seed)
    patients += query_patients
    rng = np.random.default_rng(seed + 1)
    rows = len(drawn["who"])
    subject = (drawn["who"] + 1).astype(np.int64)
    start = np.datetime64("2015-01-01T00:00:00", "us")
    times = start + (rng.integers(0, 2000, patients)[drawn["who"]]
                     + np.tile(np.arange(POINTS_PER_PATIENT) * 91, patients)).astype(
        "timedelta64[D]")
    keys = {"subject_id": pa.array(subject),
            "prediction_time": pa.array(times.astype("datetime64[us]"), pa.timestamp("us", "UTC")),
            "split": pa.array(np.where(drawn["who"] < patients - query_patients, "train", "test"))}
    flare = rng.random(rows) < drawn["flare_p"]
    das28 = np.clip(2.0 + 6.0 * drawn["flare_p"] + rng.normal(0, 0.8, rows), 0.5, 9.0)
    age = np.clip(rng.normal(55, 13, patients), 18, 95)[drawn["who"]] + np.tile(
        np.arange(POINTS_PER_PATIENT) * 0.25, patients)
    current = rng.integers(0, 1 << len(CLASSES), rows)
    course = das28[:, None] + rng.normal(0, 0.7, (rows, len(COURSE_MONTHS)))
    tables = {
        "embeddings": pa.table({**keys, "model_version": pa.array(np.full(rows, "synthetic")),
                                "embedding": _list_column(drawn["vectors"], pa.float32()),
                                "modalities": pa.array([["events"]] * rows)}),
        "tasks": pa.table({**keys, "task": pa.array(np.full(rows, TASK)),
                           "label": pa.array(flare), "censored": pa.array(np.zeros(rows, bool)),
                           "category": pa.nulls(rows, pa.string()),
                           "horizon_days": pa.array(np.full(rows, 180, np.int32))}),
        "states": pa.table({**keys,
                            "sex": pa.array(np.where(rng.random(patients) < 0.7, "F", "M")[
                                drawn["who"]]),
                            "age": pa.array(age), "disease_years": pa.array(
                                rng.uniform(0, 20, rows)),
                            "seropositive": pa.array(rng.random(patients)[drawn["who"]] < 0.7),
                            "das28": pa.array(das28), "mtss": pa.array(rng.gamma(2, 8, rows)),
                            "current_classes": _classes(current),
                            "past_classes": _classes(rng.integers(0, 1 << len(CLASSES), rows)
                                                     & ~current)}),
        "trajectories": pa.table({**keys, "follow_up_days": pa.array(rng.uniform(200, 3000, rows)),
                                  "event_days": pa.array(np.where(flare, rng.uniform(10, 180, rows),
                                                                  np.nan), from_pandas=True),
                                  "das28_course": _list_column(course, pa.float64()),
                                  "mtss_course": _list_column(course * 4, pa.float64()),
                                  "course_months": pa.array([COURSE_MONTHS] * rows)}),
    }
    paths = {}
    for name, table in tables.items():
        paths[name] = str(root / name)
        write_deltalake(paths[name], table, mode="overwrite")
    return Sources.latest(paths["embeddings"], paths["tasks"], paths["states"],
                          paths["trajectories"]), drawn


def build(root: str | Path, patient_times: int, dim: int, cfg: IndexConfig, seed: int = 0,
          query_patients: int = 0) -> tuple[Path, Sources, dict]:
    """Write the tables under ``root/lake`` and build the index of ``patient_times`` reference
    rows in its default run dir, ``root/lake/_runs`` (so ``rdt serve --lake root/lake`` serves
    it); returns the run dir, the tables and the drawn arrays."""
    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sources, drawn = write_tables(root / "lake", patient_times // POINTS_PER_PATIENT, dim, seed,
                                  query_patients)
    run_dir = root / "lake" / "_runs"
    connect(RayConfig())  # build_index runs a Ray task per shard
    build_index(sources, CATALOGUE, TASK, cfg, str(run_dir))
    return run_dir, sources, drawn
