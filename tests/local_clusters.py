"""Real clusters on this machine for the cluster integration test: Spark standalone (a master and
two workers, one core each) and Ray (a head with no CPUs of its own, so every task must run on
the one worker node). Started as a user starts them (``spark-class ...Master``/``...Worker``,
``ray start``), and stopped, every process, whatever happens.

    with LocalClusters(tmp_path) as clusters:
        clusters.spark_master    # spark://127.0.0.1:PORT
        clusters.ray_dashboard   # http://127.0.0.1:PORT (ray job submit --address)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def agent_ports() -> list[str]:
    """Ports of a node's own agents, free ones: Ray's defaults (52365 for the dashboard agent,
    whose HTTP server takes the job submissions) are the same for every node and every other
    Ray on the machine, and an agent that finds its port taken stays up without its HTTP server,
    so `ray job submit` then gets "No available agent to submit job"."""
    return ["--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, ready, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(1)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s\n{tails}")


class LocalClusters:
    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1",
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)  # the Ray nodes must not join another cluster
        # A local ray.init leaves a token in ~/.ray/auth_token, and a later `ray start` then turns
        # token authentication on by itself (the dashboard answers 401): say which mode we want.
        self.env["RAY_AUTH_MODE"] = "disabled"
        self.master_port, self.master_ui = free_port(), free_port()
        self.worker_uis = [free_port(), free_port()]
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.spark_master = f"spark://127.0.0.1:{self.master_port}"
        self.ray_dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        # Ray's sockets live under its temp dir, and a Unix socket's path may not exceed 107
        # bytes: pytest's folders are too deep for it (the dashboard then never starts).
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="rdt-ray-", dir="/tmp"))
        self.worker_dirs = [folder / f"spark-worker-{i}" for i in (1, 2)]

    def _start(self, name: str, command: list[str]) -> Path:
        log = self.folder / f"{name}.log"
        with open(log, "w") as sink:
            self.procs.append(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))
        return log

    def start(self) -> LocalClusters:
        spark_class = str(BIN / "spark-class")
        logs = [self._start("spark-master", [
            spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
            "--port", str(self.master_port), "--webui-port", str(self.master_ui)])]
        for i, (work_dir, ui) in enumerate(zip(self.worker_dirs, self.worker_uis, strict=True)):
            logs.append(self._start(f"spark-worker-{i + 1}", [
                spark_class, "org.apache.spark.deploy.worker.Worker", self.spark_master,
                "--host", "127.0.0.1", "--cores", "1", "--memory", "2g",
                "--work-dir", str(work_dir), "--webui-port", str(ui)]))
        ray = str(BIN / "ray")
        logs.append(self._start("ray-head", [
            ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(self.gcs_port), "--num-cpus", "0", "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--temp-dir", str(self.ray_tmp), "--disable-usage-stats", *agent_ports()]))
        wait_for("Ray head", lambda: get_json(f"{self.ray_dashboard}/api/version"), 180, logs)
        logs.append(self._start("ray-worker", [
            ray, "start", "--block", "--address", f"127.0.0.1:{self.gcs_port}",
            "--node-ip-address", "127.0.0.1", "--num-cpus", "2", *agent_ports()]))
        wait_for("Spark workers", lambda: len([w for w in self.spark_state()["workers"]
                                               if w["state"] == "ALIVE"]) == 2, 120, logs)
        wait_for("Ray worker node", lambda: len(self.ray_nodes()) == 2, 180, logs)
        return self

    def spark_state(self) -> dict:
        """The master's own account: workers, running and completed applications."""
        return get_json(f"http://127.0.0.1:{self.master_ui}/json/")

    def ray_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n.__dict__ for n in list_nodes(address=self.ray_dashboard, detail=True)
                if n.state == "ALIVE"]

    def ray_tasks(self) -> list[dict]:
        from ray.util.state import list_tasks

        return [t.__dict__ for t in list_tasks(address=self.ray_dashboard, detail=True,
                                               limit=10000, raise_on_missing_output=False)]

    def ray_jobs(self) -> list[dict]:
        from ray.job_submission import JobSubmissionClient

        return [j.__dict__ for j in JobSubmissionClient(self.ray_dashboard).list_jobs()]

    def executor_logs(self) -> dict[str, list[Path]]:
        """Each Spark application's executor stderr files, over both workers' work dirs."""
        found: dict[str, list[Path]] = {}
        for work_dir in self.worker_dirs:
            for stderr in work_dir.glob("app-*/*/stderr"):
                found.setdefault(stderr.parent.parent.name, []).append(stderr)
        return found

    def stop(self) -> None:
        # A Ray node drains for up to 30 s on SIGTERM; with every job ended there is nothing to
        # drain, so Ray's nodes are killed outright and only Spark's JVMs are asked to stop.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                ray_node = Path(proc.args[0]).name == "ray"
                try:
                    os.killpg(proc.pid, signal.SIGKILL if ray_node else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Ray's daemons and workers, and Spark's executors, may outlive their group: anything
        # still running from this folder goes too.
        markers = [str(self.folder).encode(), str(self.ray_tmp).encode()]
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if any(marker in cmdline for marker in markers):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> LocalClusters:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
