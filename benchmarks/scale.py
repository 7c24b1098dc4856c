"""The flow at growing patient counts: wall time, events/s/core and peak memory per stage.

Each stage runs as a user runs it (``rdt <stage> --config ... --lake <workdir>/scale-<N> --quiet``,
in its own process, so JVM and Ray start-up count), on one lake per size. ``evaluate`` is left out
unless ``--stages`` or ``--through`` names it. Peak memory is polled every 0.25 s from /proc:
``driver`` is the summed RSS of the stage's process tree (Python, the Spark JVM, Ray's head
processes) without Ray's workers; in local mode Spark's executors live inside the driver JVM, so
they count here. ``workers`` is the summed RSS of the stage's Ray worker processes (``ray::`` or
``default_worker.py``). A stage's processes are its tree plus any started during the stage that
carry its ``RDT_SCALE_STAGE`` environment marker (Ray daemons leave the tree, not the environment).

For each size, a bare Spark group-and-sort of the same ``silver.events`` into per-patient sorted
lists is timed in a process of its own, two ways: ``baseline_s``, the median of ``--repeats`` runs
after one warm-up in a running session; and ``baseline_as_run_s``, that process's session start
plus its first (cold) run, which is what a user running it as a job would wait, as each stage
above is timed. ``ratio`` and ``ratio_as_run`` are those times over ingest + tokenize, i.e. the
pipeline's rate as a share of the baseline's (the goal: >= 0.5).

Beside it, in a process of its own timed the same two ways, ``floor``: the least any ingest must
do, whatever its design: read every source row once and write it as one MEDS-shaped event into a
Delta table, with no validation, no concept lookup and no rejects. Ingest does at least the floor
and tokenize at least the baseline (its timelines are a group-and-sort of the same events with
more columns), so with the two as separate jobs, as DESIGN.md draws them, ``ceiling`` = baseline /
(floor + baseline) bounds the ratio on this machine, and ``ceiling_as_run`` the ratio as run. (One
job doing both would start one session, not two: its bound as run is baseline_as_run_s /
(floor_as_run_s + baseline_s).)

    .venv/bin/python benchmarks/scale.py 10000 30000 100000 [--reuse] [--json out.json]

prints, for example (2 cores, 2026-12-07):
    N=10000 stage=ingest wall_s=63.6 events=2812671 events_per_s_per_core=22113 peak_driver_mb=4529 ...
    N=10000 events=2812671 ingest+tokenize_s=118.4 baseline_s=2.3 ratio=0.020 \
        baseline_as_run_s=15.2 ratio_as_run=0.128 floor_s=4.5 ceiling=0.343 \
        floor_as_run_s=21.8 ceiling_as_run=0.411   (one line)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RDT = Path(sys.executable).parent / "rdt"
# jobs.registry.FLOW's order; not imported, since that would load torch and Ray into this process.
FLOW = ["generate", "ingest", "tokenize", "states", "modalities", "note-features", "train",
        "embed", "fusion-inputs", "fuse", "index", "evaluate"]
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def say(line: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, start time in clock ticks since boot, RSS bytes), for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            rss = int(Path(entry.path, "statm").read_text().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError):  # it exited between listing and reading
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), rss)
    return table


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def _sample(root: int, since_ticks: float, marker: bytes) -> tuple[int, int]:
    """Summed RSS of the stage's processes: (all but Ray workers, Ray workers)."""
    table = _proc_table()
    tree, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            tree.add(child)
            frontier.append(child)
    driver = workers = 0
    for pid, (_, started, rss) in table.items():
        # A process Ray detaches leaves the tree but inherits the stage's environment; matching on
        # the marker rather than on "a Ray worker started meanwhile" ignores other Rays (tests).
        if pid not in tree and (started < since_ticks or not _has_marker(pid, marker)):
            continue
        cmdline = _cmdline(pid)
        if "ray::" in cmdline or "default_worker.py" in cmdline:
            workers += rss
        else:
            driver += rss
    return driver, workers


