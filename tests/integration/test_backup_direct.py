"""End to end, direct mode: the CLI and the Snakemake targets with real rsync and rclone.

Every check compares destination bytes with source bytes by SHA-256 computed here,
not by anything the code under test reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest
from conftest import CSV_NAMES, TRICKY_NAMES, hash_tree


def job_count(plan_output: str, rule: str) -> int:
    """Number of jobs of a rule in Snakemake's 'Job stats' table (0 if absent)."""
    match = re.search(rf"^{rule}\s+(\d+)$", plan_output, re.M)
    return int(match.group(1)) if match else 0


def assert_seed_layout(lab, smb=True, box=True, secured=True):
    csvs, results = lab.csv_hashes(), lab.results_hashes()
    assert len(csvs) == 6 and len(results) >= 8 * 3 + len(TRICKY_NAMES)
    assert hash_tree(lab.smb / "flyTrackingData") == (csvs if smb else {})
    assert hash_tree(lab.smb / "Figures") == (results if smb else {})
    assert hash_tree(lab.box / "Ramanlab-Backups" / "CSVs") == (csvs if box else {})
    assert hash_tree(lab.box / "Ramanlab-Backups" / "Results") == (results if box else {})
    # The seed sends CSVs only to secured storage (beside them: the destination's catalog).
    current = {n: h for n, h in hash_tree(lab.secured).items() if ".versions/" not in n and ".lab-backup/" not in n}
    assert current == ({f"CSVs/{n}": h for n, h in csvs.items()} if secured else {})
    for folder, wanted in ((lab.smb, smb), (lab.box / "Ramanlab-Backups", box), (lab.secured, secured)):
        assert bool(list((folder / ".lab-backup" / "runs").glob("*.json"))) == wanted, folder


def test_backup_all_destinations_in_seed_layout(first_backup, backed_up):
    result = first_backup.made  # its return code is asserted where it is made
    assert_seed_layout(backed_up)
    for dest, dataset in [
        ("smb", "CSVs"),
        ("smb", "Results"),
        ("box", "CSVs"),
        ("box", "Results"),
        ("secured", "CSVs"),
    ]:
        assert f"manual {dest}/{dataset}: ok" in result.stdout
    assert "Backup summary:" in result.stdout
    # The summary counts what was sent: 6 CSVs, 28 result files.
    assert "6/6" in result.stdout and "28/28" in result.stdout


def test_markers_record_each_job_with_content(backed_up):
    lab = backed_up
    runs = list((lab.workdir / ".backup" / "runs").iterdir())
    assert len(runs) == 1
    markers = sorted(runs[0].glob("manual/*/*.json"))
    assert [m.relative_to(runs[0]).as_posix() for m in markers] == [
        "manual/box/CSVs.json",
        "manual/box/Results.json",
        "manual/secured/CSVs.json",
        "manual/smb/CSVs.json",
        "manual/smb/Results.json",
    ]
    record = json.loads((runs[0] / "manual/smb/CSVs.json").read_text())
    assert record["run_id"] == runs[0].name
    assert record["status"] == "ok"
    assert record["files_total"] == 6 and record["files_sent"] == 6
    assert record["bytes_sent"] == sum((lab.csv_root / n).stat().st_size for n in CSV_NAMES)
    assert record["started"] and record["finished"]


def test_second_run_contacts_destinations_again_and_repairs_them(backed_up):
    lab = backed_up
    lost = lab.box / "Ramanlab-Backups" / "CSVs" / "model_predictions.csv"
    lost.unlink()
    (lab.smb / "Figures" / "Results/Opto/PER-Envelopes/fig0.png").unlink()
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    assert_seed_layout(lab)
    assert "manual box/CSVs: ok (1 of 6 files sent, 6 verified)" in result.stdout
    assert "manual smb/Results: ok (1 of 28 files sent, 28 verified)" in result.stdout
    assert "manual secured/CSVs: ok (0 of 6 files sent, 6 verified)" in result.stdout


def test_changed_source_file_is_updated_and_previous_version_kept(backed_up):
    lab = backed_up
    changed = lab.csv_root / "model_predictions.csv"
    before = changed.read_bytes()
    changed.write_text("new analysis\n")
    future = time.time() + 5
    os.utime(changed, (future, future))
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    assert_seed_layout(lab)
    run_id = result.stdout.split()[1].rstrip(":")
    for versions in (lab.smb / "flyTrackingData.versions", lab.box / "Ramanlab-Backups/CSVs.versions",
                     lab.secured / "CSVs.versions"):  # fmt: skip
        assert hash_tree(versions) == {f"{run_id}/model_predictions.csv": hashlib.sha256(before).hexdigest()}


