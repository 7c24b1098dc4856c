"""rdt export-meds: every file read back with pyarrow and validated by the meds package."""

import datetime as dt
import json
from pathlib import Path

import meds
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.cli import main
from rdt_spark.lake import write_table
from rdt_spark.meds_export import MEDS_SPLITS, export_meds
from rdt_spark.pseudonyms import SCHEME, PrivacyConfig, PseudonymKey, pseudonym
from rdt_spark.splits import split_of

T = dt.datetime
CONF = Path(__file__).resolve().parents[1] / "conf"
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SCHEMA = ("subject_id long, time timestamp, code string, numeric_value float, "
          "text_value string, visit_id long, source_table string, source_row_id long")
DATASET = {"dataset_name": "test", "dataset_version": "1", "etl_name": "rdt", "etl_version": "0"}


def registry(spark, subjects=range(1, 31)):
    rows = []
    for s in subjects:
        rows += [(s, None, "Gender/F" if s % 2 else "Gender/M", None, None, None, "person", s),
                 (s, T(1960, 1, 1), "MEDS_BIRTH", None, None, None, "person", s)]
        for v in range(3):  # inserted newest first: the export must sort
            day = T(2020, 3 - v, 1, 9)
            rows += [(s, day, "Visit/OP", None, None, v, "visit_occurrence", 100 * s + v),
                     (s, day, "LOINC/1988-5", float(s + v), None, v, "measurement", 200 * s + v),
                     (s, day, "SNOMED/444", None, f"note {s}/{v}", v, "note", 300 * s + v)]
    return spark.createDataFrame(rows, SCHEMA).repartition(3)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def exported(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("meds") / "meds"
    events = registry(spark)
    descriptions = spark.createDataFrame([("LOINC/1988-5", "C reactive protein")],
                                         "code string, description string")
    summary = export_meds(events, str(out), FRACTIONS, 4, DATASET, descriptions)
    return out, events, summary


def test_data_shards_match_the_meds_data_schema_and_leave_nothing_else(exported):
    out, _, summary = exported
    shards = sorted((out / "data").rglob("*.parquet"))
    assert len(shards) > 3 and summary["subjects"] == 30
    for path in shards:
        table = pq.read_table(path)
        meds.DataSchema.validate(table)
        assert table.schema.equals(meds.DataSchema.schema())
        assert table.schema.field("time").type.tz is None
    assert {Path(f).parts[0] for f in files_under(out)} == {"data", "metadata"}
    assert not [f for f in files_under(out) if not f.endswith((".parquet", ".json"))]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder


def test_each_subject_lies_in_one_shard_of_its_split_sorted_statics_first(exported, spark):
    out, events, _ = exported
    where: dict[int, str] = {}
    for path in sorted((out / "data").rglob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        keys = [(r["subject_id"], r["time"] is not None, r["time"] or T.min) for r in rows]
        assert keys == sorted(keys)
        for r in rows:
            assert where.setdefault(r["subject_id"], str(path)) == str(path)
        assert path.parent.name in MEDS_SPLITS.values()
    splits = {r.subject_id: MEDS_SPLITS[r.s] for r in events.select(
        "subject_id", split_of(F.col("subject_id"), FRACTIONS).alias("s")).distinct().collect()}
    assert {s: Path(p).parent.name for s, p in where.items()} == splits


def test_the_export_holds_every_event_with_utc_wall_times(exported, spark):
    out, events, summary = exported
    back = spark.read.parquet(*[str(p) for p in (out / "data").rglob("*.parquet")])
    assert back.count() == events.count() == sum(s["rows"] for s in summary["splits"].values())
    ours = events.select("subject_id", F.date_format("time", "yyyy-MM-dd HH:mm:ss").alias("t"),
                         "code", "numeric_value", "text_value")
    theirs = back.select("subject_id", F.date_format("time", "yyyy-MM-dd HH:mm:ss").alias("t"),
                         "code", "numeric_value", "text_value")
    assert ours.exceptAll(theirs).count() == 0 and theirs.exceptAll(ours).count() == 0


def test_metadata_files_match_the_meds_schemas(exported):
    out, _, _ = exported
    codes = pq.read_table(out / meds.code_metadata_filepath)
    meds.CodeMetadataSchema.validate(codes)
    described = dict(zip(codes["code"].to_pylist(), codes["description"].to_pylist(), strict=True))
    assert described["LOINC/1988-5"] == "C reactive protein" and described["Visit/OP"] is None
    assert set(described) == {"Gender/F", "Gender/M", "MEDS_BIRTH", "Visit/OP", "LOINC/1988-5",
                              "SNOMED/444"}
    splits = pq.read_table(out / meds.subject_splits_filepath)
    meds.SubjectSplitSchema.validate(splits)
    assert sorted(splits["subject_id"].to_pylist()) == list(range(1, 31))
    assert set(splits["split"].to_pylist()) <= {"train", "tuning", "held_out"}
    dataset = json.loads((out / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(dataset)
    assert dataset["meds_version"] == meds.__version__ and dataset["dataset_name"] == "test"


def test_metadata_says_the_subject_ids_are_the_source_ids_when_no_key_is_given(exported):
    out, _, _ = exported
    dataset = json.loads((out / meds.dataset_metadata_filepath).read_text())
    assert dataset["rdt_subject_ids"]["kind"] == "source"


def test_a_keyed_export_names_subjects_by_pseudonym_in_every_file(spark, tmp_path):
    key = PseudonymKey(b"0123456789abcdef", "test")
    events = registry(spark)
    export_meds(events, str(tmp_path / "meds"), FRACTIONS, 4, DATASET, key=key)
    out = tmp_path / "meds"
    source_split = {r.subject_id: MEDS_SPLITS[r.s] for r in events.select(
        "subject_id", split_of(F.col("subject_id"), FRACTIONS).alias("s")).distinct().collect()}
    expected = {pseudonym(s, key): split for s, split in source_split.items()}
    for path in sorted((out / "data").rglob("*.parquet")):
        table = pq.read_table(path)
        meds.DataSchema.validate(table)
        ids = table["subject_id"].to_pylist()
        assert ids == sorted(ids)  # sorted by the id as written
        assert {expected[i] for i in ids} == {path.parent.name}  # splits of the source ids
    splits = pq.read_table(out / meds.subject_splits_filepath).to_pylist()
    assert {r["subject_id"]: r["split"] for r in splits} == expected
    dataset = json.loads((out / meds.dataset_metadata_filepath).read_text())
    meds.DatasetMetadataSchema.validate(dataset)
    assert dataset["rdt_subject_ids"] == {"kind": "pseudonym", "scheme": SCHEME,
                                          "key_id": key.key_id}


def test_export_meds_cli_replaces_a_previous_export_under_pseudonyms_by_default(spark, tmp_path):
    lake, out = tmp_path / "lake", tmp_path / "out"
    write_table(registry(spark, range(1, 13)).withColumn("ingest_run_id", F.lit("r")), str(lake),
                "silver.events")
    assert main(["export-meds", "--lake", str(lake), "--out", str(out)]) == 0
    (out / "data" / "stale.parquet").write_text("left from before")
    write_table(registry(spark, range(1, 6)).withColumn("ingest_run_id", F.lit("r")), str(lake),
                "silver.events")
    assert main(["export-meds", "--lake", str(lake), "--out", str(out)]) == 0
    assert not (out / "data" / "stale.parquet").exists()
    key = PrivacyConfig().key(str(lake / "_runs"))  # the lake's own, made by the first export
    splits = pq.read_table(out / meds.subject_splits_filepath)
    assert sorted(splits["subject_id"].to_pylist()) == sorted(pseudonym(s, key) for s in range(1, 6))
    dataset = json.loads((out / meds.dataset_metadata_filepath).read_text())
    assert dataset["dataset_version"] == "silver.events v1"
    assert dataset["rdt_subject_ids"]["key_id"] == key.key_id


def test_the_setting_exports_source_ids_and_says_so(spark, tmp_path):
    lake, out, conf = tmp_path / "lake", tmp_path / "out", tmp_path / "source-ids.yaml"
    conf.write_text(f"lake: {lake}\ntokenize:\n  tasks_file: {CONF / 'tasks.yaml'}\n"
                    "privacy:\n  meds_subject_ids: source\n")
    write_table(registry(spark, range(1, 6)).withColumn("ingest_run_id", F.lit("r")), str(lake),
                "silver.events")
    assert main(["export-meds", "--config", str(conf), "--out", str(out)]) == 0
    splits = pq.read_table(out / meds.subject_splits_filepath)
    assert sorted(splits["subject_id"].to_pylist()) == [1, 2, 3, 4, 5]
    dataset = json.loads((out / meds.dataset_metadata_filepath).read_text())
    assert dataset["rdt_subject_ids"]["kind"] == "source"
