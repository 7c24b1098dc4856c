"""Benchmark: the real Spark generation of N synthetic patients into a Delta lake under /tmp.

Runs ``rdt generate`` (all omop.*, ext.* and truth.* tables, Delta writes included) on a fresh
lake and prints one line: patients, wall seconds, patients per second, rows (events) per second.

    python benchmarks/generate.py                      # 100,000 patients on local[2]
    python benchmarks/generate.py --patients 5000 --master 'local[2]'
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import generate  # noqa: E402
from jobs.config import load_config  # noqa: E402
from rdt_spark.session import SparkConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--lake", help="lake folder (default: a fresh one under /tmp, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the lake afterwards")
    args = parser.parse_args()

    lake = args.lake or tempfile.mkdtemp(prefix="rdt-bench-generate-", dir="/tmp")
    cfg = load_config(ROOT / "conf" / "local.yaml", {"lake": lake})
    spark_conf = {**cfg.spark.conf, "spark.sql.shuffle.partitions": str(args.partitions)}
    cfg = cfg.replace(
        spark=SparkConfig(args.master, "rdt-bench-generate", spark_conf),
        generate=dataclasses.replace(cfg.generate, partitions=args.partitions),
    )
    generate.context.spark(cfg)  # start the session before the clock: not part of the work
    started = time.perf_counter()
    result = generate.run(cfg, generate.Options(patients=args.patients))
    wall = time.perf_counter() - started
    rows = sum(result["rows"].values())
    print(f"generate: {args.patients:,} patients in {wall:.1f} s on {args.master} "
          f"({args.partitions} partitions): {args.patients / wall:,.0f} patients/s, "
          f"{rows / wall:,.0f} rows/s ({rows:,} rows)")
    if not args.keep and not args.lake:
        shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    main()
