"""A folder replaced by a file at the source, or a file by a folder: the destination's old entry is
moved into the run's versions folder (kept, byte for byte) and the new one sent, at every destination
and with every transport: rsync to a local folder, to a mounted share and over SSH; rclone to a
local remote, to WebDAV (Box) and to SMB. Without versions nothing is replaced: the run fails, naming
the path, and the rest of the dataset is still sent.

Every check compares bytes by SHA-256 computed here, not by anything the code under test reports.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from conftest import SavedLab, hash_tree
from test_real_servers import use_servers

WARNINGS = 3  # summary.EXIT_WARNINGS: the run names what it moved aside
ENVELOPES = "Results/Opto/PER-Envelopes"
FOLDER = f"{ENVELOPES}/session"  # a folder (with a nested one) that becomes a file
FILE = f"{ENVELOPES}/fig0.png"  # a file that becomes a folder (with a nested one)


def only_results(lab) -> None:
    """Every destination takes the Results dataset alone (a second dataset would only cost time)."""
    for dest in lab.config["backups"]["destinations"].values():
        dest["datasets"] = ["Results"]
    lab.save()


def local_destinations(lab) -> dict[str, Path]:
    """The Lab as it is: SMB and secured storage are folders (rsync), Box an rclone alias remote."""
    only_results(lab)
    return {
        "smb": lab.smb / "Figures",
        "box": lab.box / "Ramanlab-Backups/Results",
        "secured": lab.secured / "Results",
    }


def server_destinations(lab, samba, webdav, sshd, monkeypatch, folder: str) -> dict[str, Path]:
    """Real servers: SMB through rclone to Samba, Box as WebDAV, secured storage over SSH (rsync)."""
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder)
    only_results(lab)
    return {"smb": smb / "Figures", "box": box / "Results", "secured": secured / "Results"}


def mounted_destination(lab, samba, fuse_smb, folder: str) -> dict[str, Path]:
    """rsync onto a mounted SMB share (a FUSE mount of the Samba share)."""
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": f"smb://127.0.0.1/share/{folder}",
        "results_path": f"smb://127.0.0.1/share/{folder}/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
    }
    lab.config["backups"]["destinations"]["box"]["enabled"] = False
    lab.config["backups"]["destinations"]["secured"]["enabled"] = False
    only_results(lab)
    return {"smb": samba.share / folder / "Figures"}


def seed(lab) -> None:
    """A nested folder and a file, both to change kind later."""
    lab.write(lab.results_root / FOLDER / "a.png", b"session a, first\n" * 40)
    lab.write(lab.results_root / FOLDER / "deeper/b.png", b"session b, nested\n" * 30)
    lab.write(lab.results_root / FOLDER / "deeper/deepest/c.png", b"")


def change_kind(lab, change: str) -> None:
    source = lab.results_root
    if change == "folder to file":
        shutil.rmtree(source / FOLDER)
        lab.write(source / FOLDER, b"now a file where a folder was\n")
    else:
        (source / FILE).unlink()
        lab.write(source / FILE / "inner.png", b"now a folder where a file was\n")
        lab.write(source / FILE / "deeper/more.png", b"nested in the new folder\n")


def old_entry(change: str) -> str:
    return FOLDER if change == "folder to file" else FILE


def held(folder: Path, path: str) -> dict[str, str]:
    """SHA-256 of the file ``path`` under ``folder``, or of every file in the folder ``path``."""
    entry = folder / path
    if entry.is_file():
        return {path: hashlib.sha256(entry.read_bytes()).hexdigest()}
    return {f"{path}/{name}": h for name, h in hash_tree(entry).items()}


def newest_run(lab) -> str:
    return sorted(p.name for p in (lab.workdir / ".backup/runs").iterdir())[-1]


def line_of(output: str, dest: str) -> str:
    return next(ln for ln in output.splitlines() if ln.startswith(dest) and " Results " in ln)


def check_kept_and_replaced(lab, dests: dict[str, Path], changes: list[str]) -> None:
    """Backup, change entries' kind at the source, backup again, and a third time."""
    seed(lab)
    first = lab.cli()
    assert first.returncode == 0, first.stdout + first.stderr
    paths = [old_entry(change) for change in changes]
    before = {(dest, path): held(folder, path) for dest, folder in dests.items() for path in paths}
    for (dest, path), kept in before.items():
        assert kept and kept == held(lab.results_root, path), dest  # the first run sent it
    for change in changes:
        change_kind(lab, change)
    result = lab.cli()
    assert result.returncode == WARNINGS, result.stdout + result.stderr
    run_id = newest_run(lab)
    for dest, folder in dests.items():
        row = line_of(result.stdout, dest)
        assert " WARNING " in row and "a folder became a file or the reverse: the old" in row, row
        assert f"kept as version {run_id}" in row, row
        assert hash_tree(folder) == lab.results_hashes(), dest  # the source's content, every file
        versions = Path(f"{folder}.versions") / run_id
        for path in paths:
            assert held(versions, path) == before[dest, path], dest  # the old entry, kept byte for byte
    again = lab.cli()
    assert again.returncode == 0, again.stdout + again.stderr
    for dest in dests:
        assert re.search(rf"manual {dest}/Results: ok \(0 of \d+ files sent", again.stdout), again.stdout


