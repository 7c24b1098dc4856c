"""Filtered nearest-neighbour search over a built index: who may be a neighbour is decided
before ranking, question by question.

A *question* names the index rows that may answer it: the rows whose follow-up can answer it
(a task's uncensored rows, the rows where a drug class was started and its response observed,
the rows with a DAS28 six months on), and'ed with the user's ``Filters`` (sex, age band, disease
duration, serostatus, current and past drug classes). It may also hold a band per query on one
row attribute (a neighbour's DAS28 within 1.2 of the query's). Per query and per question a
search returns the k nearest allowed rows, never of the query's own patient, at most one per
patient unless asked (the patient's time point nearest the query).

How: each shard gives a pool of the query's nearest rows, a few times k times the rows per
patient, from ScaNN (or from an exact product with ``exact=True``). Each question keeps the
allowed rows of the pool in order. A question the pool cannot fill (a selective filter), and a
question allowing fewer rows than the pool holds, is answered by an exact search over its allowed
rows only: a filter costs what it admits, never a longer list to discard.

Example: with a 3,000-row shard of 100 patients and k 10, the pool holds 2 x 10 x 30 = 600 rows;
"flare uncensored" (80% of rows) is answered from the pool, "started rituximab" (12 rows) by an
exact search over those 12.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scann

from ray_training.index import (
    COURSE_COLUMNS,
    MANIFEST,
    ROWS,
    SCALING,
    VECTORS,
    SearchSpace,
    flags,
    indexes,
    outcome_column,
    state_features,
)

SCORES_PER_CHUNK = 1 << 24  # query x row scores held at once by an exact search (64 MiB)
POOL_FACTOR = 2  # a shard's pool: this x k x rows per patient
WIDEN_MARGIN = 3.0  # a widened pool: the pool / allowed share x this
WIDEN_LEAVES = 0.75  # measured: recall 0.98 at a 5% filter (benchmarks/ann.py)
POOL_LEAVES = 3.0  # a pool searches leaves holding at least this x its rows
MAX_POOL = 8192  # wider than this, an exact search of the allowed rows is as cheap


@dataclass(frozen=True)
class Filters:
    """Who may be a neighbour (None or empty: anyone). Ranges are [low, high)."""

    sex: str | None = None  # "F" / "M"
    age: tuple[float, float] | None = None  # years, at the neighbour's time point
    disease_years: tuple[float, float] | None = None
    seropositive: bool | None = None
    current_classes: tuple[str, ...] = ()  # on every one of these at that time
    past_classes: tuple[str, ...] = ()  # had every one of these before, and stopped
    das28: tuple[float, float] | None = None  # the latest DAS28 before that time

    def describe(self) -> dict:
        """The filters that are set, for a report."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in self.__dict__.items() if v not in (None, ())}


@dataclass
class Question:
    """The index rows that may answer a question (one flag per row), and optionally a band per
    query on one row attribute: ``values[row]`` within ``[low[q], high[q]]`` (NaN: no band)."""

    allowed: np.ndarray
    values: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    _counts: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)

    def count(self, start: int, stop: int) -> int:
        """Allowed rows in [start, stop), counted once per question and shard."""
        if (start, stop) not in self._counts:
            self._counts[start, stop] = int(np.count_nonzero(self.allowed[start:stop]))
        return self._counts[start, stop]

    def admits(self, q: int, rows: np.ndarray) -> np.ndarray:
        ok = self.allowed[rows]
        if self.values is not None and not np.isnan(self.low[q]):
            v = self.values[rows]
            ok &= (v >= self.low[q]) & (v <= self.high[q])
        return ok


@dataclass
class Shard:
    searcher: object
    vectors: np.ndarray  # in the search space, in row order
    half_norms: np.ndarray  # |x|^2 / 2 per row: squared distance = |q|^2 - 2 (q.x - |x|^2 / 2)
    start: int  # its rows are index rows [start, stop)
    stop: int
    subjects: int
    leaves: int
    leaves_searched: int


Neighbours = tuple[np.ndarray, np.ndarray]  # (index rows, similarities), nearest first


def _class_bits(lists: pd.Series, classes: list[str]) -> np.ndarray:
    bit = {c: 1 << i for i, c in enumerate(classes)}
    return np.array([sum(bit[c] for c in (v if v is not None else ())) for v in lists],
                    dtype=np.int64)


def _matrix(lists: pd.Series, width: int) -> np.ndarray:
    """Rows of equal-length lists (None or null items: NaN) as a float matrix."""
    out = np.full((len(lists), width), np.nan)
    for i, v in enumerate(lists):
        if v is not None:
            out[i] = [np.nan if x is None else x for x in v]
    return out


