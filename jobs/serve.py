"""rdt serve: the twin over HTTP: twin reports, cohort counts (OpenAPI spec at /docs), and the
report pages under /pages (a search page, a patient's report, a cohort's summary).

Loads the published index and its query points once, then serves ``ray_training.service``'s app
with uvicorn until interrupted; a new index version (``rdt index``) is picked up without a
restart. Every endpoint but ``/health`` needs ``Authorization: Bearer $RDT_SERVE_TOKEN`` (the
variable ``serve.token_env`` names).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import pandas as pd

from jobs.config import Config
from jobs.job import Job, JobFailed, option
from ray_training.index import STATE_FEATURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    host: str | None = option("address to listen on (default from config: loopback)")
    port: int | None = option("port to listen on (default from config)")


def new_patient_encoder(cfg: Config, model_version: str):
    """New-patient queries by the batch path's code (``rdt_spark.new_patient``): silver.events
    rows -> ``build_timelines`` with gold.vocab and ``states_and_trajectories`` on Spark, then
    the pinned model's ``Embedder``; returns a ``service.NewPatientEncoder``."""
    import json

    import numpy as np

    from jobs import context
    from ray_training.embed import EMBED_COLUMNS, Embedder
    from ray_training.service import QueryPoints
    from ray_training.train import CONFIG_FILE, models
    from rdt_spark import new_patient
    from rdt_spark.lake import read_table
    from rdt_spark.tasks import load_tasks
    from rdt_spark.vocab import vocab_version

    fusion = None
    if model_version.startswith("fusion-"):
        # The index is in the fused space: a new patient's events embedding goes through the
        # fusion model with events alone present (the notes a request might carry are not read).
        from ray_training.fusion_train import load_fusion
        from ray_training.fusion_train import models as fusion_models

        fusion, fusion_meta = load_fusion(fusion_models(cfg.run_dir).path(model_version))
        model_version = fusion_meta["events_model_version"]
    model_dir = models(cfg.run_dir).path(model_version)
    trained_on = json.loads((model_dir / CONFIG_FILE).read_text())["vocab_version"]
    spark = context.spark(cfg)
    vocab = read_table(spark, cfg.lake, "gold.vocab").cache()
    if vocab_version(vocab) != trained_on:
        raise JobFailed(f"gold.vocab is not the vocabulary model {model_version} was trained "
                        f"on ({trained_on}): re-run rdt train, embed and index")
    embedder, fractions = Embedder(str(model_dir)), cfg.tokenize.split_fractions
    drug_classes = load_tasks(cfg.tokenize.tasks_file).drug_classes

    def encode(events) -> QueryPoints:
        rows = new_patient.request_events(spark, events)
        timeline = new_patient.patient_timeline(rows, vocab, fractions,
                                                cfg.tokenize.max_timeline_events,
                                                cfg.model.max_seq_len)
        if timeline is None or not timeline["prediction_times"]:
            return QueryPoints(np.empty(0), np.empty(0), np.empty((0, 0)),
                               pd.DataFrame(columns=list(STATE_FEATURES)))
        batch = {c: np.array([timeline[c]], dtype=object) for c in EMBED_COLUMNS}
        for c in ("times", "prediction_times"):  # UTC microseconds, None for static facts
            batch[c][0] = np.array(timeline[c], dtype="datetime64[us]")
        embedded = embedder(batch).to_pandas()
        at_us = embedded["prediction_time"].to_numpy("datetime64[us]").astype(np.int64)
        states = new_patient.patient_states(rows, cfg.states, drug_classes, fractions)
        states = pd.DataFrame({"at_us": at_us}).merge(states, on="at_us", how="left")
        vectors = np.stack(embedded["embedding"].to_numpy())
        if fusion is not None:
            from ray_training.fusion_embed import fuse_events_only

            vectors = fuse_events_only(fusion, vectors)
        return QueryPoints(embedded["subject_id"].to_numpy(), at_us, vectors, states)

    return encode


def served_app(cfg: Config, state, token: str, encoder=None):
    """What ``rdt serve`` serves: the twin's API, and the report pages under ``/pages``, all
    behind the one bearer-token check (``service.require_token``)."""
    from fastapi import APIRouter

    from jobs.report import sources
    from ray_training import report_pages
    from ray_training.service import create_app, require_token

    pages = APIRouter(prefix="/pages")
    pages.include_router(report_pages.router(sources(cfg), require_token,
                                              lambda: state.loaded.index))
    return create_app(state, token, routers=[pages], encoder=encoder)


def run(cfg: Config, opts: Options) -> dict:
    import uvicorn
    from threadpoolctl import threadpool_limits

    from ray_training.service import TwinState, service_token

    try:
        token = service_token(cfg.serve)
    except PermissionError as err:
        raise JobFailed(str(err)) from None
    threadpool_limits(1)  # requests run in parallel: one BLAS thread each, no oversubscription
    state = TwinState(cfg.run_dir, cfg.query, cfg.privacy, cfg.serve)
    state.watch()
    host, port = opts.host or cfg.serve.host, opts.port or cfg.serve.port
    manifest = state.loaded.index.manifest
    log.info(f"serving index {manifest['index_version']} ({manifest['rows']:,} patient-times) "
             f"on http://{host}:{port} (OpenAPI at /docs, report pages at /pages/)")
    encoder = new_patient_encoder(cfg, manifest["model_version"]) if cfg.serve.new_patients \
        else None
    try:
        uvicorn.run(served_app(cfg, state, token, encoder), host=host, port=port,
                    log_config=None, access_log=False)
    finally:
        state.close()
    return {"index_version": manifest["index_version"], "host": host, "port": port}


JOB = Job("serve", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
