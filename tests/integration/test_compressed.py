"""Compressed mode end to end: archive jobs, dedup, overrides, interruption; real rsync and rclone."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT, SavedLab, env_with_venv, hash_tree

ARCHIVE = re.compile(r"^(CSVs|Results)_archive_\d{8}_\d{6}(_\d+)?\.zip$")


def compress(lab, enabled=True, **per_dest):
    lab.config["backups"]["compression"] = {"enabled": enabled, "archive_dir": str(lab.root / "zips")}
    for dest, value in per_dest.items():
        lab.config["backups"]["destinations"][dest]["use_compression"] = value
    lab.save()


def zips(folder: Path) -> dict[str, str]:
    return {n: h for n, h in hash_tree(folder).items() if n.endswith(".zip")}


def zip_contents(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: hashlib.sha256(zf.read(i)).hexdigest() for i in zf.infolist()}


def local_archive(lab, dataset: str) -> Path:
    (path,) = sorted((lab.root / "zips").glob(f"{dataset}_archive_*.zip"))
    return path


@pytest.fixture(scope="module")
def first_backup(tmp_path_factory) -> SavedLab:
    return SavedLab.after_first_backup(tmp_path_factory.mktemp("first-backup"), compress)


@pytest.fixture
def backed_up(first_backup):
    """A Lab after one backup with compression on for every destination (a copy of this module's)."""
    return first_backup.fresh()


def test_global_compression_sends_identical_verified_archives(first_backup, backed_up):
    lab, result = backed_up, first_backup.made  # its return code is asserted where it is made
    csv_zip, res_zip = local_archive(lab, "CSVs"), local_archive(lab, "Results")
    assert ARCHIVE.match(csv_zip.name) and ARCHIVE.match(res_zip.name)
    # Made once per dataset, sent to every compressed destination, identical bytes everywhere.
    h = hash_tree(lab.root / "zips")
    assert zips(lab.smb / "flyTrackingData") == {csv_zip.name: h[csv_zip.name]}
    assert zips(lab.smb / "Figures") == {res_zip.name: h[res_zip.name]}
    assert zips(lab.box / "Ramanlab-Backups/CSVs") == {csv_zip.name: h[csv_zip.name]}
    assert zips(lab.box / "Ramanlab-Backups/Results") == {res_zip.name: h[res_zip.name]}
    secured = {n: v for n, v in hash_tree(lab.secured).items() if not n.startswith(".lab-backup/")}
    assert secured == {f"backups/{csv_zip.name}": h[csv_zip.name]}
    # The content, extracted, is the source byte for byte; paths are relative to the dataset root.
    assert zip_contents(csv_zip) == lab.csv_hashes()
    assert zip_contents(res_zip) == lab.results_hashes()
    check = subprocess.run(["unzip", "-tq", str(res_zip)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    assert result.stdout.count("archive CSVs: ok") == 1 and result.stdout.count("archive Results: ok") == 1


def test_unchanged_dataset_makes_no_second_archive_and_change_makes_one(backed_up):
    lab = backed_up
    first = local_archive(lab, "CSVs")
    result = lab.cli()
    assert result.returncode == 0
    assert "unchanged, reused" in result.stdout
    assert sorted(p.name for p in (lab.root / "zips").glob("CSVs_archive_*.zip")) == [first.name]
    (lab.csv_root / "model_predictions.csv").write_text("fly,p\nfly1,0.9\n")
    assert lab.cli().returncode == 0
    archives = sorted((lab.root / "zips").glob("CSVs_archive_*.zip"))
    assert len(archives) == 2 and archives[0] == first
    assert zip_contents(archives[1]) == lab.csv_hashes()
    # Both versions are kept at the destination: nothing there is deleted.
    assert sorted(zips(lab.secured / "backups")) == [a.name for a in archives]


def test_per_destination_override_both_ways(lab):
    compress(lab, enabled=False, secured=True)
    assert lab.cli().returncode == 0
    assert list(zips(lab.secured / "backups")) == [local_archive(lab, "CSVs").name]
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()  # smb stays direct
    assert not list((lab.root / "zips").glob("Results_archive_*"))  # nobody needs a Results archive

    lab2_smb = lab.smb
    for p in sorted(lab2_smb.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    compress(lab, enabled=True, smb=False, secured=None, box=None)
    assert lab.cli().returncode == 0
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()  # smb direct despite the global switch
    assert zips(lab.box / "Ramanlab-Backups/Results")


def test_mixed_modes_and_archive_jobs_only_when_needed(lab):
    plan = lab.snakemake("--dry-run", "backup_all")
    assert "archive" not in re.findall(r"^(\w+)\s+\d+$", plan.stdout, re.M)
    compress(lab, enabled=False, box=True, secured=True)
    plan = lab.snakemake("--dry-run", "backup_all")
    counts = dict((k, int(v)) for k, v in re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M))
    assert counts["archive"] == 2 and counts["sync"] == 5  # one archive per dataset, shared
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()
    assert zips(lab.box / "Ramanlab-Backups/CSVs") == zips(lab.secured / "backups")


def test_dry_run_names_archives_and_makes_none(lab):
    compress(lab)
    result = lab.cli("--dry-run")
    assert result.returncode == 0, result.stdout
    assert re.search(r"would make .*/zips/CSVs_archive_\d{8}_\d{6}\.zip from 6 files", result.stdout)
    assert "-> Box-Folder:Ramanlab-Backups/Results (rclone, archive)" in result.stdout
    assert not (lab.root / "zips").exists() and not lab.smb.exists() and not lab.secured.exists()


def test_keep_last_prunes_local_archives_only(lab):
    compress(lab, enabled=False, secured=True)
    lab.config["backups"]["compression"]["keep_last"] = 1
    lab.save()
    for i in range(3):
        (lab.csv_root / "model_predictions.csv").write_text(f"version {i}\n")
        assert lab.cli("--secured-only").returncode == 0
    assert len(list((lab.root / "zips").glob("CSVs_archive_*.zip"))) == 1
    assert len(zips(lab.secured / "backups")) == 3


def test_killed_archive_job_leaves_no_final_archive_and_rerun_succeeds(lab):
    compress(lab, enabled=False, secured=True)
    big = lab.csv_root / "all_envelope_rows_wide.csv"
    with open(big, "wb") as fh:  # 64 MB of random digits: seconds of work for the archive job
        chunk = os.urandom(1 << 20).hex().encode()
        for _ in range(32):
            fh.write(chunk)
    cmd = [sys.executable, str(PROJECT / "scripts/backup_system.py"), "--config", str(lab.config_path),
           "--workdir", str(lab.workdir), "--secured-only"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env_with_venv(), start_new_session=True, stdout=subprocess.DEVNULL)
    zips_dir = lab.root / "zips"

    def written() -> int:  # bytes in the archive under its temporary name (it may be renamed meanwhile)
        with contextlib.suppress(FileNotFoundError):
            return sum(p.stat().st_size for p in zips_dir.glob(".*.partial"))
        return 0

    deadline = time.monotonic() + 60
    while (progress := written()) < 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # at once: the job is then still deflating the big file
    proc.wait(timeout=30)
    assert progress >= 1 << 20, "the archive job never started writing"
    assert not list(zips_dir.glob("*.zip")), "a killed archive job left a file under a final name"
    assert not (lab.secured / "backups").exists() or not zips(lab.secured / "backups")
    result = lab.cli("--secured-only", timeout=300)
    assert result.returncode == 0, result.stdout
    assert not list(zips_dir.glob(".*.partial"))
    assert zip_contents(local_archive(lab, "CSVs")) == lab.csv_hashes()
    assert zips(lab.secured / "backups") == zips(zips_dir)
