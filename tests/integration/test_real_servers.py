"""The CLI against real servers: SMB without a mount, Box as WebDAV, secured storage over SSH.

And what goes wrong with servers: stopped, wrong password, unknown host key.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import hash_tree


def use_servers(lab, samba, webdav, sshd, monkeypatch, folder="lab"):
    monkeypatch.setenv("SMB_PASSWORD", samba.password)
    dests = lab.config["backups"]["destinations"]
    dests["smb"] = {
        "base_path": f"smb://root@127.0.0.1:{samba.port}/share/{folder}",
        "csvs_path": f"smb://root@127.0.0.1:{samba.port}/share/{folder}/flyTrackingData",
        "results_path": f"smb://root@127.0.0.1:{samba.port}/share/{folder}/Figures",
        "transport": "rclone",
    }
    dests["box"]["rclone_config"] = str(webdav.conf)
    dests["secured"] = {
        "base_path": f"root@127.0.0.1:{lab.root}/secured-remote",
        "ssh_port": sshd.port,
        "ssh_key": str(sshd.key),
        "known_hosts": str(sshd.known_hosts),
    }
    lab.save()
    return samba.share / folder, webdav.data / "Ramanlab-Backups", lab.root / "secured-remote"


def all_output(lab, result) -> str:
    text = result.stdout + result.stderr + (lab.root / "backup.log").read_text()
    for path in lab.workdir.rglob("*"):
        if path.is_file():
            text += path.read_text(errors="replace")
    return text


def test_all_three_real_servers_in_the_seed_layout(lab, samba, webdav, sshd, monkeypatch):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch)
    token = "hc-secret-token-7f3a"  # a monitor URL holds a token: it must reach no catalog either
    lab.config["backups"]["notify"] = {"ping_url": f"http://127.0.0.1:9/ping/{token}", "timeout_seconds": 1}
    lab.save()
    result = lab.cli()
    assert result.returncode == 0, result.stdout + result.stderr
    assert hash_tree(smb / "flyTrackingData") == lab.csv_hashes()
    assert hash_tree(smb / "Figures") == lab.results_hashes()
    assert hash_tree(box / "CSVs") == lab.csv_hashes()
    assert hash_tree(box / "Results") == lab.results_hashes()
    assert hash_tree(secured / "CSVs") == lab.csv_hashes()
    # Secured storage: private to its owner.
    for path in (secured / "CSVs").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    run = next((lab.workdir / ".backup/runs").iterdir())
    record = json.loads((run / "manual/smb/Results.json").read_text())
    assert record["tool"] == "rclone" and record["files_verified"] == 28
    # The run's validated config, which its jobs read (and which all_output checks for secrets too).
    assert json.loads((run / "config.json").read_text())["config"]["backups"]["destinations"]["smb"]["base_path"]
    # Nowhere: not stdout, backup.log, markers, job logs, nor Snakemake's metadata (params included).
    assert any((lab.workdir / ".snakemake" / "metadata").iterdir())
    assert samba.password not in all_output(lab, result)
    assert webdav.password not in all_output(lab, result)
    # The SMB password was made ready for rclone once by the command line, not by every job.
    job_logs = "".join(p.read_text() for p in (lab.workdir / "logs").rglob("sync_smb_*.log"))
    assert "rclone obscure" not in job_logs and "$ " in job_logs
    # Nor at any destination: each catalog records the run with its config, without secrets.
    catalogs = "".join(p.read_bytes().decode(errors="replace") for folder in (smb, box, secured)
                       for p in (folder / ".lab-backup").rglob("*") if p.is_file() and p.suffix != ".gz")  # fmt: skip
    assert "password_env" in catalogs and "SMB_PASSWORD" in catalogs  # the variable's name is recorded
    for secret in (samba.password, webdav.password, token):
        assert secret not in catalogs and secret not in all_output(lab, result)


def test_stopped_server_fails_clearly_and_others_succeed(lab, samba, webdav, sshd, monkeypatch):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="stopped")
    webdav.stop()
    t0 = time.monotonic()
    result = lab.cli(timeout=170)
    assert result.returncode == 1
    assert time.monotonic() - t0 < 120
    box_lines = [line for line in result.stdout.splitlines() if line.startswith("box")]
    assert len(box_lines) == 2 and all("FAILED" in line for line in box_lines)
    assert "the server refused the connection" in box_lines[0]
    assert hash_tree(smb / "flyTrackingData") == lab.csv_hashes()
    assert hash_tree(secured / "CSVs") == lab.csv_hashes()
    assert "refused the connection" in (lab.root / "backup.log").read_text()


def test_wrong_passwords_fail_clearly_without_leaking(lab, samba, webdav, sshd, monkeypatch):
    use_servers(lab, samba, webdav, sshd, monkeypatch, folder="wrongpw")
    wrong_smb, wrong_box = "Wrong-smb-PW-123", "Wrong-box-PW-456"
    monkeypatch.setenv("SMB_PASSWORD", wrong_smb)
    webdav.write_conf(password=wrong_box)
    result = lab.cli("--smb-only")
    assert result.returncode == 1
    assert "the server refused the credentials" in result.stdout
    result2 = lab.cli("--box-only")
    assert result2.returncode == 1
    assert "the server refused the credentials" in result2.stdout
    text = all_output(lab, result) + result2.stdout + result2.stderr
    for secret in (wrong_smb, wrong_box, samba.password, webdav.password):
        assert secret not in text
    assert not (samba.share / "wrongpw").exists()


def test_missing_smb_password_is_a_clear_error(lab, samba, webdav, sshd, monkeypatch):
    use_servers(lab, samba, webdav, sshd, monkeypatch, folder="nopw")
    monkeypatch.delenv("SMB_PASSWORD")
    result = lab.cli("--smb-only")
    assert result.returncode == 1
    assert "no SMB password: set the environment variable that backups.destinations.smb.password_env names" in (
        result.stdout
    )


def test_unknown_ssh_host_key_is_a_clear_message_not_a_hang(lab, samba, webdav, sshd, monkeypatch, tmp_path):
    use_servers(lab, samba, webdav, sshd, monkeypatch, folder="hostkey")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    lab.config["backups"]["destinations"]["secured"]["known_hosts"] = str(empty)
    lab.save()
    t0 = time.monotonic()
    result = lab.cli("--secured-only", timeout=60)
    assert time.monotonic() - t0 < 50
    assert result.returncode == 1
    assert "SSH host key is not known" in result.stdout
    assert not (lab.root / "secured-remote").exists()


def test_dry_run_against_servers_writes_nothing(lab, samba, webdav, sshd, monkeypatch):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="dry")
    result = lab.cli("--dry-run")
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("would send 6 of 6 files") == 3
    assert not smb.exists() and not box.exists() and not Path(secured).exists()


def test_smb_mounted_with_fuse_and_smb_through_rclone_give_the_same_layout(
    lab, samba, fuse_smb, webdav, sshd, monkeypatch
):
    smb_rclone, _, _ = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="via-rclone")
    assert lab.cli("--smb-only").returncode == 0
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": "smb://127.0.0.1/share/via-fuse",
        "csvs_path": "smb://127.0.0.1/share/via-fuse/flyTrackingData",
        "results_path": "smb://127.0.0.1/share/via-fuse/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
    }
    lab.save()
    result = lab.cli("--smb-only")
    assert result.returncode == 0, result.stdout
    via_fuse = hash_tree(samba.share / "via-fuse")
    data = {n: h for n, h in via_fuse.items() if not n.startswith(".lab-backup/")}
    assert data == {n: h for n, h in hash_tree(smb_rclone).items() if not n.startswith(".lab-backup/")}
    assert len(data) == 6 + 28
    for folder in (samba.share / "via-fuse", smb_rclone):  # each with its catalog: one committed run
        assert len(list((folder / ".lab-backup/runs").glob("*.json"))) == 1


def test_full_destination_is_named_as_full(lab, samba, webdav, sshd, monkeypatch):
    """A 1 MB filesystem under the Samba share stands in for a full NAS."""
    import subprocess

    import pytest

    smb, _, _ = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="full")
    smb.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(smb)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        lab.write(lab.csv_root / "all_envelope_rows_wide.csv", b"0123456789" * 300_000)  # 3 MB
        result = lab.cli("--smb-only")
        assert result.returncode == 1
        csv_line = next(line for line in result.stdout.splitlines() if line.startswith("smb") and "CSVs" in line)
        assert "FAILED" in csv_line and "the destination is full" in csv_line, result.stdout
        # Nothing half-written under a final name.
        assert not (smb / "flyTrackingData" / "all_envelope_rows_wide.csv").exists()
    finally:
        subprocess.run(["umount", "-l", str(smb)], capture_output=True)


def test_one_ssh_login_per_job_and_no_connection_outlives_it(lab, samba, webdav, sshd, monkeypatch, request):
    """A secured-storage job talks to the server several times (its catalog, its lock, the data, the
    record): one SSH login serves them all, and the shared connection ends with the job."""
    _, _, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="logins")
    # This run's sockets in a folder of its own: other test files' jobs have masters too. A short
    # path, since a socket's path has room for about 100 bytes.
    private = Path(tempfile.mkdtemp(prefix="ssh", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(private, ignore_errors=True))
    monkeypatch.setenv("TMPDIR", str(private))
    log = sshd.root / "sshd.out"
    before = log.read_text().count("Accepted publickey")
    for attempt in range(2):  # a first backup, then one with nothing to send
        result = lab.cli("--secured-only")
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 5  # sshd writes its log line on its own time
        while log.read_text().count("Accepted publickey") < before + attempt + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.read_text().count("Accepted publickey") == before + attempt + 1
    assert hash_tree(secured / "CSVs") == lab.csv_hashes()
    assert list(private.glob("lab-backup-ssh-*")), "the jobs did not use this TMPDIR"
    # A master names itself "ssh: SOCKET [mux]"; a client still running names its ControlPath.
    masters = subprocess.run(["pgrep", "-f", f"{private}/lab-backup-ssh"], capture_output=True, text=True)
    assert masters.stdout == "", "an SSH master outlived its job"
