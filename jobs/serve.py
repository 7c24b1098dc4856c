"""rdt serve: the twin over HTTP: twin reports, cohort counts (OpenAPI spec at /docs).

Loads the published index and its query points once, then serves ``ray_training.service``'s app
with uvicorn until interrupted; a new index version (``rdt index``) is picked up without a
restart. Every endpoint but ``/health`` needs ``Authorization: Bearer $RDT_SERVE_TOKEN`` (the
variable ``serve.token_env`` names).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from jobs.config import Config
from jobs.job import Job, JobFailed, option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    host: str | None = option("address to listen on (default from config: loopback)")
    port: int | None = option("port to listen on (default from config)")


def run(cfg: Config, opts: Options) -> dict:
    import uvicorn
    from threadpoolctl import threadpool_limits

    from ray_training.service import TwinState, create_app, service_token

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
             f"on http://{host}:{port} (OpenAPI at /docs)")
    try:
        uvicorn.run(create_app(state, token), host=host, port=port, log_config=None,
                    access_log=False)
    finally:
        state.close()
    return {"index_version": manifest["index_version"], "host": host, "port": port}


JOB = Job("serve", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