def test_file_deleted_at_source_stays_at_destination(backed_up):
    lab = backed_up
    gone = lab.results_root / "Results/Opto/Reaction_Matrices/fig1.png"
    kept = hash_tree(lab.smb / "Figures")["Results/Opto/Reaction_Matrices/fig1.png"]
    gone.unlink()
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    for folder in (lab.smb / "Figures", lab.box / "Ramanlab-Backups" / "Results"):
        assert hash_tree(folder)["Results/Opto/Reaction_Matrices/fig1.png"] == kept


def test_tricky_names_are_copied(backed_up):
    lab = backed_up
    for name in TRICKY_NAMES:
        rel = f"Results/Opto/PER-Envelopes/{name}"
        expected = (lab.results_root / rel).read_bytes()
        assert (lab.smb / "Figures" / rel).read_bytes() == expected
        assert (lab.box / "Ramanlab-Backups" / "Results" / rel).read_bytes() == expected


def test_dry_run_writes_nothing_anywhere(lab):
    result = lab.cli("--dry-run", "--list-files")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lab.smb.exists() and not lab.box.exists() and not lab.secured.exists()
    assert not (lab.root / "backup.log").exists()
    assert list(lab.workdir.iterdir()) == []
    # It lists the files each destination would receive, from rsync's and rclone's own dry runs.
    assert "smb CSVs -> " in result.stdout and "box Results -> Box-Folder:Ramanlab-Backups/Results" in result.stdout
    assert "would send 6 of 6 files" in result.stdout
    assert "Results/Opto/Reaction_Predictions(Strictest)/fig2.png" in result.stdout
    assert result.stdout.count("all_eye_prob_coords_wide.csv") == 3


def test_dry_run_after_backup_shows_only_changes(backed_up):
    lab = backed_up
    lab.write(lab.results_root / "Results/Opto/PER-Envelopes/new figure.png", b"new")
    result = lab.cli("--dry-run", "--smb-only")
    assert result.returncode == 0
    assert "would send 0 of 6 files" in result.stdout
    assert "would send 1 of 29 files" in result.stdout
    assert "Results/Opto/PER-Envelopes/new figure.png" in result.stdout
    assert not (lab.smb / "Figures/Results/Opto/PER-Envelopes/new figure.png").exists()


def test_each_only_flag_touches_only_its_destination(lab):
    for flag, expected in [
        ("--smb-only", dict(smb=True, box=False, secured=False)),
        ("--box-only", dict(smb=True, box=True, secured=False)),
        ("--secured-only", dict(smb=True, box=True, secured=True)),
    ]:
        result = lab.cli(flag)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_seed_layout(lab, **expected)
        dest = flag[2:-5]
        job_lines = [line.strip() for line in result.stdout.splitlines() if ": ok (" in line]
        assert job_lines and all(line.startswith(f"manual {dest}/") for line in job_lines)


def test_disabled_destination_is_skipped_and_has_no_jobs(lab):
    lab.config["backups"]["destinations"]["box"]["enabled"] = False
    lab.save()
    plan = lab.snakemake("--dry-run", "backup_all")
    assert plan.returncode == 0, plan.stderr
    assert job_count(plan.stdout, "sync") == 3
    assert "box" not in "".join(line for line in plan.stdout.splitlines() if line.startswith("    output:"))
    result = lab.cli()
    assert result.returncode == 0
    assert_seed_layout(lab, box=False)
    assert "box" not in result.stdout.split("Backup summary:")[1]


def test_backups_disabled_is_a_noop_that_says_so(lab):
    lab.config["backups"]["enabled"] = False
    lab.save()
    result = lab.cli()
    assert result.returncode == 0
    assert "backups are disabled (backups.enabled: false)" in result.stdout
    assert not lab.smb.exists() and not lab.box.exists() and not lab.secured.exists()


def test_unmounted_smb_share_fails_clearly_and_others_succeed(lab):
    lab.config["backups"]["destinations"]["smb"].update(
        base_path="smb://nas.invalid/share/cole",
        csvs_path="smb://nas.invalid/share/cole/flyTrackingData",
        results_path="smb://nas.invalid/share/cole/Figures",
        require_mount=True,
    )
    lab.save()
    result = lab.cli()
    assert result.returncode == 1, result.stdout
    assert "share //nas.invalid/share is not mounted" in result.stdout
    assert "FAILED" in result.stdout
    assert not lab.smb.exists()
    assert_seed_layout(lab, smb=False)
    log = (lab.root / "backup.log").read_text()
    assert "share //nas.invalid/share is not mounted" in log


def test_require_mount_refuses_a_plain_local_folder(lab):
    lab.config["backups"]["destinations"]["smb"]["require_mount"] = True
    lab.smb.mkdir(parents=True)  # an empty "mount point" on the local disk
    lab.save()
    result = lab.cli("--smb-only")
    assert result.returncode == 1
    assert "not a mounted share" in result.stdout
    assert list(lab.smb.iterdir()) == []


