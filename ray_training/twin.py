"""Twin queries: the nearest historical patient-times, and what happened to them next.

One query answers every question a clinician asks at a visit, each from the k neighbours whose
follow-up can answer it (a filtered search per question, ``ray_training.search``):

- *what will happen next*: every event task of conf/tasks.yaml (flare, remission, radiographic
  progression), as the share of neighbours with the outcome, and the Kaplan-Meier time to the
  next event (a flare) over the neighbours;
- *which treatment will work*: per drug class, the EULAR response shares among neighbours who
  started that class at their matched time. What drives treatment choice in a registry is the
  disease activity at the decision (treat-to-target), so those neighbours must also have had a
  DAS28 within ``response_das28_window`` (1.2, the EULAR threshold of a meaningful change) of
  the query's latest DAS28 when they started;
- *where the disease is going*: the neighbours' DAS28 and mTSS at 3, 6, 12 and 24 months after
  their matched time, as median and interquartile range.

Neighbours never include the queried patient and, by default, are one time point per patient.
Every estimate rests on at least ``min_cell_size`` neighbours or is suppressed. Reports are
plain dicts (dataclasses as dicts), so a disclosure layer can act on them.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray

from ray_training import forecasts as fc
from ray_training.index import COURSE_COLUMNS, STATE_FEATURES
from ray_training.search import Filters, Question, TwinIndex
from ray_training.settings import QueryConfig
from rdt_spark.lake_uris import open_delta

DAY_US = 86_400_000_000
ALL = "all"  # the question every neighbour can answer: time to event, and who the neighbours are


def course_question(measure: str, month: int) -> str:
    """``course_question("das28", 6) == "das28@6m"``."""
    return f"{measure}@{month}m"


def questions(index: TwinIndex, cfg: QueryConfig, filters: Filters | None,
              query_das28: np.ndarray, closed_before_us: int | None = None) -> dict[str, Question]:
    """Every question a query answers, with the rows that may answer it.

    ``closed_before_us`` (a temporal evaluation) admits, for a task, only rows whose outcome
    window closed before it, as a registry deploying the twin at that date would have known.
    """
    unfiltered = filters is None or not filters.describe()
    # Unfiltered and without a cutoff, every question's rows are the index's own (cached,
    # read-only) masks, the same for every query: their per-shard counts are kept with them.
    shared = index.question_counts if unfiltered and closed_before_us is None else None

    def ask(name: str, allowed: np.ndarray, *band: np.ndarray) -> Question:
        if shared is None:
            return Question(allowed, *band)
        return Question(allowed, *band, _counts=shared.setdefault(name, {}))

    base = index.everyone if unfiltered else index.allowed(filters)
    asked = {ALL: ask(ALL, base)}
    for task, meta in index.manifest["catalogue"].items():
        ok = index.usable(task) if unfiltered else base & index.usable(task)
        if closed_before_us is not None:
            ok = ok & (index.time_us + int(meta["window_days"]) * DAY_US <= closed_before_us)
        if meta["drug_class"] and cfg.response_das28_window > 0:
            w = cfg.response_das28_window
            asked[task] = ask(task, ok, index.numeric["das28"], query_das28 - w, query_das28 + w)
        else:
            asked[task] = ask(task, ok)
    for measure in COURSE_COLUMNS:
        for i, month in enumerate(index.manifest["course_months"]):
            known = index.course_known(measure, i)
            name = course_question(measure, month)
            asked[name] = ask(name, known if unfiltered else base & known)
    return asked


def answers(index: TwinIndex, found: dict[str, tuple[np.ndarray, np.ndarray]],
            cfg: QueryConfig) -> dict:
    """Every forecast for one query from its neighbours per question (index rows, similarity)."""
    months = index.manifest["course_months"]
    events, responses = [], []
    for task, meta in index.manifest["catalogue"].items():
        hits = found[task][0]
        labels = index.outcome(task, "label")[hits]
        if meta["drug_class"]:
            categories = index.outcome(task, "category")[hits]
            matching = (f"neighbours with a DAS28 within {cfg.response_das28_window} of the "
                        "query's at the start" if cfg.response_das28_window > 0 else "unmatched")
            responses.append(fc.response(task, meta["drug_class"], labels, categories,
                                         cfg.min_cell_size, matching))
        else:
            events.append(fc.share(task, labels, cfg.min_cell_size))
    everyone = found[ALL][0]
    course = [fc.course(measure, month, index.course[measure][found[course_question(
        measure, month)][0], i], cfg.min_cell_size)
        for measure in COURSE_COLUMNS for i, month in enumerate(months)]
    return {
        "events": events,
        "time_to_event": fc.time_to_event(index.numeric["event_days"][everyone],
                                          index.numeric["follow_up_days"][everyone], months,
                                          cfg.min_cell_size),
        "treatment_response": responses,
        "course": course,
    }


def forecast_rows(answered: dict) -> list[dict]:
    """One query's forecasts as gold.twin_forecasts rows (question, kind, estimate, low, high,
    usable, suppressed)."""
    out = []
    for f in answered["events"]:
        out.append({"question": f.task, "kind": "event", "estimate": f.share, "low": f.ci_low,
                    "high": f.ci_high, "usable": f.usable, "suppressed": f.suppressed})
    for r in answered["treatment_response"]:
        f = r.responded
        out.append({"question": r.task, "kind": "response", "estimate": f.share,
                    "low": f.ci_low, "high": f.ci_high, "usable": f.usable,
                    "suppressed": f.suppressed})
    t = answered["time_to_event"]
    out.append({"question": "time_to_event", "kind": "time_to_event", "estimate": t.median_days,
                "low": t.low_days, "high": t.high_days, "usable": t.neighbours,
                "suppressed": t.suppressed})
    for c in answered["course"]:
        out.append({"question": course_question(c.measure, c.month), "kind": "course",
                    "estimate": c.median, "low": c.q25, "high": c.q75, "usable": c.usable,
                    "suppressed": c.suppressed})
    return out


FORECAST_SCHEMA = pa.schema([
    ("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us", tz="UTC")),
    ("question", pa.string()), ("kind", pa.string()), ("estimate", pa.float64()),
    ("low", pa.float64()), ("high", pa.float64()), ("usable", pa.int32()),
    ("suppressed", pa.bool_()), ("neighbours", pa.list_(pa.int64())),
])


class TwinForecaster:
    """A Ray Data callable class: every forecast for batches of query patient-times (columns
    subject_id, prediction_time, embedding and the ``STATE_FEATURES`` of gold.patient_states)
    from one index, loaded once per actor.

    ``with_neighbours`` adds the neighbour patients of the ``all`` question (evaluation reads
    them to score phenotype purity); ``closed_before_us`` restricts reference outcomes to
    windows closed before that time (temporal evaluation).
    """

    def __init__(self, index_dir: str, cfg: QueryConfig, filters: Filters | None = None,
                 closed_before_us: int | None = None, with_neighbours: bool = False):
        self.index, self.cfg, self.filters = TwinIndex(index_dir), cfg, filters
        self.closed_before_us, self.with_neighbours = closed_before_us, with_neighbours

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        states = pd.DataFrame({c: list(batch[c]) for c in STATE_FEATURES})
        queries = self.index.to_space(np.stack(batch["embedding"]).astype(np.float32), states)
        das28 = states["das28"].to_numpy(float)
        asked = questions(self.index, self.cfg, self.filters, das28, self.closed_before_us)
        found = self.index.search(queries, batch["subject_id"], self.cfg.k, asked,
                                  self.cfg.one_point_per_patient, self.cfg.exact)
        columns = {name: [] for name in FORECAST_SCHEMA.names}
        times = pa.array(batch["prediction_time"]).cast(pa.timestamp("us", tz="UTC"))
        for q in range(len(queries)):
            per_question = {name: found[name][q] for name in asked}
            neighbours = (self.index.subject[per_question[ALL][0]].tolist()
                          if self.with_neighbours else None)
            for row in forecast_rows(answers(self.index, per_question, self.cfg)):
                columns["subject_id"].append(int(batch["subject_id"][q]))
                columns["prediction_time"].append(times[q])
                for key, value in row.items():
                    columns[key].append(value)
                columns["neighbours"].append(neighbours if row["question"] == "time_to_event"
                                             else None)
        columns["prediction_time"] = pa.array(columns["prediction_time"],
                                              pa.timestamp("us", tz="UTC"))
        return pa.Table.from_pydict(columns, schema=FORECAST_SCHEMA)


def forecast_points(index_dir: str, points_dir: str, out_dir: str, cfg: QueryConfig,
                    concurrency: int, batch_size: int = 256, filters: Filters | None = None,
                    closed_before_us: int | None = None, with_neighbours: bool = False) -> None:
    """Twin forecasts for every query patient-time in the Parquet folder ``points_dir`` (columns
    subject_id, prediction_time, embedding and ``STATE_FEATURES``), as a Ray Data job (one index per actor)
    writing Parquet (``FORECAST_SCHEMA``) under ``out_dir``."""
    (ray.data.read_parquet(points_dir)
     .map_batches(TwinForecaster, fn_constructor_args=(index_dir, cfg, filters, closed_before_us,
                                                       with_neighbours),
                  batch_size=batch_size, batch_format="numpy",
                  compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1)
     .write_parquet(out_dir))


class Nearness:
    """A Ray Data callable: each query point's similarity to the nearest of a few reference
    points (both with embedding and state), in the index's search space."""

    def __init__(self, index_dir: str, references: pd.DataFrame):
        self.index = TwinIndex(index_dir)
        states = references[list(STATE_FEATURES)]
        self.refs = self.index.to_space(np.stack(references["embedding"]).astype(np.float32),
                                        states)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        states = pd.DataFrame({c: list(batch[c]) for c in STATE_FEATURES})
        points = self.index.to_space(np.stack(batch["embedding"]).astype(np.float32), states)
        distance = ((points[:, None, :] - self.refs[None, :, :]) ** 2).sum(-1).min(axis=1)
        return pa.table({
            "subject_id": pa.array(batch["subject_id"], pa.int64()),
            "prediction_time": pa.array(batch["prediction_time"]).cast(
                pa.timestamp("us", tz="UTC")),
            "similarity": pa.array(1 - distance / 2, pa.float64()),
        })


