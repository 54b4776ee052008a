"""What each destination says about itself, and what a person can do with that alone.

The destinations here are local folders and a local rclone remote (see conftest.Lab); the
same catalog through every other transport is in test_disaster_recovery.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import Lab, SavedLab, hash_tree
from test_faults import killed_while_writing


def runs_at(folder: Path) -> list[dict]:
    """The committed run records a destination holds, oldest first (read here, not by the code)."""
    return [json.loads(p.read_text()) for p in sorted((folder / ".lab-backup/runs").glob("*.json"))]


def backed_up(lab: Lab) -> None:
    result = lab.cli()
    assert result.returncode == 0, result.stdout + result.stderr


def compressed(lab: Lab) -> None:
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.workdir / "zips")}
    lab.save()
    backed_up(lab)


@pytest.fixture(scope="module")
def saved_direct(tmp_path_factory) -> SavedLab:
    return SavedLab(tmp_path_factory.mktemp("direct"), backed_up)


@pytest.fixture(scope="module")
def saved_compressed(tmp_path_factory) -> SavedLab:
    return SavedLab(tmp_path_factory.mktemp("compressed"), compressed)


@pytest.fixture
def one_run(saved_direct) -> Lab:
    """A lab after one backup to every destination (direct copies): a fresh copy for each test."""
    return saved_direct.fresh()


@pytest.fixture
def one_compressed_run(saved_compressed) -> Lab:
    """A lab after one compressed backup to every destination (archive_dir: the workdir's zips/):
    a fresh copy for each test."""
    return saved_compressed.fresh()


def flip_one_byte(path: Path) -> None:
    """Same size, same time, one byte different: what a size-and-time check cannot see."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_sha1sum_checks_each_destination_without_this_project(one_run):
    """The catalog's checksum files are sha1sum input; their SHA-1s (rsync's %C, rclone's) are the sources'."""
    lab = one_run
    box = lab.box / "Ramanlab-Backups"
    places = {("smb", "CSVs"): lab.smb / "flyTrackingData", ("smb", "Results"): lab.smb / "Figures",
              ("box", "CSVs"): box / "CSVs", ("box", "Results"): box / "Results",
              ("secured", "CSVs"): lab.secured / "CSVs"}  # fmt: skip
    roots = {"CSVs": lab.csv_root, "Results": lab.results_root}
    bases = {"smb": lab.smb, "box": box, "secured": lab.secured}
    for (dest, dataset), folder in places.items():
        (run,) = runs_at(bases[dest])
        record = next(t for t in run["transfers"] if t["dataset"] == dataset)
        sums = bases[dest] / ".lab-backup/sums" / record["manifest"].replace(".json.gz", ".sha1")
        check = subprocess.run(["sha1sum", "-c", "--strict", str(sums)], cwd=folder, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.count(": OK") >= 6, check.stdout + check.stderr
        for line in sums.read_text().splitlines():
            digest, name = line.split("  ", 1)
            assert hashlib.sha1((roots[dataset] / name).read_bytes()).hexdigest() == digest, (dest, name)
    flip_one_byte(lab.secured / "CSVs/model_predictions.csv")
    (run,) = runs_at(lab.secured)
    sums = lab.secured / ".lab-backup/sums" / run["transfers"][0]["manifest"].replace(".json.gz", ".sha1")
    check = subprocess.run(["sha1sum", "-c", "--quiet", str(sums)], cwd=lab.secured / "CSVs", capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 1 and "model_predictions.csv: FAILED" in check.stdout


def test_a_flipped_byte_is_named_by_verify_and_by_a_rolling_sample_within_n_calls(one_run):
    lab = one_run
    flip_one_byte(lab.smb / "Figures/Results/Opto/PER-Envelopes/fig1.png")
    full = lab.cli("--verify")
    assert full.returncode == 1
    line = next(ln for ln in full.stdout.splitlines() if ln.startswith("smb") and " Results " in ln)
    assert "FAILED" in line and "Results/Opto/PER-Envelopes/fig1.png: differs from the catalog's SHA-1" in line
    assert all(" OK" in ln for ln in full.stdout.splitlines()[3:] if not ln.startswith("smb  ") or " CSVs " in ln)
    found_in, covered = None, 0
    for call in range(1, 5):  # N = 4 calls read everything: the file is named within them
        sample = lab.cli("--verify", "--sample", "4")
        row = next(ln for ln in sample.stdout.splitlines() if ln.startswith("smb") and " Results " in ln)
        covered += int(row.split()[3].split("/")[1])
        if "fig1.png" in row:
            assert sample.returncode == 1 and "FAILED" in row
            found_in = found_in or call
        else:
            assert " OK" in row
    assert found_in is not None and covered == 28  # the four slices together: every file once
    scrub = json.loads((lab.smb / ".lab-backup/scrub.json").read_text())
    assert scrub["parts"] == 4 and scrub["next"] == 0 and len(scrub["history"]) == 5
    assert scrub["full"]["files"] == 34 and any("fig1.png" in b for b in scrub["full"]["bad"])


def test_a_killed_run_is_listed_as_interrupted_and_the_next_run_commits(lab):
    pid = killed_while_writing(lab, 300)
    locks = list((lab.secured / ".lab-backup/locks").glob("*.json"))
    assert len(locks) == 1 and runs_at(lab.secured) == []  # in progress, never committed
    marker = json.loads(locks[0].read_text())
    assert marker["host"] == os.uname().nodename and marker["pid"] == pid
    listed = lab.cli("list")
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("secured"))
    assert marker["tag"] in line and "interrupted" in line and f"pid {pid}" in line
    again = lab.cli()
    assert again.returncode == 0, again.stdout
    copies = {n: h for n, h in hash_tree(lab.secured / "CSVs").items() if not n.startswith(".")}
    assert copies == lab.csv_hashes()  # (a killed rsync's hidden temporary file may stay: see README)
    (run,) = runs_at(lab.secured)
    assert run["transfers"][0]["status"] == "ok" and not list((lab.secured / ".lab-backup/locks").glob("*.json"))
    gone = json.loads((lab.secured / f".lab-backup/interrupted/{marker['tag']}.json").read_text())
    assert gone["taken_over_by"] == run["tag"]
    listed = lab.cli("list").stdout
    assert f"{marker['tag']}" in listed and "interrupted" in listed and f"{run['tag']}" in listed


def test_another_machine_writing_stops_that_destination_only_until_its_marker_is_stale(one_run):
    lab = one_run
    locks = lab.smb / ".lab-backup/locks"
    locks.mkdir(parents=True, exist_ok=True)
    now = datetime.now().astimezone()
    held = {"run_id": "20261130-090000-0001", "tag": "20261130-090000-0001", "stage": "manual",
            "host": "analysis-pc-2", "pid": 4242, "started": now.isoformat(timespec="seconds"),
            "datasets": ["CSVs"]}  # fmt: skip
    (locks / f"{held['tag']}.json").write_text(json.dumps(held))
    before = hash_tree(lab.smb)
    lab.write(lab.csv_root / "model_predictions.csv", "changed while another machine writes to smb\n")
    result = lab.cli()
    assert result.returncode == 1
    for line in (ln for ln in result.stdout.splitlines() if ln.startswith("smb ")):
        assert "FAILED" in line and "another backup is writing to smb: run 20261130-090000-0001 on host " \
            "analysis-pc-2 (pid 4242" in line, line  # fmt: skip
    assert all(" OK" in ln for ln in result.stdout.splitlines() if ln.startswith(("box ", "secured ")))
    assert hash_tree(lab.smb) == before  # nothing written there, not even a marker of its own
    held["started"] = (now - timedelta(hours=7)).isoformat(timespec="seconds")  # its run died long ago
    (locks / f"{held['tag']}.json").write_text(json.dumps(held))
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    assert (
        "took over the stale in-progress marker of run 20261130-090000-0001 on host analysis-pc-2"
        in (lab.root / "backup.log").read_text()
    )
    assert not list(locks.glob("*.json")) and (lab.smb / ".lab-backup/interrupted/20261130-090000-0001.json").exists()
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()


def test_damaged_archives_are_named_and_any_restores_from_the_next_destination(one_compressed_run, tmp_path):
    lab = one_compressed_run
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False  # 'any' then tries box, then secured
    lab.save()
    (archive,) = (lab.box / "Ramanlab-Backups/CSVs").glob("CSVs_archive_*.zip")
    good = archive.read_bytes()
    for damage, why in ((lambda: archive.write_bytes(good[: len(good) // 2]), "truncated"),
                        (lambda: flip_one_byte(archive), "one byte flipped")):  # fmt: skip
        archive.write_bytes(good)
        damage()
        out = tmp_path / f"restored-{why.split()[0]}"
        result = lab.cli("restore", "--from", "box", "--dataset", "CSVs", "--to", str(out))
        assert result.returncode == 1, (why, result.stdout, result.stderr)
        assert f"the archive {archive.name} is damaged" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not out.exists(), f"{why}: something was left under {out}"
        # box comes first for 'any': its copy is damaged, so secured's is used, and says so.
        result = lab.cli("restore", "--from", "any", "--dataset", "CSVs", "--to", str(out))
        assert result.returncode == 0, (why, result.stdout, result.stderr)
        assert "6 from secured" in result.stdout and hash_tree(out) == lab.csv_hashes()


def test_a_damaged_file_at_a_direct_destination_comes_from_the_next_one(one_run, tmp_path):
    lab = one_run
    flip_one_byte(lab.smb / "flyTrackingData/model_predictions.csv")
    result = lab.cli("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(tmp_path / "one"))
    assert result.returncode == 1 and "model_predictions.csv: smb: its bytes differ from the catalog's SHA-1" in (
        result.stderr
    )
    assert not (tmp_path / "one/model_predictions.csv").exists()  # never under its final name
    assert hash_tree(tmp_path / "one") == {n: h for n, h in lab.csv_hashes().items() if n != "model_predictions.csv"}
    result = lab.cli("restore", "--from", "any", "--dataset", "CSVs", "--to", str(tmp_path / "any"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 from smb, 1 from box" in result.stdout and hash_tree(tmp_path / "any") == lab.csv_hashes()


def test_links_that_leave_the_folder_are_named_not_made(lab, tmp_path):
    os.symlink("/etc/hostname", lab.csv_root / "host-link")
    os.symlink("model_predictions.csv", lab.csv_root / "inside-link")
    lab.config["backups"]["sources"]["CSVs"]["include"] += ["host-link", "inside-link"]
    lab.save()
    assert lab.cli().returncode == 3  # SMB (rsync onto a share) cannot hold links: a warning
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "out"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "1 symlinks not restored: they point outside" in result.stderr and "host-link" in result.stderr
    assert not os.path.lexists(tmp_path / "out/host-link")
    assert os.readlink(tmp_path / "out/inside-link") == "model_predictions.csv"


def test_status_list_and_verify_from_a_fresh_clone(one_run):
    lab = one_run
    subprocess.run(["rm", "-rf", str(lab.workdir / ".backup")], check=True)
    status = lab.cli("--status")
    assert status.returncode == 0, status.stdout
    assert all(" ok" in ln for ln in status.stdout.splitlines()[2:]), status.stdout
    listed = lab.cli("list", "--dataset", "Results")
    assert listed.returncode == 0 and len([ln for ln in listed.stdout.splitlines() if " Results " in ln]) == 2
    assert all("complete" in ln for ln in listed.stdout.splitlines()[2:])
    verify = lab.cli("--verify")
    assert verify.returncode == 0 and "28/28" in verify.stdout and "6/6" in verify.stdout, verify.stdout


def test_compressed_verify_checks_every_recorded_archive_without_local_copies(one_compressed_run):
    lab = one_compressed_run
    lab.write(lab.csv_root / "model_predictions.csv", "second state\n")
    assert lab.cli().returncode == 0
    subprocess.run(["rm", "-rf", str(lab.workdir / "zips"), str(lab.workdir / ".backup")], check=True)
    verify = lab.cli("--verify")
    assert verify.returncode == 0, verify.stdout
    row = next(ln for ln in verify.stdout.splitlines() if ln.startswith("secured"))
    assert "2/2" in row  # both archives of CSVs at secured: the first run's and the second's
    oldest = sorted((lab.secured / "backups").glob("CSVs_archive_*.zip"))[0]
    flip_one_byte(oldest)
    time.sleep(0.01)
    verify = lab.cli("--verify")
    row = next(ln for ln in verify.stdout.splitlines() if ln.startswith("secured"))
    assert verify.returncode == 1 and f"{oldest.name}: differs from the catalog's SHA-1" in row


def test_restore_uses_the_mode_the_run_recorded_not_the_current_config(one_compressed_run, tmp_path):
    lab = one_compressed_run
    archived = lab.csv_hashes()
    lab.config["backups"]["compression"] = {"enabled": False}
    lab.save()
    lab.write(lab.csv_root / "model_predictions.csv", "after switching to direct copies\n")
    assert lab.cli("--secured-only").returncode == 0
    first = runs_at(lab.secured)[0]["run_id"]
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "a"), "--run", first)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hash_tree(tmp_path / "a") == archived  # from the archive that run sent, though the config is direct now
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "b"))
    assert result.returncode == 0 and hash_tree(tmp_path / "b") == lab.csv_hashes()


def test_restore_and_verify_find_a_destination_reached_by_another_path(one_run, tmp_path):
    """A new machine mounts the same share elsewhere: the catalog says where the data is inside it."""
    lab = one_run
    moved = lab.root / "mounted-elsewhere"
    lab.secured.rename(moved)
    lab.config["backups"]["destinations"]["secured"]["base_path"] = str(moved)
    lab.save()
    subprocess.run(["rm", "-rf", str(lab.workdir / ".backup")], check=True)
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert hash_tree(tmp_path / "out") == lab.csv_hashes()
    verify = lab.cli("--verify", "--secured-only")
    assert verify.returncode == 0 and "6/6" in verify.stdout, verify.stdout


def test_a_run_without_its_source_is_no_restore_point(one_run, tmp_path):
    """The data disk was not mounted: the run fails, and the latest restore point is still the last
    real state, not an empty one (restoring "the latest" after a disaster must not give nothing)."""
    lab = one_run
    before = lab.csv_hashes()
    lab.csv_root.rename(lab.root / "unmounted")
    assert lab.cli("--secured-only").returncode == 1
    listed = lab.cli("list", "--from", "secured").stdout
    assert [ln.startswith("secured") for ln in listed.splitlines()].count(True) == 1, listed
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "out"))
    assert result.returncode == 0 and "6 of 6 files match" in result.stdout, result.stdout + result.stderr
    assert hash_tree(tmp_path / "out") == before


def forge_run(dest: Path, found, tag: str, dataset: str = "CSVs", folder: str = "CSVs") -> str:
    """A later committed run at a local destination whose manifest is ``found`` (what someone with
    write access to the destination could put there)."""
    from backup.records import TransferRecord

    cat = dest / ".lab-backup"
    (cat / "manifests" / found.name).write_bytes(found.to_bytes())
    record = TransferRecord(tag, "manual", "secured", dataset, target=str(dest / folder), folder=folder,
                            mode="direct", manifest=found.name)  # fmt: skip
    when = "2999-12-31T23:59:59+00:00"
    run = {"run_id": tag, "tag": tag, "stage": "manual", "destination": "secured", "started": when,
           "finished": when, "transfers": [record.__dict__]}  # fmt: skip
    (cat / "runs" / f"{tag}.json").write_text(json.dumps(run))
    return tag


def test_a_forged_manifest_cannot_make_restore_write_outside_the_folder(one_run, tmp_path):
    from backup.manifest import Manifest

    lab = one_run
    good = hashlib.sha1((lab.csv_root / "model_predictions.csv").read_bytes()).hexdigest()
    size = (lab.csv_root / "model_predictions.csv").stat().st_size
    escape = Manifest("CSVs", files=["../planted.csv"], sizes=[size], mtimes=[0], sha1=[good])
    forge_run(lab.secured, escape, "29991231-235958-0001")
    out = tmp_path / "box-in-a-box" / "out"
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(out))
    assert result.returncode == 1 and "names a file outside the dataset ('../planted.csv')" in result.stderr
    assert not (tmp_path / "box-in-a-box" / "planted.csv").exists() and not out.exists()
    # Links that leave the folder through other links are not made either.
    chain = Manifest("CSVs", files=["model_predictions.csv", "sub/A", "sub/up"], sizes=[size, 2, 4], mtimes=[0, 0, 0],
                     sha1=[good, "0" * 40, "0" * 40], links={"sub/A": "..", "sub/up": "A/.."})  # fmt: skip
    forge_run(lab.secured, chain, "29991231-235959-0001")
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "chain"), "--force")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "1 symlinks not restored: they point outside" in result.stderr and "sub/up" in result.stderr
    assert os.readlink(tmp_path / "chain/sub/A") == ".." and not os.path.lexists(tmp_path / "chain/sub/up")


def test_wrong_restore_requests_end_in_one_line(one_run, tmp_path):
    lab = one_run
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "x"), "--at",
                     "yesterday")  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'YYYY-MM-DD HH:MM'" in result.stderr
    lab.config["backups"]["destinations"]["smb"] = {"enabled": False}
    lab.save()
    for args in (
        ("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(tmp_path / "y")),
        ("list", "--from", "smb"),
    ):
        result = lab.cli(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "backups.destinations.smb.base_path is not set" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
