"""Restore: back up, change and delete, back up again; then every earlier state comes back,
from every destination, byte for byte (compared by hash with what the source held then)."""

from __future__ import annotations

import os
import time
import zipfile

import pytest
from conftest import Lab, hash_tree

DESTS = [("smb", "CSVs"), ("box", "CSVs"), ("secured", "CSVs"), ("smb", "Results"), ("box", "Results")]


def run_id(result) -> str:
    return result.stdout.split()[1].rstrip(":")


def three_states(lab):
    """Three runs; returns [(run id, {dataset: hashes the source held})]."""
    states = []
    for step in range(3):
        if step == 1:  # change one file, delete one, add one
            changed = lab.csv_root / "model_predictions.csv"
            changed.write_text("second analysis\n")
            later = time.time() + 10
            os.utime(changed, (later, later))
            (lab.results_root / "Results/Opto/PER-Envelopes/fig1.png").unlink()
            lab.write(lab.results_root / "Results/Opto/PER-Envelopes/new.png", b"new figure")
        if step == 2:  # change the same file again, delete a CSV
            changed = lab.csv_root / "model_predictions.csv"
            changed.write_text("third analysis, longer\n")
            later = time.time() + 20
            os.utime(changed, (later, later))
            (lab.csv_root / "all_eye_prob_coords_wide.csv").unlink()
        result = lab.cli()
        assert result.returncode in (0, 3), result.stdout
        states.append((run_id(result), {"CSVs": lab.csv_hashes(), "Results": lab.results_hashes()}))
    return states


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """One lab and its three_states, made once instead of in each test: these tests only read
    it. Restore (typed or a Snakemake target; into a new folder, refused or dry) writes nothing at
    a destination, at the sources or in the config, only the log, Snakemake's state and the
    workdir's cache of immutable catalog files."""
    lab = Lab(tmp_path_factory.mktemp("history"))
    return lab, three_states(lab)


@pytest.mark.parametrize(("dest", "dataset"), DESTS)
def test_every_earlier_state_is_restored(history, tmp_path, dest, dataset):
    lab, states = history
    for i, (run, held) in enumerate(states):
        out = tmp_path / f"restored-{i}"
        result = lab.cli("restore", "--from", dest, "--dataset", dataset, "--to", str(out), "--run", run)
        assert result.returncode == 0, result.stdout + result.stderr
        n = len(held[dataset])
        assert f"{n} of {n} files match that run's manifest" in result.stdout
        assert hash_tree(out) == held[dataset], f"state after run {i + 1}"


def test_restore_latest_by_default_and_by_time(history, tmp_path):
    lab, states = history
    result = lab.cli("restore", "--from", "secured", "--dataset", "CSVs", "--to", str(tmp_path / "latest"))
    assert result.returncode == 0 and hash_tree(tmp_path / "latest") == states[-1][1]["CSVs"]
    at = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 120))
    result = lab.cli("restore", "--from", "box", "--dataset", "CSVs", "--to", str(tmp_path / "at"), "--at", at)
    assert result.returncode == 0 and hash_tree(tmp_path / "at") == states[-1][1]["CSVs"]
    result = lab.cli("restore", "--from", "box", "--dataset", "CSVs", "--to", str(tmp_path / "x"),
                     "--at", "2001-01-01 00:00")  # fmt: skip
    assert result.returncode == 2 and "no successful backup of CSVs to box before 2001-01-01" in result.stderr


def test_restore_refuses_live_sources_and_non_empty_folders(history, tmp_path):
    lab, states = history
    before = hash_tree(lab.csv_root)
    result = lab.cli("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(lab.csv_root))
    assert result.returncode == 2 and "live source" in result.stderr
    busy = tmp_path / "busy"
    lab.write(busy / "keep.txt", "mine")
    result = lab.cli("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(busy))
    assert result.returncode == 2 and "is not empty" in result.stderr
    assert hash_tree(lab.csv_root) == before and (busy / "keep.txt").read_text() == "mine"
    result = lab.cli("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(tmp_path / "new"), "--dry-run")
    n = len(states[-1][1]["CSVs"])  # the latest run's files: 5 (one CSV was deleted before it)
    assert result.returncode == 0 and f"would restore {n} files from the current copy" in result.stdout
    assert not (tmp_path / "new").exists()


def test_restore_from_archives(lab, tmp_path):
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "zips")}
    lab.save()
    first = lab.cli()
    assert first.returncode == 0, first.stdout
    held = lab.csv_hashes()
    (lab.csv_root / "model_predictions.csv").write_text("changed\n")
    assert lab.cli().returncode == 0
    for dest in ("smb", "box", "secured"):
        out = tmp_path / dest
        result = lab.cli("restore", "--from", dest, "--dataset", "CSVs", "--to", str(out), "--run", run_id(first))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "6 of 6 files match" in result.stdout
        assert hash_tree(out) == held


def test_extraction_refuses_entries_that_escape(tmp_path):
    from backup import restore
    from backup.errors import TransferError

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.csv", "fine")
        zf.writestr("../../outside.csv", "escape")
    with pytest.raises(TransferError, match="refusing entry '../../outside.csv'"):
        restore.extract(evil, tmp_path / "out")
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "out").exists()
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/evil", "x")
    with pytest.raises(TransferError, match="refusing entry"):
        restore.extract(absolute, tmp_path / "out2")
    # A link entry is never made from the archive (links come from the catalog's manifest, and only
    # when they stay inside the folder): nothing can later be written through it.
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("innocent")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("data.csv", "fine")
    assert restore.extract(link, tmp_path / "out3") == 1
    assert not os.path.lexists(tmp_path / "out3/innocent") and (tmp_path / "out3/data.csv").read_text() == "fine"


def test_restore_as_a_snakemake_target(history, tmp_path):
    lab, states = history
    out = tmp_path / "via-snakemake"
    result = lab.snakemake("restore", "--config", "restore_from=box", "restore_dataset=Results",
                           f"restore_to={out}", f"restore_run={states[0][0]}")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert hash_tree(out) == states[0][1]["Results"]
    missing = lab.snakemake("restore")
    assert missing.returncode != 0
    assert "snakemake restore needs --config restore_from=" in missing.stdout + missing.stderr
