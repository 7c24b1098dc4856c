"""Twin queries: the nearest historical patient-times and what happened to them next.

Neighbours never include the queried patient. With one point per patient (the default), each
neighbour is a different historical patient, at the time most similar to the query. The
forecast is the share of usable (uncensored) neighbours who had the event, with a Wilson 95%
interval, suppressed when fewer than ``min_cell_size`` neighbours are usable.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
import scann
from deltalake import DeltaTable

from ray_training.datasets import read_delta
from ray_training.index import MANIFEST, ROWS, SCALING, indexes, outcome_column, standardise


@dataclass(frozen=True)
class QueryConfig:
    k: int = 50
    min_cell_size: int = 10  # no count of fewer patients (zero aside) is shown: disclosure.py
    one_point_per_patient: bool = True


@dataclass
class Forecast:
    task: str
    neighbours: int
    usable: int
    events: int | None
    share: float | None
    ci_low: float | None
    ci_high: float | None
    suppressed: bool
    note: str


def wilson_interval(events: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial share; wilson_interval(5, 10) ~ (0.237, 0.763)."""
    if n == 0:
        return 0.0, 1.0
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def forecast(neighbours: pd.DataFrame, task: str, min_cell_size: int) -> Forecast:
    """The share of the neighbours usable for ``task`` (not censored) who had its outcome."""
    usable = neighbours[~neighbours[outcome_column(task, "censored")]]
    n, events = len(usable), int(usable[outcome_column(task, "label")].sum())
    if n < min_cell_size:
        return Forecast(task, len(neighbours), n, None, None, None, None, True,
                        f"suppressed: {n} usable neighbours < minimum cell size {min_cell_size}")
    low, high = wilson_interval(events, n)
    return Forecast(task, len(neighbours), n, events, events / n, low, high, False,
                    "share of usable neighbours with the event (Wilson 95% interval)")


class TwinIndex:
    """A built index (all shards) loaded for search."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        scaling = np.load(self.dir / SCALING)
        self.mean, self.std = scaling["mean"], scaling["std"]
        self.shards = []
        for shard in self.manifest["shards"]:
            path = self.dir / shard["path"]
            searcher = scann.scann_ops_pybind.load_searcher(str(path / "scann"))
            self.shards.append((searcher, pd.read_parquet(path / ROWS)))

    @classmethod
    def current(cls, run_dir: str) -> TwinIndex:
        return cls(indexes(run_dir).current())

    @property
    def default_task(self) -> str:
        return self.manifest["tasks"]["default"]

    def _search_shard(self, shard: dict, searcher, rows: pd.DataFrame, queries: np.ndarray,
                      exclude: np.ndarray, k: int, one_per_patient: bool) -> list[pd.DataFrame]:
        # Fetch enough candidates for k distinct patients besides the excluded one; where that
        # falls short, fetch more and (for a tree) search more leaves, up to the whole shard.
        n, leaves = len(rows), shard["leaves"]
        per_patient = n / max(shard["subjects"], 1) if one_per_patient else 1.0
        fetch = min(n, int(2 * k * per_patient) + int(per_patient) + 1)
        searched = shard["leaves_searched"]
        found: list[pd.DataFrame | None] = [None] * len(queries)
        pending = np.arange(len(queries))
        subjects = rows["subject_id"].to_numpy()
        while len(pending):
            # AH scores a shortlist that reordering then trims: the shortlist must hold `fetch`.
            options = ({"leaves_to_search": searched, "pre_reorder_num_neighbors": fetch}
                       if leaves else {})
            idx, sims = searcher.search_batched(queries[pending], final_num_neighbors=fetch,
                                                **options)
            exhausted = fetch >= n and searched >= leaves
            still = []
            for j, q in enumerate(pending):
                keep = (idx[j] >= 0) & (subjects[np.maximum(idx[j], 0)] != exclude[q])
                hits = rows.iloc[idx[j][keep]].assign(similarity=sims[j][keep])
                if one_per_patient:
                    hits = hits.drop_duplicates("subject_id")
                if len(hits) >= k or exhausted:
                    found[q] = hits.head(k)
                else:
                    still.append(q)
            pending = np.asarray(still, dtype=int)
            fetch, searched = min(n, fetch * 4), min(leaves, searched * 4)
        return found

    def search(self, queries: np.ndarray, exclude_subjects: np.ndarray, k: int,
               one_per_patient: bool = True) -> list[pd.DataFrame]:
        """Per query, its k nearest reference patient-times, never of ``exclude_subjects[i]``."""
        queries = standardise(queries, self.mean, self.std)
        per_shard = [self._search_shard(shard, searcher, rows, queries, exclude_subjects, k,
                                        one_per_patient)
                     for shard, (searcher, rows) in zip(self.manifest["shards"], self.shards,
                                                        strict=True)]
        merged = []
        for i in range(len(queries)):
            hits = pd.concat([found[i] for found in per_shard], ignore_index=True)
            hits = hits.sort_values("similarity", ascending=False, kind="stable")
            if one_per_patient:
                hits = hits.drop_duplicates("subject_id")
            merged.append(hits.head(k).reset_index(drop=True))
        return merged


class TwinForecaster:
    """A Ray Data callable class: forecasts for batches of embeddings from the current index."""

    def __init__(self, run_dir: str, cfg: QueryConfig):
        self.index, self.cfg = TwinIndex.current(run_dir), cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        queries = np.stack(batch["embedding"]).astype(np.float32)
        results = self.index.search(queries, batch["subject_id"], self.cfg.k,
                                    self.cfg.one_point_per_patient)
        task = self.index.default_task
        forecasts = [forecast(hits, task, self.cfg.min_cell_size) for hits in results]
        return pa.table({
            "subject_id": pa.array(batch["subject_id"], pa.int64()),
            "prediction_time": pa.array(batch["prediction_time"], pa.timestamp("us", tz="UTC")),
            "twin_score": pa.array([f.share for f in forecasts], pa.float64()),
            "usable_neighbours": pa.array([f.usable for f in forecasts], pa.int64()),
        })


def forecast_split(run_dir: str, split: str, cfg: QueryConfig, concurrency: int,
                   out_dir: str) -> dict:
    """Twin forecasts for every patient-time of ``split`` in the current index's embeddings, as a
    Ray Data job (one index per actor) writing Parquet under ``out_dir``; returns the manifest."""
    manifest = TwinIndex.current(run_dir).manifest
    embeddings = read_delta(manifest["embeddings"]["path"],
                            ["subject_id", "prediction_time", "embedding", "split"],
                            manifest["embeddings"]["version"], split=split)
    embeddings.map_batches(TwinForecaster, fn_constructor_args=(run_dir, cfg), batch_size=256,
                           batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
                           num_cpus=1).write_parquet(out_dir)
    return manifest


def embedding_at(manifest: dict, subject_id: int, time: pd.Timestamp) -> tuple[pd.Timestamp,
                                                                               np.ndarray]:
    """The subject's embedding at its latest prediction time at or before ``time``."""
    table = DeltaTable(manifest["embeddings"]["path"], version=manifest["embeddings"]["version"])
    rows = table.to_pyarrow_dataset().to_table(
        columns=["prediction_time", "embedding"],
        filter=(pc.field("subject_id") == subject_id)
        & (pc.field("model_version") == manifest["model_version"])).to_pandas()
    if rows.empty:
        raise LookupError(f"the patient asked for has no embeddings in "
                          f"{manifest['embeddings']['path']}@v{manifest['embeddings']['version']}")
    before = rows[rows["prediction_time"] <= time].sort_values("prediction_time")
    if before.empty:
        raise LookupError(f"the patient asked for has no prediction time at or before {time}; "
                          f"the first is {rows['prediction_time'].min()}")
    last = before.iloc[-1]
    return last["prediction_time"], np.asarray(last["embedding"], dtype=np.float32)


