"""rdt serve's app against a real uvicorn server on loopback, over the flow's published index."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_training.fusion_embed import fuse_events_only
from ray_training.fusion_train import load_fusion
from ray_training.fusion_train import models as fusion_models
from ray_training.index import state_features
from ray_training.service import TwinState, create_app, service_token
from ray_training.settings import ServeConfig
from rdt_spark.lake import table_path

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server:
    """A uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def state(flow):
    cfg, _ = flow
    twin = TwinState(cfg.run_dir, cfg.query, cfg.privacy, ServeConfig(reload_seconds=0.2))
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def encoder(flow, state):
    from jobs.serve import new_patient_encoder

    cfg, _ = flow
    return new_patient_encoder(cfg, state.loaded.index.manifest["model_version"])


@pytest.fixture(scope="module")
def served(state, encoder):
    with Server(create_app(state, TOKEN, encoder=encoder)) as server, httpx.Client(
            base_url=server.url, timeout=120) as client:
        yield client


def _lake_events(cfg, subject: int) -> pd.DataFrame:
    from jobs import context

    events = DeltaTable(context.path(cfg, "silver.events")).to_pandas(
        filters=[("subject_id", "=", subject)])
    return events.drop(columns=["subject_id", "ingest_run_id"])


@pytest.fixture(scope="module")
def patient(state) -> tuple[int, str]:
    """A test-split patient and a time after its first prediction time."""
    manifest = state.loaded.index.manifest
    emb = manifest["embeddings"]
    rows = DeltaTable(emb["path"], version=emb["version"]).to_pandas(
        columns=["subject_id", "prediction_time", "split"])
    row = rows[rows["split"] == "test"].sort_values(["subject_id", "prediction_time"]).iloc[0]
    return int(row["subject_id"]), (row["prediction_time"] + np.timedelta64(400, "D")).isoformat()


def test_every_twin_endpoint_refuses_a_missing_or_wrong_token(served, patient):
    body = {"subject_id": patient[0], "time": patient[1]}
    for headers in ({}, {"Authorization": "Bearer wrong-token-xxxx"}, {"Authorization": TOKEN}):
        for path, payload in (("/v1/twin/report", body), ("/v1/cohort/count", {})):
            answer = served.post(path, json=payload, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert served.get("/health").status_code == 200  # liveness needs no token


def test_a_twin_report_is_disclosed_and_names_the_patient_by_pseudonym(served, state, patient):
    subject, at = patient
    answer = served.post("/v1/twin/report", json={"subject_id": subject, "time": at},
                         headers=AUTH)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert "subject_id" not in report and report["patient"] != str(subject)
    assert report["pseudonym_key_id"] == state.key.key_id
    assert report["neighbours"] is None  # privacy.neighbour_rows is off by default
    assert report["index_version"] == state.loaded.index.manifest["index_version"]
    for forecast in report["events"]:
        assert forecast["suppressed"] or forecast["usable"] == "<10" or forecast["usable"] >= 10


def test_a_filtered_report_and_a_cohort_count_apply_the_filter(served, state, patient):
    filters = {"sex": "F", "age": {"low": 30, "high": 80}}
    answer = served.post("/v1/twin/report", headers=AUTH,
                         json={"subject_id": patient[0], "time": patient[1], "k": 20,
                               "filters": filters})
    assert answer.status_code == 200, answer.text
    assert answer.json()["filters"] == {"sex": "F", "age": [30.0, 80.0]} and \
        answer.json()["k"] == 20
    count = served.post("/v1/cohort/count", headers=AUTH, json={"filters": filters}).json()
    index = state.loaded.index
    allowed = (index.sex == "F") & (index.numeric["age"] >= 30) & (index.numeric["age"] < 80)
    assert count["patient_times"] == int(allowed.sum())  # a few hundred: no small cell
    everyone = served.post("/v1/cohort/count", headers=AUTH, json={}).json()
    assert everyone["patient_times"] == len(index.rows)


def test_bad_input_answers_422_naming_the_field_without_echoing_it(served, patient):
    secret_id = 987654321987
    cases = [
        ({"subject_id": "x" + str(secret_id), "time": patient[1]}, "body.subject_id"),
        ({"subject_id": patient[0], "time": f"{secret_id}-13-45"}, "body.time"),
        ({"subject_id": patient[0], "time": patient[1], "filters": {"age": {"low": 60,
                                                                            "high": 40}}},
         "body.filters.age"),
        ({"subject_id": patient[0], "time": patient[1], "filters": {"sex": "X"}},
         "body.filters.sex"),
        ({"subject_id": patient[0], "time": patient[1], "k": 0}, "body.k"),
        ({"subject_id": patient[0], "time": patient[1], "colour": "blue"}, "body.colour"),
        ({"time": patient[1]}, "body.subject_id"),
    ]
    for body, field in cases:
        answer = served.post("/v1/twin/report", json=body, headers=AUTH)
        assert answer.status_code == 422, (body, answer.text)
        assert field in [e["field"] for e in answer.json()["errors"]], answer.text
        assert str(secret_id) not in answer.text and "Traceback" not in answer.text
    too_many = served.post("/v1/twin/report", json={"subject_id": patient[0], "time": patient[1],
                                                    "k": 10_000}, headers=AUTH)
    assert too_many.status_code == 422 and "body.k" in too_many.text


def test_an_unknown_patient_is_404_without_its_id(served):
    answer = served.post("/v1/twin/report", json={"subject_id": 424242424242,
                                                  "time": "2024-01-01"}, headers=AUTH)
    assert answer.status_code == 404
    assert "424242424242" not in answer.text and "Traceback" not in answer.text


def test_the_openapi_spec_lists_every_endpoint(served):
    spec = served.get("/openapi.json").json()
    assert {"/health", "/v1/twin/report", "/v1/cohort/count", "/v1/twin/new-patient"} <= set(
        spec["paths"])


def test_the_service_refuses_to_start_without_a_token(monkeypatch):
    monkeypatch.delenv("RDT_SERVE_TOKEN", raising=False)
    with pytest.raises(PermissionError, match="RDT_SERVE_TOKEN"):
        service_token(ServeConfig())
    monkeypatch.setenv("RDT_SERVE_TOKEN", TOKEN)
    assert service_token(ServeConfig()) == TOKEN


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(inner, max_size=4),
                     st.dictionaries(st.text(max_size=12), inner, max_size=4))


