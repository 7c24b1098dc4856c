"""Keyed pseudonyms: how everything a user takes away names a patient.

``pseudonym(subject_id, key)`` is HMAC-SHA256 of the decimal subject id under a secret key, its
first 60 bits read as a positive int64 (MEDS wants integer subject ids). The same key gives the
same pseudonym on every run and in every output (a query, a cohort, an export can be joined);
another key gives others. A plain hash of a person_id would not do: anyone could hash every
possible id and read the source ids back; without the key nobody can.

The key (``PseudonymKey.load``): ``RDT_PSEUDONYM_KEY`` in the environment, else the file named by
``privacy.key_file``, else ``<run_dir>/secrets/pseudonym.key``, which the first run that needs it
creates with 32 random bytes, readable by its owner only. Keep that file: a new key gives new
pseudonyms. A key shorter than 16 bytes is refused.

``pseudonym_column`` computes the same pseudonym in Spark from built-in functions (``sha2`` on
the HMAC's padded key blocks), so a population-sized export needs no Python UDF. This module
imports pyspark only inside that function: the query job and ``ray_training`` use the rest
without Spark.

Example: with the key ``b"0123456789abcdef"``, ``pseudonym(1, key) == 501337039696531983`` and
``pseudonym(2, key) == 895215276970305914``; Spark's ``pseudonym_column(F.lit(1), key)`` gives
the same first number.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from rdt_spark.settings import ConfigError

KEY_ENV = "RDT_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
HEX_DIGITS = 15  # 60 bits: a positive int64 for any digest
SCHEME = "HMAC-SHA256 of the decimal id, first 60 bits"
_BLOCK = 64  # SHA-256's block size, which HMAC pads the key to
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivacyConfig:
    """The ``privacy`` section: the pseudonym key, and what leaves the system about individuals."""

    key_file: str | None = None  # $RDT_PSEUDONYM_KEY wins; default <run_dir>/secrets/pseudonym.key
    neighbour_rows: bool = False  # twin reports list (pseudonymised) neighbours only when true
    meds_subject_ids: str = "pseudonym"  # rdt export-meds writes "pseudonym" or "source" ids

    def key(self, run_dir: str) -> PseudonymKey:
        return PseudonymKey.load(self.key_file, run_dir)


SUBJECT_ID_KINDS = ("pseudonym", "source")


def default_key_file(run_dir: str) -> Path:
    return Path(run_dir) / "secrets" / "pseudonym.key"


@dataclass(frozen=True)
class PseudonymKey:
    secret: bytes
    source: str  # where it came from, for messages (never the key itself)

    @property
    def key_id(self) -> str:
        """A short fingerprint that says whether two outputs share a key, without revealing it."""
        return hashlib.sha256(b"rdt-pseudonym-key-id:" + self.secret).hexdigest()[:12]

    def __repr__(self) -> str:  # a key must not end up in a log by way of a repr
        return f"PseudonymKey(source={self.source!r}, key_id={self.key_id!r})"

    @classmethod
    def load(cls, key_file: str | None, run_dir: str) -> PseudonymKey:
        """The key from the environment, ``key_file``, or the run dir's default secrets file
        (created on first use); a missing named file or a short key is a ConfigError."""
        if os.environ.get(KEY_ENV):
            return cls._checked(os.environ[KEY_ENV].strip().encode(), f"${KEY_ENV}")
        path = Path(key_file).expanduser() if key_file else default_key_file(run_dir)
        if not path.exists():
            if key_file:
                raise ConfigError(f"'privacy.key_file' names no file: {path} (set ${KEY_ENV} or "
                                  "write a secret of at least 16 bytes there)")
            if "://" in run_dir:
                raise ConfigError(f"no pseudonym key: set ${KEY_ENV} or 'privacy.key_file' "
                                  f"(run_dir {run_dir} is not a local folder to keep one in)")
            _create(path)
            log.info(f"created a pseudonym key in {path}: keep it, another key gives other "
                     "pseudonyms")
        return cls._checked(path.read_bytes().strip(), str(path))

    @classmethod
    def _checked(cls, secret: bytes, source: str) -> PseudonymKey:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(f"{source}: a pseudonym key needs at least {MIN_KEY_BYTES} bytes, "
                              f"got {len(secret)}")
        return cls(secret, source)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # never replaces a key another run created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def pseudonym(subject_id: int, key: PseudonymKey) -> int:
    digest = hmac.new(key.secret, str(int(subject_id)).encode(), hashlib.sha256).hexdigest()
    return int(digest[:HEX_DIGITS], 16)


def _padded_blocks(secret: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer key blocks (RFC 2104)."""
    if len(secret) > _BLOCK:
        secret = hashlib.sha256(secret).digest()
    secret = secret.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in secret), bytes(b ^ 0x5C for b in secret)


def pseudonym_column(subject_id, key: PseudonymKey):
    """``pseudonym`` as a Spark column expression over an integer ``subject_id`` column."""
    from pyspark.sql import functions as F

    inner_pad, outer_pad = _padded_blocks(key.secret)
    message = subject_id.cast("long").cast("string").cast("binary")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    digest = F.sha2(F.concat(F.lit(outer_pad), inner), 256)
    return F.conv(F.substring(digest, 1, HEX_DIGITS), 16, 10).cast("long")
