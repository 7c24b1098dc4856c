"""Ingest and tokenize throughput on simulated registries, and how it scales.

Two runs: the small registry (default 10,000 patients) on ``local[1]`` and the large one (default
100,000) on ``local[2]``, each in its own process so each gets its own Spark. Equal events per
second *per core* at both sizes means throughput grows with cores and does not degrade with
data. Generation is not timed; a lake generated earlier at the same size is reused. Ingest runs
with ``--full`` so every patient is processed. Each step is repeated ``--repeats`` times and the
median is printed.

    .venv/bin/python benchmarks/pipeline.py [--small 10000] [--large 100000] [--repeats 1]

prints one line, for example:
    pipeline: 10,000 patients on 1 core: ingest 52,000 events/s/core, tokenize ... | 100,000 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(patients: int, cores: int, lake: Path, repeats: int) -> dict:
    """In this process: generate if needed, then time ingest and tokenize."""
    from jobs import context, generate, ingest, tokenize_events
    from jobs.config import load_config
    from rdt_spark.lake import read_table, table_exists

    cfg = load_config(ROOT / "conf" / "local.yaml", {"lake": str(lake)})
    cfg = cfg.replace(spark=dataclasses.replace(cfg.spark, master=f"local[{cores}]", conf={
        **cfg.spark.conf, "spark.driver.memory": "8g"}))

    spark = context.spark(cfg)
    if not (table_exists(spark, cfg.lake, "omop.person")
            and read_table(spark, cfg.lake, "omop.person").count() == patients):
        generate.run(cfg, generate.Options(patients=patients))
    ingest_s, tokenize_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = ingest.run(cfg, ingest.Options(full=True))
        ingest_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tokenize_events.run(cfg, tokenize_events.JOB.options())
        tokenize_s.append(time.perf_counter() - t0)
    rows_in = sum(row["rows_in"] for row in result["tables"])
    events = read_table(spark, cfg.lake, "silver.events").count()
    return {"patients": patients, "cores": cores, "rows_in": rows_in, "events": events,
            "ingest_s": statistics.median(ingest_s), "tokenize_s": statistics.median(tokenize_s)}


def _describe(m: dict) -> str:
    cores = m["cores"]
    ingest_rate = m["events"] / m["ingest_s"]
    tokenize_rate = m["events"] / m["tokenize_s"]
    return (f"{m['patients']:,} patients ({m['events']:,} events from {m['rows_in']:,} source rows) "
            f"on {m['cores']} core(s): ingest {m['ingest_s']:.0f}s = {ingest_rate:,.0f} events/s "
            f"({ingest_rate / cores:,.0f}/core), tokenize {m['tokenize_s']:.0f}s = "
            f"{tokenize_rate:,.0f} events/s ({tokenize_rate / cores:,.0f}/core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--root", default="/tmp/rdt-bench", help="where the benchmark lakes live")
    parser.add_argument("--one", nargs=2, type=int, metavar=("PATIENTS", "CORES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        patients, cores = args.one
        print("RESULT " + json.dumps(measure(patients, cores, Path(args.root) / f"p{patients}",
                                             args.repeats)), flush=True)
        return
    results = []
    for patients, cores in ((args.small, 1), (args.large, 2)):
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(patients), str(cores), "--root", args.root,
             "--repeats", str(args.repeats)], capture_output=True, text=True, cwd=ROOT)
        lines = [x for x in child.stdout.splitlines() if x.startswith("RESULT ")]
        if child.returncode != 0 or not lines:
            sys.exit(f"benchmark run for {patients} patients failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    print(f"pipeline (median of {args.repeats}): " + " | ".join(_describe(m) for m in results))


if __name__ == "__main__":
    main()
