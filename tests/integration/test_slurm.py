"""The analysis on a real single-node SLURM (tests/servers.Slurm): its job goes to SLURM, every
backup job stays on this machine. Without accounting, with the profile's `squeue` status
command; and with accounting (slurmdbd on MariaDB), with the plugin's default, `sacct`."""

from __future__ import annotations

import json

import pytest
from conftest import PROJECT, hash_tree

PROFILE = PROJECT / "profiles" / "slurm"


def module_pipeline(lab, tmp_path, shell: str):
    """A pipeline that is a Snakemake workflow of one job, included as a module."""
    out = lab.results_root / "Results/Opto/PER-Envelopes/from_slurm.txt"
    snakefile = tmp_path / "analysis" / "Snakefile"
    snakefile.parent.mkdir()
    snakefile.write_text(f'rule all:\n    input: "{out}"\n\nrule analysis:\n    output: "{out}"\n'
                         f'    shell: "{shell}"\n')  # fmt: skip
    lab.config["pipeline"] = {"snakefile": str(snakefile), "config": {}}
    lab.save()
    return out


def test_the_analysis_runs_on_slurm_and_the_backups_here(lab, slurm, tmp_path):
    out = module_pipeline(lab, tmp_path, "echo made by SLURM job $SLURM_JOB_ID > {output}")
    before = slurm.submitted()
    result = lab.cli("run", "--profile", str(PROFILE), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert slurm.submitted() == before + 1  # the analysis job, and no backup job
    assert slurm.completed()[-1] == "0"
    assert out.read_text().startswith("made by SLURM job ")
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert json.loads((run / "run.json").read_text())["exit_status"] == 0
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()  # the post backup holds the job's output
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()


def test_a_failed_analysis_job_on_slurm_fails_the_run_without_the_post_backup(lab, slurm, tmp_path):
    module_pipeline(lab, tmp_path, "echo the analysis broke >&2; exit 1")
    before = slurm.submitted()
    result = lab.cli("run", "--profile", str(PROFILE), timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Pipeline FAILED" in result.stdout and "Post-pipeline backup: not run." in result.stdout
    assert slurm.submitted() == before + 1 and slurm.completed()[-1] == "1"
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert not (run / "post").exists()


@pytest.mark.parametrize("slurm", [True], indirect=True)
def test_with_accounting_the_default_sacct_status_path_ends_the_run(lab, slurm, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    lines = (PROFILE / "config.yaml").read_text().splitlines(keepends=True)
    assert "slurm-status-command: squeue\n" in lines
    (profile / "config.yaml").write_text("".join(x for x in lines if x != "slurm-status-command: squeue\n"))
    out = module_pipeline(lab, tmp_path, "echo made by SLURM job $SLURM_JOB_ID > {output}")
    result = lab.cli("run", "--profile", str(profile), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    # SLURM's own records: the analysis and nothing else went to the cluster, and it completed, its
    # time limit the profile's runtime (120, in minutes): not 2 minutes, as Snakemake 9.16.3 made of
    # it (snakemake#4039), which would have SLURM kill a real analysis.
    assert [row[1:] for row in slurm.accounted()] == [("COMPLETED", "0:0", "02:00:00")]
    assert out.read_text().startswith("made by SLURM job ")
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert json.loads((run / "run.json").read_text())["exit_status"] == 0
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()
