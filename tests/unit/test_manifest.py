"""Manifests: named by their content, carried forward, and readable by sha1sum."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import datetime, timedelta

import pytest
from backup import catalog, manifest, plan, sources
from backup.plan import Source
from backup.transports import local


def listing_of(root):
    return sources.list_source(Source("Data", str(root), ("./",)))


def test_manifest_is_named_by_content_and_round_trips(tmp_path):
    (tmp_path / "a.csv").write_text("1,2\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b.png").write_bytes(b"\x89PNG")
    os.symlink("../a.csv", tmp_path / "sub/link")
    found = manifest.build("Data", listing_of(tmp_path), {})
    assert found.sha1[found.files.index("a.csv")] == hashlib.sha1(b"1,2\n").hexdigest()
    assert found.links == {"sub/link": "../a.csv"}
    again = manifest.Manifest.from_bytes(found.to_bytes())
    assert again == found and again.name == found.name and found.name.startswith("Data-")
    with pytest.raises(ValueError):
        manifest.Manifest.from_bytes(found.to_bytes()[:-5])
    # The same source state gives the same name; any change another.
    assert manifest.build("Data", listing_of(tmp_path), {}).name == found.name
    (tmp_path / "a.csv").write_text("1,3\n")
    assert manifest.build("Data", listing_of(tmp_path), {}).name != found.name


def test_sha1s_are_carried_for_unchanged_files_and_taken_from_the_tools_for_sent_ones(tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text("a")
    (tmp_path / "b.csv").write_text("b")
    first = manifest.build("Data", listing_of(tmp_path), {})
    (tmp_path / "b.csv").write_text("B")
    os.utime(tmp_path / "b.csv", ns=(0, 10**18))
    (tmp_path / "c.csv").write_text("c")
    read = []
    real = manifest.hash_file
    monkeypatch.setattr(manifest, "hash_file", lambda path: read.append(os.path.basename(path)) or real(path))
    reported = {"b.csv": "0" * 40}  # what the tool computed while sending it
    second = manifest.build("Data", listing_of(tmp_path), reported, first)
    # a.csv: same size and time as before, carried; b.csv: from the tool; c.csv: new, read here.
    assert second.sha1 == [first.sha1[0], "0" * 40, hashlib.sha1(b"c").hexdigest()] and read == ["c.csv"]


def test_sums_are_what_sha1sum_reads_even_for_odd_names(tmp_path):
    names = ["plain.csv", "with space.png", "back\\slash.txt", "new\nline.txt", "unicodé α.svg"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(f"content {i}".encode())
    found = manifest.build("Data", listing_of(tmp_path), {})
    (tmp_path / "sums.sha1").write_bytes(found.sums())
    check = subprocess.run(["sha1sum", "-c", "--strict", "sums.sha1"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(names), check.stdout + check.stderr


def test_an_in_progress_marker_is_fresh_while_its_run_can_be_alive():
    here = os.uname().nodename
    now = datetime.now().astimezone()
    mine = catalog.InProgress("r", "r", "manual", host=here, pid=os.getpid(), started=now.isoformat())
    dead = catalog.InProgress("r", "r", "manual", host=here, pid=2**22 + 1, started=now.isoformat())
    other = catalog.InProgress("r", "r", "manual", host="elsewhere", pid=1, started=now.isoformat())
    old = catalog.InProgress("r", "r", "manual", host="elsewhere", pid=1,
                             started=(now - timedelta(hours=catalog.STALE_AFTER_HOURS + 1)).isoformat())  # fmt: skip
    assert catalog.is_fresh(mine) and not catalog.is_fresh(dead)
    assert catalog.is_fresh(other) and not catalog.is_fresh(old)


def test_local_catalog_writes_touch_only_the_named_files(tmp_path):
    folder, staging = tmp_path / "cat", tmp_path / "staging"
    (folder / "locks").mkdir(parents=True)
    (folder / "locks/other.json").write_text("theirs")
    (folder / "locks/mine.json").write_text("mine")
    (staging / "runs").mkdir(parents=True)
    (staging / "runs/mine.json").write_text("record")
    local.apply(str(folder), str(staging), ["runs/mine.json"], ["locks/mine.json"], private=True)
    assert local.tree(str(folder)).keys() == {"locks/other.json", "runs/mine.json"}
    assert (folder / "runs/mine.json").stat().st_mode & 0o077 == 0  # private: no group or world access
    assert local.tree(str(folder), depth=1) == {}


def test_each_destination_keeps_its_catalog_in_its_own_folder():
    from backup.config import validate

    cfg = validate({"backups": {"sources": {"CSVs": {"root": "/d", "include": ["a"]}}, "destinations": {
        "smb": {"base_path": "smb://nas/share/cole", "transport": "rclone", "datasets": ["CSVs"]},
        "box": {"remote": "Box-Folder", "folder": "Ramanlab-Backups", "datasets": ["CSVs"]},
        "secured": {"base_path": "backup@host:/secure/cole"}}}})  # fmt: skip
    targets = {d: plan.catalog_transfer(cfg, d, "/p") for d in plan.DESTINATIONS}
    assert targets["smb"].target == ":smb,host=nas:share/cole/.lab-backup" and targets["smb"].tool == "rclone"
    assert targets["box"].target == "Box-Folder:Ramanlab-Backups/.lab-backup"
    assert targets["secured"].target == "backup@host:/secure/cole/.lab-backup" and not targets["secured"].keep_versions


def test_a_file_that_changes_while_its_sha1_is_read_is_asked_of_the_destination(tmp_path, monkeypatch):
    """Not sent this run and no SHA-1 known (a new machine): read here; but if it changed meanwhile,
    what was read is not what the destination holds: the destination is asked."""
    (tmp_path / "a.csv").write_text("as sent")
    listing = listing_of(tmp_path)
    real = manifest.hash_file

    def changing(path):
        digest = real(path)
        with open(path, "a") as fh:
            fh.write(" and then changed")
        return digest

    monkeypatch.setattr(manifest, "hash_file", changing)
    asked = []
    found = manifest.build("Data", listing, {}, ask=lambda names: asked.extend(names) or {"a.csv": "1" * 40})
    assert asked == ["a.csv"] and found.sha1 == ["1" * 40]
    with pytest.raises(ValueError, match="changed while their SHA-1 was read"):
        manifest.build("Data", listing, {}, ask=lambda names: {})
