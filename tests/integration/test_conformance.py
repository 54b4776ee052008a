"""One contract, every transport: the same tests against real servers on 127.0.0.1.

rsync to a local folder, rsync to the Samba share mounted with FUSE, rclone to Samba
without a mount, rclone to a WebDAV server under the remote name Box-Folder, and rsync
over SSH. Each destination's content is read back from the server's own folder on disk,
not through the code under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import uuid
from pathlib import Path

import pytest
from backup import plan, sources, transports
from backup.config import validate
from conftest import hash_tree

KINDS = ["rsync-local", "rsync-fuse-smb", "rclone-smb", "rclone-webdav-box", "rsync-ssh"]
LOG = logging.getLogger("conformance")


def make_source(root: Path) -> dict[str, bytes]:
    files = {
        "all_envelope_rows_wide.csv": b"fly,v\n" + b"fly1,0.25\n" * 2000,
        "model_predictions.csv": b"p\n0.9\n",
        "Results/Opto/Reaction_Predictions(Strictest)/fig 1.png": os.urandom(3000),
        "Results/Opto/PER-Envelopes/unicodé α.svg": "<svg>α</svg>".encode(),
        "Results/Opto/PER-Envelopes/-dash.pdf": b"%PDF-1.4 dash",
        "Results/Opto/Weekly-Training-Envelopes/empty.csv": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


class Case:
    """A transfer of the dataset 'Data' to one kind of destination, and where its bytes land on disk."""

    def __init__(self, transfer: plan.Transfer, backing: Path, kind: str):
        self.transfer, self.backing, self.kind = transfer, backing, kind

    def settle(self) -> None:
        """The FUSE mount and the WebDAV server cache folder listings for a second (dir-cache-time)."""
        if self.kind in ("rsync-fuse-smb", "rclone-webdav-box"):
            time.sleep(1.2)


@pytest.fixture(params=KINDS)
def case(request, tmp_path, monkeypatch):
    kind = request.param
    src = tmp_path / "src"
    make_source(src)
    unique = uuid.uuid4().hex[:8]
    sources_cfg = {"Data": {"root": str(src), "include": ["all_envelope_rows_wide.csv", "model_predictions.csv",
                                                            "Results/"]}}  # fmt: skip
    if kind == "rsync-local":
        dest = {"secured": {"base_path": str(tmp_path / "secured"), "datasets": ["Data"]}}
        backing = tmp_path / "secured" / "Data"
    elif kind == "rsync-fuse-smb":
        fuse = request.getfixturevalue("fuse_smb")
        dest = {"smb": {"base_path": f"smb://127.0.0.1/share/{unique}", "mount_point": str(fuse.point),
                        "datasets": ["Data"]}}  # fmt: skip
        backing = fuse.samba.share / unique / "Data"
    elif kind == "rclone-smb":
        samba = request.getfixturevalue("samba")
        monkeypatch.setenv("SMB_PASSWORD", samba.password)
        dest = {"smb": {"base_path": f"smb://root@127.0.0.1:{samba.port}/share/{unique}", "transport": "rclone",
                        "datasets": ["Data"]}}  # fmt: skip
        backing = samba.share / unique / "Data"
    elif kind == "rclone-webdav-box":
        dav = request.getfixturevalue("webdav")
        dest = {"box": {"remote": "Box-Folder", "folder": unique, "rclone_config": str(dav.conf),
                        "datasets": ["Data"]}}  # fmt: skip
        backing = dav.data / unique / "Data"
    else:
        ssh = request.getfixturevalue("sshd")
        secured = {"base_path": f"root@127.0.0.1:{tmp_path}/remote", "ssh_port": ssh.port, "ssh_key": str(ssh.key)}
        dest = {"secured": {**secured, "known_hosts": str(ssh.known_hosts), "datasets": ["Data"]}}
        backing = tmp_path / "remote" / "Data"
    cfg = validate({"backups": {"sources": sources_cfg, "destinations": dest}})
    (transfer,) = plan.plan(cfg, str(tmp_path))
    return Case(transfer, backing, kind)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_send_is_complete_idempotent_and_verified(case):
    t = case.transfer
    listing = sources.list_source(t.source)
    transport = transports.for_transfer(t)
    expected = hash_tree(Path(t.source.root))
    result = transport.send(t, listing, LOG)
    assert result.files_sent == 6
    assert hash_tree(case.backing) == expected
    again = transport.send(t, listing, LOG)
    assert again.files_sent == 0
    check = transport.verify(t, listing, LOG)
    assert check.ok and check.verified == 6


def test_check_after_sending_trusts_the_tool_and_names_a_newer_copy(case):
    t = case.transfer
    listing = sources.list_source(t.source)
    transport = transports.for_transfer(t)
    first = transport.send(t, listing, LOG)
    check = transport.confirm(t, listing, first, LOG)
    assert check.ok and check.verified == 6 and hash_tree(case.backing) == hash_tree(Path(t.source.root))
    edited = case.backing / "model_predictions.csv"
    edited.write_bytes(b"edited in the backup copy\n")
    later = time.time() + 3600
    os.utime(edited, (later, later))
    case.settle()
    again = transport.send(t, listing, LOG)
    assert again.files_sent == 0 and again.newer == ["model_predictions.csv"]
    assert edited.read_bytes() == b"edited in the backup copy\n"  # never overwritten (--update)
    check = transport.confirm(t, listing, again, LOG)
    assert not check.ok and check.differing == ["model_predictions.csv"] and check.verified == 5
    assert "1 files differ from the source (e.g. model_predictions.csv)" in check.problem()


def test_a_symlink_is_kept_where_the_transport_says_it_can_be(case):
    """keeps_symlinks (asked without I/O by every job) agrees with the capabilities and with what
    the destination then holds: the link itself (rclone: NAME.rclonelink holding its target), or,
    where it cannot hold one, nothing, and the link is named as left out."""
    t = case.transfer
    (Path(t.source.root) / "model_link.csv").symlink_to("model_predictions.csv")
    t = dataclasses.replace(t, source=dataclasses.replace(t.source, include=(*t.source.include, "model_link.csv")))
    transport = transports.for_transfer(t)
    keeps = transport.keeps_symlinks(t)
    assert keeps == transport.capabilities(t, LOG).symlinks
    assert keeps == (case.kind != "rsync-fuse-smb")
    listing, skipped, _ = sources.for_transfer(t, keeps_links=keeps)
    transport.send(t, listing, LOG)
    case.settle()
    if case.kind.startswith("rclone"):
        assert (case.backing / "model_link.csv.rclonelink").read_bytes() == b"model_predictions.csv"
    elif keeps:
        assert os.readlink(case.backing / "model_link.csv") == "model_predictions.csv"
    else:
        assert skipped == ["model_link.csv"] and not os.path.lexists(case.backing / "model_link.csv")
    assert (case.backing / "model_predictions.csv").read_bytes() == b"p\n0.9\n"


def test_list_shows_names_and_sizes(case):
    t = case.transfer
    listing = sources.list_source(t.source)
    transport = transports.for_transfer(t)
    assert transport.list(t, LOG) == {}
    transport.send(t, listing, LOG)
    assert transport.list(t, LOG) == {name: listing.sizes[name] for name in listing.files}


def test_verify_catches_changed_and_missing_files(case):
    t = case.transfer
    listing = sources.list_source(t.source)
    transport = transports.for_transfer(t)
    transport.send(t, listing, LOG)
    changed = case.backing / "all_envelope_rows_wide.csv"
    stat = changed.stat()
    data = bytearray(changed.read_bytes())
    data[10] ^= 1  # same size, same time, one bit different
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (case.backing / "model_predictions.csv").unlink()
    check = transport.verify(t, listing, LOG)
    assert not check.ok
    # A caching server (FUSE, WebDAV) may still list the deleted file: then it differs, not missing.
    assert "all_envelope_rows_wide.csv" in check.differing
    assert sorted(check.differing + check.missing) == ["all_envelope_rows_wide.csv", "model_predictions.csv"]
    assert check.verified == 4
    assert "verification failed" in check.problem()


def test_restore_brings_back_the_bytes(case, tmp_path):
    t = case.transfer
    listing = sources.list_source(t.source)
    transport = transports.for_transfer(t)
    transport.send(t, listing, LOG)
    out = tmp_path / "restored"
    result = transport.restore(t, str(out), LOG)
    assert result.files_sent == 6
    assert hash_tree(out) == hash_tree(Path(t.source.root))


def test_deleted_source_file_stays_and_archive_file_is_sent(case, tmp_path):
    t = case.transfer
    transport = transports.for_transfer(t)
    transport.send(t, sources.list_source(t.source), LOG)
    kept = (case.backing / "model_predictions.csv").read_bytes()
    os.unlink(os.path.join(t.source.root, "model_predictions.csv"))
    transport.send(t, sources.list_source(t.source), LOG)
    assert (case.backing / "model_predictions.csv").read_bytes() == kept
    zips = tmp_path / "zips"
    zips.mkdir()
    (zips / "Data_archive_20260101_000000.zip").write_bytes(b"PK" + os.urandom(5000))
    one = sources.Listing(root=str(zips), files=["Data_archive_20260101_000000.zip"],
                          sizes={"Data_archive_20260101_000000.zip": 5002})  # fmt: skip
    assert transport.send(t, one, LOG).files_sent == 1
    assert sha((case.backing / "Data_archive_20260101_000000.zip").read_bytes()) == sha(
        (zips / "Data_archive_20260101_000000.zip").read_bytes()
    )
    assert transport.verify(t, one, LOG).ok
