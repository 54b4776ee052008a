"""The project's own disk fills up during a run (a real tmpfs): one line naming the folder, the
summary of what reached each destination, exit 1, no traceback; the next run completes."""

from __future__ import annotations

import errno
import os

from conftest import hash_tree
from test_faults import BIG, big_file, small_fs, start_cli, unmount, wait_until, writing


def fill(folder) -> None:
    """Write zeros into ``folder`` until its file system is full (at most 64 MB)."""
    block = bytes(1 << 16)
    with open(folder / "filler", "wb") as fh:
        for _ in range(1024):
            try:
                fh.write(block)
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    raise AssertionError("the file system never filled up")


def test_the_projects_disk_fills_up_during_a_run(lab):
    small_fs(lab.workdir, "16m")
    try:
        big_file(lab.csv_root / BIG, 300)
        lab.config["backups"]["destinations"]["smb"]["enabled"] = False
        lab.config["backups"]["destinations"]["box"]["enabled"] = False
        lab.save()
        proc = start_cli(lab)
        assert wait_until(lambda: writing(lab.secured / "CSVs")), "rsync never started writing"
        fill(lab.workdir)
        out, _ = proc.communicate(timeout=170)
        assert proc.returncode == 1, out
        assert "Traceback" not in out and "cannot write None" not in out, out
        assert f"error: cannot write this run's record in {lab.workdir}/.backup/runs/" in out, out
        assert "(is the project's disk full?); each destination holds what the summary above says" in out
        assert "secured      CSVs" in out and "FAILED" in out  # the summary: not a restore point
        os.remove(lab.workdir / "filler")
        result = lab.cli(timeout=170)
        assert result.returncode == 0, result.stdout
        final = {n: h for n, h in hash_tree(lab.secured / "CSVs").items() if not n.startswith(".")}
        assert final == lab.csv_hashes()
    finally:
        unmount(lab.workdir)
