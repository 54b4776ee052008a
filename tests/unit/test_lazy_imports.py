"""A quick command loads neither Snakemake nor zlib-ng: each import is checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import PROJECT, Lab

HEAVY = ("backup.archive", "zlib_ng", "snakemake", "apprise")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (the workflow package importable)."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=PROJECT / "workflow")  # fmt: skip
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_command_line_and_the_lock_do_not_load_the_archive_writer():
    loaded = loaded_after("import backup.cli, backup.lock")
    assert not loaded & set(HEAVY)


def test_status_list_and_report_load_no_snakemake_zlib_ng_or_unused_transport(tmp_path):
    lab = Lab(tmp_path)
    lab.config["backups"]["destinations"]["box"]["enabled"] = False  # rsync's destinations only: rclone unused
    lab.save()
    common = ["--config", str(lab.config_path), "--workdir", str(lab.workdir)]
    for args in (["--status"], ["list"], ["--report", str(tmp_path / "report.html")]):
        loaded = loaded_after(f"from backup import cli\ncli.main({[*args, *common]!r})")
        assert not loaded & {*HEAVY, "backup.transports.rclone"}, args
