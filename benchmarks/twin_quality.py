"""The twin's quality table on a simulated registry: every step of the flow, then rdt evaluate.

Runs each step of ``jobs.registry.FLOW`` in order on one lake, skipping a step whose output is
already there (so an interrupted run resumes, and a lake made elsewhere with the same settings
can be reused), with Spark's driver memory capped at 3g. Prints the evaluation table and one line:
per event task the AUROC of the twin, the code-count logistic regression, the gradient-boosted
model and the oracle, and the oracle's margin over the gradient-boosted model (the headroom).

    flock /tmp/rdt-heavy.lock .venv/bin/python benchmarks/twin_quality.py \\
        --patients 20000 --lake /tmp/twin20k/lake
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import generate  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.registry import FLOW  # noqa: E402
from rdt_spark import evaluation as ev  # noqa: E402
from rdt_spark.lake import table_exists  # noqa: E402

# The table (or folder) each step writes: present means done.
OUTPUT = {"generate": "truth.treatment_response", "ingest": "silver.events",
          "tokenize": "gold.tasks", "states": "gold.trajectories", "embed": "gold.embeddings"}


def done(cfg, spark, step: str) -> bool:
    if step == "train":
        return (Path(cfg.run_dir) / "models" / "CURRENT").exists()
    if step == "index":
        return False  # cheap next to the rest, and it must read the latest tables
    return step in OUTPUT and table_exists(spark, cfg.lake, OUTPUT[step])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--lake", default="/tmp/twin20k/lake")
    parser.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    args = parser.parse_args()
    cfg = load_config(args.config, {"lake": args.lake})
    cfg = cfg.replace(spark=dataclasses.replace(cfg.spark, conf={
        **cfg.spark.conf, "spark.driver.memory": "3g"}))
    from jobs import context

    spark = context.spark(cfg)
    results, seconds = {}, {}
    for job in FLOW:
        if job.name != "evaluate" and done(cfg, spark, job.name):
            print(f"{job.name}: already there, skipped", flush=True)
            continue
        options = (generate.Options(patients=args.patients) if job is generate.JOB
                   else job.options())
        t0 = time.time()
        results[job.name] = job.run(cfg, options)
        seconds[job.name] = time.time() - t0
        print(f"{job.name}: {seconds[job.name]:.0f}s", flush=True)
    rows = {(r["task"], r["method"], r["metric"]): r["value"]
            for r in results["evaluate"]["rows"] if r["evaluation"] == "test split"}
    tasks = sorted({t for (t, m, metric) in rows if metric == "auroc" and m == ev.LOGISTIC})
    cells = []
    for task in tasks:
        twin, lr, gbm, oracle = (rows[(task, m, "auroc")] for m in
                                 (ev.TWIN, ev.LOGISTIC, ev.GBM, ev.ORACLE))
        cells.append(f"{task} twin {twin:.3f} / LR {lr:.3f} / GBM {gbm:.3f} / oracle "
                     f"{oracle:.3f} (headroom {oracle - gbm:+.3f})")
    print(f"twin quality, {args.patients:,} patients, test split AUROC: " + "; ".join(cells)
          + f" | steps run: {', '.join(f'{k} {v:.0f}s' for k, v in seconds.items())}")


if __name__ == "__main__":
    main()