def nearness(index_dir: str, references_dir: str, points_dir: str, out_dir: str) -> bool:
    """Write each point's similarity to its nearest reference point (Parquet folders with
    subject_id, prediction_time, embedding and ``STATE_FEATURES``); False when there is no
    reference point. The reference points are a handful of patients, read whole."""
    references = ray.data.read_parquet(references_dir).to_pandas()
    if references.empty:
        return False
    (ray.data.read_parquet(points_dir)
     .map_batches(Nearness, fn_constructor_args=(index_dir, references), batch_size=1024,
                  batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
     .write_parquet(out_dir))
    return True


def query_point(manifest: dict, subject_id: int, time: pd.Timestamp) -> tuple[pd.Timestamp,
                                                                              np.ndarray,
                                                                              pd.DataFrame]:
    """The subject's embedding at its latest prediction time at or before ``time``, and its
    state then (one row of gold.patient_states' ``STATE_FEATURES``)."""
    table = open_delta(manifest["embeddings"]["path"], version=manifest["embeddings"]["version"])
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
    states = open_delta(manifest["states"]["path"], version=manifest["states"]["version"])
    state = states.to_pyarrow_dataset().to_table(
        columns=list(STATE_FEATURES), filter=(pc.field("subject_id") == subject_id)
        & (pc.field("prediction_time") == last["prediction_time"].to_pydatetime())).to_pandas()
    if state.empty:  # no state row: every feature unknown (the reference mean)
        state = pd.DataFrame([{c: None for c in STATE_FEATURES}])
    return last["prediction_time"], np.asarray(last["embedding"], dtype=np.float32), state.head(1)


def twin_report(index: TwinIndex, subject_id: int, time: pd.Timestamp, cfg: QueryConfig,
                filters: Filters | None = None, neighbour_rows: bool = True) -> dict:
    """Everything the twin says about one patient at one time, as a plain dict."""
    at, vector, state = query_point(index.manifest, subject_id, time)
    return twin_report_at(index, subject_id, time, at, vector, state, cfg, filters,
                          neighbour_rows)


def twin_report_at(index: TwinIndex, subject_id: int, time: pd.Timestamp, at: pd.Timestamp,
                   vector: np.ndarray, state: pd.DataFrame, cfg: QueryConfig,
                   filters: Filters | None = None, neighbour_rows: bool = True) -> dict:
    """``twin_report`` from the query point already looked up (``query_point``): its prediction
    time ``at``, its embedding and its state (one row of ``STATE_FEATURES``). Without
    ``neighbour_rows`` the report's ``neighbours`` is None: a caller that will not disclose
    them (``privacy.neighbour_rows`` off) does not pay for building them."""
    asked = questions(index, cfg, filters, state["das28"].to_numpy(float))
    found = index.search(index.to_space(vector[None, :], state), np.array([subject_id]), cfg.k,
                         asked, cfg.one_point_per_patient, cfg.exact)
    per_question = {name: found[name][0] for name in asked}
    answered = answers(index, per_question, cfg)
    hits, sims = per_question[ALL]
    return {
        "subject_id": int(subject_id),
        "requested_time": time.isoformat(),
        "prediction_time": at.isoformat(),
        "model_version": index.manifest["model_version"],
        "index_version": index.manifest["index_version"],
        "k": cfg.k,
        "filters": (filters or Filters()).describe(),
        "neighbours_found": len(hits),
        "neighbours": _neighbour_rows(index, hits, sims) if neighbour_rows else None,
        "state": {c: _number(state[c].iloc[0]) for c in ("das28", "mtss", "age",
                                                          "disease_years")},
        "course_months": list(index.manifest["course_months"]),
        "events": [asdict(f) for f in answered["events"]],
        "time_to_event": asdict(answered["time_to_event"]),
        "treatment_response": [asdict(r) for r in answered["treatment_response"]],
        "course": [asdict(c) for c in answered["course"]],
    }


def _neighbour_rows(index: TwinIndex, hits: np.ndarray, sims: np.ndarray) -> list[dict]:
    """Each neighbour's patient-time, similarity, outcomes and what followed its matched time
    (the value then and at each course month)."""
    times = index.rows["prediction_time"].iloc[hits]
    tasks = [t for t, meta in index.manifest["catalogue"].items() if not meta["drug_class"]]
    outcomes = {t: (~index.usable(t)[hits], index.outcome(t, "label")[hits]) for t in tasks}
    return [
        {"subject_id": int(index.subject[row]), "prediction_time": at.isoformat(),
         "similarity": round(float(s), 4),
         "outcomes": {t: None if censored[i] else bool(label[i])
                      for t, (censored, label) in outcomes.items()},
         "course": {m: [_number(index.numeric[m][row]),
                        *(_number(v) for v in index.course[m][row])] for m in COURSE_COLUMNS}}
        for i, (row, at, s) in enumerate(zip(hits, times, sims, strict=True))
    ]


def _number(x) -> float | None:
    """A float for a report, None for a missing value."""
    return None if x is None or pd.isna(x) else float(x)


def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.0%}"


