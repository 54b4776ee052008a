"""One restore command: typed (backup_system.py restore) or a Snakemake job (python -m backup restore),
a restore without a source, a dataset or a folder is the same usage error, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PROJECT, Lab, env_with_venv, run_cli

USAGE = "error: restore needs --from, --dataset and --to\n"


def job(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    """The restore rule's command (workflow/rules/sync.smk), run in the project folder as Snakemake does."""
    cmd = [sys.executable, "-m", "backup", "restore", "--config", str(lab.config_path), "--run-id", "x", *args]
    env = {**env_with_venv(), "PYTHONPATH": str(PROJECT / "workflow")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=lab.workdir, timeout=60)


@pytest.mark.parametrize("empty", ["--dataset", "--to"])
def test_an_empty_dataset_or_folder_is_one_usage_error_for_the_command_and_the_job(tmp_path, empty):
    lab = Lab(tmp_path)
    (lab.workdir / "keep.txt").write_text("the project folder: never a restore target by accident")
    args = {"--from": "box", "--dataset": "CSVs", "--to": str(tmp_path / "out"), empty: ""}
    flat = [item for pair in args.items() for item in pair]
    typed = lab.cli("restore", *flat)
    as_job = job(lab, *flat)
    for result in (typed, as_job):
        assert (result.returncode, result.stderr, result.stdout) == (2, USAGE, ""), result
    assert not (tmp_path / "out").exists()


def test_the_command_without_a_folder_is_the_same_usage_error(tmp_path):
    lab = Lab(tmp_path)
    result = run_cli("restore", "--from", "box", "--dataset", "CSVs", "--config", str(lab.config_path),
                     workdir=lab.workdir)  # fmt: skip
    assert (result.returncode, result.stderr) == (2, USAGE)
