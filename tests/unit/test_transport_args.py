"""The argument lists the transports build: add and update only, never delete."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from backup import runner, sources, transports
from backup.plan import Source, Transfer
from backup.sources import Listing


def capture(monkeypatch, lines=()):
    calls = []

    def fake_run(args, log, **kw):
        calls.append(list(args))
        if args[-1] == "listremotes":
            return runner.Result(0, ["Box-Folder:"])
        return runner.Result(0, list(lines))

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def transfer(tool, target):
    return Transfer("x", "CSVs", "direct", tool, Source("CSVs", "/src", ("a",)), target)


SHA = "f572d396fae9206628714fb2ce00f72e94f2258f"


def test_rsync_args(monkeypatch, tmp_path):
    calls = capture(monkeypatch, [f">f+++++++++|{SHA}|a.csv", "Total transferred file size: 1,234 bytes"])
    listing = Listing(root="/src", files=["a.csv", "-b.csv"], sizes={"a.csv": 1, "-b.csv": 2})
    result = transports.RsyncTransport().send(transfer("rsync", str(tmp_path / "d")), listing, None)
    (args,) = calls
    assert "--update" in args and "--recursive" in args and "--times" in args and "--from0" in args
    assert not any(a.startswith("--delete") or a.startswith("--remove") for a in args)
    assert args[-3:] == ["--", "/src/", str(tmp_path / "d") + "/"]
    # The whole-file checksum rsync checks each written file with is SHA-1, reported per file (%C).
    assert "--checksum-choice=sha1" in args and "--out-format=%i|%C|%n" in args
    assert result.files_sent == 1 and result.bytes_sent == 1 and result.sha1 == {"a.csv": SHA}
    assert "--specials" not in args and "--devices" not in args  # FIFOs and devices hold no data


def test_rsync_walks_the_matched_tops_as_root_dot_name_with_relative(monkeypatch, tmp_path):
    """A whole dataset (the everyday case) names the folders and files its patterns matched as
    ROOT/./NAME with --relative, which rsync walks itself: no list of every file."""
    calls = capture(monkeypatch, [f">f+++++++++|{SHA}|Results/a.png"])
    listing = Listing(root="/src", files=["Results/a.png", "-b.csv"], sizes={"Results/a.png": 1, "-b.csv": 2},
                      tops=["Results", "-b.csv"])  # fmt: skip
    result = transports.RsyncTransport().send(transfer("rsync", str(tmp_path / "d")), listing, None)
    (args,) = calls
    assert args[-5:] == ["--relative", "--", "/src/./Results", "/src/./-b.csv", str(tmp_path / "d") + "/"]
    assert not any(a.startswith(("--files-from", "--delete", "--remove")) for a in args)
    assert "--update" in args and result.files_sent == 1 and result.sha1 == {"Results/a.png": SHA}


def test_rsync_counts_each_listed_file_once_and_what_a_failed_send_wrote(monkeypatch, tmp_path):
    """A file redone in rsync's second pass is named twice, one made since the listing is no file of
    this backup: neither inflates the count. A send that fails part-way reports what it wrote."""
    lines = [f">f+++++++++|{SHA}|a.csv", f">f+++++++++|{SHA}|new-since.csv", f">f..t......|{SHA}|a.csv"]
    capture(monkeypatch, lines)
    listing = Listing(root="/src", files=["a.csv", "-b.csv"], sizes={"a.csv": 1, "-b.csv": 2})
    result = transports.RsyncTransport().send(transfer("rsync", str(tmp_path / "d")), listing, None)
    assert (result.files_sent, result.bytes_sent) == (1, 1)
    failing = 'rsync: [sender] send_files failed to open "/src/-b.csv": Permission denied (13)'
    monkeypatch.setattr(runner, "run", lambda args, log, **kw: runner.Result(23, [lines[0], failing]))
    try:
        transports.RsyncTransport().send(transfer("rsync", str(tmp_path / "d")), listing, None)
    except transports.SendFailed as exc:
        assert (exc.files_sent, exc.bytes_sent) == (1, 1)
        assert str(exc).startswith("send: cannot read source file /src/-b.csv: permission denied")
    else:
        raise AssertionError("a failed send must raise")


def test_rsync_without_sha1_at_the_other_end_sends_anyway(monkeypatch, tmp_path):
    """An old rsync on the server cannot do SHA-1: the send is repeated without asking for it, and
    no SHA-1 is reported (the job hashes the source files instead)."""
    calls = []

    def fake_run(args, log, **kw):
        calls.append(list(args))
        if "--checksum-choice=sha1" in args:
            return runner.Result(2, ["unknown checksum name: sha1", "rsync error: syntax or usage error (code 2)"])
        return runner.Result(0, [">f+++++++++|0123456789abcdef0123456789abcdef|a.csv"])

    monkeypatch.setattr(runner, "run", fake_run)
    transport = transports.RsyncTransport()
    log = __import__("logging").getLogger("t")
    listing = Listing(root="/src", files=["a.csv"], sizes={"a.csv": 1})
    result = transport.send(transfer("rsync", str(tmp_path / "d")), listing, log)
    assert len(calls) == 2 and "--checksum-choice=sha1" not in calls[1]
    assert result.sent == ["a.csv"] and result.sha1 == {} and transport.sha1 is False


def fake_rclone(monkeypatch, hashes=("sha1",)):
    """rclone as the remote answers: features (with ``hashes``), listings, copies, checksums."""
    calls = []

    def fake_run(args, log, **kw):
        calls.append(list(args))
        if "features" in args:
            return runner.Result(0, [json.dumps({"Hashes": list(hashes), "Precision": 1})])
        if "hashsum" in args:
            return runner.Result(0, [f"{SHA}  a.csv"])
        return runner.Result(0, [])

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def test_rclone_uses_copy_update_never_sync(monkeypatch, tmp_path):
    calls = fake_rclone(monkeypatch)
    listing = Listing(root="/src", files=["a.csv", "l"], sizes={"a.csv": 5, "l": 1}, links={"l"})
    t = transfer("rclone", "Box-Folder:Ramanlab-Backups/CSVs")
    conf = tmp_path / "rc.conf"
    conf.write_text("[Box-Folder]\ntype = alias\nremote = /x\n")
    t = Transfer(**{**t.__dict__, "rclone_config": str(conf)})
    result = transports.RcloneTransport().send(t, listing, None)
    lsf, copy, features, hashsum = calls  # the target's listing, the copy, then the SHA-1 of what was sent
    assert lsf[1:4] == ["--config", str(conf), "lsf"] and lsf[-1] == "Box-Folder:Ramanlab-Backups/CSVs"
    assert copy[3] == "copy" and "sync" not in copy and "--update" in copy
    assert not any(a.startswith(("--delete", "--backup-dir")) for a in copy)
    assert copy[-2:] == ["/src", "Box-Folder:Ramanlab-Backups/CSVs"]
    assert "--links" in copy and "--verbose" not in copy  # symlinks listed; no line per file
    assert result.files_sent == 2 and result.bytes_sent == 6 and result.sent == ["a.csv", "l"]
    # Box keeps SHA-1: read from the remote (no --download), for the files sent (not the link).
    assert hashsum[3:5] == ["hashsum", "SHA1"] and "--download" not in hashsum and result.sha1 == {"a.csv": SHA}


def test_rclone_reads_back_what_it_sent_where_the_remote_keeps_no_hashes(monkeypatch, tmp_path):
    """SMB through rclone keeps no hashes: the sent files are downloaded and hashed, and one whose
    copy differs from the source is named (``differ``), with no SHA-1 taken from it."""
    (tmp_path / "a.csv").write_text("hello\n")  # SHA-1 f572d396...: what the fake remote reports
    (tmp_path / "b.csv").write_text("other\n")
    calls = fake_rclone(monkeypatch, hashes=())
    listing = Listing(root=str(tmp_path), files=["a.csv", "b.csv"], sizes={"a.csv": 6, "b.csv": 6})
    result = transports.RcloneTransport().send(transfer("rclone", ":smb,host=h:share/x"), listing, None)
    hashsum = calls[-1]
    assert hashsum[1:4] == ["hashsum", "SHA1", "--download"]
    assert result.differ == ["b.csv"] and result.sha1 == {"a.csv": SHA}


def test_rsync_over_ssh_is_batch_mode_and_strict(monkeypatch):
    calls = capture(monkeypatch)
    t = Transfer("secured", "CSVs", "direct", "rsync", Source("CSVs", "/src", ("a",)), "lab@store:/data/CSVs",
                 ssh_port=2222, ssh_key="/k/id", known_hosts="/k/kh", private=True)  # fmt: skip
    transports.RsyncTransport().send(t, Listing(root="/src", files=["a"], sizes={"a": 1}), None)
    (args,) = calls
    rsh = args[args.index("--rsh") + 1]
    for part in ["BatchMode=yes", "StrictHostKeyChecking=yes", "-p 2222", "-i /k/id", 'UserKnownHostsFile="/k/kh"']:
        assert part in rsh
    assert "--chmod=go-rwx" in args and args[-1] == "lab@store:/data/CSVs/"


def test_rsync_on_smb_keeps_no_owners_or_permissions(monkeypatch, tmp_path):
    calls = capture(monkeypatch)
    t = Transfer("smb", "CSVs", "direct", "rsync", Source("CSVs", "/src", ("a",)), str(tmp_path), on_smb=True)
    transports.RsyncTransport().send(t, Listing(root="/src", files=["a"], sizes={"a": 1}), None)
    (args,) = calls
    assert "--owner" not in args and "--perms" not in args and not any("modify-window" in a for a in args)


def test_rclone_walks_matched_folders_for_large_sends(monkeypatch, tmp_path):
    """Above WALK_ABOVE files, rclone gets filter rules for the matched folders, escaped, not a file list."""
    (tmp_path / "Results/Opto").mkdir(parents=True)
    (tmp_path / "Plot[final].png").write_text("p")
    files = [f"Results/Opto/f{i}.png" for i in range(transports.WALK_ABOVE + 1)] + ["Plot[final].png"]
    listing = Listing(root=str(tmp_path), files=files, sizes=dict.fromkeys(files, 1),
                      tops=["Plot[final].png", "Results/Opto"])  # fmt: skip
    seen = {}

    def fake_run(args, log, **kw):
        flag = next((a for a in args if a.startswith("--filter-from=")), None)
        if flag:
            seen["hashsum" if "hashsum" in args else "copy"] = Path(flag.split("=", 1)[1]).read_text().split("\n")
        return runner.Result(0, [])

    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.setattr(transports.RcloneTransport, "keeps_times", lambda *a: False)
    monkeypatch.setattr(transports.RcloneTransport, "features", lambda *a: {"Hashes": ["sha1"]})
    transports.RcloneTransport().send(transfer("rclone", "Box-Folder:x"), listing, None)
    assert seen["copy"][:4] == ["+ /Plot\\[final\\].png", "+ /Plot\\[final\\].png.rclonelink", "+ /Results/Opto/**",
                                "- **"]  # fmt: skip
    # The SHA-1 of everything sent is read walking the same folders, not file by file.
    assert seen["hashsum"] == seen["copy"]


def test_a_file_where_a_destination_folder_belongs_is_named_not_called_a_full_disk():
    from backup.transports.diagnoses import diagnose

    line = 'rsync: [Receiver] mkdir "/backup/secured/CSVs" failed: File exists (17)'
    assert diagnose([line]) == (
        "something that is not a folder stands where the destination needs the folder /backup/secured/CSVs: "
        "move it aside"
    )


def test_capabilities_say_what_each_destination_can_hold(monkeypatch, tmp_path):
    share = dataclasses.replace(transfer("rsync", str(tmp_path)), on_smb=True)
    rsync = transports.RsyncTransport()
    assert (rsync.capabilities(share, None).symlinks, rsync.capabilities(share, None).case_sensitive) == (False, False)
    folder = rsync.capabilities(dataclasses.replace(share, on_smb=False), None)
    assert (folder.symlinks, folder.case_sensitive, folder.keeps_times) == (True, None, True)  # case: not asked
    assert sources.ignores_case(share, rsync, None) and not sources.ignores_case(transfer("rsync", "/d"), rsync, None)
    features = {"Hashes": ["sha1"], "Precision": 1_000_000_000, "Features": {"CaseInsensitive": True}}
    monkeypatch.setattr(transports.RcloneTransport, "features", lambda *a: features)
    box, rclone = transfer("rclone", "Box-Folder:x"), transports.RcloneTransport()
    assert rclone.capabilities(box, None) == transports.Capabilities(True, True, False, True)
    assert sources.ignores_case(box, rclone, None)
    features.update(Hashes=[], Precision=3_600_000_000_000, Features={})  # rclone: times not kept
    assert rclone.capabilities(box, None) == transports.Capabilities(False, True, True, False)
    assert not sources.ignores_case(box, rclone, None)
