"""The token vocabulary, counted on the training split.

Codes seen at least ``min_count`` times in training subjects get their own token, ordered by
count then code; everything else maps to [UNK]. Numeric codes also carry the mean and standard
deviation used to normalise their values. Example: with min_count 2 and training codes
[A, A, B, A, C, C] the vocabulary is [PAD]=0, [UNK]=1, A=2, C=3 and B folds into [UNK].
"""

from __future__ import annotations

import hashlib

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PAD, UNK = 0, 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]"]


def code_counts(events: DataFrame) -> DataFrame:
    return events.groupBy("code").agg(
        F.count("*").alias("count"),
        F.mean("numeric_value").cast("double").alias("value_mean"),
        F.stddev_pop("numeric_value").cast("double").alias("value_std"),
    )


def build_vocab(train_events: DataFrame, min_count: int) -> DataFrame:
    """gold.vocab rows (without the version) from the training split's events."""
    spark = train_events.sparkSession
    kept = code_counts(train_events).where(F.col("count") >= min_count)
    ranked = kept.withColumn(
        "token_id",
        (F.row_number().over(Window.orderBy(F.desc("count"), "code")) + len(SPECIAL_TOKENS) - 1)
        .cast("int"),
    )
    special = spark.createDataFrame(
        [(i, code) for i, code in enumerate(SPECIAL_TOKENS)], "token_id int, code string"
    ).select("token_id", "code", F.lit(0).cast("long").alias("count"),
             F.lit(None).cast("double").alias("value_mean"),
             F.lit(None).cast("double").alias("value_std"))
    return special.unionByName(ranked.select("token_id", "code", "count", "value_mean",
                                             "value_std"))


def vocab_version(vocab: DataFrame) -> str:
    """A content hash of (token_id, code): equal vocabularies share a version."""
    rows = vocab.select("token_id", "code").orderBy("token_id").collect()  # small: one per code
    digest = hashlib.sha1("\n".join(f"{r[0]}\t{r[1]}" for r in rows).encode()).hexdigest()
    return f"vocab-{digest[:12]}"
