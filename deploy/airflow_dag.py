"""The flow as an Airflow DAG: one task per stage, in data-flow order, each submitted to the
clusters by ``rdt run-all --submit --only <stage>`` and retried on failure.

``rdt run-all`` skips a stage whose inputs, config and code did not change (and records every
decision in ``ops.runs``), so a retry or a re-run of the whole DAG repeats no finished work.
Copy this file into Airflow's dags folder; ``RDT_HOME`` and ``RDT_CONFIG`` (Airflow Variables
or the environment) say where the project is installed and which cluster config it runs with.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3 moved the operator into the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:
    from airflow.operators.bash import BashOperator

# jobs/run_all.py's stages after generate (the registry is the source); tests/test_deploy.py
# checks that the two lists agree.
STAGES = ["ingest", "tokenize", "states", "modalities", "note-features", "train", "embed",
          "fusion-inputs", "fuse", "index", "evaluate"]

RDT_HOME = os.environ.get("RDT_HOME", "/opt/rdt")
RDT_CONFIG = os.environ.get("RDT_CONFIG", f"{RDT_HOME}/conf/cluster.yaml")

with DAG(
    dag_id="rdt_flow",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs of the flow must not write the same tables at once
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10),
                  "execution_timeout": timedelta(hours=12)},
    tags=["rdt"],
) as dag:
    previous = None
    for stage in STAGES:
        task = BashOperator(
            task_id=stage,
            bash_command=(f'cd "{RDT_HOME}" && .venv/bin/rdt run-all --config "{RDT_CONFIG}" '
                          f"--submit --only {stage}"),
        )
        if previous is not None:
            previous >> task
        previous = task
