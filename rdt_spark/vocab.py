"""The token vocabulary (gold.vocab), counted on the training split, with per-code value bins.

Tokens: ``[PAD]``=0, ``[UNK]``=1 (a rare or unseen code with no vocabulary prefix), then one
unknown token per vocabulary seen in training (``[UNK:LOINC]``, ``[UNK:RxNorm]``, ... by name; the
vocabulary is the text before a code's first ``/``), then every code seen at least ``min_count``
times in training subjects, by count descending then code. Any other code (rare in training, or
never seen there) becomes its vocabulary's unknown token, or ``[UNK]`` without one.

Numeric values: each kept code's training values give ``n_bins`` quantile bins, their inner edges
from ``percentile_approx`` grouped by code (a distributed aggregate), duplicates removed, stored
in ``value_edges``. A value's bin is the number of edges strictly below it (0 .. len(edges)) and
timelines store its position ``2 * bin / len(edges) - 1`` in [-1, 1] (see ``binned_value``).

The version is a content hash of every (token_id, code, value_edges): equal vocabularies share a
version, and a timeline records the one it was built with.

Example: with min_count 2 and training codes [LOINC/A x3, LOINC/B, RDT/C x2, MEDS_BIRTH] the
vocabulary is [PAD]=0, [UNK]=1, [UNK:LOINC]=2, [UNK:RDT]=3, LOINC/A=4, RDT/C=5; LOINC/B maps to
[UNK:LOINC] and MEDS_BIRTH to [UNK].
"""

from __future__ import annotations

import hashlib
import json

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

PAD, UNK = 0, 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]"]
VOCAB_SCHEMA = ("token_id int, code string, count long, value_mean double, value_std double, "
                "value_edges array<double>, vocab_version string")
PERCENTILE_ACCURACY = 10_000  # percentile_approx's default; relative error about 1e-4


def vocabulary_of(code: Column) -> Column:
    """The code's vocabulary: ``LOINC/1988-5`` -> ``LOINC``; null for ``MEDS_BIRTH``."""
    return F.when(F.instr(code, "/") > 0, F.substring_index(code, "/", 1))


def unknown_token(code: Column) -> Column:
    """The token a folded code becomes: ``LOINC/x`` -> ``[UNK:LOINC]``, ``MEDS_DEATH`` -> ``[UNK]``."""
    prefix = vocabulary_of(code)
    return F.when(prefix.isNotNull(), F.concat(F.lit("[UNK:"), prefix, F.lit("]"))).otherwise(
        F.lit(SPECIAL_TOKENS[UNK]))


def code_statistics(train_events: DataFrame, n_bins: int) -> DataFrame:
    """One row per code: event count, value mean/std and the distinct inner quantile edges.

    Rows (code, numeric_value) [(A, 1), (A, 2), (A, 3), (A, 4), (B, null)] with n_bins 2 give
    (A, 4, 2.5, 1.118, [2.0]) and (B, 1, null, null, null).
    """
    percentages = [i / n_bins for i in range(1, n_bins)]
    edges = F.percentile_approx(F.col("numeric_value").cast("double"), percentages,
                                PERCENTILE_ACCURACY)
    return train_events.groupBy("code").agg(
        F.count("*").alias("count"),
        F.mean("numeric_value").cast("double").alias("value_mean"),
        F.stddev_pop("numeric_value").cast("double").alias("value_std"),
        F.array_distinct(edges).alias("value_edges"),
    )


def vocab_entries(statistics: DataFrame, min_count: int) -> DataFrame:
    """Token rows without ids: kept codes, plus one unknown token per vocabulary.

    An unknown token's count is the number of training events folded into it; it has no values.
    Statistics [(LOINC/A, 3), (LOINC/B, 1), (X, 1)] with min_count 2 give (LOINC/A, 3, kept),
    ([UNK:LOINC], 1, unknown) and ([UNK], 1, unknown).
    """
    kept = F.col("count") >= min_count
    codes = statistics.where(kept).select(
        "code", "count", "value_mean", "value_std", "value_edges", F.lit(False).alias("unknown"))
    unknowns = (statistics.groupBy(unknown_token(F.col("code")).alias("code"))
                .agg(F.sum(F.when(~kept, F.col("count")).otherwise(0)).cast("long").alias("count"))
                .select("code", "count", F.lit(None).cast("double").alias("value_mean"),
                        F.lit(None).cast("double").alias("value_std"),
                        F.lit(None).cast("array<double>").alias("value_edges"),
                        F.lit(True).alias("unknown")))
    return unknowns.unionByName(codes)


def _version(rows: list[tuple[int, str, list[float] | None]]) -> str:
    text = "\n".join(json.dumps([i, code, edges]) for i, code, edges in rows)
    return f"vocab-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def build_vocab(train_events: DataFrame, min_count: int, n_bins: int = 10) -> DataFrame:
    """gold.vocab rows (token_id, code, count, value stats, value_edges, vocab_version).

    Counting and binning run distributed; only the aggregated vocabulary, one row per kept code
    and per vocabulary, comes to the driver to be numbered and hashed.
    """
    aggregated = vocab_entries(code_statistics(train_events, n_bins), min_count)
    entries = aggregated.collect()  # small: one row per kept code and per vocabulary
    unknown_total = sum(r["count"] for r in entries if r["code"] == SPECIAL_TOKENS[UNK])
    specials = [("[PAD]", 0, None, None, None), ("[UNK]", unknown_total, None, None, None)]
    per_vocabulary = sorted((r["code"], r["count"], None, None, None) for r in entries
                            if r["unknown"] and r["code"] != SPECIAL_TOKENS[UNK])
    codes = sorted(((r["code"], r["count"], r["value_mean"], r["value_std"], r["value_edges"])
                    for r in entries if not r["unknown"]), key=lambda r: (-r[1], r[0]))
    ordered = [(i, *row) for i, row in enumerate(specials + per_vocabulary + codes)]
    version = _version([(i, code, edges) for i, code, _, _, _, edges in ordered])
    return train_events.sparkSession.createDataFrame(
        [(*row, version) for row in ordered], VOCAB_SCHEMA)


def vocab_version(vocab: DataFrame) -> str:
    """The version gold.vocab rows carry (all rows carry the same one)."""
    return vocab.select("vocab_version").first()[0]  # small: one row


def binned_value(value: Column, edges: Column) -> Column:
    """A value's quantile-bin position in [-1, 1]: ``2 * (edges below it) / len(edges) - 1``.

    With edges [1.0, 2.0, 4.0]: 0.5 -> -1.0, 1.5 -> -1/3, 3.0 -> 1/3, 9.0 -> 1.0; a null value
    or a code without edges gives null.
    """
    below = F.size(F.filter(edges, lambda e: e < value))
    n = F.size(edges)
    return F.when(value.isNotNull() & edges.isNotNull() & (n > 0),
                  (2.0 * below / n - 1.0)).cast("float")
