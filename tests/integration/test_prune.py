"""prune: several backups with changes and deletions, then a retention policy. Every kept restore
point still restores byte for byte (the real restore command into a fresh folder, compared by
SHA-256 with what the source held then); the pruned runs are gone from `list`; current copies
are untouched; a dry run writes nothing; no policy removes nothing; a killed prune leaves every
kept point restorable and the next prune finishes the job. Local folders (rsync) and a local
rclone remote (box), direct and compressed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import PROJECT, VENV_BIN, SavedLab, hash_tree

BOX = "Ramanlab-Backups"


def run_id(result) -> str:
    return result.stdout.split()[1].rstrip(":")


def snapshot(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's SHA-256 and every folder under root: what "nothing was written" compares."""
    return hash_tree(root), sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def history(lab, steps: int = 4) -> list[tuple[str, dict[str, dict[str, str]]]]:
    """``steps`` backups, the source changed between them (rewritten, deleted, added); returns
    [(run id, {dataset: the SHA-256 of each file the source held})]."""
    states = []
    envelopes = lab.results_root / "Results/Opto/PER-Envelopes"
    for step in range(steps):
        later = time.time() + 10 * step
        changes = {
            1: {lab.csv_root / "model_predictions.csv": "second analysis\n", envelopes / "fig0.png": "redrawn"},
            2: {lab.csv_root / "model_predictions.csv": "third analysis, longer\n", envelopes / "new.png": "v2"},
            3: {lab.csv_root / "all_envelope_rows_wide.csv": "fly,trial\n1,2\n",
                lab.csv_root / "model_predictions.csv": "4"},
        }.get(step, {})  # fmt: skip
        if step == 1:
            (envelopes / "fig1.png").unlink()
            changes[envelopes / "new.png"] = "a new figure"
        if step == 2:
            (lab.csv_root / "all_eye_prob_coords_wide.csv").unlink()
        for path, text in changes.items():
            lab.write(path, text)
            os.utime(path, (later, later))
        result = lab.cli()
        assert result.returncode in (0, 3), result.stdout + result.stderr
        states.append((run_id(result), {"CSVs": lab.csv_hashes(), "Results": lab.results_hashes()}))
    return states