# What a JSON client can send (httpx refuses NaN and infinities); other bytes go in raw.
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | FINITE | st.text(max_size=20),
                    _nested, max_leaves=12)
FIELDS = st.sampled_from(["subject_id", "time", "k", "filters", "all_points", "sex", "age",
                          "low", "high", "on", "had", "das28", "seropositive", "events", "code",
                          "numeric_value", "visit_id"])
EVENTS = st.fixed_dictionaries({"events": st.lists(st.dictionaries(FIELDS, JSON, max_size=4)
                                                  | st.fixed_dictionaries(
    {"code": st.text(min_size=1, max_size=12)},
    optional={"time": st.datetimes().map(str), "visit_id": st.integers(-2, 3),
              "numeric_value": FINITE | JSON}), max_size=4)},
    optional={"time": st.datetimes().map(str) | JSON, "k": st.integers(-5, 500)})
BODIES = st.one_of(JSON, EVENTS, st.dictionaries(FIELDS, JSON, max_size=6), st.fixed_dictionaries(
    {"subject_id": st.integers(-10, 2**63) | JSON, "time": st.datetimes().map(str) | JSON},
    optional={"k": st.integers(-5, 500), "filters": st.dictionaries(FIELDS, JSON, max_size=4),
              "all_points": JSON}))


def test_a_lake_patient_encoded_on_the_fly_matches_the_batch_embedding_and_state(
        flow, state, encoder, patient):
    cfg, _ = flow
    points = encoder(_lake_events(cfg, patient[0]))
    manifest = state.loaded.index.manifest
    batch = state.loaded.points
    lo, hi = np.searchsorted(batch.subject, [patient[0], patient[0] + 1])
    assert hi - lo >= 2 and len(points.subject) == hi - lo
    assert (points.time_us == batch.time_us[lo:hi]).all()
    # A request carries events only: its embedding is the batch path's events embedding, fused
    # alone (the lake's rows also saw the patient's notes, radiographs and omics).
    assert manifest["model_version"].startswith("fusion-")
    fusion, meta = load_fusion(fusion_models(cfg.run_dir).path(manifest["model_version"]))
    events = (DeltaTable(table_path(cfg.lake, "gold.event_embeddings")).to_pandas(
        filters=[("subject_id", "=", int(patient[0]))]).sort_values("prediction_time"))
    assert (events["model_version"] == meta["events_model_version"]).all()
    expected = fuse_events_only(fusion, np.stack(events["embedding"].to_numpy()))
    np.testing.assert_allclose(points.vectors, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state_features(points.states),
                               state_features(batch.states.iloc[lo:hi]), equal_nan=True)