def test_snakemake_targets_and_job_count_independent_of_file_count(lab):
    plan = lab.snakemake("--dry-run", "backup_all")
    assert job_count(plan.stdout, "sync") == 5, plan.stdout
    for i in range(200):
        lab.write(lab.results_root / f"Results/Opto/PER-Envelopes/extra{i}.png", b"x")
    plan = lab.snakemake("--dry-run", "backup_all")
    assert job_count(plan.stdout, "sync") == 5

    result = lab.snakemake("sync_box")
    assert result.returncode == 0, result.stderr
    assert not lab.smb.exists() and not lab.secured.exists()
    assert hash_tree(lab.box / "Ramanlab-Backups" / "Results") == lab.results_hashes()
    assert "Backup summary" in result.stdout

    result = lab.snakemake("backup_all")
    assert result.returncode == 0, result.stderr
    assert_seed_layout(lab)


def test_snakemake_target_fails_when_a_destination_fails(lab):
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "/proc/forbidden"
    lab.save()
    result = lab.snakemake("backup_all")
    assert result.returncode != 0
    assert hash_tree(lab.smb / "flyTrackingData") == lab.csv_hashes()
    out = result.stdout + result.stderr
    assert "secured" in out and "FAILED" in out


def test_missing_source_is_named_and_ends_with_warning(lab):
    (lab.csv_root / "model_predictions.csv").unlink()
    result = lab.cli("--secured-only")
    assert result.returncode == 3, result.stdout
    assert "missing: model_predictions.csv" in result.stdout
    assert "source not found" in (lab.root / "backup.log").read_text()
    assert len(hash_tree(lab.secured / "CSVs")) == 5


def test_log_is_appended_and_timestamped(backed_up):
    lab = backed_up
    first = (lab.root / "backup.log").read_text()  # the first backup's
    assert first
    assert lab.cli("--secured-only").returncode == 0
    second = (lab.root / "backup.log").read_text()
    assert second.startswith(first) and len(second) > len(first)
    lines = second.splitlines()
    assert all(line[:4].isdigit() and line[4] == "-" for line in lines if not line.startswith(" "))
    assert any("$ " in line and "rsync" in line for line in lines)


def test_help_documents_commands_flags_and_exit_status(lab):
    result = lab.cli("--help")
    assert result.returncode == 0
    for text in ["--dry-run", "--smb-only", "--box-only", "--secured-only", "--config", "exit status", "run "]:
        assert text in result.stdout


def test_unknown_rclone_remote_is_a_clear_failure(lab):
    lab.config["backups"]["destinations"]["box"]["remote"] = "No-Such-Remote"
    lab.save()
    result = lab.cli("--box-only")
    assert result.returncode == 2
    assert "backups.destinations.box.remote: rclone remote 'No-Such-Remote' is not configured" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (lab.workdir / ".backup").exists()  # stopped before any job


def test_relative_paths_are_relative_to_workdir(lab, tmp_path):
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "relative/secured"
    lab.save()
    assert lab.cli("--secured-only").returncode == 0
    assert hash_tree(Path(lab.workdir, "relative/secured/CSVs")) == {n: h for n, h in lab.csv_hashes().items()}


def test_symlinks_are_copied_as_links_never_followed(lab):
    link = lab.results_root / "Results/Opto/PER-Envelopes/outside.png"
    os.symlink("/etc/hostname", link)
    lab.config["backups"]["destinations"]["secured"]["datasets"] = ["CSVs", "Results"]
    lab.save()
    result = lab.cli()
    assert result.returncode == 3, result.stdout  # SMB cannot hold the link: a warning, named
    smb_line = next(ln for ln in result.stdout.splitlines() if ln.startswith("smb") and "Results" in ln)
    assert "WARNING" in smb_line and "1 symlinks not copied" in smb_line
    copied = lab.secured / "Results/Results/Opto/PER-Envelopes/outside.png"
    assert copied.is_symlink() and os.readlink(copied) == "/etc/hostname"  # a link, not /etc/hostname's bytes
    # rclone --links stores NAME.rclonelink on cloud remotes; this local stand-in turns it back into a link.
    box_link = lab.box / "Ramanlab-Backups/Results/Results/Opto/PER-Envelopes/outside.png"
    assert box_link.is_symlink() and os.readlink(box_link) == "/etc/hostname"
    assert not (lab.smb / "Figures/Results/Opto/PER-Envelopes/outside.png").exists()
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["smb"].update(enabeld=True), "backups.destinations.smb.enabeld", "unknown key"),
        (lambda d: d["box"].update(enabled="yes"), "backups.destinations.box.enabled", "must be boolean"),
        (lambda d: d["secured"].pop("base_path"), "backups.destinations.secured.base_path", "is required"),
        (lambda d: d["smb"].update(csvs_path="smb://"), "backups.destinations.smb.csvs_path",
         "the URL is not an smb://"),
        (lambda d: d["secured"].update(base_path="store:relative/dir"), "backups.destinations.secured.base_path",
         "needs an absolute path"),
        (lambda d: d["secured"].update(datasets=[]), "backups.destinations.secured.datasets", "must not be empty"),
        (lambda d: d["box"].update(datasets=["Figures"]), "backups.destinations.box.datasets",
         "'Figures' is not a source"),
    ],
)  # fmt: skip
def test_every_config_error_stops_before_any_job(lab, change, key, words):
    """Exit status 2, one line naming the config file, the key and what is wrong with it."""
    change(lab.config["backups"]["destinations"])
    lab.save()
    result = lab.cli()
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(lab.config_path) in lines[0] and f"{key}: {words}" in lines[0], lines
    assert not (lab.workdir / ".backup").exists() and not lab.smb.exists() and not lab.secured.exists()


