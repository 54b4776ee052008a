"""What the Snakemake layer takes from the package and from Snakemake itself. The internals
relied on (snakemake.cli's parse_args/args_to_api/print_exception in backup/engine.py;
workflow.overwrite_configfiles and workflow.current_basedir in rules/common.smk) are not
Snakemake's public API: these tests fail first, and say which one, when an upgrade moves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from backup import engine, plan
from conftest import PROJECT

PROFILES = [PROJECT / "profiles" / "default", PROJECT / "profiles" / "slurm"]


def test_the_snakemake_cli_entry_points_the_engine_runs_are_there():
    from snakemake import cli

    parser, args = cli.parse_args(["--snakefile", "Snakefile", "--cores", "1", "--", "backup_all"])
    assert hasattr(args, "max_jobs_per_timespan"), "snakemake.cli args lost max_jobs_per_timespan (engine.py)"
    assert args.targets == ["backup_all"]
    assert callable(cli.args_to_api) and callable(cli.print_exception), "snakemake.cli changed (engine.py)"


def test_a_snakefile_sees_the_config_files_given_and_its_own_folder(tmp_path):
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "b.yaml").write_text("x: 2\n")
    out = tmp_path / "seen.txt"
    (tmp_path / "Snakefile").write_text(
        f"with open({str(out)!r}, 'w') as fh:\n"
        "    print([str(p) for p in workflow.overwrite_configfiles], file=fh)\n"
        "    print(workflow.current_basedir, file=fh)\n"
        "rule all:\n    output: 'x'\n    shell: 'touch {output}'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "--cores", "1", "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files, basedir = out.read_text().splitlines()
    assert files == str([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]), "workflow.overwrite_configfiles"
    assert basedir == str(tmp_path), "workflow.current_basedir"


def test_the_rules_take_destinations_stages_and_lanes_from_the_package():
    """A fourth destination needs no edit of the rules: no list of names, no lane by name."""
    rules = "".join(p.read_text() for p in (PROJECT / "workflow" / "rules").glob("*.smk"))
    for names in (plan.DESTINATIONS, plan.STAGES):
        for a, b in zip(names, names[1:], strict=False):
            assert f"{a}|{b}" not in rules, f"{a}|{b} spelled out in the rules"
    for name in plan.DESTINATIONS:
        assert plan.lane(name) not in rules, f"{plan.lane(name)} spelled out in the rules"


def test_every_profile_sizes_every_destination_lane_as_the_command_line_would():
    backups = {"enabled": True, "destinations": {name: {"enabled": True} for name in plan.DESTINATIONS}}
    expected = {k: int(v) for k, v in (item.split("=") for item in plan.resource_limits(backups))}
    for profile in PROFILES:
        settings = yaml.safe_load((profile / "config.yaml").read_text())
        assert settings["resources"] == expected, profile


def test_the_rules_run_jobs_in_threads_not_one_snakemake_process_each():
    """The rules use `run: shell(...)` (no conda env to declare); without force-use-threads each
    job would be a Snakemake process of its own."""
    assert yaml.safe_load((PROJECT / "profiles/default/config.yaml").read_text())["force-use-threads"] is True


def _imported_by_snakemake(cluster: bool) -> list[str]:
    """The executor plugins and pandas a Snakemake start imports, with or without engine.CLUSTER."""
    code = (
        "import sys\nfrom backup import engine\n"
        + ("engine.add_cluster_packages()\n" if cluster else "")
        + "from snakemake import cli\ncli.parse_args(['--cores', '1'])\n"
        "print(sorted(m for m in sys.modules if '.' not in m and m.startswith(('snakemake_executor', 'pandas'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(PROJECT / "workflow")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)  # a printed list of names


def test_only_a_run_with_a_profile_sees_the_cluster_plugins():
    """make setup-slurm installs the SLURM plugin (and pandas) apart from the venv's packages: a run
    with a profile finds it (Snakemake discovers executor plugins on Python's path), any other run
    starts Snakemake without it."""
    folder = Path(sys.prefix) / engine.CLUSTER_PACKAGES
    if not (folder / "snakemake_executor_plugin_slurm").is_dir():
        pytest.skip(f"no {folder}: make setup-slurm (which make test runs) installs it")
    assert _imported_by_snakemake(cluster=False) == []
    assert _imported_by_snakemake(cluster=True) == [
        "pandas", "snakemake_executor_plugin_slurm", "snakemake_executor_plugin_slurm_jobstep"
    ]  # fmt: skip
