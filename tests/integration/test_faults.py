"""Fault injection: the bad days. Real rsync and rclone, real filesystems and processes.

Each test checks that the other destinations still complete, the exit status and the
message, that the log holds the reason, and that nothing at any destination is lost,
truncated or half-written (every file under a final name has the source's bytes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT, env_with_venv, hash_tree

BIG = "all_envelope_rows_wide.csv"


def small_fs(path: Path, size: str = "1m", readonly: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def no_half_written(dest: Path, source: Path) -> None:
    """Every file at the destination under a final name equals its source file."""
    want = hash_tree(source)
    for name, digest in hash_tree(dest).items():
        if ".versions/" in name or Path(name).name.startswith("."):
            continue  # rsync's temporary names, never a final one
        assert want.get(name) == digest, f"{name} at the destination is not the source's file"


def big_file(path: Path, megabytes: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for i in range(megabytes):
            fh.write(block[:-8] + i.to_bytes(8, "big"))


def start_cli(lab, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(PROJECT / "scripts/backup_system.py"), "--config", str(lab.config_path),
           "--workdir", str(lab.workdir), *args]  # fmt: skip
    return subprocess.Popen(cmd, env=env_with_venv(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def writing(folder: Path) -> bool:
    """rsync is writing into folder: a temporary .NAME.XXXXXX file exists."""
    return folder.is_dir() and any(p.name.startswith(".") for p in folder.iterdir())


def wait_until(condition, seconds: float = 60, every: float = 0.01) -> bool:
    """``condition`` became true within ``seconds``, tried every ``every`` seconds (more for a costly one)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def test_destination_disk_full(lab):
    small_fs(lab.secured)
    try:
        big_file(lab.csv_root / BIG, 3)
        result = lab.cli()
        assert result.returncode == 1
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("secured"))
        assert "FAILED" in line and "the destination is full" in line
        assert "No space left on device" in (lab.root / "backup.log").read_text()
        assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()
        assert hash_tree(lab.box / "Ramanlab-Backups/CSVs") == lab.csv_hashes()
        no_half_written(lab.secured / "CSVs", lab.csv_root)
        assert not (lab.secured / "CSVs" / BIG).exists()
    finally:
        unmount(lab.secured)


def test_destination_permission_denied(lab):
    small_fs(lab.secured, readonly=True)
    try:
        result = lab.cli()
        assert result.returncode == 1
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("secured"))
        assert "FAILED" in line and "permission denied at the destination" in line
        assert "Read-only file system" in (lab.root / "backup.log").read_text()
        assert hash_tree(lab.smb / "Figures") == lab.results_hashes()
        assert hash_tree(lab.secured) == {}
    finally:
        unmount(lab.secured)


def killed_while_writing(lab, megabytes: int = 400) -> int:
    """A backup to secured storage only, killed (SIGKILL, the whole process group) while rsync
    writes a large file there; returns the command line's pid."""
    big_file(lab.csv_root / BIG, megabytes)
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.config["backups"]["destinations"]["box"]["enabled"] = False
    lab.save()
    proc = start_cli(lab)
    started = wait_until(lambda: writing(lab.secured / "CSVs"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert started, "rsync never started writing"
    return proc.pid


def test_transfer_killed_mid_file_then_rerun_completes(lab):
    killed_while_writing(lab)
    no_half_written(lab.secured / "CSVs", lab.csv_root)
    assert not (lab.secured / "CSVs" / BIG).exists()
    result = lab.cli(timeout=170)
    assert result.returncode == 0, result.stdout
    assert "cleared a stale lock" in result.stdout
    # The killed rsync's hidden temporary (.NAME.XXXXXX) may stay; every final name is complete.
    final = {n: h for n, h in hash_tree(lab.secured / "CSVs").items() if not n.startswith(".")}
    assert final == lab.csv_hashes()


def test_source_file_modified_while_being_sent(lab):
    big_file(lab.csv_root / BIG, 400)
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.config["backups"]["destinations"]["box"]["enabled"] = False
    lab.save()
    proc = start_cli(lab)
    assert wait_until(lambda: writing(lab.secured / "CSVs"))
    (lab.csv_root / BIG).write_bytes(b"rewritten by the analysis while the backup ran\n")
    out, _ = proc.communicate(timeout=170)
    assert proc.returncode in (0, 3), out
    assert "changed while being sent" in (lab.root / "backup.log").read_text()
    # What the destination holds is the source's file as it is now, never a mix.
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()


def test_two_runs_at_once(lab):
    big_file(lab.csv_root / BIG, 300)
    first = start_cli(lab, "--secured-only")
    lock = lab.workdir / ".backup" / "lock"
    assert wait_until(lambda: lock.exists() and lock.stat().st_size > 0)
    t0 = time.monotonic()
    second = lab.cli("--smb-only")
    assert time.monotonic() - t0 < 10
    assert second.returncode == 2
    assert f"another backup is running in this project: pid {first.pid}, started" in second.stderr
    assert str(first.pid) in lock.read_text()  # the refused run left the holder's details alone
    out, _ = first.communicate(timeout=170)
    assert first.returncode == 0, out
    assert not lab.smb.exists()
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()


def test_killed_run_leaves_lock_and_next_run_starts(lab):
    big_file(lab.csv_root / BIG, 300)
    proc = start_cli(lab, "--secured-only")
    lock = lab.workdir / ".backup" / "lock"
    assert wait_until(lambda: lock.exists() and lock.stat().st_size > 0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert str(proc.pid) in lock.read_text()  # the dead run's lock is still there
    result = lab.cli("--secured-only", timeout=170)
    assert result.returncode == 0, result.stdout
    assert f"cleared a stale lock: pid {proc.pid}" in result.stdout
    assert lock.read_text() == ""
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()


def test_vanished_source_file_is_a_warning_not_a_failure(lab, monkeypatch):
    """A file listed, then gone before rsync reads it (rsync exit 24)."""
    from backup import jobs, sources

    real = sources.list_source

    def list_then_delete(source):
        listing = real(source)
        if source.name == "CSVs":
            os.unlink(os.path.join(source.root, "model_predictions.csv"))
        return listing

    monkeypatch.setattr(sources, "list_source", list_then_delete)
    monkeypatch.chdir(lab.workdir)
    marker = lab.workdir / "m.json"
    args = ["--run-id", "20260101-000000-abcd", "--stage", "manual", "--dest", "secured", "--dataset", "CSVs"]
    code = jobs.main(["sync", "--config", str(lab.config_path), *args, "--marker", str(marker)])
    assert code == 0
    import json

    record = json.loads(marker.read_text())
    assert record["status"] == "warning" and record["vanished"] == ["model_predictions.csv"]
    assert record["files_verified"] == 5
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()
    assert "vanished from the source" in (lab.root / "backup.log").read_text()