def test_a_new_patient_query_answers_a_disclosed_report(served, flow, patient):
    cfg, _ = flow
    events = _lake_events(cfg, patient[0]).drop(columns=["source_table", "source_row_id"])
    body = {"events": [{k: (None if pd.isna(v) else v.isoformat() if k == "time" else v)
                        for k, v in row.items()}
                       for row in events.to_dict("records")]}
    answer = served.post("/v1/twin/new-patient", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["patient"] == "new patient (not in the lake)" and report["events"]
    statics = served.post("/v1/twin/new-patient", headers=AUTH,
                          json={"events": [{"code": "Gender/F"}]})
    assert statics.status_code == 422 and "body.events" in statics.text
    bad = served.post("/v1/twin/new-patient", headers=AUTH,
                      json={"events": [{"code": "LOINC/1", "numeric_value": "high"}]})
    assert bad.status_code == 422 and "body.events.0.numeric_value" in bad.text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v1/twin/report", "/v1/cohort/count", "/v1/twin/new-patient"]),
       body=BODIES,
       raw=st.booleans(), text=st.binary(max_size=40))
def test_malformed_requests_never_get_a_server_error(served, path, body, raw, text):
    if raw:
        answer = served.post(path, content=text, headers={**AUTH,
                                                          "Content-Type": "application/json"})
    else:
        answer = served.post(path, json=body, headers=AUTH)
    assert answer.status_code < 500, (body, answer.text)
    assert "Traceback" not in answer.text


def test_an_index_swap_while_queries_run_fails_no_request(flow, patient, tmp_path):
    """Publish a new index version (another reorder depth: a new version of the same rows)
    while a client queries without pause: every request answers 200, and the new version is
    then served. On a copy of the flow's run dir, so other tests keep the flow's index."""
    import dataclasses
    import shutil

    from jobs import context
    from ray_training.index import Sources, build_index
    from rdt_spark.tasks import FLARE_TASK, load_tasks, task_catalogue

    cfg, _ = flow
    for folder in ("index", "secrets"):
        shutil.copytree(f"{cfg.run_dir}/{folder}", tmp_path / folder, symlinks=True)
    twin = TwinState(str(tmp_path), cfg.query, cfg.privacy, ServeConfig(reload_seconds=0.1))
    twin.watch()
    before = twin.loaded.index.manifest["index_version"]
    failures, answered, stop = [], [], threading.Event()
    with Server(create_app(twin, TOKEN)) as server, httpx.Client(base_url=server.url,
                                                                 timeout=60) as client:
        def hammer() -> None:
            while not stop.is_set():
                answer = client.post("/v1/twin/report", headers=AUTH,
                                     json={"subject_id": patient[0], "time": patient[1]})
                (answered if answer.status_code == 200 else failures).append(answer.status_code)

        querying = threading.Thread(target=hammer)
        querying.start()
        try:
            sources = Sources.latest(*(context.path(cfg, name) for name in (
                "gold.embeddings", "gold.tasks", "gold.patient_states", "gold.trajectories")))
            manifest = build_index(sources, task_catalogue(load_tasks(cfg.tokenize.tasks_file)),
                                   FLARE_TASK, dataclasses.replace(cfg.index, reorder=199),
                                   str(tmp_path))
            deadline = time.monotonic() + 30
            while twin.loaded.index.manifest["index_version"] != manifest["index_version"]:
                assert time.monotonic() < deadline, "the new index was not picked up"
                time.sleep(0.05)
            served_new = len(answered)
            while len(answered) < served_new + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            querying.join()
            twin.close()
    assert manifest["index_version"] != before
    assert not failures and len(answered) >= served_new + 3 > 3
