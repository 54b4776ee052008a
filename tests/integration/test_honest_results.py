"""Results that tell the truth: a missing data disk fails, each cause in its own words, counts of
what really happened, private folders. Real rsync, rclone, sshd and HTTP receiver; faults made
for real (a moved data folder, a FIFO, a file the backup's user cannot read, files appearing
while a send runs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PROJECT, env_with_venv, hash_tree
from test_notify import configure

DESTS = ("smb", "box", "secured")
HINT = "is the data disk mounted?"


def row(out: str, dest: str, dataset: str) -> str:
    """The summary table's row of (dest, dataset)."""
    found = [ln for ln in out.splitlines() if re.match(rf"^{dest}\s+{dataset}\s+(direct|archive)\s", ln)]
    assert len(found) == 1, out
    return found[0]


def counts(line: str) -> tuple[int, int]:
    sent, total = re.search(r"\s(\d+)/(\d+)\s", line).groups()
    return int(sent), int(total)


def lose_the_data_disk(lab, how: str) -> None:
    """The CSVs' root as an unmounted disk leaves it: gone, an empty mount point, or a file."""
    shutil.rmtree(lab.csv_root)
    if how == "empty":
        lab.csv_root.mkdir()
    elif how == "file":
        lab.csv_root.write_text("not a folder")


@pytest.mark.parametrize("how", ["missing", "empty", "file"])
def test_a_missing_data_disk_fails_the_dataset_at_every_destination(lab, how):
    lose_the_data_disk(lab, how)
    result = lab.cli()
    assert result.returncode == 1, result.stdout + result.stderr
    for dest in DESTS:
        line = row(result.stdout, dest, "CSVs")
        assert "FAILED" in line and str(lab.csv_root) in line and HINT in line, line
    for dest in ("smb", "box"):
        assert "OK" in row(result.stdout, dest, "Results")
    assert not (lab.secured / "CSVs").exists()
    # The dry run says so too, per destination.
    dry = lab.cli("--dry-run")
    assert dry.returncode == 1, dry.stdout
    failed = [ln for ln in dry.stdout.splitlines() if ln.strip().startswith("FAILED: source")]
    assert len(failed) == 3 and all(str(lab.csv_root) in ln and HINT in ln for ln in failed), dry.stdout


def test_a_missing_data_disk_fails_compressed_mode_too(lab):
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "archives")}
    lab.save()
    lose_the_data_disk(lab, "missing")
    result = lab.cli()
    assert result.returncode == 1, result.stdout + result.stderr
    for dest in DESTS:
        line = row(result.stdout, dest, "CSVs")
        assert "FAILED" in line and str(lab.csv_root) in line and HINT in line, line
    assert "OK" in row(result.stdout, "box", "Results")
    assert not list((lab.root / "archives").glob("CSVs_archive_*.zip"))


def test_a_missing_data_disk_sends_the_fail_ping_and_on_failure(lab, receiver):  # noqa: F811
    configure(lab, receiver.url)
    lose_the_data_disk(lab, "empty")
    result = lab.cli("--secured-only")  # secured storage receives only CSVs
    assert result.returncode == 1, result.stdout
    paths = [path for _, path, _ in receiver.requests]
    assert "/ping/abc-123/fail" in paths and "/alert" in paths, paths
    assert "/ping/abc-123" not in paths and "/ok" not in paths, paths
    (body,) = [json.loads(b) for _, p, b in receiver.requests if p == "/alert"]
    assert "manual secured/CSVs: failed:" in body["message"] and HINT in body["message"]