def test_verify_flag_checks_without_sending(backed_up):
    lab = backed_up
    result = lab.cli("--verify")
    assert result.returncode == 0, result.stdout
    assert "Verification against each destination's catalog (everything" in result.stdout
    assert "28/28" in result.stdout
    bad = lab.box / "Ramanlab-Backups/CSVs/model_predictions.csv"
    bad.write_bytes(bad.read_bytes()[:-1] + b"X")
    (lab.smb / "Figures/Results/Opto/PER-Envelopes/fig2.png").unlink()

    def data():  # everything but the record of checks each destination keeps (scrub.json)
        return {n: h for n, h in hash_tree(lab.root / "dest").items() if not n.endswith(".lab-backup/scrub.json")}

    before = data()
    result = lab.cli("--verify")
    assert result.returncode == 1
    box = next(ln for ln in result.stdout.splitlines() if ln.startswith("box") and "CSVs" in ln)
    smb = next(ln for ln in result.stdout.splitlines() if ln.startswith("smb") and "Results" in ln)
    assert "FAILED" in box and "(e.g. model_predictions.csv: differs from the catalog's SHA-1)" in box
    assert "FAILED" in smb and "(e.g. Results/Opto/PER-Envelopes/fig2.png: missing)" in smb
    assert data() == before  # nothing was sent or repaired


def newest_run(lab) -> str:
    return sorted(p.name for p in (lab.workdir / ".backup/runs").iterdir())[-1]


@pytest.mark.parametrize("how", ["edited at the destination", "an older copy put back at the source"])
def test_a_newer_dated_copy_at_a_destination_is_replaced_by_the_source_and_kept(backed_up, how):
    """The source is the truth for content (rsync to SMB and secured, rclone to Box): its file
    replaces a newer-dated copy, which is kept in the run's versions folder; a warning names it."""
    lab = backed_up
    copies = {
        "smb": lab.smb / "flyTrackingData",
        "box": lab.box / "Ramanlab-Backups/CSVs",
        "secured": lab.secured / "CSVs",
    }
    source = lab.csv_root / "model_predictions.csv"
    if how == "edited at the destination":
        later = time.time() + 3600
        for folder in copies.values():
            (folder / source.name).write_bytes(b"edited in the backup copy\n")
            os.utime(folder / source.name, (later, later))
        kept = b"edited in the backup copy\n"
    else:  # cp -p of last year's file: other content, an older date than the copies hold
        kept = source.read_bytes()
        source.write_bytes(b"fly,p\nfly1,0.25\n")
        earlier = time.time() - 365 * 86400
        os.utime(source, (earlier, earlier))
    result = lab.cli()
    assert result.returncode == 3, result.stdout
    run_id = newest_run(lab)
    for dest, folder in copies.items():
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(dest) and " CSVs " in ln)
        assert "WARNING" in line and f"the copy at {dest} of model_predictions.csv had a newer date" in line, line
        assert f"kept as version {run_id}" in line, line
        assert hash_tree(folder) == lab.csv_hashes()  # the source's content, every file
        versions = Path(f"{folder}.versions") / run_id
        assert (versions / source.name).read_bytes() == kept  # nothing lost
    again = lab.cli()
    assert again.returncode == 0, again.stdout  # and no failure on every later run


def test_names_that_look_like_secrets_are_backed_up_and_found_unchanged(lab):
    """A file called monkey=1.png must not be masked out of rclone's listing of the target."""
    lab.write(lab.results_root / "Results/Opto/PER-Envelopes/monkey=1.png", b"not a secret")
    assert lab.cli().returncode == 0
    assert_seed_layout(lab)
    again = lab.cli()
    assert again.returncode == 0, again.stdout
    assert re.search(r"manual box/Results: ok \(0 of \d+ files sent", again.stdout), again.stdout
