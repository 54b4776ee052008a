"""prune through the real servers' transports: rsync over SSH, rclone to WebDAV (Box) and to
Samba. The oldest restore point goes at each; the kept ones restore byte for byte."""

from __future__ import annotations

from test_prune import history, listed, restores, tags
from test_real_servers import use_servers


def test_prune_over_ssh_webdav_and_samba(lab, samba, webdav, sshd, monkeypatch, tmp_path):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="prune")
    lab.config["backups"]["retention"] = {"keep_last": 2}
    lab.save()
    states = history(lab, steps=3)
    ids = [run for run, _ in states]
    for folder in (smb / "flyTrackingData", box / "CSVs", secured / "CSVs"):
        assert tags(folder.with_name(folder.name + ".versions")) == set(ids[1:])  # the backups kept them all
    result = lab.cli("prune")
    assert result.returncode == 0, result.stdout + result.stderr
    for dest in ("smb", "box", "secured"):
        assert listed(lab, dest) == set(ids[1:]), dest
    # Run 2's state needs the copies run 3 moved aside; run 2's own versions folder held run 1's: gone.
    for folder in (smb / "flyTrackingData", box / "CSVs", secured / "CSVs"):
        assert tags(folder.with_name(folder.name + ".versions")) == {ids[2]}, folder
    # The kept point that needs the versions folder (the newest needs only the current copies).
    run, held = states[1]
    for dest, dataset in (("smb", "CSVs"), ("smb", "Results"), ("box", "CSVs"), ("secured", "CSVs")):
        restores(lab, tmp_path, dest, dataset, run, held[dataset])
