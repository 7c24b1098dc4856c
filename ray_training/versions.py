"""Versioned folders with a CURRENT pointer: how models and indexes are published.

A version is built in ``<root>/<version>.tmp``, renamed into ``<root>/<version>`` whole, and only
then does ``<root>/CURRENT`` (a one-line file naming the version) switch to it, by an atomic
rename. A reader that follows CURRENT sees the old version or the new one, never a half-built
folder; a build killed part-way leaves only a ``.tmp`` folder that the next build replaces.

Re-publishing the version CURRENT already names (same inputs, same version) first moves the live
folder aside whole, to ``<version>.old``, and ``current()`` reads it there while the new one is
not yet in place, so a reader (or a kill between the two renames) never meets a missing or
half-deleted folder. The old copy stays until the next publish of that version, so a reader that
found it there can finish reading it.

Example: ``models = VersionedDir(run_dir / "models", "rdt train")``; ``models.staging("events-1")``
gives an empty ``models/events-1.tmp``; ``models.publish("events-1")`` moves it to ``models/events-1`` and
points CURRENT there; ``models.current()`` is then ``models/events-1``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CURRENT = "CURRENT"


class VersionedDir:
    def __init__(self, root: str | Path, built_by: str):
        self.root, self.built_by = Path(root), built_by

    def path(self, version: str) -> Path:
        return self.root / version

    def staging(self, version: str) -> Path:
        """An empty folder to build ``version`` in (a leftover of a killed build is removed)."""
        folder = self.root / f"{version}.tmp"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def publish(self, version: str) -> Path:
        """Move the staged ``version`` into place and point CURRENT at it; returns its folder."""
        target, aside = self.path(version), self.root / f"{version}.old"
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)  # the copy the last publish moved aside
            target.rename(aside)
        (self.root / f"{version}.tmp").rename(target)
        pointer = self.root / f"{CURRENT}.tmp"
        pointer.write_text(version)
        os.replace(pointer, self.root / CURRENT)
        return target

    def current(self) -> Path:
        """The folder CURRENT names; a missing one says which job builds it."""
        pointer = self.root / CURRENT
        if not pointer.exists():
            raise FileNotFoundError(f"nothing published under {self.root}: run `{self.built_by}` first")
        version = pointer.read_text().strip()
        folder, aside = self.path(version), self.root / f"{version}.old"
        # A re-publish of this same version is between its two renames: the live copy is aside.
        return aside if not folder.exists() and aside.exists() else folder
