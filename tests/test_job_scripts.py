"""Every job runs the same way as `rdt <job>`, `python -m jobs.<module>` and as a script file
(what `spark-submit jobs/<module>.py` and `ray job submit -- python jobs/<module>.py` run), with
the same options, the same result, and a quiet terminal."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import PINNED_REGISTRY, table_fingerprint

from jobs.cli import COMMANDS
from rdt_spark.lake import read_table

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {path.stem: path for path in sorted((ROOT / "jobs").glob("*.py"))
           if "\nJOB = Job(" in path.read_text()}
LIBRARY_CHATTER = [":: resolution report ::", "Ivy Default Cache", "log4j", "WARN ",
                   "absl::InitializeLog", "\x1b["]


def _run(*command: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_command_has_one_job_module_and_every_job_module_a_command():
    modules = {job.run.__module__.removeprefix("jobs.") for job in COMMANDS.values()}
    assert modules == set(SCRIPTS)


def test_no_file_run_as_a_script_shadows_a_module_it_might_import():
    # Python puts a script's folder first on sys.path: jobs/tokenize.py once shadowed the
    # standard library's tokenize for every job run as a file.
    for folder in ("jobs", "benchmarks"):
        for path in (ROOT / folder).glob("*.py"):
            assert path.stem not in sys.stdlib_module_names, path
            assert path.stem == "__init__" or importlib.util.find_spec(path.stem) is None, path


def test_the_scale_benchmark_names_every_stage_of_the_flow_in_order():
    # benchmarks/scale.py keeps its own list (importing the registry would load torch and Ray
    # into the process it measures): a stage added to the flow must reach it.
    from jobs.registry import FLOW

    spec = importlib.util.spec_from_file_location("scale_benchmark", ROOT / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    assert scale.FLOW == [job.name for job in FLOW]


def test_every_job_file_runs_as_a_script():
    # Each start is mostly imports on one core: two at a time halve the wait on two cores.
    def help_of(module: str) -> subprocess.CompletedProcess:
        return _run(sys.executable, str(SCRIPTS[module]), "--help", cwd=ROOT / "jobs")

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(sorted(SCRIPTS), pool.map(help_of, sorted(SCRIPTS)), strict=True))
    failed = {module: run.stderr[-2000:] for module, run in done.items()
              if run.returncode != 0 or "--config" not in run.stdout
              or "--lake" not in run.stdout}
    assert not failed, failed


def test_job_runs_with_python_dash_m_and_under_spark_submit():
    as_module = _run(sys.executable, "-m", "jobs.tokenize_events", "--help")
    assert as_module.returncode == 0 and "gold.timelines" in as_module.stdout
    spark_submit = Path(sys.executable).parent / "spark-submit"
    submitted = _run(str(spark_submit), "--master", "local[1]",
                     str(SCRIPTS["tokenize_events"]), "--help")
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    assert "gold.timelines" in submitted.stdout


@pytest.fixture(scope="module")
def script_config(tmp_path_factory):
    """conf/local.yaml on one core with two partitions, so a job starts and ends quickly."""
    folder = tmp_path_factory.mktemp("conf")
    data = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    data["spark"]["master"] = "local[1]"
    data["spark"]["conf"]["spark.sql.shuffle.partitions"] = "2"
    data["generate"]["partitions"] = 2
    data["tokenize"]["tasks_file"] = str(ROOT / "conf" / "tasks.yaml")
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_job_run_as_a_script_writes_what_rdt_writes_and_keeps_the_terminal_quiet(
        spark, script_config, tmp_path):
    # The registry conftest pins (60 patients, seed 3, conf/local.yaml's dates): what the
    # script wrote must be exactly what the simulator is pinned to produce.
    script = _run(sys.executable, str(SCRIPTS["generate"]), "--config", str(script_config),
                  "--lake", str(tmp_path / "a"), "--patients", "60", "--seed", "3", cwd=tmp_path)
    assert script.returncode == 0, script.stderr[-3000:]
    # No terminal (a scheduler's pipe): no progress lines, one closing paragraph of what it wrote.
    assert "rdt generate finished in" in script.stderr and "omop.person 60" in script.stderr
    assert "omop.person: 60 rows" not in script.stderr
    assert not [c for c in LIBRARY_CHATTER if c in script.stderr], script.stderr[-3000:]
    logs = list((tmp_path / "a" / "_runs" / "logs").glob("*-generate.log"))
    # the chatter went to the log (Spark's log4j banner; Ivy's lines too where it resolves jars)
    assert len(logs) == 1 and "log4j" in logs[0].read_text()
    assert "omop.person: 60 rows" in logs[0].read_text()  # and so did the progress
    written = {f"{schema}.{table.name}": table_fingerprint(read_table(spark, str(tmp_path / "a"),
                                                                 f"{schema}.{table.name}"))
               for schema in ("omop", "ext", "truth")
               for table in sorted((tmp_path / "a" / schema).iterdir())}
    assert written == PINNED_REGISTRY
