"""Nothing that names or describes a patient reaches a log: the whole flow, a twin query and a
MEDS export run at the most verbose logging (``conftest.flow_run``), and every line they wrote
(the terminal, the job logs, Ray's session logs) is scanned for note text, source identifiers
and dates of birth."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from rdt_spark.lake import read_table

WINDOW = 24  # characters of a note sentence that may not appear anywhere
# An identifier as logs give one away: "subject 12", "person_id=12", "subject_id: 12", a Row, a
# pushed-down filter "EqualTo(subject_id,12)". (Not "person: 60 in", a count of a table's rows.)
LABELLED_ID = re.compile(
    r"(?i)\b(?:person_id|subject_id|subject|patient)['\"]?\s*[:=,(]?\s*(\d+)\b")
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
COMPACT_DATE = re.compile(r"\b\d{8}\b")


def lines(output) -> Iterator[tuple[str, str]]:
    """(where, line) for every line of text the flow's process and its helpers wrote."""
    files = [output.console, *sorted((output.run_dir / "logs").glob("*.log"))]
    files += [p for p in sorted(output.ray_tmp.rglob("*")) if p.is_file() and "logs" in p.parts
              and p.suffix in (".log", ".out", ".err", ".txt", "")]
    for path in files:
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            yield f"{path.name}:{number}", line


@pytest.fixture(scope="module")
def secrets(flow_run, spark):
    """What must not be logged, read from the flow's own source tables."""
    cfg, _, _ = flow_run
    notes = read_table(spark, cfg.lake, "omop.note").select("note_text")
    starts = set()
    for row in notes.collect():  # small: a few thousand notes of the test registry
        for sentence in re.split(r"(?<=[.;!?])\s+", row.note_text or ""):
            if len(sentence) >= WINDOW:
                starts.add(sentence[:WINDOW])
    persons = read_table(spark, cfg.lake, "omop.person").select(
        "person_id", F.to_date("birth_datetime").alias("birth"))
    ids, births = set(), set()
    for row in persons.collect():  # small: the test registry's persons
        ids.add(str(row.person_id))
        births.add(row.birth.isoformat())
        births.add(row.birth.strftime("%Y%m%d"))
    return starts, ids, births


def test_no_log_or_console_line_holds_note_text_identifiers_or_dates_of_birth(flow_run, secrets):
    _, _, output = flow_run
    starts, ids, births = secrets
    assert len(starts) > 100 and len(births) > 100
    leaks, scanned = [], 0
    for where, line in lines(output):
        scanned += 1
        if any(line[i:i + WINDOW] in starts for i in range(len(line) - WINDOW + 1)):
            leaks.append(f"{where}: note text: {line[:200]}")
        if [m for m in LABELLED_ID.findall(line) if m in ids]:
            leaks.append(f"{where}: identifier: {line[:200]}")
        if {d for d in ISO_DATE.findall(line) + COMPACT_DATE.findall(line) if d in births}:
            leaks.append(f"{where}: date of birth: {line[:200]}")
    assert scanned > 1000  # the verbose run did speak
    assert not leaks, f"{len(leaks)} leaks, the first: " + "\n".join(leaks[:10])


def test_the_verbose_run_logged_library_output_and_the_user_outputs_name_no_source_id(flow_run):
    _, results, output = flow_run
    console = output.console.read_text(errors="replace")
    assert " INFO " in console and "DAGScheduler" in console  # Spark's own story, at INFO
    assert "Twin report: patient" in console
    report = results["query"]
    assert "subject_id" not in report and report["neighbours"] is None
    assert results["export-meds"]["subjects"] > 0
    assert Path(output.run_dir, "logs").is_dir()
