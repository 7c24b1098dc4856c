"""Whole twin queries against ``rdt serve`` under concurrent load on loopback: p50/p99 latency,
throughput and errors.

Builds (or, with ``--reuse``, reuses) a synthetic index of ``--patient-times`` reference rows
(``synthetic_index``, by ``build_index``), starts ``rdt serve`` on it as a user would (its own
process, the token from the environment), then keeps ``--concurrency`` requests in flight for
``--seconds``: twin reports of patients outside the index at random times, one in four with a
filter (sex and an age band). Each answer is a whole twin query: filters, ScaNN search per
question, outcome aggregation and disclosure. Prints one line.

    flock /tmp/rdt-heavy.lock .venv/bin/python benchmarks/serve.py --patient-times 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_index import POINTS_PER_PATIENT, build  # noqa: E402
from jobs.config import load_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"rdt serve exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("rdt serve did not come up")


async def load(url: str, token: str, subjects: np.ndarray, seconds: float, concurrency: int,
               seed: int) -> tuple[list[float], int, int]:
    """Keep ``concurrency`` requests in flight; (latencies in ms of answered requests, errors,
    requests)."""
    rng = np.random.default_rng(seed)
    latencies, errors, sent = [], 0, 0
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while time.monotonic() < stop:
            body = {"subject_id": int(rng.choice(subjects)),
                    "time": f"{2016 + int(rng.integers(0, 8))}-06-01"}
            if rng.random() < 0.25:
                body["filters"] = {"sex": "F", "age": {"low": 40, "high": 70}}
            start = time.perf_counter()
            try:
                answer = await client.post("/v1/twin/report", json=body, headers=headers)
                ok = answer.status_code in (200, 404)  # 404: asked before the first point
            except httpx.HTTPError:
                ok = False
            sent += 1
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient-times", type=int, default=1_000_000)
    parser.add_argument("--root", default="/tmp/rdt-serve-bench")
    parser.add_argument("--reuse", action="store_true", help="serve the index built before")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--query-patients", type=int, default=2000)
    parser.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    args = parser.parse_args()
    lake = Path(args.root) / "lake"
    # The synthetic index has no trained model to encode new patients with: twin reports only.
    cfg = load_config(args.config, {"lake": str(lake), "serve.new_patients": False})
    Path(args.root).mkdir(parents=True, exist_ok=True)
    served_config = Path(args.root) / "serve.yaml"
    served_config.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    if not args.reuse:
        build(args.root, args.patient_times, 2 * cfg.model.d_model, cfg.index,
              query_patients=args.query_patients)
    patients = args.patient_times // POINTS_PER_PATIENT
    subjects = np.arange(patients + 1, patients + args.query_patients + 1)  # the test split
    token, port = secrets.token_urlsafe(24), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, cfg.serve.token_env: token}
    server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--config",
                               str(served_config), "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        wait_healthy(url, server)
        load_s = time.perf_counter() - started
        asyncio.run(load(url, token, subjects, 5, args.concurrency, seed=1))  # warm up
        latencies, errors, sent = asyncio.run(load(url, token, subjects, args.seconds,
                                                   args.concurrency, seed=2))
    finally:
        server.terminate()
        server.wait(timeout=60)
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
    print(f"serve: patient_times={args.patient_times} concurrency={args.concurrency} "
          f"seconds={args.seconds:.0f} requests={sent} answered={len(latencies)} errors={errors} "
          f"throughput={len(latencies) / args.seconds:.1f}/s p50_ms={p50:.1f} p99_ms={p99:.1f} "
          f"startup_s={load_s:.0f}")


if __name__ == "__main__":
    main()
