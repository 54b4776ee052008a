"""rsync onto a FUSE-mounted share when the mount cannot be trusted: real smbd, real rclone mount.

A mount that caches writes (rclone --vfs-cache-mode writes or full) says "written" before the
server has the data, so a backup there must never be reported as done or verified. A share
whose server stopped must be named as unreachable, quickly, not as a full disk minutes later.
Each test starts its own Samba and mount: it stops or fills them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import servers
from conftest import _server


def kernel_feature_missing(why: str) -> None:
    """Skip where the kernel cannot do it, except under CI, where that is a broken test machine."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def fill(folder: Path, limit: int = 4 << 20) -> None:
    """Write into ``folder`` until its filesystem is full (at most ``limit`` bytes)."""
    with open(folder / "filler", "wb") as out:
        for _ in range(limit // 65536):
            try:
                out.write(b"\0" * 65536)
                out.flush()
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    return
                raise
    raise AssertionError(f"{folder} took {limit} bytes without filling up")


@pytest.fixture
def full_samba(request, tmp_path_factory):
    """A private smbd whose share lives on a 1 MB tmpfs that is already full."""

    def make(root: Path) -> servers.Samba:
        share = root / "share"
        share.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(share)], capture_output=True)
        if mounted.returncode != 0:
            kernel_feature_missing(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(share)], capture_output=True))
        try:
            fill(share)
        except OSError:
            subprocess.run(["umount", "-l", str(share)], capture_output=True)
            raise
        return servers.Samba(root)

    return _server(request, tmp_path_factory, "full-samba", make)


@pytest.fixture
def own_samba(request, tmp_path_factory):
    """A private smbd the test may stop (the session's is shared with other tests)."""
    return _server(request, tmp_path_factory, "own-samba", servers.Samba)


def mount(request, tmp_path_factory, samba: servers.Samba, cache_mode: str) -> servers.FuseMount:
    return _server(
        request, tmp_path_factory, f"fuse-{cache_mode}", lambda root: servers.FuseMount(samba, root / "mnt", cache_mode)
    )


def smb_via(lab, point: Path, folder: str) -> None:
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": f"smb://127.0.0.1/share/{folder}",
        "csvs_path": f"smb://127.0.0.1/share/{folder}/flyTrackingData",
        "results_path": f"smb://127.0.0.1/share/{folder}/Figures",
        "mount_point": str(point),
        "require_mount": True,
    }
    lab.save()


def smb_rows(result) -> list[str]:
    rows = [line for line in result.stdout.splitlines() if line.startswith("smb ")]
    assert rows, result.stdout + result.stderr
    return rows


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("cache_mode", ["writes", "full", "minimal"])
def test_mount_that_caches_writes_is_never_verified(lab, full_samba, request, tmp_path_factory, cache_mode):
    fuse = mount(request, tmp_path_factory, full_samba, cache_mode)
    smb_via(lab, fuse.point, "cached")
    result = lab.cli("--smb-only", timeout=90)
    no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = smb_rows(result)
    assert len(rows) == 2, result.stdout
    for row in rows:
        assert "FAILED" in row and " OK " not in row, row
        assert f"--vfs-cache-mode {cache_mode}" in row and "caches writes" in row, row
        assert "transport: rclone" in row and "--vfs-cache-mode off" in row, row
    # Nothing recorded as sent or verified.
    for record in (lab.workdir / ".backup/runs").rglob("smb/*.json"):
        data = json.loads(record.read_text())
        assert data["status"] == "failed" and not data.get("files_verified") and not data.get("files_sent"), data
    assert not (full_samba.share / "cached").exists()  # indeed nothing reached the server
    # --verify does not read the cache back and call it OK either.
    verified = lab.cli("--verify", "--smb-only", timeout=90)
    no_traceback(verified)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    for row in smb_rows(verified):
        assert "FAILED" in row and " OK " not in row and "caches writes" in row, row


def freeze(request, samba: servers.Samba) -> None:
    """smbd and its children stop answering, connections open: a NAS that hangs, or a cable pulled."""
    group = os.getpgid(samba.proc.pid)  # its own session: the children serving connections are in it
    request.addfinalizer(lambda: os.killpg(group, signal.SIGCONT))
    os.killpg(group, signal.SIGSTOP)


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_unreachable_share_is_named_within_30_seconds(lab, own_samba, request, tmp_path_factory, how):
    fuse = mount(request, tmp_path_factory, own_samba, "off")
    smb_via(lab, fuse.point, "gone")
    first = lab.cli("--smb-only", timeout=90)
    assert first.returncode == 0, first.stdout + first.stderr  # a mount without a cache is fine
    own_samba.stop() if how == "stopped" else freeze(request, own_samba)
    lab.write(lab.csv_root / "model_predictions.csv", "fly,p\nfly9,0.5\n")
    t0 = time.monotonic()
    result = lab.cli("--smb-only", timeout=60)
    elapsed = time.monotonic() - t0
    no_traceback(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 30, f"{elapsed:.1f} s: {result.stdout}"
    for row in smb_rows(result):
        assert "FAILED" in row and "unreachable" in row and str(fuse.point) in row, row
        assert "is the destination full" not in row, row
