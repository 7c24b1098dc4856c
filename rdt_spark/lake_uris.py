"""Where the lake is, spelt for each engine that opens it: Spark (Hadoop filesystems) and delta-rs
(``deltalake``, which Ray Data's ``read_delta`` and the index use).

The config's ``lake`` may be a local path, a ``file://`` URI or an object-store URI. The two
engines agree on local paths but spell S3 differently: Hadoop's connector is ``s3a://``, delta-rs
knows only ``s3://``. So the lake is kept in Spark's spelling (``lake_root``) and every delta-rs
open goes through ``delta_rs_uri``: one mapping, here.

    lake_root("file:///data/my%20lake") == "/data/my lake"
    lake_root("s3://bucket/lake") == "s3a://bucket/lake"
    delta_rs_uri("s3a://bucket/lake/silver/events") == "s3://bucket/lake/silver/events"
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

# Hadoop's S3 connectors (s3a is the maintained one) and what delta-rs calls the same store.
_SPARK_TO_DELTA_RS = {"s3a": "s3", "s3n": "s3"}
_DELTA_RS_TO_SPARK = {"s3": "s3a"}


def lake_root(location: str) -> str:
    """The lake root in the one spelling the project keeps: a local absolute path for local
    storage (a ``file://`` URI is decoded, so a space may be spelt ``%20`` or as is), otherwise
    the URI with Spark's scheme for the store."""
    parts = urlsplit(location)
    if len(parts.scheme) <= 1:  # a path (a one-letter scheme is a Windows drive)
        return str(Path(location).expanduser().resolve())
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"lake {location!r}: a file:// URI must name a local path "
                             "(file:///path), not a host")
        return str(Path(unquote(parts.path)).resolve())
    scheme = _DELTA_RS_TO_SPARK.get(parts.scheme, parts.scheme)
    return scheme + location[len(parts.scheme):].rstrip("/")


def delta_rs_uri(path: str) -> str:
    """A table path under the lake as delta-rs opens it (``s3a://`` becomes ``s3://``)."""
    scheme, sep, rest = path.partition("://")
    if sep and scheme in _SPARK_TO_DELTA_RS:
        return f"{_SPARK_TO_DELTA_RS[scheme]}://{rest}"
    return path


def open_delta(path: str, version: int | None = None):
    """A ``deltalake.DeltaTable`` of the table at ``path`` (Spark's spelling), optionally at a
    version: the one way the Ray side opens a Delta table."""
    from deltalake import DeltaTable

    return DeltaTable(delta_rs_uri(path), version=version)
