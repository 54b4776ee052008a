"""How a send is spread: rsync parts onto a share, rclone's transfers per link, datasets at once."""

from __future__ import annotations

import pytest
from backup import plan
from backup.sources import Listing
from backup.transports import base, rclone, rsync
from backup.transports.base import SendFailed, SendResult


def listing(sizes: dict[str, int]) -> Listing:
    names = sorted(sizes)
    return Listing(root="/src", files=names, sizes=dict(sizes), mtimes={n: 1 for n in names}, tops=["top"])


def test_parts_cover_every_file_once_in_name_order_and_are_about_equal():
    files = {f"d{i // 50}/f{i:04}.png": 10_000 + (i % 7) * 1000 for i in range(400)}
    parts = rsync._parts(listing(files), 8)
    assert len(parts) == 8
    joined = [name for part in parts for name in part.files]
    assert joined == sorted(files)  # each file once, a folder's files together, in order
    counts = [len(part.files) for part in parts]
    assert max(counts) - min(counts) <= 3, counts
    assert all(part.tops is None and set(part.sizes) == set(part.files) for part in parts)  # sent by --files-from


def test_few_files_are_one_part_and_keep_the_walk():
    few = listing({f"f{i}": 10 for i in range(40)})
    assert rsync._parts(few, 8) == [few]  # 40 files: not worth two rsyncs (FILES_PER_PART)
    many = listing({f"f{i:03}": 10 for i in range(100)})
    assert len(rsync._parts(many, 8)) == 100 // rsync.FILES_PER_PART
    assert rsync._parts(many, 1) == [many]


def test_a_big_file_gets_a_part_of_its_own_by_bytes():
    files = {f"a{i:03}": 1000 for i in range(99)} | {"z-big": 5_000_000_000}
    parts = rsync._parts(listing(files), 2)
    assert [p.files for p in parts] == [sorted(files)[:99], ["z-big"]]


def test_merged_results_add_up_and_a_failed_part_fails_the_whole_counting_what_was_written():
    one = SendResult(files_sent=2, bytes_sent=20, sent=["a", "b"], sha1={"a": "1", "b": "2"}, newer=["n"])
    two = SendResult(files_sent=1, bytes_sent=5, sent=["c"], sha1={"c": "3"}, vanished=["v"])
    out = base.merged([one, two])
    assert (out.files_sent, out.bytes_sent, out.sent) == (3, 25, ["a", "b", "c"])
    assert out.sha1 == {"a": "1", "b": "2", "c": "3"} and out.newer == ["n"] and out.vanished == ["v"]
    with pytest.raises(SendFailed, match="send: disk full") as failed:
        base.merged([one, SendFailed("send: disk full", 4, 40), two])
    assert (failed.value.files_sent, failed.value.bytes_sent) == (7, 65)


def transfer(target: str, **fields) -> plan.Transfer:
    return plan.Transfer("box", "CSVs", "direct", "rclone", plan.Source("CSVs", "/src", ()), target, **fields)


def test_rclone_parallelism_per_link(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[Box-Folder]\ntype = box\ntoken = {}\n\n[Stand-in]\ntype = webdav\nurl = http://127.0.0.1:1/\n")
    box = transfer("Box-Folder:Backups/CSVs", rclone_config=str(conf))
    assert rclone.speed(box) == ["--transfers=4", "--checkers=8", "--tpslimit=8"]  # Box's upload limits
    other = transfer("Stand-in:Backups/CSVs", rclone_config=str(conf))
    assert rclone.speed(other) == ["--transfers=32", "--checkers=32"]
    assert rclone.speed(transfer(":smb,host=nas,user=lab:share/x")) == ["--transfers=16", "--checkers=16"]
    unreadable = transfer("Box-Folder:Backups/CSVs", rclone_config=str(tmp_path / "encrypted.conf"))
    assert rclone.speed(unreadable) == ["--transfers=4", "--checkers=8", "--tpslimit=8"]  # Box's, to be safe
    tuned = transfer("Box-Folder:Backups/CSVs", rclone_config=str(conf), transfers=12, tps_limit=0)
    assert rclone.speed(tuned) == ["--transfers=12", "--checkers=12"]  # the config's own choice wins


def test_rclone_speed_goes_among_the_options_before_the_paths(tmp_path):
    argv = rclone.RcloneTransport().argv(transfer(":smb,host=nas:share/x"), ["copy", "--update", "--", "/s", "t:"])
    assert argv[1:] == ["copy", "--update", "--transfers=16", "--checkers=16", "--", "/s", "t:"]


def test_each_destination_is_sent_its_datasets_at_once():
    dests = {"smb": {"enabled": True, "datasets_at_once": 3}, "box": {"enabled": True}, "secured": {"enabled": True}}
    backups = {"enabled": True, "destinations": dests}
    # Across a network: 2 by default; a folder on this machine: 1 (they would compete for the disk).
    assert plan.resource_limits(backups, {"secured"}) == ["network=6", "to_smb=3", "to_box=2", "to_secured=1"]
    # Every destination on this machine: at most 2 transfers at once in all (each job is memory).
    everything = plan.resource_limits(backups, {"smb", "box", "secured"})
    assert everything == ["network=2", "to_smb=3", "to_box=1", "to_secured=1"]


def test_what_is_nearby(tmp_path, monkeypatch):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[Box-Folder]\ntype = alias\nremote = /x\n\n[Real]\ntype = box\n")
    assert rclone.RcloneTransport().nearby(transfer("Box-Folder:B/CSVs", rclone_config=str(conf)))
    assert not rclone.RcloneTransport().nearby(transfer("Real:B/CSVs", rclone_config=str(conf)))
    assert not rclone.RcloneTransport().nearby(transfer(":smb,host=nas:share/x"))
    local = plan.Transfer("smb", "CSVs", "direct", "rsync", plan.Source("CSVs", "/src", ()), str(tmp_path / "d"))
    assert rsync.RsyncTransport().nearby(local)
    assert not rsync.RsyncTransport().nearby(local.__class__(**{**local.__dict__, "require_mount": True}))
    assert not rsync.RsyncTransport().nearby(local.__class__(**{**local.__dict__, "target": "u@host:/b"}))