def run_stage(stage: str, lake: Path, args: argparse.Namespace, patients: int) -> dict:
    extra = {"generate": ["--patients", str(patients), "--seed", str(args.seed)],
             "ingest": ["--full"]}.get(stage, [])
    command = [str(RDT), stage, "--config", args.config, "--lake", str(lake), "--quiet", *extra]
    say(f"N={patients}: {stage} ...")
    since_ticks = float(Path("/proc/uptime").read_text().split()[0]) * TICKS
    started = time.perf_counter()
    # The job's closing paragraph goes to our stderr: stdout holds only the figures.
    token = f"{os.getpid()}-{patients}-{stage}-{time.time_ns()}"
    marker = f"RDT_SCALE_STAGE={token}".encode()
    child = subprocess.Popen(command, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr,
                             env={**os.environ, "RDT_SCALE_STAGE": token})
    peak_driver = peak_workers = 0
    while child.poll() is None:
        driver, workers = _sample(child.pid, since_ticks, marker)
        peak_driver, peak_workers = max(peak_driver, driver), max(peak_workers, workers)
        time.sleep(0.25)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        logs = sorted((lake / "_runs" / "logs").glob(f"*-{stage}.log"), key=lambda p: p.stat().st_mtime)
        raise StageFailed(f"N={patients}: stage {stage} failed with exit code {child.returncode}; "
                          f"log: {logs[-1] if logs else lake / '_runs' / 'logs'}")
    return {"stage": stage, "wall_s": wall, "peak_driver_mb": peak_driver / 2**20,
            "peak_workers_mb": peak_workers / 2**20}


class StageFailed(RuntimeError):
    pass


