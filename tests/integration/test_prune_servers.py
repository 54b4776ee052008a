"""prune through the real servers' transports: rsync over SSH, rclone to WebDAV (Box) and to
Samba. The older restore point goes at each, with the versions folder only it needed; the kept
one restores byte for byte. (Which folders a kept point needs is tested on local destinations
and by the property test: it does not depend on the transport.)"""

from __future__ import annotations

from test_prune import history, listed, restores, tags
from test_real_servers import use_servers


def test_prune_over_ssh_webdav_and_samba(lab, samba, webdav, sshd, monkeypatch, tmp_path):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="prune")
    lab.config["backups"]["retention"] = {"keep_last": 1}
    for dest in lab.config["backups"]["destinations"].values():
        dest["datasets"] = ["CSVs"]  # one dataset each: a run against the servers costs seconds
    lab.save()
    states = history(lab, steps=2)
    ids = [run for run, _ in states]
    folders = (smb / "flyTrackingData", box / "CSVs", secured / "CSVs")
    for folder in folders:
        assert tags(folder.with_name(folder.name + ".versions")) == {ids[1]}  # the backups kept it
    result = lab.cli("prune")
    assert result.returncode == 0, result.stdout + result.stderr
    for dest in ("smb", "box", "secured"):
        assert listed(lab, dest) == {ids[1]}, dest
    for folder in folders:  # it held run 1's copies only: removed through each transport
        assert tags(folder.with_name(folder.name + ".versions")) == set(), folder
    run, held = states[1]
    for dest in ("smb", "box", "secured"):
        restores(lab, tmp_path, dest, "CSVs", run, held["CSVs"])
