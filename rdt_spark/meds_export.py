"""silver.events as a MEDS dataset (the ``meds`` package's 0.4 schemas), for ACES, MEDS-Tab & co.

Layout under the output folder::

    data/<split>/<shard>.parquet     subject_id int64, time timestamp[us] (no zone, UTC wall
                                     time; null for static facts), code string, numeric_value
                                     float32, text_value large_string
    metadata/codes.parquet           code, description, parent_codes: every code in data/
    metadata/subject_splits.parquet  subject_id, split
    metadata/dataset.json            dataset_name, dataset_version, etl_name, etl_version,
                                     meds_version, created_at

Subject ids are keyed pseudonyms (``rdt_spark.pseudonyms``; the ``privacy.meds_subject_ids``
setting) or the source ids; ``dataset.json`` records which under ``rdt_subject_ids`` (the kind,
and for pseudonyms the scheme and the key's fingerprint), and the export refuses to write two
subjects under one pseudonym. Splits are the timelines' (a stable hash of the source subject_id)
under MEDS names: train -> train,
val -> tuning, test -> held_out. A subject's shard is another hash of its id, so each subject
lies in exactly one file; within a file rows are sorted by subject, then static facts first,
then time, code, source table and source row id (the timelines' order).

The executors write the shards themselves (``mapInArrow`` with pyarrow, one file per shard
streamed batch by batch) in the exact ``meds.DataSchema`` types: Spark's Parquet writer would
store text_value as string where MEDS wants large_string, and leave _SUCCESS and .crc files.
Everything is written to a temporary sibling folder and renamed into place, so a re-run
replaces the export and a killed one leaves the previous export whole.

Example: events (7, 2020-01-02 09:00, LOINC/1988-5, 12.0) and (7, null, Gender/F) of a train
subject become, in data/train/<shard>.parquet, the rows (7, null, Gender/F) then
(7, 2020-01-02 09:00, LOINC/1988-5, 12.0).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import meds
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rdt_spark.pseudonyms import SCHEME, PseudonymKey, pseudonym_column
from rdt_spark.splits import split_of

MEDS_SPLITS = {"train": meds.train_split, "val": meds.tuning_split, "test": meds.held_out_split}
SHARD_SALT = "rdt-meds-shard-v1"
_SPLITS_PARTS = "_subject_splits_parts"
WRITTEN = "split string, shard int, path string, rows long, subjects long"
WRITTEN_ARROW = pa.schema([("split", pa.string()), ("shard", pa.int32()), ("path", pa.string()),
                           ("rows", pa.int64()), ("subjects", pa.int64())])


def meds_rows(events: DataFrame, fractions: dict[str, float], shards: dict[str, int],
              exported_id: Column | None = None) -> DataFrame:
    """Events as MEDS rows with their MEDS split, shard and sort keys, partitioned by shard.

    ``shards`` is the number of shards per MEDS split; ``exported_id`` is what the rows' subject_id
    becomes (default the source subject_id; split and shard always come from the source id).
    A row (7, 2020-01-02 09:00 UTC, LOINC/1988-5, 12.0) of a train subject with {train: 1}
    becomes (train, 0, 7, 1577955600000000, LOINC/1988-5, 12.0, null); rows arrive sorted
    within each partition.
    """
    split = split_of(F.col("subject_id"), fractions)
    meds_split = F.coalesce(*[F.when(split == ours, F.lit(theirs))
                              for ours, theirs in MEDS_SPLITS.items()])
    n_shards = F.coalesce(*[F.when(meds_split == s, F.lit(n)) for s, n in shards.items()])
    rows = events.select(
        meds_split.alias("split"),
        F.pmod(F.xxhash64(F.lit(SHARD_SALT), "subject_id"), n_shards).cast("int").alias("shard"),
        (F.col("subject_id") if exported_id is None else exported_id).cast("long")
        .alias("subject_id"),
        F.unix_micros("time").alias("time_us"),  # the instant, written as UTC wall time
        F.col("code"), F.col("numeric_value").cast("float").alias("numeric_value"),
        F.col("text_value"), F.col("source_table"), F.col("source_row_id"))
    return (rows.repartition(max(1, sum(shards.values())), "split", "shard")
            .sortWithinPartitions("split", "shard", "subject_id", F.asc_nulls_first("time_us"),
                                  "code", "source_table", "source_row_id"))


def _shard_writer(root: str):
    """A mapInArrow function writing each (split, shard) run of sorted rows to its own file."""
    schema = meds.DataSchema.schema()
    splits_schema = meds.SubjectSplitSchema.schema()

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current, writer, rows, subjects = None, None, 0, []

        def close():
            path = Path(root) / "data" / current[0] / f"{current[1]}.parquet"
            writer.close()
            os.replace(f"{path}.inprogress", path)  # a retried task never leaves half a file
            ids = np.unique(np.concatenate(subjects))
            part = Path(root) / _SPLITS_PARTS / f"{current[0]}-{current[1]}.parquet"
            pq.write_table(pa.table({"subject_id": pa.array(ids, pa.int64()),
                                     "split": pa.array([current[0]] * len(ids), pa.string())},
                                    schema=splits_schema), part)
            return pa.RecordBatch.from_pydict(
                {"split": [current[0]], "shard": [current[1]], "path": [str(path)],
                 "rows": [rows], "subjects": [len(ids)]}, schema=WRITTEN_ARROW)

        for batch in batches:
            split = batch.column("split").to_numpy(zero_copy_only=False)
            shard = batch.column("shard").to_numpy(zero_copy_only=False)
            changes = np.flatnonzero((split[1:] != split[:-1]) | (shard[1:] != shard[:-1])) + 1
            for start, stop in zip(np.r_[0, changes], np.r_[changes, len(split)], strict=True):
                key = (str(split[start]), int(shard[start]))
                if key != current:
                    if writer is not None:
                        yield close()
                    current, rows, subjects = key, 0, []
                    path = Path(root) / "data" / key[0] / f"{key[1]}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(f"{path}.inprogress", schema)
                part = batch.slice(start, stop - start)
                table = pa.table({
                    "subject_id": part.column("subject_id"),
                    "time": part.column("time_us").cast(pa.timestamp("us")),
                    "code": part.column("code"),
                    "numeric_value": part.column("numeric_value"),
                    "text_value": part.column("text_value").cast(pa.large_string()),
                }, schema=schema)
                writer.write_table(table)
                rows += table.num_rows
                subjects.append(part.column("subject_id").to_numpy(zero_copy_only=False))
        if writer is not None:
            yield close()

    return write


def write_shards(rows: DataFrame, root: str) -> DataFrame:
    """(split, shard, path, rows, subjects): one row per shard file the executors wrote."""
    return rows.mapInArrow(_shard_writer(root), WRITTEN)


def code_metadata(events: DataFrame, descriptions: DataFrame | None) -> DataFrame:
    """(code, description, parent_codes): one row per code in the events.

    With descriptions [(LOINC/1988-5, C reactive protein)], events of LOINC/1988-5 and RDT/FLARE
    give (LOINC/1988-5, C reactive protein, null) and (RDT/FLARE, null, null).
    """
    codes = events.select("code").distinct()
    if descriptions is not None:
        codes = codes.join(F.broadcast(descriptions.dropDuplicates(["code"])), "code", "left")
    else:
        codes = codes.withColumn("description", F.lit(None).cast("string"))
    return codes.select("code", F.col("description").cast("string"),
                        F.lit(None).cast("array<string>").alias("parent_codes"))


def _merge_subject_splits(root: Path) -> int:
    """Streams the per-shard (subject_id, split) parts into metadata/subject_splits.parquet.

    The driver reads and writes one shard's subjects at a time: its memory does not grow with
    the population, and no Spark stage funnels every subject through one task.
    """
    parts = sorted((root / _SPLITS_PARTS).glob("*.parquet"))
    total = 0
    with pq.ParquetWriter(root / meds.subject_splits_filepath,
                          meds.SubjectSplitSchema.schema()) as writer:
        for part in parts:
            table = pq.read_table(part, schema=meds.SubjectSplitSchema.schema())
            writer.write_table(table)
            total += table.num_rows
    shutil.rmtree(root / _SPLITS_PARTS)
    return total


class PseudonymCollision(RuntimeError):
    """Two subjects would share one pseudonym (about once in 10^5 exports of 10 million)."""


def subject_id_metadata(key: PseudonymKey | None) -> dict[str, str]:
    """What dataset.json says about the subject ids: source ids or pseudonyms, and how made."""
    if key is None:
        return {"kind": "source", "note": "silver.events subject_id: the OMOP person_id"}
    return {"kind": "pseudonym", "scheme": SCHEME, "key_id": key.key_id}


def export_meds(
    events: DataFrame, out: str, fractions: dict[str, float], subjects_per_shard: int,
    dataset: dict[str, str], descriptions: DataFrame | None = None,
    key: PseudonymKey | None = None,
) -> dict:
    """Write silver.events as a MEDS dataset at ``out``, replacing any previous export.

    ``dataset`` gives dataset_name, dataset_version, etl_name and etl_version for dataset.json.
    With a ``key`` subject ids are written as its pseudonyms, without one as the source ids.
    Returns counts: shards, rows and subjects per split, codes.
    """
    final = Path(out)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    (tmp / "metadata").mkdir(parents=True)
    (tmp / _SPLITS_PARTS).mkdir()
    exported = None if key is None else pseudonym_column(F.col("subject_id"), key)
    split = split_of(F.col("subject_id"), fractions)
    pairs = events.select("subject_id", (exported if exported is not None
                                         else F.col("subject_id")).alias("_exported")).distinct()
    per_split = pairs.groupBy(split.alias("split")).count()
    subjects = {MEDS_SPLITS[r["split"]]: r["count"]
                for r in per_split.collect()}  # small: three rows
    if key is not None:
        distinct = pairs.agg(F.countDistinct("_exported")).first()[0]  # small: one row
        if distinct != sum(subjects.values()):
            shutil.rmtree(tmp)
            raise PseudonymCollision(f"{sum(subjects.values()) - distinct} pseudonym collision(s) "
                                     "under this key: export again with another key")
    shards = {s: -(-n // subjects_per_shard) for s, n in subjects.items()}
    written = write_shards(meds_rows(events, fractions, shards, exported), str(tmp))
    files = written.collect()  # small: one row per shard file
    codes = code_metadata(events, descriptions)
    code_rows = sorted(codes.collect(), key=lambda r: r["code"])  # small: one row per code
    pq.write_table(pa.table({
        "code": [r["code"] for r in code_rows],
        "description": [r["description"] for r in code_rows],
        "parent_codes": [r["parent_codes"] for r in code_rows],
    }, schema=meds.CodeMetadataSchema.schema()), tmp / meds.code_metadata_filepath)
    n_subjects = _merge_subject_splits(tmp)
    metadata = {**dataset, "rdt_subject_ids": subject_id_metadata(key),
                "meds_version": meds.__version__,
                "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()}
    (tmp / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2) + "\n")
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    by_split: dict[str, dict[str, int]] = {}
    for f in files:
        s = by_split.setdefault(f["split"], {"shards": 0, "rows": 0, "subjects": 0})
        s["shards"] += 1
        s["rows"] += f["rows"]
        s["subjects"] += f["subjects"]
    return {"out": str(final), "splits": by_split, "subjects": n_subjects,
            "codes": len(code_rows)}
