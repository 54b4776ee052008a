"""Lose the lab machine, keep the destinations: every transport, direct and compressed.

For each kind of destination (rsync to a local folder, rsync onto the FUSE-mounted Samba
share, rclone to Samba, rclone to WebDAV standing in for Box, rsync over SSH) and each
mode: back up twice with a change between, then delete the working folder (its .backup/
records and the local archives) and the sources, and restore the latest and the first run
from a brand-new working folder that has only the config file. What comes back is
compared with what the source held at each run by SHA-256 and link targets computed here,
independently of the code under test. A symlink inside the dataset comes back as a link.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import run_cli
from test_conformance import make_source as conformance_source

KINDS = ["rsync-local", "rsync-fuse-smb", "rclone-smb", "rclone-webdav-box", "rsync-ssh"]


def state(root: Path) -> dict[str, str]:
    """sha256 of every regular file and 'link -> target' of every symlink, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link -> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_source(src: Path) -> None:
    """The conformance suite's source, with a symlink inside the dataset."""
    conformance_source(src)
    os.symlink("unicodé α.svg", src / "Results/Opto/PER-Envelopes/latest.svg")


def destination(kind: str, request, tmp_path: Path, monkeypatch) -> dict:
    unique = uuid.uuid4().hex[:8]
    if kind == "rsync-local":
        return {"secured": {"base_path": str(tmp_path / "secured"), "datasets": ["Data"]}}
    if kind == "rsync-fuse-smb":
        fuse = request.getfixturevalue("fuse_smb")
        return {"smb": {"base_path": f"smb://127.0.0.1/share/{unique}", "mount_point": str(fuse.point),
                        "datasets": ["Data"]}}  # fmt: skip
    if kind == "rclone-smb":
        samba = request.getfixturevalue("samba")
        monkeypatch.setenv("SMB_PASSWORD", samba.password)
        return {"smb": {"base_path": f"smb://root@127.0.0.1:{samba.port}/share/{unique}", "transport": "rclone",
                        "datasets": ["Data"]}}  # fmt: skip
    if kind == "rclone-webdav-box":
        dav = request.getfixturevalue("webdav")
        return {"box": {"remote": "Box-Folder", "folder": unique, "rclone_config": str(dav.conf), "datasets": ["Data"]}}
    ssh = request.getfixturevalue("sshd")
    return {"secured": {"base_path": f"root@127.0.0.1:{tmp_path}/remote", "ssh_port": ssh.port,
                        "ssh_key": str(ssh.key), "known_hosts": str(ssh.known_hosts),
                        "datasets": ["Data"]}}  # fmt: skip


@pytest.mark.parametrize("compressed", [False, True], ids=["direct", "compressed"])
@pytest.mark.parametrize("kind", KINDS)
def test_restore_from_the_destination_alone(kind, compressed, request, tmp_path, monkeypatch):
    src, work, config = tmp_path / "src", tmp_path / "work", tmp_path / "config.yaml"
    make_source(src)
    work.mkdir()
    dests = destination(kind, request, tmp_path, monkeypatch)
    (dest,) = dests
    config.write_text(yaml.safe_dump({"backups": {
        "log_file": str(work / "backup.log"),
        "sources": {"Data": {"root": str(src), "include": ["all_envelope_rows_wide.csv", "model_predictions.csv",
                                                           "Results/"]}},
        "compression": {"enabled": compressed, "archive_dir": str(work / "archives")},
        "destinations": dests,
    }}, allow_unicode=True))  # fmt: skip

    def cli(*args: str, workdir: Path = work):
        return run_cli(*args, "--config", str(config), workdir=workdir, timeout=180)

    first = cli()
    # rsync onto an SMB share cannot hold the symlink: a warning (the catalog keeps it)
    assert first.returncode in ((0, 3) if kind == "rsync-fuse-smb" and not compressed else (0,)), first.stdout
    states = [state(src)]
    changed = src / "model_predictions.csv"
    changed.write_bytes(b"p\n0.1\nsecond analysis\n")
    later = time.time() + 10
    os.utime(changed, (later, later))
    (src / "Results/Opto/PER-Envelopes/-dash.pdf").unlink()
    (src / "Results/Opto/PER-Envelopes/new.png").write_bytes(os.urandom(900))
    second = cli()
    assert second.returncode == first.returncode, second.stdout
    states.append(state(src))
    assert states[0] != states[1] and any(v.startswith("link -> ") for v in states[1].values())

    # The lab machine is gone: no records, no local archives, no sources. A fresh folder, the config.
    shutil.rmtree(work)
    shutil.rmtree(src)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    listed = cli("list", "--from", dest, workdir=fresh)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    runs = [line.split()[1] for line in listed.stdout.splitlines()[2:] if " Data " in line]
    assert len(runs) == 2 and all("complete" in ln for ln in listed.stdout.splitlines()[2:4]), listed.stdout

    latest = cli("restore", "--from", dest, "--dataset", "Data", "--to", str(tmp_path / "latest"), workdir=fresh)
    assert latest.returncode == 0, latest.stdout + latest.stderr
    n = len(states[1])
    assert f"{n} of {n} files match that run's manifest" in latest.stdout
    assert state(tmp_path / "latest") == states[1]
    oldest = cli("restore", "--from", dest, "--dataset", "Data", "--to", str(tmp_path / "first"), "--run", runs[0],
                 workdir=fresh)  # fmt: skip
    assert oldest.returncode == 0, oldest.stdout + oldest.stderr
    assert state(tmp_path / "first") == states[0]
    assert not list(tmp_path.glob("*/.lab-restore*")), "a staging folder was left behind"