def count_events(lake: Path) -> int | None:
    """silver.events rows from the Delta log's file statistics, without reading the data."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    path = lake / "silver" / "events"
    if not (path / "_delta_log").is_dir():
        return None
    table = DeltaTable(str(path))
    num_records = pa.table(table.get_add_actions(flatten=True)).column("num_records")
    if num_records.null_count == 0:
        return int(pc.sum(num_records).as_py() or 0)
    return table.to_pyarrow_dataset().count_rows()  # a file written without statistics


def baseline(lake: Path, workdir: Path, config: str, repeats: int, what: str = "group-sort"
             ) -> tuple[float, float]:
    """(warm median, as run) seconds of a bare group-and-sort of silver.events into per-patient
    sorted lists (or, with ``what="floor"``, of the floor of an ingest: see the module doc), in a
    process of its own: its JVM ends with it and leaves the next size all the memory."""
    done = subprocess.run([sys.executable, __file__, "--baseline-of", str(lake), "--workdir",
                           str(workdir), "--config", config, "--repeats", str(repeats),
                           "--baseline-kind", what, "0"], capture_output=True, text=True)
    if done.returncode != 0:
        raise StageFailed(f"the {what} baseline failed:\n{done.stderr[-3000:]}")
    warm, as_run = done.stdout.split()[-2:]
    return float(warm), float(as_run)


def group_sort(spark, lake: Path, out: Path) -> None:
    """The baseline: silver.events grouped into per-patient lists sorted by time."""
    from pyspark.sql import functions as F

    (spark.read.format("delta").load(str(lake / "silver" / "events"))
     .groupBy("subject_id")
     .agg(F.sort_array(F.collect_list(F.struct("time", "code", "numeric_value"))).alias("events"))
     .write.mode("overwrite").parquet(str(out)))


class FloorTable(NamedTuple):
    """Where one source table keeps what an event needs (the person is always ``person_id``)."""

    row_id: str
    times: tuple[str, ...]  # the first non-null wins
    code: str | None = None
    value: str | None = None
    text: str | None = None


FLOOR_TABLES = {
    "person": FloorTable("person_id", ("birth_datetime",), "gender_concept_id"),
    "death": FloorTable("person_id", ("death_datetime", "death_date")),
    "ext.imaging": FloorTable("imaging_id", ("imaging_datetime", "imaging_date")),
    "ext.omics": FloorTable("sample_id", ("sample_datetime", "sample_date")),
}


def ingest_floor(spark, lake: Path, out: Path) -> None:
    """Every source row once, as one MEDS-shaped event, into a Delta table: no validation, no
    concept lookup, no rejects. Less than any ingest can do and still write silver.events."""
    from functools import reduce

    from pyspark.sql import functions as F

    from rdt_spark.ingest import EVENT_SOURCES

    tables = {**FLOOR_TABLES, **{s.table: FloorTable(s.id_col, s.time_cols, s.concept_col,
                                                     s.value_col, s.text_col)
                                 for s in EVENT_SOURCES}}

    def column(name: str | None, kind: str):
        return F.col(name).cast(kind) if name else F.lit(None).cast(kind)

    frames = []
    for table, where in tables.items():
        schema, _, name = table.rpartition(".")
        path = lake / (schema or "omop") / name
        if not (path / "_delta_log").is_dir():
            continue
        df = spark.read.format("delta").load(str(path))
        times = [F.col(c).cast("timestamp") for c in where.times if c in df.columns]
        frames.append(df.select(
            F.col("person_id").cast("long").alias("subject_id"),
            (F.coalesce(*times) if times else F.lit(None).cast("timestamp")).alias("time"),
            F.concat_ws("/", F.lit(table), column(where.code, "string")).alias("code"),
            column(where.value, "float").alias("numeric_value"),
            column(where.text, "string").alias("text_value"),
            F.lit(table).alias("source_table"), F.col(where.row_id).cast("long").alias("source_row_id")))
    (reduce(lambda a, b: a.unionByName(b), frames)
     .write.format("delta").mode("overwrite").save(str(out)))


def time_baseline(lake: Path, workdir: Path, spark_conf: dict, repeats: int,
                  what: str = "group-sort") -> tuple[float, float]:
    started = time.perf_counter()
    from rdt_spark.session import spark_session

    spark = spark_session("local[*]", f"scale-{what}", spark_conf)
    out = workdir / f"{what}-{lake.name}"
    run = ingest_floor if what == "floor" else group_sort
    timings = []
    try:
        for _ in range(repeats + 1):  # the first run warms the JVM up and is not counted
            run(spark, lake, out)
            timings.append(time.perf_counter() - started)
            started = time.perf_counter()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    # The first run is counted from before the session started: the job as a user runs it.
    return statistics.median(timings[1:]), timings[0]


def stage_list(args: argparse.Namespace) -> list[str]:
    if args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    else:
        stages = FLOW[:FLOW.index(args.through) + 1] if args.through else [s for s in FLOW if s != "evaluate"]
    unknown = sorted(set(stages) - set(FLOW))
    if unknown:
        sys.exit(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(FLOW)}")
    return [s for s in FLOW if s in stages]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def measure(patients: int, args: argparse.Namespace, results: list[dict]) -> None:
    lake = Path(args.workdir).resolve() / f"scale-{patients}"
    stages = stage_list(args)
    if args.reuse and (lake / "omop" / "person" / "_delta_log").is_dir() and "generate" in stages:
        say(f"N={patients}: reusing the generated lake {lake}")
        stages.remove("generate")
    result: dict = {"patients": patients, "lake": str(lake), "stages": []}
    results.append(result)  # before any stage, so --json keeps what a failure leaves
    try:
        for stage in stages:
            result["stages"].append(run_stage(stage, lake, args, patients))
    finally:  # a failure still prints the stages that finished before it
        events = result["events"] = count_events(lake)
        for s in result["stages"]:
            s["events_per_s_per_core"] = events / s["wall_s"] / args.cores if events else None
            print(f"N={patients} stage={s['stage']} wall_s={s['wall_s']:.1f} events={events} "
                  f"events_per_s_per_core={_fmt(s['events_per_s_per_core'], 0)} "
                  f"peak_driver_mb={s['peak_driver_mb']:.0f} peak_workers_mb={s['peak_workers_mb']:.0f}",
                  flush=True)
    walls = {s["stage"]: s["wall_s"] for s in result["stages"]}
    pipeline_s = walls["ingest"] + walls["tokenize"] if {"ingest", "tokenize"} <= walls.keys() else None
    baseline_s = as_run_s = floor_s = floor_as_run_s = None
    if events:
        say(f"N={patients}: baseline group-and-sort of silver.events ...")
        baseline_s, as_run_s = baseline(lake, Path(args.workdir).resolve(), args.config,
                                        args.repeats)
        say(f"N={patients}: floor of an ingest (the source copied into one events table) ...")
        floor_s, floor_as_run_s = baseline(lake, Path(args.workdir).resolve(), args.config,
                                           args.repeats, "floor")
    ratio = lambda b, p: b / p if b and p else None  # noqa: E731
    result.update({"ingest_tokenize_s": pipeline_s, "baseline_s": baseline_s,
                   "ratio": ratio(baseline_s, pipeline_s), "baseline_as_run_s": as_run_s,
                   "ratio_as_run": ratio(as_run_s, pipeline_s), "floor_s": floor_s,
                   "ceiling": ratio(baseline_s, floor_s and floor_s + baseline_s),
                   "floor_as_run_s": floor_as_run_s,
                   "ceiling_as_run": ratio(as_run_s, floor_as_run_s and floor_as_run_s + as_run_s)})
    print(f"N={patients} events={events} ingest+tokenize_s={_fmt(pipeline_s)} "
          f"baseline_s={_fmt(baseline_s)} ratio={_fmt(result['ratio'], 3)} "
          f"baseline_as_run_s={_fmt(as_run_s)} ratio_as_run={_fmt(result['ratio_as_run'], 3)} "
          f"floor_s={_fmt(floor_s)} ceiling={_fmt(result['ceiling'], 3)} "
          f"floor_as_run_s={_fmt(floor_as_run_s)} ceiling_as_run={_fmt(result['ceiling_as_run'], 3)}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patients", type=int, nargs="+", help="patient counts, e.g. 10000 30000 100000")
    parser.add_argument("--workdir", default="/tmp/rdt-scale", help="holds one lake per size: scale-<N>")
    parser.add_argument("--config", default="conf/local.yaml", help="the stages' config (repo-relative)")
    parser.add_argument("--stages", help=f"comma-separated, of {','.join(FLOW)} (default: all but evaluate)")
    parser.add_argument("--through", choices=FLOW, help="run the flow up to and including this stage")
    parser.add_argument("--reuse", action="store_true", help="keep a lake generated earlier: skip generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="timed baseline runs (median)")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="divisor of events/s/core")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--baseline-of", help=argparse.SUPPRESS)  # internal: one size's baseline
    parser.add_argument("--baseline-kind", default="group-sort", choices=["group-sort", "floor"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    from jobs.config import load_config  # the settings only: no torch, no Ray

    spark_conf = {k: str(v) for k, v in load_config(ROOT / args.config).spark.conf.items()}
    if args.baseline_of:
        print(*time_baseline(Path(args.baseline_of), Path(args.workdir), spark_conf, args.repeats,
                             args.baseline_kind))
        return
    ram_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20  # MemTotal, in kB
    machine = {"cores": os.cpu_count(), "ram_gb": round(ram_gb, 1), "cores_for_rates": args.cores}
    print(f"scale: {machine['cores']} cores, {ram_gb:.1f} GiB RAM; events/s/core over {args.cores} "
          f"core(s); peak_driver = stage process tree (local mode: Spark executors are in the driver "
          f"JVM), peak_workers = Ray worker processes", flush=True)
    results: list[dict] = []
    try:
        for patients in args.patients:
            measure(patients, args, results)
    except StageFailed as err:
        sys.exit(f"scale: {err}")
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": machine, "sizes": results}, indent=2))


if __name__ == "__main__":
    main()
