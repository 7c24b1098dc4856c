"""Column and frame helpers every Spark stage shares: time arithmetic and unions.

Examples: ``seconds(2020-01-01 00:00:01 UTC) == 1577836801.0``; ``plus_days(2020-01-01, 30)`` is
2020-01-31; ``end_of_day(2020-01-01 09:30)`` is 2020-01-02 00:00 (everything recorded that day lies
strictly before it); ``union_all([a, b, c])`` is ``a ∪ b ∪ c`` matched by column name.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F


def seconds(t: Column) -> Column:
    """Seconds since the epoch, with the microseconds as the fraction."""
    return F.unix_micros(t) / 1e6


def plus_days(t: Column, days: int | Column) -> Column:
    """``t`` moved by a whole number of days (negative: earlier)."""
    return t + F.make_interval(days=days if isinstance(days, Column) else F.lit(days))


def end_of_day(t: Column) -> Column:
    """The next midnight after ``t``'s day began: the prediction time of a visit on that day."""
    return F.date_trunc("day", t) + F.expr("INTERVAL 1 DAY")


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    """The frames stacked by column name (one plan, no shuffle)."""
    if not frames:
        raise ValueError("union_all needs at least one frame")
    return reduce(DataFrame.unionByName, frames)