def twin_report(index: TwinIndex, subject_id: int, time: pd.Timestamp, cfg: QueryConfig) -> dict:
    at, vector = embedding_at(index.manifest, subject_id, time)
    hits = index.search(vector[None, :], np.array([subject_id]), cfg.k,
                        cfg.one_point_per_patient)[0]
    task = index.default_task
    label, censored = outcome_column(task, "label"), outcome_column(task, "censored")
    return {
        "subject_id": int(subject_id),
        "requested_time": time.isoformat(),
        "prediction_time": at.isoformat(),
        "model_version": index.manifest["model_version"],
        "index_version": index.manifest["index_version"],
        "neighbours": [
            {"subject_id": int(r.subject_id), "prediction_time": r.prediction_time.isoformat(),
             "similarity": round(float(r.similarity), 4),
             "outcome": None if r[censored] else bool(r[label])}
            for _, r in hits.iterrows()
        ],
        "forecast": asdict(forecast(hits, task, cfg.min_cell_size)),
    }


def format_report(report: dict, shown: int = 10) -> str:
    """A disclosed report (``disclosure.disclosed_report``) as text."""
    f = report["forecast"]
    lines = [
        f"Twin report: patient {report['patient']} (pseudonym, key {report['pseudonym_key_id']}) "
        f"at {report['prediction_time']} (asked for {report['requested_time']})",
        f"  model {report['model_version']}, index {report['index_version']}",
    ]
    if report["neighbours"] is None:
        lines.append(f"  {f['neighbours']} nearest historical patient-times (the patient itself "
                     f"excluded); {report['neighbours_note']}")
    else:
        lines += [f"  {len(report['neighbours'])} nearest historical patient-times (the patient "
                  f"itself excluded); the {min(shown, len(report['neighbours']))} closest:",
                  f"  {'patient (pseudonym)':>20}  {'prediction time':<25}  {'similarity':>10}  "
                  "outcome"]
        for n in report["neighbours"][:shown]:
            outcome = ("censored" if n["outcome"] is None
                       else "flare" if n["outcome"] else "no flare")
            lines.append(f"  {n['patient']:>20}  {n['prediction_time']:<25}  "
                         f"{n['similarity']:>10.4f}  {outcome}")
    if f["suppressed"]:
        lines.append(f"  Forecast {f['task']}: {f['note']}")
    elif f["share"] is None:
        lines.append(f"  Forecast {f['task']}: {f['events']} of {f['usable']} usable neighbours "
                     f"(a small cell; 95% CI {f['ci_low']:.1%} to {f['ci_high']:.1%})")
    else:
        lines.append(
            f"  Forecast {f['task']}: {f['share']:.1%} of {f['usable']} usable neighbours "
            f"(95% CI {f['ci_low']:.1%} to {f['ci_high']:.1%})")
    return "\n".join(lines)