CHANGES = ["folder to file", "file to folder"]


def test_kind_changes_to_local_folders_and_an_rclone_remote(lab):
    """Both changes in one run (each alone is named in the tests without versions below)."""
    check_kept_and_replaced(lab, local_destinations(lab), CHANGES)


def test_kind_changes_over_ssh_webdav_and_smb_through_rclone(lab, samba, webdav, sshd, monkeypatch):
    """Both changes in one run (a run against the servers costs seconds)."""
    check_kept_and_replaced(lab, server_destinations(lab, samba, webdav, sshd, monkeypatch, "kinds"), CHANGES)


def test_kind_changes_on_a_mounted_share(lab, samba, fuse_smb):
    check_kept_and_replaced(lab, mounted_destination(lab, samba, fuse_smb, "mounted-kinds"), CHANGES)


def without_versions(lab) -> None:
    """keep_versions off at every destination; the entries that are to change kind, made."""
    for dest in lab.config["backups"]["destinations"].values():
        dest["keep_versions"] = False
    lab.save()
    seed(lab)


def check_refused_without_versions(lab, dests: dict[str, Path], changes: list[str]) -> None:
    """After a first backup without versions: the old entries stay as they were (nothing deleted),
    the run fails with one line naming one of them (and how many more), and the rest of the dataset
    is sent."""
    paths = sorted(old_entry(change) for change in changes)
    before = {(dest, path): held(folder, path) for dest, folder in dests.items() for path in paths}
    for change in changes:
        change_kind(lab, change)
    lab.write(lab.results_root / f"{ENVELOPES}/fig1.png", b"changed in the same run\n")  # still sent
    result = lab.cli()
    assert result.returncode == 1, result.stdout + result.stderr
    more = f"(and {len(paths) - 1} more that changed kind)" if len(paths) > 1 else ""
    for dest, folder in dests.items():
        line = line_of(result.stdout, dest)
        assert "FAILED" in line and paths[0] in line and more in line and "keep_versions" in line, line
        for path in paths:
            assert held(folder, path) == before[dest, path], dest  # untouched
        fig1 = f"{ENVELOPES}/fig1.png"
        assert held(folder, fig1) == held(lab.results_root, fig1), dest  # the rest was sent
        assert not Path(f"{folder}.versions").exists()


def local_without_versions(lab) -> None:
    local_destinations(lab)
    without_versions(lab)


@pytest.fixture(scope="module")
def first_backup_without_versions(tmp_path_factory) -> SavedLab:
    """Made once, put back for each change below: their first backup is the same."""
    return SavedLab.after_first_backup(tmp_path_factory.mktemp("without-versions"), local_without_versions)


@pytest.mark.parametrize("change", CHANGES)
def test_without_versions_nothing_is_replaced_and_the_path_is_named(first_backup_without_versions, change):
    lab = first_backup_without_versions.fresh()
    check_refused_without_versions(lab, local_destinations(lab), [change])


def test_without_versions_over_ssh_webdav_and_smb_nothing_is_replaced(lab, samba, webdav, sshd, monkeypatch):
    dests = server_destinations(lab, samba, webdav, sshd, monkeypatch, "noversions")
    without_versions(lab)
    first = lab.cli()
    assert first.returncode == 0, first.stdout + first.stderr
    check_refused_without_versions(lab, dests, CHANGES)


@pytest.mark.parametrize("tool", ["rsync", "rclone"])
@pytest.mark.parametrize("change", CHANGES)
def test_the_send_names_what_it_moved_aside(lab, tool, change):
    """SendResult.displaced: the paths whose old entry of the other kind went into the versions
    folder (a dry run names them and moves nothing); none when nothing changed kind."""
    import logging

    from backup import plan, sources, transports

    log = logging.getLogger("type-changes")
    target = str(lab.root / "direct") if tool == "rsync" else "Box-Folder:direct"
    transfer = plan.Transfer(
        destination="box", dataset="Results", mode="direct", tool=tool,
        source=plan.Source("Results", str(lab.results_root), (f"{ENVELOPES}/",)), target=target,
        rclone_config=str(lab.rclone_conf), keep_versions=True,
    )  # fmt: skip
    folder = lab.root / "direct" if tool == "rsync" else lab.box / "direct"
    seed(lab)
    sent = transports.for_transfer(transfer).send(transfer, sources.list_source(transfer.source), log, version_tag="t1")
    assert sent.displaced == [] and hash_tree(folder / ENVELOPES) == hash_tree(lab.results_root / ENVELOPES)
    before = held(folder, old_entry(change))
    change_kind(lab, change)
    listing = sources.list_source(transfer.source)
    would = transports.for_transfer(transfer).send(transfer, listing, log, dry_run=True)
    assert would.displaced == [old_entry(change)]
    assert held(folder, old_entry(change)) == before  # a dry run moves nothing
    sent = transports.for_transfer(transfer).send(transfer, listing, log, version_tag="t2")
    assert sent.displaced == [old_entry(change)]
    assert hash_tree(folder / ENVELOPES) == hash_tree(lab.results_root / ENVELOPES)
    assert held(Path(f"{folder}.versions/t2"), old_entry(change)) == before