def test_a_missing_ssh_key_is_a_config_error_before_anything_runs(lab, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~ is expanded as the transport does
    dests = lab.config["backups"]["destinations"]
    dests["secured"] = {"enabled": True, "base_path": "backup@127.0.0.1:/data", "ssh_key": "~/.ssh/id_backup"}
    lab.save()
    result = lab.cli()
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "backups.destinations.secured.ssh_key" in line and str(tmp_path / "home/.ssh/id_backup") in line
    assert "refused" not in line and not lab.smb.exists()  # before anything ran


def run_unprivileged(lab, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user who cannot read a mode-000 file. Root reads any file (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH), so as root the whole process tree runs without those two capabilities
    (setpriv drops them from the bounding set): still the owner of the test's folders, but bound by
    file modes like any user."""
    cmd = [sys.executable, str(PROJECT / "scripts" / "backup_system.py"), *args, "--config", str(lab.config_path),
           "--workdir", str(lab.workdir)]  # fmt: skip
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or pytest.skip("setpriv (util-linux) is needed to drop root's DAC override")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env_with_venv(), cwd=lab.workdir)


@pytest.mark.parametrize("mode", ["direct", "compressed"])
def test_an_unreadable_source_file_is_skipped_and_named_and_the_rest_is_sent(lab, mode):
    """As restic: the run ends with warnings (exit 3) and holds every file it could read; the file
    is named at every destination, in every run, until someone lets the backup read it."""
    if mode == "compressed":
        lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "archives")}
        lab.save()
    unreadable = lab.csv_root / "model_predictions.csv"
    unreadable.chmod(0)
    if os.geteuid() and os.access(unreadable, os.R_OK):
        pytest.skip("this user can read a mode-000 file")
    result = run_unprivileged(lab)
    assert result.returncode == 3, result.stdout + result.stderr
    for dest in DESTS:  # rsync to a folder (smb, secured) and rclone (box)
        line = row(result.stdout, dest, "CSVs")
        assert " WARNING " in line and "cannot read, skipped (permission denied): model_predictions.csv" in line, line
        if mode == "direct":
            assert counts(line) == (5, 5), line  # the five files it could read
    if mode == "direct":
        expected = {n: h for n, h in lab.csv_hashes().items() if n != "model_predictions.csv"}
        assert hash_tree(lab.secured / "CSVs") == expected


def test_special_files_are_named_as_skipped_never_counted_as_sent(lab):
    fifo = lab.results_root / "Results/Opto/PER-Envelopes/pipe"
    os.mkfifo(fifo)
    try:
        result = lab.cli(timeout=90)
    finally:
        fifo.unlink()
    assert result.returncode == 3, result.stdout + result.stderr
    for dest in ("smb", "box"):  # rsync to a folder, rclone
        line = row(result.stdout, dest, "Results")
        assert "WARNING" in line and "Results/Opto/PER-Envelopes/pipe" in line and "skipped" in line, line
        assert counts(line) == (28, 28), line
    assert not (lab.smb / "Figures/Results/Opto/PER-Envelopes/pipe").exists()
    assert not list(lab.box.rglob("pipe*"))
    verify = lab.cli("--verify", "--smb-only")
    assert verify.returncode == 0 and "28/28" in row(verify.stdout, "smb", "Results"), verify.stdout


def test_special_files_onto_a_mounted_share_are_skipped(lab, fuse_smb, samba):
    dests = lab.config["backups"]["destinations"]
    dests["smb"] = {
        "base_path": "smb://127.0.0.1/share/specials",
        "csvs_path": "smb://127.0.0.1/share/specials/flyTrackingData",
        "results_path": "smb://127.0.0.1/share/specials/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
    }
    lab.save()
    fifo = lab.results_root / "Results/Opto/PER-Envelopes/pipe"
    os.mkfifo(fifo)
    try:
        result = lab.cli("--smb-only", timeout=90)
    finally:
        fifo.unlink()
    assert result.returncode == 3, result.stdout + result.stderr
    line = row(result.stdout, "smb", "Results")
    assert "WARNING" in line and "PER-Envelopes/pipe" in line and counts(line) == (28, 28), line
    assert "OK" in row(result.stdout, "smb", "CSVs")


def test_files_appearing_during_a_send_are_not_counted_as_sent(lab):
    """The pipeline writes figures while a backup runs: each row counts the files of its listing,
    never more sent than there are."""
    folder = lab.results_root / "Results/Opto/Weekly-Training-Envelopes"
    stop = threading.Event()

    def churn() -> None:
        deadline = time.monotonic() + 60
        for i in range(3000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            (folder / f"new-{i:04d}.png").write_bytes(b"new figure %d" % i)
            time.sleep(0.01)

    writer = threading.Thread(target=churn, daemon=True)
    writer.start()
    try:
        result = lab.cli("--smb-only", timeout=90)
    finally:
        stop.set()
        writer.join(10)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    sent, total = counts(row(result.stdout, "smb", "Results"))
    assert 28 <= sent <= total, result.stdout


def modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("where", ["folder", "ssh"])
def test_private_makes_every_folder_it_creates_0700_and_files_0600(lab, where, request):
    dests = lab.config["backups"]["destinations"]
    secured = lab.secured
    if where == "ssh":
        sshd = request.getfixturevalue("sshd")
        secured = lab.root / "secured-remote"
        dests["secured"] = {"enabled": True, "base_path": f"root@127.0.0.1:{secured}", "ssh_port": sshd.port,
                            "ssh_key": str(sshd.key), "known_hosts": str(sshd.known_hosts)}  # fmt: skip
    lab.save()
    assert lab.cli("--secured-only").returncode == 0
    time.sleep(1.1)
    (lab.csv_root / "model_predictions.csv").write_text("changed\n")  # its old copy goes to a versions folder
    dests["secured"]["use_compression"] = True  # archives go to base_path/backups/
    lab.config["backups"]["compression"] = {"archive_dir": str(lab.root / "archives")}
    lab.save()
    result = lab.cli("--secured-only")
    assert result.returncode == 0, result.stdout + result.stderr
    dests["secured"]["use_compression"] = False
    lab.save()
    result = lab.cli("--secured-only")
    assert result.returncode == 0, result.stdout + result.stderr
    found = modes(secured)
    assert "CSVs.versions" in found and "backups" in found, sorted(found)
    folders = {p: m for p, m in found.items() if (secured / p).is_dir() and not (secured / p).is_symlink()}
    files = {p: m for p, m in found.items() if (secured / p).is_file()}
    assert {p: m for p, m in folders.items() if m != 0o700} == {}
    assert {p: m for p, m in files.items() if m != 0o600} == {}