def _range(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    with np.errstate(invalid="ignore"):
        return (values >= low) & (values < high)


class TwinIndex:
    """A built index (all shards) loaded for filtered search; ``rows`` holds every shard's rows
    in one frame, and searches return positions in it."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        self.space = SearchSpace.load(self.dir / SCALING)
        self.shards: list[Shard] = []
        frames, start = [], 0
        for meta in self.manifest["shards"]:
            path = self.dir / meta["path"]
            rows = pd.read_parquet(path / ROWS)
            vectors = np.load(path / VECTORS, mmap_mode="r")
            shard = Shard(scann.scann_ops_pybind.load_searcher(str(path / "scann")), vectors,
                          0.5 * np.einsum("ij,ij->i", vectors, vectors), start,
                          start + len(rows), meta["subjects"], meta["leaves"],
                          meta["leaves_searched"])
            self.shards.append(shard)
            frames.append(rows)
            start += len(rows)
        self.rows = pd.concat(frames, ignore_index=True)
        self._prepare()

    @classmethod
    def current(cls, run_dir: str) -> TwinIndex:
        return cls(indexes(run_dir).current())

    def _prepare(self) -> None:
        """Column arrays the filters and forecasts read, and each shard's patient segments."""
        r = self.rows
        self._usable: dict[str, np.ndarray] = {}
        self._outcomes: dict[str, np.ndarray] = {}
        self.question_counts: dict[str, dict] = {}  # per question over unfiltered masks (twin.py)
        self.everyone = np.ones(len(r), bool)
        self.everyone.flags.writeable = False
        self.subject = r["subject_id"].to_numpy(np.int64)
        self.time_us = r["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
        self.classes = sorted({c for col in ("current_classes", "past_classes") if col in r
                               for v in r[col] if v is not None for c in v})
        self.current_bits = _class_bits(r.get("current_classes", pd.Series([None] * len(r))),
                                        self.classes)
        self.past_bits = _class_bits(r.get("past_classes", pd.Series([None] * len(r))),
                                     self.classes)
        # Fixed-width strings ("" unknown): a filter compares them without a Python loop.
        self.sex = r["sex"].fillna("").to_numpy("U1") if "sex" in r else np.full(len(r), "")
        # A request's filter reads its sex's rows rather than comparing a million strings.
        self._sex_rows = {sex: self.sex == sex for sex in ("F", "M")}
        for mask in self._sex_rows.values():
            mask.flags.writeable = False
        self.seropositive = flags(r["seropositive"]) if "seropositive" in r \
            else np.full(len(r), np.nan)
        self.numeric = {c: r[c].to_numpy(float) if c in r else np.full(len(r), np.nan)
                        for c in ("age", "disease_years", "das28", "mtss", "follow_up_days",
                                  "event_days")}
        months = len(self.manifest["course_months"])
        self.course = {measure: _matrix(r[column], months) if column in r
                       else np.full((len(r), months), np.nan)
                       for measure, column in COURSE_COLUMNS.items()}

    @property
    def default_task(self) -> str:
        return self.manifest["default_task"]

    def usable(self, task: str) -> np.ndarray:
        """Rows whose outcome for ``task`` is known (not censored); computed once, read-only."""
        if task not in self._usable:
            self._usable[task] = ~self.rows[outcome_column(task, "censored")].to_numpy(bool)
            self._usable[task].flags.writeable = False
        return self._usable[task]

    def outcome(self, task: str, field: str) -> np.ndarray:
        """Every row's ``field`` ("label", or "category" for a response task) of ``task``,
        read from the rows once; read-only."""
        key = outcome_column(task, field)
        if key not in self._outcomes:
            values = self.rows[key].to_numpy(bool if field == "label" else object)
            values.flags.writeable = False
            self._outcomes[key] = values
        return self._outcomes[key]

    def course_known(self, measure: str, position: int) -> np.ndarray:
        """Rows with a known ``measure`` at the course's ``position``-th month; read-only."""
        key = f"{measure}@{position}"
        if key not in self._usable:
            self._usable[key] = ~np.isnan(self.course[measure][:, position])
            self._usable[key].flags.writeable = False
        return self._usable[key]

    def allowed(self, filters: Filters | None) -> np.ndarray:
        """The rows ``filters`` admit."""
        ok = np.ones(len(self.rows), bool)
        if filters is None:
            return ok
        f = filters
        if f.sex is not None:
            ok &= self._sex_rows[f.sex] if f.sex in self._sex_rows else self.sex == f.sex
        for column, bounds in (("age", f.age), ("disease_years", f.disease_years),
                               ("das28", f.das28)):
            if bounds is not None:
                ok &= _range(self.numeric[column], bounds)
        if f.seropositive is not None:
            ok &= self.seropositive == float(f.seropositive)
        for wanted, bits in ((f.current_classes, self.current_bits),
                             (f.past_classes, self.past_bits)):
            unknown = [c for c in wanted if c not in self.classes]
            if unknown:
                return np.zeros(len(self.rows), bool)  # nobody took a class no row names
            need = sum(1 << self.classes.index(c) for c in wanted)
            ok &= (bits & need) == need
        return ok

    def to_space(self, embeddings: np.ndarray, states: pd.DataFrame) -> np.ndarray:
        """Query points in the search space: their embeddings and their clinical state (a frame
        with gold.patient_states' columns, one row per query)."""
        return self.space.transform(embeddings, state_features(states))

    def search(self, queries: np.ndarray, exclude: np.ndarray, k: int,
               questions: dict[str, Question], one_per_patient: bool = True,
               exact: bool = False) -> dict[str, list[Neighbours]]:
        """Per question, per query (a point of ``to_space``): its k nearest allowed rows,
        never of ``exclude[i]``, with similarity ``1 - squared distance / 2``."""
        queries = np.asarray(queries, dtype=np.float32)
        exclude = np.asarray(exclude, dtype=np.int64)
        found = {name: [[] for _ in range(len(queries))] for name in questions}
        for shard in self.shards:
            self._search_shard(shard, queries, exclude, k, questions, one_per_patient, exact,
                               found)
        out = {}
        for name, per_query in found.items():
            out[name] = []
            for parts in per_query:
                rows = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
                sims = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.float32)
                order = np.argsort(-sims, kind="stable")[:k]  # shards hold disjoint patients
                out[name].append((rows[order], sims[order]))
        return out

    def _search_shard(self, shard: Shard, queries: np.ndarray, exclude: np.ndarray, k: int,
                      questions: dict[str, Question], one_per_patient: bool, exact: bool,
                      found: dict) -> None:
        """Per question: each query's k nearest allowed rows from the shard's pool (one ScaNN
        search shared by every question); a query whose pool holds too few allowed rows (a
        selective filter) gets a pool widened by the inverse of the allowed share, then, if
        that is still short or too wide, an exact search of the allowed rows."""
        n = shard.stop - shard.start
        per_patient = n / max(shard.subjects, 1) if one_per_patient else 1.0
        pool = min(n, int(math.ceil(POOL_FACTOR * k * per_patient)) + int(per_patient) + 1)
        subjects = self.subject[shard.start:shard.stop]
        pooled: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # size -> pool

        def pool_of(size: int, which: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if size not in pooled or not np.isin(which, pooled[size][0]).all():
                # A pool w times wider reaches further out: search w ** WIDEN_LEAVES more leaves,
                # and never fewer leaves than hold POOL_LEAVES times the pool's rows (a pool
                # from a few small leaves can hold k patients that are not the nearest).
                leaves = min(shard.leaves, int(math.ceil(max(
                    shard.leaves_searched * (size / pool) ** WIDEN_LEAVES,
                    POOL_LEAVES * size * shard.leaves / n))))
                rows, sims = self._pool(shard, queries[which], size, exact, leaves)
                pooled[size] = (which, rows, sims)
            return pooled[size]

        for name, question in questions.items():
            count = question.count(shard.start, shard.stop)
            if count == 0:
                continue
            pending = np.arange(len(queries))
            sizes = [pool] if count > pool and pool < n else []
            wide = int(math.ceil(pool * n / count * WIDEN_MARGIN))
            if sizes and wide <= min(MAX_POOL, n // 2):
                sizes.append(wide)
            for size in sizes:
                which, pool_rows, pool_sims = pool_of(size, pending)
                position = {int(q): i for i, q in enumerate(which)}
                short = []
                for q in pending:
                    local = pool_rows[position[int(q)]]
                    keep = local >= 0
                    local = local[keep]
                    ok = (subjects[local] != exclude[q]) & question.admits(q, local + shard.start)
                    rows, sims = local[ok], pool_sims[position[int(q)]][keep][ok]
                    if one_per_patient:
                        _, first = np.unique(subjects[rows], return_index=True)
                        first.sort()
                        rows, sims = rows[first], sims[first]
                    if len(rows) >= k:
                        found[name][q].append((rows[:k] + shard.start, sims[:k]))
                    else:
                        short.append(q)
                pending = np.asarray(short, dtype=np.int64)
                if not len(pending):
                    break
            if len(pending):
                subset = np.flatnonzero(question.allowed[shard.start:shard.stop])
                for q, rows, sims in _exact(queries[pending], shard, subjects, subset,
                                            exclude[pending], k, one_per_patient, question,
                                            pending):
                    found[name][q].append((rows + shard.start, sims))

    def _pool(self, shard: Shard, queries: np.ndarray, size: int, exact: bool,
              leaves: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``size`` nearest rows of the shard (local positions, -1 for none)."""
        if exact or not shard.leaves:
            pairs = list(_top_rows(queries, shard, size))
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        # AH scores a shortlist that reordering then trims: the shortlist must hold `size`.
        idx, distances = shard.searcher.search_batched(
            queries, final_num_neighbors=size, leaves_to_search=leaves,
            pre_reorder_num_neighbors=max(size, self.manifest["config"]["reorder"]))
        idx = np.asarray(idx, dtype=np.int64)
        return idx, (1 - np.asarray(distances, dtype=np.float32) / 2)


def _chunks(n_queries: int, n_rows: int):
    size = max(1, SCORES_PER_CHUNK // max(n_rows, 1))
    for start in range(0, n_queries, size):
        yield slice(start, min(n_queries, start + size))


def _scores(queries: np.ndarray, db: np.ndarray, half_norms: np.ndarray) -> np.ndarray:
    """``q.x - |x|^2 / 2``: larger is nearer; the similarity adds ``1 - |q|^2 / 2``."""
    return queries @ db.T - half_norms[None, :]


def _similarity(query: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return (scores + 1 - 0.5 * float(query @ query)).astype(np.float32)


def _top_rows(queries: np.ndarray, shard: Shard, size: int):
    """Per query, the ``size`` nearest rows of the shard, nearest first."""
    db = np.asarray(shard.vectors)
    size = min(size, len(db))
    for part in _chunks(len(queries), len(db)):
        scores = _scores(queries[part], db, shard.half_norms)
        top = np.argpartition(-scores, size - 1, axis=1)[:, :size]
        for r, q in enumerate(range(part.start, part.stop)):
            order = top[r][np.argsort(-scores[r, top[r]], kind="stable")]
            yield order, _similarity(queries[q], scores[r, order])


def _exact(queries: np.ndarray, shard: Shard, subjects: np.ndarray, subset: np.ndarray,
           exclude: np.ndarray, k: int, one_per_patient: bool, question: Question,
           query_ids: np.ndarray):
    """Exact search of ``subset`` (sorted local rows): yields (query id, local rows, sims)."""
    db = np.asarray(shard.vectors[subset])
    half_norms = shard.half_norms[subset]
    offset = shard.start
    subj = subjects[subset]
    starts = np.flatnonzero(np.r_[True, subj[1:] != subj[:-1]])
    ends = np.r_[starts[1:], len(subj)]
    band = question.values[subset + offset] if question.values is not None else None
    for part in _chunks(len(queries), len(subset)):
        scores = _scores(queries[part], db, half_norms)
        scores[subj[None, :] == exclude[part][:, None]] = -np.inf
        if band is not None:
            low, high = question.low[query_ids[part]], question.high[query_ids[part]]
            with np.errstate(invalid="ignore"):
                out = ~((band[None, :] >= low[:, None]) & (band[None, :] <= high[:, None]))
            scores[out & ~np.isnan(low)[:, None]] = -np.inf
        ids = query_ids[part]
        if one_per_patient:
            best = np.maximum.reduceat(scores, starts, axis=1)
            kk = min(k, len(starts))
            top = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
            for r in range(len(top)):
                segs = top[r][np.isfinite(best[r, top[r]])]
                segs = segs[np.argsort(-best[r, segs], kind="stable")]
                local = np.array([s0 + int(np.argmax(scores[r, s0:s1]))
                                  for s0, s1 in zip(starts[segs], ends[segs], strict=True)],
                                 dtype=np.int64)
                yield ids[r], subset[local], _similarity(queries[part][r], scores[r, local])
        else:
            kk = min(k, len(subset))
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            for r in range(len(top)):
                local = top[r][np.isfinite(scores[r, top[r]])]
                local = local[np.argsort(-scores[r, local], kind="stable")]
                yield ids[r], subset[local], _similarity(queries[part][r], scores[r, local])
