"""rdt run-all: the whole flow in order, as a scheduler runs it, and safe to re-run.

A stage runs only when something it depends on changed since its last successful run: the
version of a table or model it reads, its config sections, or the code. A stage whose outputs
someone else rewrote since runs too. Otherwise it is skipped, so a nightly run over an unchanged
registry costs seconds. A changed source row flows through incrementally: ``rdt ingest``
re-ingests only the patients whose rows changed (``rdt_spark.ingest_run``), and the stages that
read what it rewrote follow.

Each stage runs in this process, or with ``--submit`` on the clusters the config names: a Spark
stage through ``spark-submit --master <spark.master>``, a Ray stage through
``ray job submit --address <ray.submit_address>``, both running ``jobs/<module>.py`` with the same
config. Every stage, run or skipped, adds a row to ``ops.runs`` (a Delta table): the run's id,
the versions it read and wrote, its duration, its outputs' row counts, why it ran, and who ran
what where.

    rdt run-all --config conf/cluster.yaml --submit      # what deploy/cron.example runs
    rdt run-all --dry-run                                 # which stages would run, and why
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml
from deltalake import write_deltalake
from deltalake.exceptions import TableNotFoundError

from jobs import (
    embed,
    evaluate,
    fuse,
    fusion_inputs,
    generate,
    index,
    ingest,
    modalities,
    note_features,
    states,
    tokenize_events,
    train,
)
from jobs.config import Config
from jobs.console import Progress
from jobs.job import Job, JobFailed, option
from rdt_spark.lake import table_path
from rdt_spark.lake_uris import delta_rs_uri, open_delta

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RUNS_TABLE = "ops.runs"
# Published folders under run_dir (a CURRENT pointer each), not Delta tables.
MODEL, FUSION_MODEL, INDEX = "model", "fusion model", "index"
PUBLISHED = {MODEL: "models", FUSION_MODEL: "fusion_models", INDEX: "index"}
SOURCE_JOBS = (ingest.JOB, modalities.JOB)  # read the source: --source is theirs


@dataclass(frozen=True)
class Stage:
    job: Job
    engine: str  # "spark" or "ray": which cluster --submit hands it to
    reads: tuple[str, ...]  # tables (schema.name), MODEL or INDEX; "omop.*" is every table there
    writes: tuple[str, ...]
    sections: tuple[str, ...]  # config sections its output depends on


STAGES = [
    Stage(generate.JOB, "spark", (), ("omop.person", "omop.measurement", "truth.patient_latent"),
          ("generate",)),
    Stage(ingest.JOB, "spark", ("omop.*", "ext.*"),
          ("silver.events", "silver.rejects", "silver.ingest_state"), ()),
    Stage(tokenize_events.JOB, "spark", ("silver.events",),
          ("gold.vocab", "gold.timelines", "gold.tasks"), ("tokenize",)),
    Stage(states.JOB, "spark", ("silver.events",), ("gold.patient_states", "gold.trajectories"),
          ("tokenize", "states")),
    Stage(modalities.JOB, "spark", ("silver.events", "ext.*"),
          ("gold.notes", "gold.imaging", "gold.omics"), ("tokenize",)),
    Stage(note_features.JOB, "ray", ("gold.notes",), ("gold.note_features",), ()),
    Stage(train.JOB, "ray", ("gold.timelines", "gold.vocab"), (MODEL,), ("model", "train")),
    Stage(embed.JOB, "ray", ("gold.timelines", MODEL), ("gold.event_embeddings",), ("embed",)),
    Stage(fusion_inputs.JOB, "spark", ("gold.event_embeddings", "gold.notes", "gold.note_features",
                                       "gold.imaging", "gold.omics"), ("gold.fusion_inputs",),
          ("fusion",)),
    Stage(fuse.JOB, "ray", ("gold.fusion_inputs", "gold.event_embeddings"),
          (FUSION_MODEL, "gold.embeddings"), ("fusion", "embed", "index")),
    Stage(index.JOB, "ray",
          ("gold.embeddings", "gold.tasks", "gold.patient_states", "gold.trajectories"), (INDEX,),
          ("index",)),
    Stage(evaluate.JOB, "ray", (INDEX, "gold.tasks", "gold.patient_states", "gold.trajectories",
                                "gold.timelines", "truth.*"),
          ("gold.evaluation",), ("evaluate", "gbm", "query")),
]
BY_NAME = {stage.job.name: stage for stage in STAGES}


@dataclass(frozen=True)
class Options:
    submit: bool = option("submit each stage to the clusters the config names (spark-submit, "
                          "ray job submit) instead of running it in this process", False)
    generate: bool = option("start with rdt generate: a synthetic registry as the source", False)
    only: str | None = option("run only these stages, comma-separated (e.g. ingest,tokenize)")
    force: bool = option("run the stages even if nothing they depend on changed", False)
    dry_run: bool = option("say which stages would run and why, and run nothing", False)
    source: str | None = option("the folder of OMOP Parquet or CSV files rdt ingest reads "
                                "(default: omop.* and ext.* in the lake)")


def code_version() -> str:
    """A hash of the project's source: a stage re-runs when the code that writes it changed."""
    digest = hashlib.sha256()
    for folder in ("jobs", "rdt_spark", "ray_training"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".html") and path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def config_hash(cfg: Config, stage: Stage) -> str:
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in stage.sections}
    if "tokenize" in stage.sections:  # the task definitions are config too
        sections["tasks_file"] = Path(cfg.tokenize.tasks_file).read_text()
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _published(cfg: Config, kind: str) -> str | None:
    pointer = Path(cfg.run_dir) / PUBLISHED[kind] / "CURRENT"
    return pointer.read_text().strip() if pointer.exists() else None


