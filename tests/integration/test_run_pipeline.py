"""`run`: backup (pre) -> pipeline -> backup (post), with real Snakemake, rsync and rclone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from conftest import PROJECT, env_with_venv, hash_tree, run_cli

# A pipeline that adds one figure and notes when it ran.
PIPELINE = (
    f'{sys.executable} -c "import pathlib,sys; p=pathlib.Path(sys.argv[1]); '
    "p.parent.mkdir(parents=True, exist_ok=True); p.write_text('made by the pipeline')\" "
)


def run_dir(lab) -> Path:
    (run,) = list((lab.workdir / ".backup" / "runs").iterdir())
    return run


def test_run_orders_pre_pipeline_post_and_post_has_new_outputs(lab):
    new_fig = lab.results_root / "Results/Opto/PER-Envelopes/new_from_pipeline.png"
    lab.config["pipeline"] = {"command": PIPELINE + f"'{new_fig}'"}
    lab.save()
    result = lab.cli("run")
    assert result.returncode == 0, result.stdout + result.stderr
    run = run_dir(lab)
    pre = json.loads((run / "pre/smb/Results.json").read_text())
    post = json.loads((run / "post/smb/Results.json").read_text())
    pipe = json.loads((run / "pipeline.json").read_text())
    assert pre["files_total"] == 28 and post["files_total"] == 29 and post["files_sent"] == 1
    assert pre["finished"] <= pipe["started"] <= pipe["finished"] <= post["started"]
    # Every pre job finished before the pipeline started.
    for marker in run.glob("pre/*/*.json"):
        assert json.loads(marker.read_text())["finished"] <= pipe["started"]
    assert (lab.smb / "Figures/Results/Opto/PER-Envelopes/new_from_pipeline.png").read_text() == "made by the pipeline"
    assert hash_tree(lab.box / "Ramanlab-Backups/Results") == lab.results_hashes()
    assert "Backup summary (pre):" in result.stdout and "Backup summary (post):" in result.stdout


def test_failed_pre_backup_stops_the_pipeline(lab):
    marker = lab.root / "pipeline-ran"
    lab.config["pipeline"] = {"command": PIPELINE + f"'{marker}'"}
    lab.config["backups"]["destinations"]["smb"]["csvs_path"] = "smb://nas.invalid/share/x"
    lab.config["backups"]["destinations"]["smb"]["require_mount"] = True
    lab.save()
    result = lab.cli("run")
    assert result.returncode == 1
    assert not marker.exists()
    assert "pre-pipeline backup failed (smb/CSVs, smb/Results); the pipeline was not started" in result.stdout
    assert "Pipeline NOT RUN:" in result.stdout and "Post-pipeline backup: not run." in result.stdout
    assert not list(run_dir(lab).glob("post/*/*.json"))


def test_require_pre_backup_false_lets_the_pipeline_run(lab):
    marker = lab.root / "pipeline-ran"
    lab.config["pipeline"] = {"command": PIPELINE + f"'{marker}'", "require_pre_backup": False}
    lab.config["backups"]["destinations"]["smb"]["csvs_path"] = "smb://nas.invalid/share/x"
    lab.config["backups"]["destinations"]["smb"]["require_mount"] = True
    lab.save()
    result = lab.cli("run")
    assert marker.exists()
    assert result.returncode == 1  # the smb destination still failed
    assert len(list(run_dir(lab).glob("post/*/*.json"))) == 5


def test_failed_pipeline_means_no_post_backup(lab):
    lab.config["pipeline"] = {"command": "echo analysis broke >&2; exit 4"}
    lab.save()
    result = lab.cli("run")
    assert result.returncode == 1
    assert "Pipeline FAILED: pipeline command failed with exit status 4: analysis broke" in result.stdout
    assert not list(run_dir(lab).glob("post/*/*.json"))
    assert len(list(run_dir(lab).glob("pre/*/*.json"))) == 5
    assert "exit status 4" in (lab.root / "backup.log").read_text()


def test_demo_config_runs_as_shipped(tmp_path):
    """config/demo.yaml and the demo pipeline, exactly as `make demo` uses them."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(PROJECT / "config", work / "config")
    shutil.copytree(PROJECT / "scripts", work / "scripts")
    # Before the very first run there is no data to back up: a run would fail its pre-pipeline
    # backup (is the data disk mounted?), so `make demo` makes the demo's data first.
    first = run_cli("run", "--config", str(work / "config/demo.yaml"), workdir=work)
    assert first.returncode == 1 and "is the data disk mounted?" in first.stdout, first.stdout
    assert "Pipeline NOT RUN: pre-pipeline backup failed" in first.stdout
    make_demo_data(work)
    seed = run_cli("run", "--config", str(work / "config/demo.yaml"), workdir=work)
    assert seed.returncode == 0, seed.stdout
    result = run_cli("run", "--config", str(work / "config/demo.yaml"), workdir=work)
    assert result.returncode == 0, result.stdout + result.stderr
    workspace = work / "demo/workspace"
    csvs = hash_tree(workspace / "Data/Opto/Combined")
    results = hash_tree(workspace / "Results")
    assert len(csvs) == 6 and len(results) == 64 + 2  # figures + two weekly sessions
    dest = work / "demo/destinations"
    assert hash_tree(dest / "smb/flyTrackingData") == csvs
    assert hash_tree(dest / "smb/Figures/Results") == results
    assert hash_tree(dest / "box/Ramanlab-Backups/CSVs") == csvs
    assert hash_tree(dest / "box/Ramanlab-Backups/Results/Results") == results
    assert hash_tree(dest / "secured/CSVs") == csvs
    assert "demo pipeline: session 2" in (work / "demo/backup.log").read_text()
    assert "post smb/Results: ok (1 of 66 files sent, 66 verified)" in result.stdout


