"""Prune's deletions through each transport: exactly the named paths, and nothing else."""

from __future__ import annotations

import pytest
from backup import runner, transports
from backup.errors import TransferError
from backup.plan import Source, Transfer


def transfer(tool: str, target: str) -> Transfer:
    return Transfer("secured", "CSVs", "direct", tool, Source("CSVs", "/src", ("a",)), target, private=True)


def capture(monkeypatch, listed: list[str] | None = None):
    calls = []

    def fake_run(args, log, **kw):
        calls.append(list(args))
        for arg in args:
            if listed is not None and arg.startswith("--files-from-raw="):
                listed.append(open(arg.split("=", 1)[1]).read())  # noqa: SIM115 - read while it exists
        return runner.Result(0, [])

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def test_rsync_over_ssh_deletes_only_the_named_paths_from_an_empty_folder(monkeypatch):
    calls = capture(monkeypatch)
    transports.RsyncTransport().remove(transfer("rsync", "backup@host:/data/CSVs.versions"), None,
                                       files=["CSVs_archive_20261130_101010.zip"],
                                       folders=["20261130-101010-123a-pre"])  # fmt: skip
    (args,) = calls
    filters = [a for a in args if a.startswith("--filter=")]
    assert filters == [
        "--filter=+ /CSVs_archive_20261130_101010.zip",
        "--filter=+ /20261130-101010-123a-pre",
        "--filter=+ /20261130-101010-123a-pre/***",
        "--filter=- *",
    ]
    assert "--delete" in args and "--recursive" in args
    assert not any(a.startswith(("--delete-excluded", "--remove", "--times", "--perms", "--chmod")) for a in args)
    assert args[-1] == "backup@host:/data/CSVs.versions/" and args[-3] == "--"
    assert args[-2].endswith("/") and "backup-remove-" in args[-2]  # an empty temporary folder


def test_rsync_on_this_machine_removes_by_name_and_never_through_a_link(tmp_path):
    versions = tmp_path / "CSVs.versions"
    (versions / "20261130-101010-123a" / "sub").mkdir(parents=True)
    (versions / "20261130-101010-123a" / "sub" / "a.csv").write_text("old")
    (versions / "20261201-101010-123a").mkdir()
    (versions / "20261201-101010-123a" / "b.csv").write_text("kept")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.csv").write_text("mine")
    (versions / "20261202-101010-123a").symlink_to(elsewhere)
    (versions / "CSVs_archive_20261130_101010.zip").write_text("zip")
    rsync = transports.RsyncTransport()
    rsync.remove(transfer("rsync", str(versions)), None, files=["CSVs_archive_20261130_101010.zip"],
                 folders=["20261130-101010-123a", "20261202-101010-123a", "19990101-000000-0000"])  # fmt: skip
    assert sorted(p.name for p in versions.iterdir()) == ["20261201-101010-123a"]
    assert (versions / "20261201-101010-123a" / "b.csv").read_text() == "kept"
    assert (elsewhere / "precious.csv").read_text() == "mine"  # the link went, not what it points to


def test_rclone_purges_each_folder_and_deletes_exactly_the_listed_files(monkeypatch):
    listed: list[str] = []
    calls = capture(monkeypatch, listed)
    rclone = transports.RcloneTransport()
    rclone.remove(transfer("rclone", "Box-Folder:Backups/CSVs.versions"), None, files=["x.zip", "y y.zip"],
                  folders=["20261130-101010-123a-post"])  # fmt: skip
    purge, delete = calls
    assert purge[1] == "purge" and purge[-2:] == ["--", "Box-Folder:Backups/CSVs.versions/20261130-101010-123a-post"]
    assert delete[1] == "delete" and delete[-2:] == ["--", "Box-Folder:Backups/CSVs.versions"]
    assert listed == ["x.zip\ny y.zip\n"]
    assert not any(a in ("sync", "--delete-excluded") for call in calls for a in call)


@pytest.mark.parametrize("tool", ["rsync", "rclone"])
@pytest.mark.parametrize("bad", ["../CSVs", "/etc", "", "a/../../b"])
def test_a_path_that_leaves_the_target_is_refused(monkeypatch, tool, bad):
    calls = capture(monkeypatch)
    transport = transports.RsyncTransport() if tool == "rsync" else transports.RcloneTransport()
    with pytest.raises(TransferError, match="refusing a path outside"):
        transport.remove(transfer(tool, "host:/data/x" if tool == "rsync" else "Box-Folder:x"), None, folders=[bad])
    assert calls == []


def test_the_rsync_rules_remove_exactly_the_named_paths_with_real_rsync(monkeypatch, tmp_path):
    """The rules of the SSH path, run by the real rsync on a local folder (as it runs on a server)."""
    from backup.transports import rsync as rsync_mod

    monkeypatch.setattr(rsync_mod, "is_ssh_target", lambda target: True)
    versions = tmp_path / "CSVs.versions"
    for folder in ("20261130-101010-123a", "20261130-101010-123a-retry1", "20261201-101010-123a"):
        (versions / folder / "deep" / "er").mkdir(parents=True)
        (versions / folder / "deep" / "er" / "f.csv").write_text(folder)
    (versions / "CSVs_archive_20261130_101010.zip").write_text("zip")
    (versions / "CSVs_archive_20261130_101010.zip.keep").write_text("not named")
    versions.chmod(0o750)
    transports.RsyncTransport().remove(transfer("rsync", str(versions)), runner_log(),
                                       files=["CSVs_archive_20261130_101010.zip"],
                                       folders=["20261130-101010-123a"])  # fmt: skip
    assert sorted(p.name for p in versions.iterdir()) == [
        "20261130-101010-123a-retry1", "20261201-101010-123a", "CSVs_archive_20261130_101010.zip.keep"]  # fmt: skip
    assert (versions / "20261201-101010-123a" / "deep" / "er" / "f.csv").read_text() == "20261201-101010-123a"
    assert versions.stat().st_mode & 0o777 == 0o750  # the folder itself keeps its mode


def runner_log():
    import logging

    return logging.getLogger("test-remove")
