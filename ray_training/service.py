"""The twin as an HTTP service (``rdt serve``): twin reports, new-patient queries, cohort counts.

One FastAPI app (``create_app``), served by uvicorn on the embedded default; a Ray Serve
deployment can wrap the same app for a cluster. What it guarantees:

- **Loaded once.** The index (every shard, its rows and search space) and the query points (the
  pinned gold.embeddings and gold.patient_states rows, ``QueryPoints``) are loaded at start and
  shared by every request. A new index version (``rdt index`` moving CURRENT) is loaded beside the
  old one and swapped in by one reference assignment: a request holds the version it started with,
  so a swap never fails a request (``TwinState.refresh``).
- **Only the caller it knows.** Every endpoint but ``/health`` needs ``Authorization: Bearer
  <token>``, the token read from the environment variable ``serve.token_env`` names
  (``require_token``, the one dependency other routers reuse).
- **Input checked, errors plain.** Bodies are pydantic models; a bad field answers 422 naming the
  field (``body.filters.age``) without echoing the value sent. No error body carries a stack trace
  or an identifier.
- **Disclosure at the boundary.** Every report goes through ``disclosure.disclosed_report`` (a
  pseudonym for the patient, neighbours only where granted, small cells hidden); every count
  through ``disclosure.shown_count``.

Example::

    RDT_SERVE_TOKEN=s3cret rdt serve --port 8000
    curl -H 'Authorization: Bearer s3cret' -d '{"subject_id": 17, "time": "2024-05-01"}' \\
        localhost:8000/v1/twin/report
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ray_training.disclosure import disclosed_report, shown_count
from ray_training.index import STATE_FEATURES, indexes
from ray_training.search import Filters, TwinIndex
from ray_training.settings import QueryConfig, ServeConfig
from ray_training.twin import twin_report_at
from rdt_spark.lake_uris import open_delta
from rdt_spark.pseudonyms import PrivacyConfig, PseudonymKey

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Request bodies: every field typed and bounded, unknown fields refused.

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Strict):
    low: float = Field(ge=-1e6, le=1e6, allow_inf_nan=False)
    high: float = Field(ge=-1e6, le=1e6, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


ClassName = Annotated[str, Field(min_length=1, max_length=64)]


def _plausible(time: dt.datetime) -> dt.datetime:
    # Registry dates; anything else is a typo, and pandas timestamps end in 2262.
    if not 1900 <= time.year <= 2200:
        raise ValueError("must lie between the years 1900 and 2200")
    return time


Moment = Annotated[dt.datetime, AfterValidator(_plausible)]


class FilterBody(Strict):
    """Who may be a neighbour (``ray_training.search.Filters``); ranges are [low, high)."""

    sex: Literal["F", "M"] | None = None
    age: Range | None = None
    disease_years: Range | None = None
    das28: Range | None = None
    seropositive: bool | None = None
    on: list[ClassName] = Field(default_factory=list, max_length=16)
    had: list[ClassName] = Field(default_factory=list, max_length=16)

    def filters(self) -> Filters:
        def bounds(r: Range | None) -> tuple[float, float] | None:
            return None if r is None else (r.low, r.high)

        return Filters(sex=self.sex, age=bounds(self.age),
                       disease_years=bounds(self.disease_years), das28=bounds(self.das28),
                       seropositive=self.seropositive, current_classes=tuple(self.on),
                       past_classes=tuple(self.had))


class ReportBody(Strict):
    subject_id: int = Field(ge=0, le=2**62)
    time: Moment  # the latest prediction time at or before it is used
    k: int | None = Field(default=None, ge=1)
    filters: FilterBody = Field(default_factory=FilterBody)
    all_points: bool = False  # allow several time points of one neighbour patient


class EventBody(Strict):
    """One MEDS event of a new patient (a silver.events row): static facts have no time."""

    time: Moment | None = None
    code: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    numeric_value: float | None = Field(default=None, allow_inf_nan=False)
    text_value: str | None = Field(default=None, max_length=2000)
    visit_id: int | None = Field(default=None, ge=0, le=2**62)


class NewPatientBody(Strict):
    events: list[EventBody] = Field(min_length=1, max_length=20000)
    time: Moment | None = None  # default: the patient's latest prediction time
    k: int | None = Field(default=None, ge=1)
    filters: FilterBody = Field(default_factory=FilterBody)
    all_points: bool = False


class CohortBody(Strict):
    filters: FilterBody = Field(default_factory=FilterBody)


# ---------------------------------------------------------------------------------------------
# What the service holds: the index (swappable) and the query points, loaded once.

class QueryPoints:
    """Patient-times a query may start from, sorted by (subject, time): their embedding and
    their state (``STATE_FEATURES``). ``pinned`` holds every patient-time of the index's
    gold.embeddings version in memory, so a report by subject and time is a binary search
    rather than a table scan; a new patient's points come from ``NewPatientEncoder``."""

    def __init__(self, subject: np.ndarray, time_us: np.ndarray, vectors: np.ndarray,
                 states: pd.DataFrame):
        order = np.lexsort((time_us, subject))
        self.subject = np.asarray(subject, dtype=np.int64)[order]
        self.time_us = np.asarray(time_us, dtype=np.int64)[order]
        self.vectors = np.asarray(vectors, dtype=np.float32)[order]
        self.states = states[list(STATE_FEATURES)].iloc[order].reset_index(drop=True)

    @classmethod
    def pinned(cls, manifest: dict) -> QueryPoints:
        emb = manifest["embeddings"]
        table = open_delta(emb["path"], version=emb["version"]).to_pyarrow_dataset().to_table(
            columns=["subject_id", "prediction_time", "embedding"],
            filter=pc.field("model_version") == manifest["model_version"])
        states = manifest["states"]
        state = open_delta(states["path"], version=states["version"]).to_pyarrow_dataset() \
            .to_table(columns=["subject_id", "prediction_time", *STATE_FEATURES]).to_pandas()
        keys = pd.DataFrame({"subject_id": table["subject_id"].to_numpy(),
                             "prediction_time": table["prediction_time"].to_pandas()})
        merged = keys.merge(state, on=["subject_id", "prediction_time"], how="left")
        flat = table["embedding"].combine_chunks()
        dim = len(flat[0]) if len(flat) else 0
        return cls(merged["subject_id"].to_numpy(),
                   merged["prediction_time"].to_numpy("datetime64[us]").astype(np.int64),
                   flat.flatten().to_numpy().reshape(-1, dim), merged)

    def at(self, subject_id: int, time: pd.Timestamp) -> tuple[pd.Timestamp, np.ndarray,
                                                               pd.DataFrame]:
        """Like ``twin.query_point``: the latest point at or before ``time``."""
        lo, hi = np.searchsorted(self.subject, [subject_id, subject_id + 1])
        if lo == hi:
            raise LookupError("the patient asked for has no embeddings in the index's "
                              "gold.embeddings version")
        micros = time.as_unit("us").value
        last = lo + int(np.searchsorted(self.time_us[lo:hi], micros, side="right")) - 1
        if last < lo:
            raise LookupError(f"the patient asked for has no prediction time at or before "
                              f"{time.isoformat()}")
        return (pd.Timestamp(int(self.time_us[last]), unit="us", tz="UTC"), self.vectors[last],
                self.states.iloc[[last]])