def make_demo_data(work: Path) -> None:
    """What `make demo` does before its first run: the demo pipeline's data, made once."""
    done = subprocess.run([sys.executable, str(work / "scripts/pipeline/run_workflows.py"), "--config",
                           str(work / "config/demo.yaml"), "--if-missing"], cwd=work, capture_output=True,
                          text=True, env=env_with_venv(), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def module_project(tmp_path):
    """A copy of the project's config and scripts, the pipeline as a Snakemake module, its data made."""
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(PROJECT / "config", work / "config")
    shutil.copytree(PROJECT / "scripts", work / "scripts")
    make_demo_data(work)
    (work / "demo/workspace/raw").mkdir(parents=True, exist_ok=True)
    (work / "demo/workspace/raw/sessions.txt").write_text("session 1\n")
    args = ["run", "--config", str(work / "config/demo.yaml"), "--config", str(work / "config/demo-snakemake.yaml")]
    return work, args


def test_snakemake_pipeline_module_runs_between_the_backups(tmp_path):
    work, args = module_project(tmp_path)
    first = run_cli(*args, workdir=work)
    assert first.returncode == 0, first.stdout
    done = work / "demo/workspace/Results/Opto/figures.done"
    run = sorted((work / ".backup/runs").iterdir())[-1]
    pre_finished = max(json.loads(p.read_text())["finished"] for p in run.glob("pre/*/*.json"))
    assert datetime.fromtimestamp(done.stat().st_mtime).astimezone().isoformat() >= pre_finished
    csvs = hash_tree(work / "demo/workspace/Data/Opto/Combined")
    assert len(csvs) == 6 and hash_tree(work / "demo/destinations/smb/flyTrackingData") == csvs
    assert "analysis_analysis" in (run / "snakemake.log").read_text()

    # Nothing new for the pipeline: its jobs do not run, and the post backup has nothing to send.
    stamp = done.stat().st_mtime_ns
    second = run_cli(*args, workdir=work)
    assert second.returncode == 0, second.stdout
    assert done.stat().st_mtime_ns == stamp
    post = [ln for ln in second.stdout.splitlines() if ln.strip().startswith("post ")]
    assert len(post) == 5 and all(" ok (0 of " in ln for ln in post), post

    # A new session: the analysis runs again and its changed output is in the post backup.
    with open(work / "demo/workspace/raw/sessions.txt", "a") as fh:
        fh.write("session 2\n")
    third = run_cli(*args, workdir=work)
    assert third.returncode == 0, third.stdout
    assert done.stat().st_mtime_ns != stamp
    predictions = hash_tree(work / "demo/workspace/Data/Opto/Combined")["model_predictions.csv"]
    assert predictions != csvs["model_predictions.csv"]
    for dest in ("smb/flyTrackingData", "box/Ramanlab-Backups/CSVs", "secured/CSVs"):
        assert hash_tree(work / "demo/destinations" / dest)["model_predictions.csv"] == predictions


def test_snakemake_pipeline_module_waits_for_a_good_pre_backup(tmp_path):
    work, args = module_project(tmp_path)
    run_cli(*args, workdir=work)
    done = work / "demo/workspace/Results/Opto/figures.done"
    done.unlink()
    with open(work / "config/demo.yaml", "a") as fh:
        fh.write("\n")
    cfg = (work / "config/demo.yaml").read_text().replace("require_mount: false", "require_mount: true")
    (work / "config/demo.yaml").write_text(cfg)
    result = run_cli(*args, workdir=work)
    assert result.returncode == 1
    assert "Pipeline NOT RUN: pre-pipeline backup failed (smb/CSVs, smb/Results)" in result.stdout
    assert not done.exists()  # no pipeline job ran


def test_run_without_a_pipeline_is_a_config_error(lab):
    result = lab.cli("run")
    assert result.returncode == 2
    assert "pipeline: `run` needs pipeline.command or pipeline.snakefile" in result.stderr
    assert not lab.smb.exists() and not (lab.workdir / ".backup").exists()


def test_the_pipelines_output_reaches_the_terminal_as_it_runs(lab):
    """`make run`: a scientist sees the analysis talk while it runs, not after (and it is logged)."""
    import time

    from test_faults import start_cli

    lab.config["pipeline"] = {"command": "echo analysis step 1 of 2; sleep 3; echo analysis step 2 of 2"}
    lab.save()
    proc = start_cli(lab, "run")
    seen: dict[str, float] = {}
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # bounded: the process ends, and the deadline below is checked
        seen.setdefault(line.rstrip("\n"), time.monotonic())
        assert time.monotonic() < deadline
    assert proc.wait(timeout=30) == 0
    first, second = seen.get("  | analysis step 1 of 2"), seen.get("  | analysis step 2 of 2")
    assert first and second, list(seen)
    assert second - first > 2  # shown as it came, not all at the end
    log = (lab.root / "backup.log").read_text()
    assert "analysis step 1 of 2" in log and "analysis step 2 of 2" in log


def test_bare_snakemake_gate_then_run_share_one_run_when_given_one_id(lab):
    """The README's route for Snakemake by hand: one BACKUP_RUN_ID for both steps, so
    `run_with_backups` finds
    the pre-pipeline backup its gate made (no second one under a new id) and the post one follows."""
    new_fig = lab.results_root / "Results/Opto/PER-Envelopes/from_bare_snakemake.png"
    lab.config["pipeline"] = {"command": PIPELINE + f"'{new_fig}'"}
    lab.save()
    env = {"BACKUP_RUN_ID": "20261201-120000-lab"}
    gate = lab.snakemake("pipeline_gate", env=env)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert not new_fig.exists()  # the gate is the pre-pipeline backup only
    records = lab.workdir / ".backup/runs/20261201-120000-lab"
    pre = {p: p.stat().st_mtime_ns for p in (records / "pre").rglob("*.json")}
    assert len(pre) == 5  # smb and box: CSVs and Results; secured: CSVs
    run = lab.snakemake("run_with_backups", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert [p.name for p in (lab.workdir / ".backup/runs").iterdir()] == ["20261201-120000-lab"]
    assert {p: p.stat().st_mtime_ns for p in (records / "pre").rglob("*.json")} == pre  # not backed up again
    assert json.loads((records / "post/smb/Results.json").read_text())["status"] == "ok"
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()  # the pipeline's figure reached the share
    old_name = lab.snakemake("--dry-run", "run", env=env)  # the target's earlier name still works
    assert old_name.returncode == 0 and "run_with_backups" not in old_name.stdout, old_name.stdout
    assert re.search(r"^run\s+1$", old_name.stdout, re.M), old_name.stdout


def test_a_run_id_of_another_shape_is_refused(lab):
    result = lab.snakemake("backup_all", env={"BACKUP_RUN_ID": "friday"})
    assert result.returncode != 0
    assert "run id 'friday' is not of the form YYYYMMDD-HHMMSS-xxxx" in result.stdout + result.stderr
    assert not (lab.smb / "flyTrackingData").exists()