def _share_text(f: dict) -> str:
    if f["suppressed"]:
        return f["note"]
    if f["share"] is None:  # a small cell, published as a bound
        return (f"{f['events']} of {f['usable']} (a small cell; 95% CI {f['ci_low']:.0%} to "
                f"{f['ci_high']:.0%})")
    return f"{f['share']:>5.0%} ({f['ci_low']:.0%} to {f['ci_high']:.0%}) of {f['usable']}"


def format_report(report: dict, shown: int = 10) -> str:
    """A disclosed report (``disclosure.disclosed_report``) as a clinician reads it: neighbours,
    events, time to event, treatment response per class and the disease course."""
    lines = [
        f"Twin report: patient {report['patient']} (pseudonym, key {report['pseudonym_key_id']}) "
        f"at {report['prediction_time']} (asked for {report['requested_time']})",
        f"  model {report['model_version']}, index {report['index_version']}; "
        f"k = {report['k']} neighbours per question, the patient itself excluded"
        + (f"; filters {report['filters']}" if report["filters"] else ""),
    ]
    if report["neighbours"] is None:
        lines.append(f"  {report['neighbours_found']} nearest historical patient-times; "
                     f"{report['neighbours_note']}")
    else:
        lines += [f"  the {min(shown, len(report['neighbours']))} closest of "
                  f"{len(report['neighbours'])} historical patient-times:",
                  f"  {'patient (pseudonym)':>20}  {'prediction time':<25}  {'similarity':>10}"]
        for n in report["neighbours"][:shown]:
            lines.append(f"  {n['patient']:>20}  {n['prediction_time']:<25}  "
                         f"{n['similarity']:>10.4f}")
    lines.append("  What happens next (share of usable neighbours, 95% CI):")
    for f in report["events"]:
        lines.append(f"    {f['task']:<34} {_share_text(f)}")
    t = report["time_to_event"]
    if t["suppressed"]:
        lines.append(f"  Time to event: {t['note']}")
    else:
        median = "not reached" if t["median_days"] is None else f"{t['median_days']:.0f} days"
        interval = "" if t["low_days"] is None else (
            f" (95% CI {t['low_days']:.0f} to "
            + ("not reached" if t["high_days"] is None else f"{t['high_days']:.0f}") + ")")
        curve = ", ".join(f"{p['month']}m {_pct(p['survival'])}" for p in t["curve"])
        lines.append(f"  Time to event (Kaplan-Meier over {t['neighbours']}): median {median}"
                     f"{interval}; event-free {curve}")
    lines.append("  Which treatment (EULAR response at 6 months among neighbours who started it):")
    for r in report["treatment_response"]:
        if r["suppressed"]:
            lines.append(f"    {r['drug_class']:<18} {r['note']}")
            continue
        c = r["categories"]
        lines.append(f"    {r['drug_class']:<18} good or moderate {_share_text(r['responded'])}"
                     f": good {_pct(c['good']['share'])}, moderate "
                     f"{_pct(c['moderate']['share'])}, none {_pct(c['none']['share'])}")
    lines.append("  Disease course (neighbours' median [interquartile range]):")
    for measure in COURSE_COLUMNS:
        points = [c for c in report["course"] if c["measure"] == measure]
        cells = ", ".join(f"{c['month']}m suppressed" if c["suppressed"] else
                          f"{c['month']}m {c['median']:.1f} [{c['q25']:.1f}-{c['q75']:.1f}]"
                          for c in points)
        lines.append(f"    {measure:<6} {cells}")
    return "\n".join(lines)