# A new patient's events (columns of silver.events) -> its query points.
NewPatientEncoder = Callable[[pd.DataFrame], QueryPoints]


@dataclass
class Loaded:
    """One index version with the query points it pins."""

    index: TwinIndex
    points: QueryPoints

    @classmethod
    def load(cls, folder: Path) -> Loaded:
        index = TwinIndex(folder)
        return cls(index, QueryPoints.pinned(index.manifest))


class TwinState:
    """What every request shares: the loaded index version (swapped whole when CURRENT moves),
    the pseudonym key and the settings."""

    def __init__(self, run_dir: str, query: QueryConfig, privacy: PrivacyConfig,
                 serve: ServeConfig):
        self.run_dir, self.query, self.privacy, self.serve = run_dir, query, privacy, serve
        self.key: PseudonymKey = privacy.key(run_dir)
        self._published = indexes(run_dir)
        self._folder = self._published.current()
        self.loaded = Loaded.load(self._folder)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the version CURRENT names if it changed, then swap it in; True if swapped.

        Requests read ``self.loaded`` once and keep that object, so the old version answers
        whatever started before the swap (its memory-mapped vectors stay readable even after
        ``rdt index`` removes its folder)."""
        folder = self._published.current()
        if folder == self._folder:
            return False
        loaded = Loaded.load(folder)
        self.loaded, self._folder = loaded, folder
        log.info(f"serving index {loaded.index.manifest['index_version']}")
        return True

    def watch(self) -> None:
        """Check CURRENT every ``reload_seconds`` in a background thread until ``close``."""
        def loop() -> None:
            while not self._stop.wait(self.serve.reload_seconds):
                try:
                    self.refresh()
                except Exception as err:  # keep serving the loaded version
                    log.warning(f"index reload failed, still serving the loaded one: {err}")

        self._watcher = threading.Thread(target=loop, name="rdt-index-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------------
# The app.

_bearer = HTTPBearer(auto_error=False)


async def require_token(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """The one authentication check: ``Authorization: Bearer <token>`` equal (in constant
    time) to the token in the environment variable ``serve.token_env``. Reuse it on any router:
    ``APIRouter(dependencies=[Depends(require_token)])``."""
    expected = request.app.state.token
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(),
                                                         expected.encode()):
        raise HTTPException(401, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


def service_token(serve: ServeConfig) -> str:
    """The bearer token from the environment; a service without one refuses to start."""
    token = os.environ.get(serve.token_env, "")
    if len(token) < 8:
        raise PermissionError(f"set ${serve.token_env} to the service's bearer token "
                              "(8 characters or more) before rdt serve")
    return token


def _field(loc: Sequence) -> str:
    return ".".join(str(part) for part in loc)


async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the value sent ("input"), which may be an identifier: name the
    # field and the rule only.
    errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid"),
               "type": e.get("type", "invalid")} for e in err.errors()]
    return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)


async def _failed(request: Request, err: Exception) -> JSONResponse:
    log.error(f"request failed: {type(err).__name__}")  # no message: it may name a patient
    return JSONResponse({"detail": "internal error"}, status_code=500)


def _utc(time: dt.datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(time)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def twin_router(state: TwinState, encoder: NewPatientEncoder | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

    def answer(loaded: Loaded, points: QueryPoints, subject_id: int, time: pd.Timestamp,
               body: ReportBody | NewPatientBody) -> dict:
        k = body.k or state.query.k
        if k > state.serve.max_k:
            raise HTTPException(422, f"body.k: at most {state.serve.max_k}")
        cfg = dataclasses.replace(state.query, k=k, one_point_per_patient=(
            state.query.one_point_per_patient and not body.all_points))
        try:
            at, vector, point_state = points.at(subject_id, time)
        except LookupError as err:
            raise HTTPException(404, str(err)) from None
        raw = twin_report_at(loaded.index, subject_id, time, at, vector, point_state, cfg,
                             body.filters.filters(), state.privacy.neighbour_rows)
        return disclosed_report(raw, state.privacy, state.key, cfg.min_cell_size)

    @router.post("/twin/report", summary="A patient's twin report at a time, disclosed",
                 response_model=dict)
    async def report(body: ReportBody) -> JSONResponse:
        # On the event loop, one report at a time: a report is a few milliseconds of mostly
        # GIL-bound work, and threads answering several at once only waited for each other's
        # GIL (benchmarks/serve.py, 1M patient-times, 4 in flight: p99 57 ms in threads, 30 here).
        loaded = state.loaded  # one version for the whole request, whatever a swap does
        # Already plain JSON types: sent as they are, without FastAPI's walk over every value.
        return JSONResponse(answer(loaded, loaded.points, body.subject_id, _utc(body.time),
                                   body))

    if encoder is not None:
        @router.post("/twin/new-patient", summary="The twin report of a patient not in the "
                     "lake, from MEDS events: tokenized and encoded as the batch path does")
        def new_patient(body: NewPatientBody) -> dict:
            loaded = state.loaded
            events = pd.DataFrame([e.model_dump() for e in body.events])
            points = encoder(events)
            if not len(points.subject):
                raise HTTPException(422, "body.events: no visit day to predict from (events "
                                         "need a time and a visit_id)")
            time = (_utc(body.time) if body.time is not None
                    else pd.Timestamp(int(points.time_us[-1]), unit="us", tz="UTC"))
            report = answer(loaded, points, int(points.subject[0]), time, body)
            return {**report, "patient": "new patient (not in the lake)"}

    @router.post("/cohort/count", summary="Patients and patient-times of the reference "
                                          "population a filter admits, disclosed")
    def cohort_count(body: CohortBody) -> dict:
        loaded = state.loaded
        allowed = loaded.index.allowed(body.filters.filters())
        m = state.query.min_cell_size
        return {"index_version": loaded.index.manifest["index_version"],
                "filters": body.filters.filters().describe(),
                "patients": shown_count(int(len(np.unique(loaded.index.subject[allowed]))), m),
                "patient_times": shown_count(int(allowed.sum()), m)}

    return router


def create_app(state: TwinState, token: str, routers: Sequence[APIRouter] = (),
               encoder: NewPatientEncoder | None = None) -> FastAPI:
    """The service's app over a loaded ``TwinState``; ``routers`` (e.g. an HTML report's) are
    mounted beside the twin's and may guard themselves with ``Depends(require_token)``;
    ``encoder`` (``jobs.serve.new_patient_encoder``) enables new-patient queries."""
    app = FastAPI(title="Rheumatic Digital Twin", version="1",
                  description="Twin reports, cohort counts and new-patient queries over the "
                              "published ScaNN index. Every response is disclosed: pseudonyms, "
                              "small cells hidden.")
    app.state.token, app.state.twin = token, state
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _failed)

    @app.get("/health", summary="Liveness and the index version served")
    def health() -> dict:
        return {"status": "ok", "index_version": state.loaded.index.manifest["index_version"]}

    app.include_router(twin_router(state, encoder))
    for router in routers:
        app.include_router(router)
    return app
