"""Overlapping paths are refused before anything runs: exit 2, one line naming both keys, nothing
written anywhere (issue: a backup inside what it backs up copies itself; a source that is its own
destination is never copied; two datasets or destinations on one folder lose copies)."""

from __future__ import annotations

import pytest


def refused(lab, *keys: str) -> str:
    result = lab.cli()
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for key in keys:
        assert key in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (lab.workdir / ".backup").exists() and not (lab.root / "backup.log").exists()
    return lines[0]


def test_archives_inside_the_source_they_archive(lab):
    lab.config["backups"]["sources"]["CSVs"]["include"] = ["./"]
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.csv_root / "archives")}
    lab.save()
    line = refused(lab, "backups.compression.archive_dir", "backups.sources.CSVs.root")
    assert "inside" in line
    assert not (lab.csv_root / "archives").exists() and not lab.secured.exists()


def test_a_destination_inside_its_source(lab):
    lab.config["backups"]["sources"]["CSVs"]["include"] = ["./"]
    lab.config["backups"]["destinations"]["secured"]["base_path"] = str(lab.csv_root / "backup")
    lab.save()
    refused(lab, "backups.destinations.secured.base_path", "backups.sources.CSVs.root")
    assert not (lab.csv_root / "backup").exists()


def test_a_destination_that_is_the_source_folder_itself_even_through_a_link(lab):
    link = lab.root / "secured-link"
    link.symlink_to(lab.csv_root)  # another name for the source folder
    lab.config["backups"]["destinations"]["secured"]["base_path"] = str(link)
    lab.config["backups"]["destinations"]["secured"]["use_compression"] = False
    lab.save()
    # secured writes CSVs into BASE/CSVs, inside the source folder; BASE itself is the source folder.
    line = refused(lab, "backups.sources.CSVs.root", "backups.destinations.secured.base_path")
    assert str(lab.csv_root) in line


def test_two_datasets_in_one_folder(lab):
    lab.config["backups"]["destinations"]["smb"]["results_path"] = str(lab.smb / "flyTrackingData")
    lab.save()
    refused(lab, "backups.destinations.smb.csvs_path (for CSVs)", "backups.destinations.smb.results_path (for Results)")
    assert not lab.smb.exists()


def test_two_destinations_in_one_folder(lab):
    lab.config["backups"]["destinations"]["secured"]["base_path"] = str(lab.smb)
    lab.save()
    refused(lab, "backups.destinations.smb.base_path", "backups.destinations.secured.base_path")


@pytest.mark.parametrize("what", ["project", "log"])
def test_the_projects_own_files_inside_an_included_source(lab, what):
    if what == "project":  # the project folder (its .backup/, logs/) inside a source read whole
        lab.config["backups"]["sources"]["Results"] = {"root": str(lab.root), "include": ["./"]}
        keys = ["backups.sources.Results.root"]
    else:  # the log file inside a folder that is backed up
        lab.config["backups"]["log_file"] = str(lab.results_root / "Results/Opto/PER-Envelopes/backup.log")
        keys = ["backups.log_file", "backups.sources.Results.root"]
    lab.save()
    result = lab.cli()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and all(k in result.stderr for k in keys), result.stderr
    assert not lab.smb.exists() and not lab.secured.exists()


def test_a_source_with_folders_next_to_the_destination_is_fine(lab):
    """Only what the include patterns reach counts: a destination beside the listed files is not read."""
    lab.config["backups"]["destinations"]["secured"]["base_path"] = str(lab.csv_root / "backup")
    lab.save()
    result = lab.cli()
    assert result.returncode == 0, result.stdout + result.stderr
