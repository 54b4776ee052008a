"""A file dated before 1970 (a negative time) is sent once, not on every run (rclone lists it as
a negative number of nanoseconds)."""

from __future__ import annotations

import os

from conftest import hash_tree


def test_a_file_dated_before_1970_is_not_sent_again(lab):
    old = lab.csv_root / "model_predictions.csv"
    os.utime(old, ns=(-86_400 * 10**9 * 365, -86_400 * 10**9 * 365))  # 1969
    first = lab.cli("--box-only")
    assert first.returncode == 0, first.stdout
    second = lab.cli("--box-only")
    assert second.returncode == 0, second.stdout
    (line,) = [ln for ln in second.stdout.splitlines() if "box/CSVs" in ln]
    assert "ok (0 of 6 files sent, 6 verified)" in line, line
    assert hash_tree(lab.box / "Ramanlab-Backups/CSVs") == lab.csv_hashes()
