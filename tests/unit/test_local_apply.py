"""A catalog file written into a folder: a rename that meets a busy file (a FUSE-mounted share whose
close has not reached the server yet) is tried again; other errors are not."""

from __future__ import annotations

import errno
import os

import pytest
from backup.transports import local


def test_a_rename_that_meets_a_busy_file_is_tried_again(tmp_path, monkeypatch):
    staging, folder = tmp_path / "staging", tmp_path / "dest"
    staging.mkdir()
    (staging / "runs").mkdir()
    (staging / "runs/a.json").write_bytes(b"{}")
    real, calls = os.replace, []

    def busy_twice(src, dst):
        calls.append(dst)
        if len(calls) <= 2:
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(local.os, "replace", busy_twice)
    local.apply(str(folder), str(staging), ["runs/a.json"], [], private=False)
    assert (folder / "runs/a.json").read_bytes() == b"{}" and len(calls) == 3
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["a.json"]  # no temporary file left


def test_a_rename_refused_for_good_fails_at_once(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "a.json").write_bytes(b"{}")

    def refused(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(local.os, "replace", refused)
    with pytest.raises(PermissionError):
        local.apply(str(tmp_path / "dest"), str(staging), ["a.json"], [], private=False)
    assert not [p for p in (tmp_path / "dest").iterdir() if p.name.endswith(".tmp")]