def _tables_under(cfg: Config, pattern: str) -> list[str]:
    schema = pattern.removesuffix(".*")
    folder = Path(table_path(cfg.lake, f"{schema}.x")).parent
    if "://" in cfg.lake or not folder.is_dir():
        return []  # object stores: name the tables explicitly in a stage's reads
    return sorted(f"{schema}.{p.name}" for p in folder.iterdir() if (p / "_delta_log").is_dir())


def source_files(folder: str) -> dict[str, str | None]:
    """A source folder's data files as versions: each file's size and modification time."""
    root = Path(folder)
    if not root.is_dir():
        raise JobFailed(f"--source {folder}: no such folder")
    return {f"source/{p.relative_to(root)}": f"{p.stat().st_size}@{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file() and not _hidden(p.relative_to(root))}


def _hidden(path: Path) -> bool:
    # What Spark and the readers skip too: checksums (.crc), _SUCCESS markers, _delta_log aside.
    return any(part.startswith((".", "_")) and part != "_delta_log" for part in path.parts)


def versions(cfg: Config, names: tuple[str, ...], source: str | None = None) -> dict[str, str | None]:
    """What each input or output is now: a Delta version, a published version, or None; a
    ``source`` folder stands for the lake's omop.* and ext.* tables."""
    found: dict[str, str | None] = {}
    if source:
        found.update(source_files(source))
        names = tuple(n for n in names if n not in ("omop.*", "ext.*"))
    for name in names:
        if name in PUBLISHED:
            found[name] = _published(cfg, name)
        elif name.endswith(".*"):
            found.update(versions(cfg, tuple(_tables_under(cfg, name))))
        else:
            try:
                found[name] = str(open_delta(table_path(cfg.lake, name)).version())
            except TableNotFoundError:  # not written yet
                found[name] = None
    return found


def row_counts(cfg: Config, names: tuple[str, ...]) -> dict[str, int]:
    """Rows of each Delta output, from the log's file statistics (no data read)."""
    counts = {}
    for name in names:
        if name in PUBLISHED:
            continue
        try:
            actions = open_delta(table_path(cfg.lake, name)).get_add_actions(flatten=True)
            counts[name] = int(sum(n or 0 for n in actions.column("num_records").to_pylist()))
        except TableNotFoundError:
            continue
    return counts


def last_runs(cfg: Config) -> dict[str, dict]:
    """The latest successful run of each stage, from ops.runs."""
    try:
        runs = open_delta(table_path(cfg.lake, RUNS_TABLE)).to_pandas()
    except TableNotFoundError:  # the first run-all on this lake
        return {}
    done = runs[runs["status"] == "succeeded"].sort_values("ended")
    return {row["stage"]: row for row in done.to_dict("records")}


def feeds(writes: tuple[str, ...], reads: tuple[str, ...]) -> bool:
    """Whether a stage writing ``writes`` changes an input of one reading ``reads``."""
    return any(w == r or (r.endswith(".*") and w.startswith(r[:-1])) for w in writes for r in reads)


def why_run(stage: Stage, fingerprint: dict, last: dict | None, outputs_now: dict) -> str | None:
    """Why the stage must run, or None when its last run still stands."""
    if last is None:
        return "never ran"
    reasons = []
    before = json.loads(last["inputs"])
    for name, version in fingerprint["inputs"].items():
        if before.get(name) != version:
            reasons.append(f"{name} {before.get(name)} -> {version}")
    for name in set(before) - set(fingerprint["inputs"]):
        reasons.append(f"{name} gone")
    if last["config_hash"] != fingerprint["config_hash"]:
        reasons.append(f"config ({', '.join(stage.sections)}) changed")
    if last["code_version"] != fingerprint["code_version"]:
        reasons.append("code changed")
    written = json.loads(last["outputs"])
    for name, version in outputs_now.items():
        if written.get(name) != version:
            reasons.append(f"{name} rewritten since ({written.get(name)} -> {version})")
    return "; ".join(reasons) or None


def command_line(stage: Stage, cfg: Config, config_file: Path, opts: Options) -> list[str]:
    """How ``--submit`` starts a stage on its cluster: the job's module file, as a user runs it."""
    script = ROOT / "jobs" / f"{stage.job.run.__module__.removeprefix('jobs.')}.py"
    job_args = [str(script), "--config", str(config_file), "--quiet", *_job_flags(stage, opts)]
    if stage.engine == "spark":
        from rdt_spark.session import delta_submit_args

        # The config's Spark settings go on the command line too: the driver's JVM starts before
        # the job's session does, so its memory and options are taken from here or not at all.
        settings = [arg for key, value in cfg.spark.conf.items()
                    for arg in ("--conf", f"{key}={value}")]
        return [str(Path(sys.executable).with_name("spark-submit")), "--master", cfg.spark.master,
                *settings, *delta_submit_args(), *job_args]
    if not cfg.ray.submit_address:
        raise JobFailed("--submit: the config's 'ray.submit_address' (the Ray dashboard, "
                        "http://head:8265) is not set")
    return [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address",
            cfg.ray.submit_address, "--", sys.executable, *job_args]


def _job_flags(stage: Stage, opts: Options) -> list[str]:
    return ["--source", opts.source] if stage.job in SOURCE_JOBS and opts.source else []


def _job_options(stage: Stage, opts: Options):
    return stage.job.options(source=opts.source) if stage.job in SOURCE_JOBS else stage.job.options()


# Ray's job server refuses a submission it cannot place yet ("No available agent to submit job,
# please try again later"): nothing ran, so the same submission is tried again, a few times.
NOT_SUBMITTED = "No available agent to submit job"
SUBMIT_TRIES, SUBMIT_WAIT_SECONDS = 5, 15.0


def submit(stage: Stage, command: list[str], cfg: Config, run_id: str) -> None:
    out = Path(cfg.run_dir) / "runs" / run_id / f"{stage.job.name}.log"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    for attempt in range(1, SUBMIT_TRIES + 1):
        with open(out, "a") as sink:
            sink.write(shlex.join(command) + "\n")
            sink.flush()
            start = sink.tell()
            done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if done.returncode == 0:
            return
        with open(out) as written:
            written.seek(start)
            refused = NOT_SUBMITTED in written.read()
        if not refused or attempt == SUBMIT_TRIES:
            break
        log.info(f"{stage.job.name}: the Ray job server had no agent free; submitting again in "
                 f"{SUBMIT_WAIT_SECONDS:.0f} s (try {attempt + 1} of {SUBMIT_TRIES})")
        time.sleep(SUBMIT_WAIT_SECONDS)
    raise JobFailed(f"stage {stage.job.name} failed on its cluster (exit code "
                    f"{done.returncode}); its output: {out}")


def record(cfg: Config, row: dict) -> None:
    """Append a row to ops.runs (with delta-rs: the scheduler needs no Spark session)."""
    write_deltalake(delta_rs_uri(table_path(cfg.lake, RUNS_TABLE)), pa.Table.from_pylist([row]),
                    mode="append")


def stages_to_run(opts: Options) -> list[Stage]:
    if not opts.only:
        return [s for s in STAGES if s.job is not generate.JOB or opts.generate]
    wanted = {name.strip() for name in opts.only.split(",") if name.strip()}
    unknown = sorted(wanted - set(BY_NAME))
    if unknown:
        raise JobFailed(f"--only: no stage {unknown[0]!r} (stages: {', '.join(BY_NAME)})")
    return [s for s in STAGES if s.job.name in wanted]


def run(cfg: Config, opts: Options) -> dict:
    stages = stages_to_run(opts)
    run_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    # The jobs read the config exactly as this run resolved it, from where every node sees it.
    config_file = Path(cfg.run_dir) / "runs" / run_id / "config.yaml"
    if not opts.dry_run:
        config_file.parent.mkdir(parents=True)
        config_file.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    who = {"run_id": run_id, "user": getpass.getuser(), "host": socket.gethostname(),
           "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
           "mode": "submit" if opts.submit else "in-process"}
    code, previous = code_version(), last_runs(cfg)
    progress = Progress(log, len(stages), "stages", every=0)
    summary: dict = {"run_id": run_id, "ran": [], "skipped": []}
    due: dict[str, tuple[str, ...]] = {}  # dry run: stages that would run, and what they write
    for stage in stages:
        name = stage.job.name
        inputs = versions(cfg, stage.reads, opts.source if stage.job in SOURCE_JOBS else None)
        fingerprint = {"inputs": inputs, "config_hash": config_hash(cfg, stage),
                       "code_version": code}
        reason = "forced" if opts.force else why_run(stage, fingerprint, previous.get(name),
                                                      versions(cfg, stage.writes))
        if opts.dry_run:  # what an earlier stage would rewrite changes this one's inputs too
            upstream = [n for n, writes in due.items() if feeds(writes, stage.reads)]
            reason = reason or (f"after {', '.join(upstream)}" if upstream else None)
            if reason:
                due[name] = stage.writes
            log.info(f"{name}: {'would run: ' + reason if reason else 'unchanged, would skip'}")
            summary["ran" if reason else "skipped"].append(name)
            continue
        summary["ran" if reason else "skipped"].append(name)
        if reason:
            log.info(f"{name}: running ({reason})")
        started, t0, status = dt.datetime.now(dt.timezone.utc), time.monotonic(), "failed"
        try:
            if not reason:
                status = "skipped"
            elif opts.submit:
                submit(stage, command_line(stage, cfg, config_file, opts), cfg, run_id)
                status = "succeeded"
            else:
                stage.job.run(cfg, _job_options(stage, opts))
                status = "succeeded"
        finally:
            seconds = time.monotonic() - t0
            record(cfg, {**who, "stage": name, "status": status, "reason": reason or "unchanged",
                         "started": started, "ended": dt.datetime.now(dt.timezone.utc),
                         "seconds": round(seconds, 3), "inputs": json.dumps(inputs, sort_keys=True),
                         "outputs": json.dumps(versions(cfg, stage.writes), sort_keys=True),
                         "row_counts": json.dumps(row_counts(cfg, stage.writes), sort_keys=True),
                         "config_hash": fingerprint["config_hash"], "code_version": code})
        progress.advance(detail=f"{name} took {seconds:.0f}s" if reason else f"{name} unchanged")
    summary["stages_run"], summary["stages_skipped"] = len(summary["ran"]), len(summary["skipped"])
    return summary


JOB = Job("run-all", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
