"""Train/val/test by a stable hash of subject_id, never by row order."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

SPLIT_SALT = "rdt-split-v1"
BUCKETS = 10_000


def split_of(subject_id: Column, fractions: dict[str, float]) -> Column:
    """'train', 'val' or 'test' for each subject, the same on every run and partitioning."""
    bucket = F.pmod(F.xxhash64(F.lit(SPLIT_SALT), subject_id), F.lit(BUCKETS))
    train_end = int(round(fractions["train"] * BUCKETS))
    val_end = train_end + int(round(fractions["val"] * BUCKETS))
    return (F.when(bucket < train_end, "train").when(bucket < val_end, "val")
            .otherwise("test"))
