"""Publishing a model or index version: a reader that follows CURRENT never meets a missing or
half-built folder, even while the version it reads is being re-published, nor after a publish
killed between any two of its steps."""

import os
import shutil
from pathlib import Path

import pytest

from ray_training import versions as versions_module
from ray_training.versions import VersionedDir


def build(versions: VersionedDir, version: str, content: str) -> None:
    staged = versions.staging(version)
    for i in range(5):
        (staged / f"part-{i}").write_text(content)


def readable(versions: VersionedDir) -> str:
    """What a reader following CURRENT finds: one content, in a complete folder."""
    folder = versions.current()
    contents = {(folder / f"part-{i}").read_text() for i in range(5)}
    assert len(contents) == 1, contents
    return contents.pop()


@pytest.mark.parametrize("next_version", ["v1", "v2"])
def test_at_every_step_of_a_publish_readers_find_a_whole_version(tmp_path, monkeypatch,
                                                                 next_version):
    versions = VersionedDir(tmp_path, "rdt test")
    build(versions, "v1", "old")
    versions.publish("v1")
    seen = []

    def checked(step):
        def run(*args, **kwargs):
            seen.append(readable(versions))  # as if the publish were killed before this step
            step(*args, **kwargs)
            seen.append(readable(versions))
        return run

    monkeypatch.setattr(Path, "rename", checked(Path.rename))
    monkeypatch.setattr(versions_module.os, "replace", checked(os.replace))
    monkeypatch.setattr(versions_module.shutil, "rmtree", checked(shutil.rmtree))
    for content in ("new", "newer"):  # the second also finds the first's copy moved aside
        build(versions, next_version, content)
        versions.publish(next_version)
        assert readable(versions) == content
    assert set(seen) <= {"old", "new", "newer"} and len(seen) > 8


def test_a_publish_killed_between_its_renames_leaves_the_live_copy_readable(tmp_path):
    versions = VersionedDir(tmp_path, "rdt test")
    build(versions, "v1", "old")
    versions.publish("v1")
    build(versions, "v1", "new")
    versions.path("v1").rename(tmp_path / "v1.old")  # where the kill struck: moved aside only
    assert readable(versions) == "old"
    build(versions, "v1", "newer")  # the re-run
    versions.publish("v1")
    assert readable(versions) == "newer"
