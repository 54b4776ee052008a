"""Lose the lab machine, keep the destinations: every transport, direct and compressed.

For each kind of destination (rsync to a local folder, rsync onto the FUSE-mounted Samba
share, rclone to Samba, rclone to WebDAV standing in for Box, rsync over SSH) and each
mode: back up twice with a change between, then delete the working folder (its .backup/
records and the local archives) and the sources, and restore the latest and the first run
from a brand-new working folder that has only the config file. What comes back is
compared with what the source held at each run by SHA-256 and link targets computed here,
independently of the code under test. A symlink inside the dataset comes back as a link.

Kinds that are different destinations (secured, smb, box) share the set-up: one lab per group
of them and mode backs up to all of them at once and is then lost (made once per module); each
kind's test reads only its own destination (list and restore --from it write nothing there) from a
new working folder of its own, and checks that destination's rows of both runs' summaries.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import _server, run_cli
from test_conformance import make_source as conformance_source

# The destination each kind of transport is configured as; a group has each destination once.
KINDS = {"rsync-local": "secured", "rsync-fuse-smb": "smb", "rclone-smb": "smb", "rclone-webdav-box": "box",
         "rsync-ssh": "secured"}  # fmt: skip
GROUPS = [("rsync-local", "rclone-smb", "rclone-webdav-box"), ("rsync-ssh", "rsync-fuse-smb")]


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


def destination(kind: str, request, tmp_path_factory, root: Path, monkeypatch) -> dict:
    unique = uuid.uuid4().hex[:8]
    if kind == "rsync-local":
        return {"secured": {"base_path": str(root / "secured"), "datasets": ["Data"]}}
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
        import servers

        # conftest's webdav fixture is per test; this one lives as long as the lab that uses it.
        dav = _server(request, tmp_path_factory, "webdav", servers.WebDav)
        return {"box": {"remote": "Box-Folder", "folder": unique, "rclone_config": str(dav.conf), "datasets": ["Data"]}}
    ssh = request.getfixturevalue("sshd")
    return {"secured": {"base_path": f"root@127.0.0.1:{root}/remote", "ssh_port": ssh.port,
                        "ssh_key": str(ssh.key), "known_hosts": str(ssh.known_hosts),
                        "datasets": ["Data"]}}  # fmt: skip


@dataclass
class Lost:
    """A lab that backed up twice to every destination of a group, then lost its working folder and sources."""

    group: tuple[str, ...]
    compressed: bool
    config: Path
    runs: list[subprocess.CompletedProcess]  # the first and the second backup
    states: list[dict[str, str]]  # what the source held at each


def lose_a_lab(group: tuple[str, ...], compressed: bool, request, tmp_path_factory, monkeypatch) -> Lost:
    root = tmp_path_factory.mktemp("lost")
    src, work, config = root / "src", root / "work", root / "config.yaml"
    make_source(src)
    work.mkdir()
    dests = {}
    for kind in group:
        dests.update(destination(kind, request, tmp_path_factory, root, monkeypatch))
    config.write_text(yaml.safe_dump({"backups": {
        "log_file": str(work / "backup.log"),
        "sources": {"Data": {"root": str(src), "include": ["all_envelope_rows_wide.csv", "model_predictions.csv",
                                                           "Results/"]}},
        "compression": {"enabled": compressed, "archive_dir": str(work / "archives")},
        "destinations": dests,
    }}, allow_unicode=True))  # fmt: skip
    runs = [run_cli("--config", str(config), workdir=work, timeout=180)]
    states = [state(src)]
    changed = src / "model_predictions.csv"
    changed.write_bytes(b"p\n0.1\nsecond analysis\n")
    later = time.time() + 10
    os.utime(changed, (later, later))
    (src / "Results/Opto/PER-Envelopes/-dash.pdf").unlink()
    (src / "Results/Opto/PER-Envelopes/new.png").write_bytes(os.urandom(900))
    runs.append(run_cli("--config", str(config), workdir=work, timeout=180))
    states.append(state(src))
    assert states[0] != states[1] and any(v.startswith("link -> ") for v in states[1].values())
    # The lab machine is gone: no records, no local archives, no sources. Only the config is left.
    shutil.rmtree(work)
    shutil.rmtree(src)
    return Lost(group, compressed, config, runs, states)


@pytest.fixture(scope="module")
def lost_labs(request, tmp_path_factory):
    """(kind, compressed) -> the Lost lab of its group and mode, made when a test first asks for it
    and kept (with its servers and SMB_PASSWORD) until the module's tests are done."""
    made: dict[tuple[tuple[str, ...], bool], Lost] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:

        def get(kind: str, compressed: bool) -> Lost:
            group = next(g for g in GROUPS if kind in g)
            if (group, compressed) not in made:
                made[group, compressed] = lose_a_lab(group, compressed, request, tmp_path_factory, monkeypatch)
            return made[group, compressed]

        yield get


def row_status(run: subprocess.CompletedProcess, dest: str) -> str:
    """The status of dest's row (dataset Data) in a backup's summary."""
    rows = [ln for ln in run.stdout.splitlines() if re.match(rf"{dest}\s+Data\s", ln)]
    assert len(rows) == 1, run.stdout + run.stderr
    return re.search(r"\s(OK|WARNING|FAILED|INTERRUPTED)(\s|$)", rows[0]).group(1)


@pytest.mark.parametrize("compressed", [False, True], ids=["direct", "compressed"])
@pytest.mark.parametrize("kind", KINDS)
def test_restore_from_the_destination_alone(kind, compressed, lost_labs, tmp_path):
    lost = lost_labs(kind, compressed)
    dest = KINDS[kind]
    first, second = lost.runs
    # rsync onto an SMB share cannot hold the symlink: a warning (the catalog keeps it); the exit
    # status is the group's (the worst of its rows)
    warns = not lost.compressed and kind == "rsync-fuse-smb"
    assert row_status(first, dest) in (("OK", "WARNING") if warns else ("OK",)), first.stdout + first.stderr
    assert row_status(second, dest) == row_status(first, dest), second.stdout + second.stderr
    group_warns = not lost.compressed and "rsync-fuse-smb" in lost.group
    assert first.returncode in ((0, 3) if group_warns else (0,)), first.stdout
    assert second.returncode == first.returncode, second.stdout
    states = lost.states

    def cli(*args: str):
        return run_cli(*args, "--config", str(lost.config), workdir=fresh, timeout=180)

    fresh = tmp_path / "fresh"  # a brand-new working folder: the config file is all it has
    fresh.mkdir()
    listed = cli("list", "--from", dest)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    runs = [line.split()[1] for line in listed.stdout.splitlines()[2:] if " Data " in line]
    assert len(runs) == 2 and all("complete" in ln for ln in listed.stdout.splitlines()[2:4]), listed.stdout

    latest = cli("restore", "--from", dest, "--dataset", "Data", "--to", str(tmp_path / "latest"))
    assert latest.returncode == 0, latest.stdout + latest.stderr
    n = len(states[1])
    assert f"{n} of {n} files match that run's manifest" in latest.stdout
    assert state(tmp_path / "latest") == states[1]
    oldest = cli("restore", "--from", dest, "--dataset", "Data", "--to", str(tmp_path / "first"), "--run", runs[0])
    assert oldest.returncode == 0, oldest.stdout + oldest.stderr
    assert state(tmp_path / "first") == states[0]
    assert not list(tmp_path.glob("*/.lab-restore*")), "a staging folder was left behind"
