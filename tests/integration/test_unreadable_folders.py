"""A source folder the backup's user cannot read (or enter) is skipped and named; the rest of the
dataset is sent and verified, at every destination, on every run (as restic: exit 3, a snapshot
without it)."""

from __future__ import annotations

import os
import zipfile

import pytest
from conftest import hash_tree
from test_honest_results import DESTS, counts, row, run_unprivileged


def lock_two_folders(lab):
    extra = lab.csv_root / "Extra"
    lab.write(extra / "ok.csv", "readable\n")
    lab.write(extra / "private" / "secret.csv", "cannot be listed\n")
    lab.write(extra / "noenter" / "inside.csv", "listed, cannot be entered\n")
    lab.config["backups"]["sources"]["CSVs"]["include"].append("Extra")
    lab.save()
    expected = hash_tree(lab.csv_root)
    (extra / "private").chmod(0)  # neither read nor enter
    (extra / "noenter").chmod(0o644)  # its names can be read, not its files' details
    if os.geteuid() and os.access(extra / "private", os.R_OK):
        pytest.skip("this user can read a mode-000 folder")
    return {n: h for n, h in expected.items() if not n.startswith(("Extra/private/", "Extra/noenter/"))}


def restore_modes(lab):
    for name in ("private", "noenter"):
        (lab.csv_root / "Extra" / name).chmod(0o755)


def test_an_unreadable_folder_is_skipped_and_named_and_the_rest_is_sent(lab):
    expected = lock_two_folders(lab)
    try:
        first, second = run_unprivileged(lab), run_unprivileged(lab)
    finally:
        restore_modes(lab)
    for result, sent in ((first, 7), (second, 0)):
        assert result.returncode == 3, result.stdout + result.stderr  # warnings: the rest is safe
        assert "Traceback" not in result.stdout + result.stderr
        for dest in DESTS:  # rsync to a folder (smb, secured) and rclone (box)
            line = row(result.stdout, dest, "CSVs")
            assert " WARNING " in line, line
            assert "cannot read, skipped (permission denied): Extra/noenter, Extra/private" in line, line
            assert counts(line) == (sent, 7), line  # six CSVs and Extra/ok.csv
    assert hash_tree(lab.secured / "CSVs") == expected
    assert hash_tree(lab.smb / "flyTrackingData") == expected
    assert hash_tree(lab.box / "Ramanlab-Backups/CSVs") == expected


def test_an_unreadable_folder_is_left_out_of_the_archive_and_named(lab):
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "archives")}
    expected = lock_two_folders(lab)
    try:
        result = run_unprivileged(lab)
    finally:
        restore_modes(lab)
    assert result.returncode == 3, result.stdout + result.stderr
    for dest in DESTS:
        line = row(result.stdout, dest, "CSVs")
        assert " WARNING " in line and "cannot read, skipped (permission denied): Extra/noenter, Extra/private" in line
    (archive,) = (lab.secured / "backups").glob("CSVs_archive_*.zip")
    with zipfile.ZipFile(archive) as zf:
        assert sorted(n for n in zf.namelist() if not n.endswith("/")) == sorted(expected)
