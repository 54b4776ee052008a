"""Run records and --status: what was backed up when, from the records alone."""

from __future__ import annotations

import copy
import json
import shutil
import time

import yaml
from conftest import run_cli


def status_rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines()[2:] if line.strip()}


def test_status_with_no_runs(lab):
    result = lab.cli("--status")
    assert result.returncode == 1
    rows = status_rows(result.stdout)
    assert set(rows) == {"smb", "box", "secured"}
    assert all("never" in row and "NEVER" in row for row in rows.values())


def test_run_record_and_status_after_success(backed_up):
    lab = backed_up
    (run,) = list((lab.workdir / ".backup/runs").iterdir())
    record = json.loads((run / "run.json").read_text())
    assert record["run_id"] == run.name and record["exit_status"] == 0 and record["kind"] == "backup"
    assert record["started"] <= record["finished"]
    by_key = {(t["destination"], t["dataset"]): t for t in record["transfers"]}
    expected = {("smb", "CSVs"), ("smb", "Results"), ("box", "CSVs"), ("box", "Results"), ("secured", "CSVs")}
    assert set(by_key) == expected
    assert by_key["smb", "Results"]["files_verified"] == 28 and by_key["smb", "Results"]["status"] == "ok"
    marker = json.loads((run / "manual/box/CSVs.json").read_text())
    assert marker["run_id"] == run.name and marker["manifest"].startswith("CSVs-")
    result = lab.cli("--status")
    assert result.returncode == 0, result.stdout
    rows = status_rows(result.stdout)
    assert all(" ok" in row for row in rows.values()), result.stdout


def test_status_shows_a_newer_failure(backed_up):
    lab = backed_up
    shutil.rmtree(lab.secured / "CSVs")
    (lab.secured / "CSVs").write_text("a file where the CSVs folder was: nothing can be written into it")
    assert lab.cli().returncode == 1
    result = lab.cli("--status")
    rows = status_rows(result.stdout)
    assert "FAILING (the last run failed)" in rows["secured"] and "CSVs:" in rows["secured"], result.stdout
    assert rows["smb"].split()[-1] == "ok" and rows["box"].split()[-1] == "ok"
    assert result.returncode == 1  # a recent success elsewhere does not hide the latest failure


def test_status_flags_a_stale_success(lab):
    lab.config["backups"]["warn_after_hours"] = 0.0002  # under a second
    lab.save()
    assert lab.cli("--smb-only").returncode == 0
    time.sleep(1.5)
    result = lab.cli("--status")
    assert result.returncode == 1
    rows = status_rows(result.stdout)
    assert "OVERDUE" in rows["smb"] and "NEVER" in rows["box"]


def test_status_shows_a_failure_at_a_destination_that_never_took_a_backup(backed_up):
    """Its catalog has nothing to say (the run could not write there): this machine's record of
    the failed run is shown."""
    lab = backed_up
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "/proc/forbidden"
    lab.save()
    assert lab.cli().returncode == 1
    result = lab.cli("--status")
    rows = status_rows(result.stdout)
    assert "never" in rows["secured"] and "FAILING" in rows["secured"] and "CSVs:" in rows["secured"], result.stdout
    assert result.returncode == 1


def test_status_says_where_it_comes_from_when_a_catalog_cannot_be_read(backed_up):
    lab = backed_up
    catalog = lab.secured / ".lab-backup"
    catalog.rename(lab.secured / "catalog-aside")
    catalog.symlink_to(".lab-backup")  # a loop: reading it fails (ELOOP), as an unreadable share would
    result = lab.cli("--status")
    assert "note: secured: its catalog cannot be read" in result.stdout and "this machine's records" in result.stdout
    assert status_rows(result.stdout)["secured"].split()[-1] == "ok", result.stdout  # this machine's record
    assert result.returncode == 0


def test_status_fails_when_backups_are_switched_off(backed_up):
    """A monitor calling --status must hear that nothing is being backed up."""
    lab = backed_up
    lab.config["backups"]["enabled"] = False
    lab.save()
    result = lab.cli("--status")
    assert result.returncode == 1
    assert "backups are switched off (backups.enabled: false)" in result.stdout


def test_another_configs_runs_never_vouch_for_this_one(backed_up):
    """The demo (here: a config with other destinations) backed up from this project folder:
    --status, list and the report of the lab's config must not count its runs."""
    lab = backed_up  # backed up by the "demo": the lab's config as it is
    other = copy.deepcopy(lab.config)
    dests = other["backups"]["destinations"]
    dests["smb"].update(base_path=str(lab.root / "lab-nas"), csvs_path=str(lab.root / "lab-nas/flyTrackingData"),
                        results_path=str(lab.root / "lab-nas/Figures"))  # fmt: skip
    dests["box"]["folder"] = "Lab-Backups-Real"
    dests["secured"]["base_path"] = str(lab.root / "lab-secured")
    path = lab.root / "lab.yaml"
    path.write_text(yaml.safe_dump(other))
    result = run_cli("--status", "--config", str(path), workdir=lab.workdir)
    assert result.returncode == 1, result.stdout
    rows = status_rows(result.stdout)
    assert all("NEVER" in row and "never" in row for row in rows.values()), result.stdout
    (run_id,) = [p.name for p in (lab.workdir / ".backup/runs").iterdir()]
    listed = run_cli("list", "--config", str(path), workdir=lab.workdir)
    assert run_id not in listed.stdout and listed.stdout.startswith("No restore points."), listed.stdout
    assert listed.stdout.count("nothing was backed up there yet") == 3


def test_a_failed_post_backup_is_not_hidden_by_the_same_runs_pre_backup(lab):
    """pre committed at secured, post failed before it could write there: --status says FAILING."""
    aside = lab.root / "secured-aside"
    # The share drops during the pipeline (a file stands where it was: nothing can be written there)
    lab.config["pipeline"] = {"command": f"mv '{lab.secured}' '{aside}' && touch '{lab.secured}'"}
    lab.save()
    assert lab.cli("run").returncode == 1
    lab.secured.unlink()
    aside.rename(lab.secured)  # and is back by the time anyone looks
    result = lab.cli("--status")
    rows = status_rows(result.stdout)
    assert "FAILING" in rows["secured"], result.stdout
    assert result.returncode == 1


def test_runs_to_a_remote_of_the_same_name_in_another_rclone_config_never_vouch(backed_up):
    """The demo's Box-Folder is not the lab's: same remote name and folder, another rclone config.
    Where the lab's Box cannot be read, this machine's records of the demo's runs must not count."""
    lab = backed_up
    other = copy.deepcopy(lab.config)
    empty = lab.root / "lab-rclone.conf"
    empty.write_text("")
    other["backups"]["destinations"]["box"]["rclone_config"] = str(empty)
    path = lab.root / "lab.yaml"
    path.write_text(yaml.safe_dump(other))
    result = run_cli("--status", "--box-only", "--config", str(path), workdir=lab.workdir)
    assert result.returncode == 1, result.stdout
    assert "NEVER" in status_rows(result.stdout)["box"], result.stdout


def test_only_a_disabled_destination_is_a_usage_error(lab):
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.save()
    for args in (["--smb-only"], ["--status", "--smb-only"]):
        result = lab.cli(*args)
        assert result.returncode == 2, result.stdout
        assert result.stderr.strip().splitlines() == [
            "error: --smb-only: backups.destinations.smb is disabled (enabled: false), so nothing would be "
            "backed up; enable it, or leave out --smb-only"
        ]
    assert not lab.smb.exists()
