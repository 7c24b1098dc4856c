"""deploy/: the Airflow DAG, read as Python without Airflow (which does not install cleanly
beside this project's pins), and the cron entry. tests/test_clusters.py runs the cron command
against real local clusters."""

from __future__ import annotations

import ast
from pathlib import Path

from jobs.run_all import STAGES

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _dag() -> ast.Module:
    return ast.parse((DEPLOY / "airflow_dag.py").read_text())


def _assigned(tree: ast.Module, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"deploy/airflow_dag.py assigns no {name}")


def _call(tree: ast.Module, function: str) -> ast.Call:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", getattr(n.func, "attr", None)) == function]
    assert len(calls) == 1, f"expected one {function}(...) in deploy/airflow_dag.py"
    return calls[0]


def test_the_dag_runs_every_stage_after_generate_in_the_flows_order():
    assert _assigned(_dag(), "STAGES") == [s.job.name for s in STAGES if s.job.name != "generate"]


def test_the_dag_submits_each_stage_through_run_all_and_retries_it():
    tree = _dag()
    dag = {k.arg: k.value for k in _call(tree, "DAG").keywords}
    defaults = ast.literal_eval(ast.unparse(dag["default_args"]).replace(
        "timedelta(minutes=10)", "600").replace("timedelta(hours=12)", "43200"))
    assert defaults["retries"] >= 1 and ast.literal_eval(dag["max_active_runs"]) == 1
    operator = {k.arg: k.value for k in _call(tree, "BashOperator").keywords}
    command = ast.unparse(operator["bash_command"])
    assert "rdt run-all" in command and "--submit --only {stage}" in command
    assert ast.unparse(operator["task_id"]) == "stage"
    # Each task runs after the one before: `previous >> task` inside the loop over STAGES.
    chained = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert [(ast.unparse(n.left), ast.unparse(n.right)) for n in chained] == [("previous", "task")]


def test_the_cron_entry_runs_run_all_on_the_clusters():
    lines = [line for line in (DEPLOY / "cron.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    schedule = [line for line in lines if "=" not in line.split()[0]]
    assert len(schedule) == 1
    fields = schedule[0].split(None, 5)
    assert len(fields) == 6 and "rdt run-all" in fields[5] and "--submit" in fields[5]
