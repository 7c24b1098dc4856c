"""The one Spark session factory: Delta Lake enabled, master and configs from conf/."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyspark
from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Keep tables readable by delta-rs (Ray Data's read_delta): no deletion vectors.
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.sql.session.timeZone": "UTC",
    # A CSV line with too few or too many fields is flagged (omop_source.MALFORMED) only when
    # the parser reads every field, not just the columns a query needs.
    "spark.sql.csv.parser.columnPruning.enabled": "false",
    # PySpark 4 records the Python call site of every Column and DataFrame call for its error
    # messages: five extra JVM round trips and a stack walk per call. Ingest of a 28-patient
    # extract made 31,470 round trips with it on and 8,980 with it off.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "rdt"
    conf: dict[str, str] = field(default_factory=dict)


def delta_maven_artifact() -> str:
    """The Maven coordinate that delta-spark's pip helper asks Ivy to resolve."""
    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = importlib.metadata.version("delta_spark")
    return f"io.delta:delta-spark_{spark_major_minor}_2.13:{delta_version}"


# Where `fetch-jars` records the jar files Ivy resolved for Delta: in the environment, since
# another environment may hold another delta-spark.
JARS_FILE = Path(sys.prefix) / "rdt-delta-jars.txt"


def recorded_delta_jars() -> list[str] | None:
    """The jar files Ivy resolved for this delta-spark at set-up (``fetch-jars``), while they are
    all still there; None before set-up or once delta-spark's version changed."""
    lines = JARS_FILE.read_text().split() if JARS_FILE.is_file() else []
    jars = lines[1:]
    if lines[:1] == [delta_maven_artifact()] and jars and all(
            Path(j.removeprefix("file://")).is_file() for j in jars):
        return jars
    return None


def _with_delta_jars(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Delta's jars as the files recorded at set-up, so a session starts without Ivy resolving
    its 33 artifacts again (about 2 s of every job's start); else delta-spark's own helper
    resolves them."""
    jars = recorded_delta_jars()
    if jars:
        return builder.config("spark.jars", ",".join(jars))
    return configure_spark_with_delta_pip(builder)


def delta_submit_args() -> list[str]:
    """Delta's jars for ``spark-submit``: the recorded files, else the Maven coordinate."""
    jars = recorded_delta_jars()
    return ["--jars", ",".join(jars)] if jars else ["--packages", delta_maven_artifact()]


def spark_session(
    master: str = "local[*]", app_name: str = "rdt", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Start (or return the running) Spark session with Delta Lake enabled."""
    # Python workers must run this interpreter (with pandas and pyarrow), not the PATH's python3.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**DELTA_CONF, **(conf or {})}.items():
        builder = builder.config(key, str(value))
    spark = _with_delta_jars(builder).getOrCreate()
    # Quiet unless the config asks for more (spark.log.level: INFO to see Spark's own story).
    # Spark 4 ignores a level equal to the root logger's (INFO), leaving pyspark's shell filter
    # at WARN: passing through another level first makes INFO take effect too.
    level = str((conf or {}).get("spark.log.level", "ERROR")).upper()
    for step in ("WARN" if level == "ERROR" else "ERROR", level):
        spark.sparkContext.setLogLevel(step)
    if level in ("INFO", "DEBUG", "TRACE", "ALL"):
        _quiet_loggers_that_print_data(spark)
    return spark


# Loggers whose INFO lines carry table contents: Delta's snapshots print every file's min/max
# statistics (person ids, dates of birth, the first characters of notes); the scan planners
# print a query's filter literals. They stay at WARN whatever level the rest of Spark logs at.
DATA_LOGGERS = [
    "org.apache.spark.sql.delta",
    "org.apache.spark.sql.execution.datasources.FileSourceStrategy",
    "org.apache.spark.sql.execution.datasources.v2.V2ScanRelationPushDown",
    "org.apache.parquet.filter2.compat.FilterCompat",
]


def _quiet_loggers_that_print_data(spark: SparkSession) -> None:
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j
    for name in DATA_LOGGERS:
        log4j.core.config.Configurator.setLevel(name, log4j.Level.WARN)


_IVY_MISSING = re.compile(r"download failed: ([^#\s]+)#([^;\s]+);([^!\s]+)!")


def _mvn_get(coordinate: str, transitive: bool = True) -> None:
    # Maven's own output (colour codes and all) is shown only when it fails.
    done = subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:get",
                           f"-Dartifact={coordinate}", f"-Dtransitive={str(transitive).lower()}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"mvn dependency:get {coordinate} failed (exit code {done.returncode})")
    print(f"fetched {coordinate} into ~/.m2", flush=True)


def fetch_delta_jars(attempts: int = 6) -> None:
    """Put the Delta jars and everything Ivy resolves with them into ~/.m2, so later sessions
    start offline.

    Maven and Ivy settle version conflicts differently: Maven may leave only a POM in ~/.m2 for
    a version Ivy then picks, and Ivy fails on it. So start Spark once, read which jars Ivy could
    not find, fetch exactly those with Maven, and repeat until a session starts.
    """
    _mvn_get(delta_maven_artifact())
    JARS_FILE.unlink(missing_ok=True)  # the probe must resolve through Ivy
    probe = [sys.executable, "-c",
             "from rdt_spark.session import spark_session; "
             "s = spark_session('local[1]', 'rdt-setup'); "
             "print('JARS', s.sparkContext.getConf().get('spark.jars')); s.stop()"]
    for _ in range(attempts):
        started = subprocess.run(probe, capture_output=True, text=True)
        if started.returncode == 0:
            jars = started.stdout.split("JARS ", 1)[1].split()[0].split(",")
            JARS_FILE.write_text("\n".join([delta_maven_artifact(), *jars]) + "\n")
            return
        missing = sorted(set(_IVY_MISSING.findall(started.stderr)))
        if not missing:
            sys.stderr.write(started.stderr[-4000:])
            raise RuntimeError("Spark with Delta failed to start, and not for a missing jar")
        for group, artifact, version in missing:
            _mvn_get(f"{group}:{artifact}:{version}", transitive=False)
    raise RuntimeError(f"Delta jars still unresolved after {attempts} attempts")


if __name__ == "__main__":
    # `python -m rdt_spark.session fetch-jars`: the set-up step behind `make demo` / `make test`.
    if sys.argv[1:] == ["delta-artifact"]:
        print(delta_maven_artifact())
    elif sys.argv[1:] == ["fetch-jars"]:
        fetch_delta_jars()
    else:
        sys.exit("usage: python -m rdt_spark.session delta-artifact|fetch-jars")
