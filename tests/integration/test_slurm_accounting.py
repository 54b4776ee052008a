"""The analysis on a real SLURM with accounting (slurmdbd on MariaDB): the profile with the SLURM
executor plugin's default status query, `sacct`, as a cluster with accounting would use it."""

from __future__ import annotations

import json

from conftest import hash_tree
from test_slurm import PROFILE, module_pipeline


def test_with_accounting_the_default_sacct_status_path_ends_the_run(lab, slurm_accounting, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    lines = (PROFILE / "config.yaml").read_text().splitlines(keepends=True)
    assert "slurm-status-command: squeue\n" in lines
    (profile / "config.yaml").write_text("".join(x for x in lines if x != "slurm-status-command: squeue\n"))
    out = module_pipeline(lab, tmp_path, "echo made by SLURM job $SLURM_JOB_ID > {output}")
    result = lab.cli("run", "--profile", str(profile), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    # SLURM's own records: the analysis and nothing else went to the cluster, and it completed.
    assert [(state, code) for _name, state, code in slurm_accounting.accounted()] == [("COMPLETED", "0:0")]
    assert out.read_text().startswith("made by SLURM job ")
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    assert json.loads((run / "run.json").read_text())["exit_status"] == 0
    assert hash_tree(lab.smb / "Figures") == lab.results_hashes()
    assert hash_tree(lab.secured / "CSVs") == lab.csv_hashes()