def restores(lab, tmp_path: Path, dest: str, dataset: str, run: str, held: dict[str, str]) -> None:
    out = tmp_path / f"restored-{dest}-{dataset}-{run}"
    result = lab.cli("restore", "--from", dest, "--dataset", dataset, "--to", str(out), "--run", run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hash_tree(out) == held, f"{dest} {dataset} after run {run}"


def listed(lab, dest: str) -> set[str]:
    result = lab.cli("list", "--from", dest)
    assert result.returncode == 0, result.stdout + result.stderr
    return {line.split()[1] for line in result.stdout.splitlines()[2:] if line.startswith(dest + " ")}


def tags(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_prune_keeps_every_kept_restore_point_and_removes_the_rest(lab, tmp_path):
    """smb keeps the last 2 (the global policy), box the last 1 (its own), secured everything ({})."""
    lab.config["backups"]["retention"] = {"keep_last": 2}
    lab.config["backups"]["destinations"]["box"]["retention"] = {"keep_last": 1}
    lab.config["backups"]["destinations"]["secured"]["retention"] = {}
    lab.save()
    states = history(lab)
    ids = [run for run, _ in states]
    box = lab.box / BOX
    current = {p: hash_tree(p) for p in (lab.smb / "flyTrackingData", lab.smb / "Figures", box / "CSVs",
                                         box / "Results", lab.secured / "CSVs")}  # fmt: skip
    assert tags(lab.smb / "flyTrackingData.versions") == set(ids[1:])  # a backup never removes anything

    before = snapshot(lab.root / "dest")
    dry = lab.cli("prune", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert snapshot(lab.root / "dest") == before  # a dry run writes nothing
    assert f"{ids[0]}" in dry.stdout and "would remove" in dry.stdout and "Would free" in dry.stdout
    row = {line.split()[0]: line for line in dry.stdout.splitlines() if line.startswith(("smb ", "box ", "secured "))}
    assert " 0 B " not in row["smb"] and " 0 B " not in row["box"] and " 0 B " in row["secured"]

    result = lab.cli("prune")
    assert result.returncode == 0, result.stdout + result.stderr
    assert listed(lab, "smb") == set(ids[2:]) and listed(lab, "box") == set(ids[3:])
    assert listed(lab, "secured") == set(ids)
    for dest, dataset, kept in [("smb", "CSVs", ids[2:]), ("smb", "Results", ids[2:]), ("box", "CSVs", ids[3:]),
                                ("box", "Results", ids[3:]), ("secured", "CSVs", ids)]:  # fmt: skip
        for run, held in states:
            if run in kept:
                restores(lab, tmp_path, dest, dataset, run, held[dataset])
    gone = lab.cli("restore", "--from", "smb", "--dataset", "CSVs", "--to", str(tmp_path / "gone"), "--run", ids[1])
    assert gone.returncode == 2 and f"no successful backup of CSVs to smb in run {ids[1]}" in gone.stderr
    assert {p: hash_tree(p) for p in current} == current  # current copies untouched
    # What is left is what the kept points need: the versions the last run moved aside hold run 3's state.
    assert tags(lab.smb / "flyTrackingData.versions") == {ids[3]} and tags(box / "CSVs.versions") == set()
    assert tags(lab.secured / "CSVs.versions") == set(ids[1:])
    verify = lab.cli("--verify")
    assert verify.returncode == 0, verify.stdout

    again = snapshot(lab.root / "dest")
    result = lab.cli("prune")  # nothing more to do
    assert result.returncode == 0 and snapshot(lab.root / "dest") == again, result.stdout


def test_prune_in_compressed_mode_removes_only_archives_no_kept_run_names(lab, tmp_path):
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "zips")}
    lab.config["backups"]["retention"] = {"keep_last": 2}
    lab.save()
    places = [lab.smb / "flyTrackingData", lab.box / BOX / "CSVs", lab.secured / "backups"]
    states, seen = [], []
    for text in ["first\n", "second\n", None, "fourth\n"]:
        if text is not None:
            lab.write(lab.csv_root / "model_predictions.csv", text)
        result = lab.cli()
        assert result.returncode == 0, result.stdout
        states.append((run_id(result), lab.csv_hashes()))
        seen.append({p.name for p in places[2].glob("CSVs_archive_*.zip")})
    assert seen[2] == seen[1] and len(seen[3]) == 3  # the unchanged run reuses its predecessor's archive
    first = seen[0]
    local = hash_tree(lab.root / "zips")
    result = lab.cli("prune")
    assert result.returncode == 0, result.stdout + result.stderr
    for place in places:  # the second archive stays: the third run (kept) names it too
        assert {p.name for p in place.glob("CSVs_archive_*.zip")} == seen[3] - first, place
    assert hash_tree(lab.root / "zips") == local  # local archives are compression.keep_last's business
    for dest in ("smb", "box", "secured"):
        assert listed(lab, dest) == {states[2][0], states[3][0]}
        for run, held in states[2:]:
            restores(lab, tmp_path, dest, "CSVs", run, held)


def secured_only(lab) -> None:
    for dest in ("smb", "box"):
        lab.config["backups"]["destinations"][dest]["enabled"] = False
    lab.save()


@pytest.fixture(scope="module")
def saved_two_runs(tmp_path_factory) -> SavedLab:
    """history(steps=2) to secured only, with the policy keep_last 1 (not prune_after_backup), made once."""

    def two_runs(lab):
        secured_only(lab)
        lab.config["backups"]["retention"] = {"keep_last": 1}
        lab.save()
        return history(lab, steps=2)

    return SavedLab(tmp_path_factory.mktemp("two-runs"), two_runs)


@pytest.fixture
def two_runs(saved_two_runs):
    """(lab, states): a fresh copy of saved_two_runs' lab for each test, which may change it."""
    return saved_two_runs.fresh(), saved_two_runs.made


def test_without_a_policy_prune_removes_nothing(two_runs):
    lab, _ = two_runs
    del lab.config["backups"]["retention"]
    lab.save()
    before = snapshot(lab.root / "dest")
    for args in (["prune", "--dry-run"], ["prune"]):
        result = lab.cli(*args)
        assert result.returncode == 0 and "No retention policy" in result.stdout, result.stdout + result.stderr
    assert snapshot(lab.root / "dest") == before


def test_prune_waits_for_another_machine_writing_there(two_runs):
    lab, _ = two_runs  # keep_last 1: without the other machine, prune would remove the first run
    locks = lab.secured / ".lab-backup/locks"
    held = {"run_id": "20261130-090000-0001", "tag": "20261130-090000-0001", "stage": "manual",
            "host": "analysis-pc-2", "pid": 4242, "started": datetime.now().astimezone().isoformat(),
            "datasets": ["CSVs"], "machine": "another-machine"}  # fmt: skip
    (locks / f"{held['tag']}.json").write_text(json.dumps(held))
    before = snapshot(lab.root / "dest")
    result = lab.cli("prune")
    assert result.returncode == 1 and "another backup is writing to secured: run 20261130-090000-0001" in result.stderr
    assert snapshot(lab.root / "dest") == before


def test_prune_after_backup_is_opt_in(two_runs, tmp_path):
    lab, states = two_runs  # backed up twice with keep_last 1
    assert listed(lab, "secured") == {run for run, _ in states}  # a policy alone removes nothing
    lab.config["backups"]["prune_after_backup"] = True
    lab.save()
    lab.write(lab.csv_root / "model_predictions.csv", "after\n")
    os.utime(lab.csv_root / "model_predictions.csv", (time.time() + 100, time.time() + 100))
    result = lab.cli()
    assert result.returncode == 0 and "Pruning (backups.prune_after_backup)" in result.stdout, result.stdout
    last = run_id(result)
    assert listed(lab, "secured") == {last} and tags(lab.secured / "CSVs.versions") == set()
    restores(lab, tmp_path, "secured", "CSVs", last, lab.csv_hashes())


# --- a prune killed mid-way ------------------------------------------------------------------------

SHIM = """#!/bin/bash
# rclone, except that the KILL_AT call (SUBCOMMAND:N, the Nth such call) stops forever first.
sub=""; skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in --config) skip=1;; -*) ;; *) sub="$a"; break;; esac
done
if [ -n "$KILL_AT" ] && [ "$sub" = "${KILL_AT%%:*}" ]; then
  n=$(( $(cat "$KILL_DIR/count-$sub" 2>/dev/null || echo 0) + 1 )); echo $n > "$KILL_DIR/count-$sub"
  if [ "$n" = "${KILL_AT##*:}" ]; then touch "$KILL_DIR/reached"; sleep 60; fi
fi
exec REAL "$@"
"""


def killed_prune(lab, shim: Path, kill_at: str) -> None:
    """Start prune, SIGKILL it (and its rclone) when it reaches ``kill_at``."""
    state = shim / "state"
    state.mkdir(exist_ok=True)
    for leftover in state.iterdir():
        leftover.unlink()
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "KILL_AT": kill_at,
           "KILL_DIR": str(state)}  # fmt: skip
    cmd = [sys.executable, str(PROJECT / "scripts/backup_system.py"), "prune", "--config", str(lab.config_path),
           "--workdir", str(lab.workdir)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=lab.workdir, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 60
    while not (state / "reached").exists():
        assert proc.poll() is None, f"prune ended before {kill_at}: {proc.stdout.read()}"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_prune_leaves_every_kept_point_restorable_and_the_next_one_finishes(lab, tmp_path):
    for dest in ("smb", "secured"):
        lab.config["backups"]["destinations"][dest]["enabled"] = False
    lab.config["backups"]["destinations"]["box"]["datasets"] = ["CSVs"]
    lab.config["backups"]["retention"] = {"keep_last": 2}
    lab.save()
    states = [(run, held["CSVs"]) for run, held in history(lab)]
    ids = [run for run, _ in states]
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "rclone").write_text(SHIM.replace("REAL", str(VENV_BIN / "rclone")))
    (shim / "rclone").chmod(0o755)
    versions, catalog = lab.box / BOX / "CSVs.versions", lab.box / BOX / ".lab-backup"

    def kept_restore(step: str) -> None:
        for run, held in states[2:]:
            restores(lab, tmp_path / step, "box", "CSVs", run, held)

    # 1. Killed as it is about to remove the pruned runs' records (the first write is its marker).
    killed_prune(lab, shim, "sync:2")
    assert listed(lab, "box") >= set(ids) and tags(versions) == set(ids[1:]) and list(catalog.glob("locks/*.json"))
    kept_restore("1")
    # 2. Killed at its first removal of data: the records are gone, the kept points are whole.
    killed_prune(lab, shim, "purge:1")
    assert listed(lab, "box") == set(ids[2:]) and tags(versions) == set(ids[1:])
    kept_restore("2")
    # 3. Killed at its last step (the catalog's manifests, and its marker).
    killed_prune(lab, shim, "sync:2")
    assert tags(versions) == {ids[3]} and len(list(catalog.glob("manifests/*"))) > 2
    kept_restore("3")
    # 4. Run again: it finishes the job.
    result = lab.cli("prune")
    assert result.returncode == 0, result.stdout + result.stderr
    assert listed(lab, "box") == set(ids[2:]) and tags(versions) == {ids[3]}
    assert not list(catalog.glob("locks/*.json")) and len(list(catalog.glob("manifests/*"))) == 2
    kept_restore("4")
    assert lab.cli("--verify").returncode == 0
