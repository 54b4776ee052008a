"""Ctrl-C, SIGINT, SIGTERM and SIGKILL of the command line: real signals to the real process tree.

Every job is stopped before the command line exits (and so before the project's lock is free),
the run is recorded as interrupted, monitors hear of a failure, and nothing outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import hash_tree
from test_faults import BIG, big_file, start_cli, wait_until, writing
from test_notify import configure


def lab_processes(lab) -> list[str]:
    """Live processes working for the lab's run: their command line or folder is the lab's (every
    process's /proc read: a wait polls it at most a few times a second)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if state != b"Z" and (str(lab.root) in cmdline or cwd.startswith(str(lab.root))):
            found.append(f"{entry.name}: {cmdline}")
    return found


def secured_only(lab, megabytes: int = 400) -> None:
    big_file(lab.csv_root / BIG, megabytes)
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.config["backups"]["destinations"]["box"]["enabled"] = False
    lab.save()


def the_run(lab) -> dict:
    (run,) = (lab.workdir / ".backup/runs").iterdir()
    return json.loads((run / "run.json").read_text())


@pytest.mark.parametrize("how", ["ctrl-c", "sigint-to-the-command"])
def test_an_interrupted_backup_stops_every_job_is_recorded_and_reported(lab, receiver, how):  # noqa: F811
    secured_only(lab)
    configure(lab, receiver.url)
    proc = start_cli(lab)
    assert wait_until(lambda: writing(lab.secured / "CSVs")), "rsync never started writing"
    # Ctrl-C: the terminal signals the foreground process group; or one process is sent SIGINT.
    (os.killpg if how == "ctrl-c" else os.kill)(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    left = lab_processes(lab)  # at the moment the command line has exited
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "Interrupted (SIGINT): every job was stopped" in out
    assert left == [], left
    assert (lab.workdir / ".backup/lock").read_text() == ""  # freed, after the jobs were gone
    record = the_run(lab)
    assert record["exit_status"] == 130
    assert [t["status"] for t in record["transfers"]] == ["interrupted"]
    assert "stopped by SIGINT" in record["transfers"][0]["error"]
    paths = [path for _, path, _ in receiver.requests]
    assert "/ping/abc-123/start" in paths and "/ping/abc-123/fail" in paths and "/alert" in paths, paths
    assert "/ping/abc-123" not in paths and "/ok" not in paths
    # The next run starts normally and completes.
    result = lab.cli(timeout=170)
    assert result.returncode == 0, result.stdout
    assert {n: h for n, h in hash_tree(lab.secured / "CSVs").items() if not n.startswith(".")} == lab.csv_hashes()


def test_sigterm_stops_the_pipeline_and_the_run(lab):
    lab.config["pipeline"] = {"command": "echo started; sleep 61.25; echo never"}
    lab.save()
    proc = start_cli(lab, "run")
    assert wait_until(lambda: any("sleep 61.25" in p for p in lab_processes(lab)), seconds=60, every=0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    left = lab_processes(lab)
    assert proc.returncode == 143, out
    assert "Traceback" not in out
    assert "Pipeline INTERRUPTED: stopped by SIGTERM" in out and "Post-pipeline backup: not run." in out
    assert left == [], left
    record = the_run(lab)
    assert record["exit_status"] == 143 and record["pipeline"]["status"] == "interrupted"
    # What finished before the signal is recorded as it was: the pre-pipeline backup is whole.
    assert {t["status"] for t in record["transfers"]} == {"ok"}


def test_nothing_outlives_a_killed_command_line(lab):
    secured_only(lab)
    proc = start_cli(lab)
    assert wait_until(lambda: writing(lab.secured / "CSVs")), "rsync never started writing"
    os.kill(proc.pid, signal.SIGKILL)  # the command line alone; its jobs are not told by anyone
    proc.communicate(timeout=30)
    t0 = time.monotonic()
    assert wait_until(lambda: not lab_processes(lab), seconds=10, every=0.1), lab_processes(lab)
    assert time.monotonic() - t0 < 5
    result = lab.cli(timeout=170)
    assert result.returncode == 0, result.stdout
    assert {n: h for n, h in hash_tree(lab.secured / "CSVs").items() if not n.startswith(".")} == lab.csv_hashes()


def test_a_terminal_that_goes_away_costs_the_output_not_the_run(lab, receiver):  # noqa: F811
    """An SSH session drops while a backup runs: its record is written and the monitor pinged."""
    configure(lab, receiver.url)
    proc = start_cli(lab)
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads any more: every write the command makes fails (EPIPE)
    assert proc.wait(timeout=120) == 0
    record = the_run(lab)
    assert record["exit_status"] == 0 and {t["status"] for t in record["transfers"]} == {"ok"}
    paths = [path for _, path, _ in receiver.requests]
    assert "/ping/abc-123" in paths and "/ok" in paths, paths


SLOW_MODULE = """
rule all:
    input:
        "{out}",

rule analyse:
    output:
        "{out}",
    shell:
        "echo partial > {{output}} && sleep 47.5 && echo done > {{output}}"
"""


def test_a_stopped_module_pipeline_does_not_block_the_next_run(lab, tmp_path):
    """Snakemake's own lock and its record of an unfinished output outlive a stopped run: the next
    run must not be refused for them (the project's lock keeps runs apart)."""
    out = tmp_path / "analysis/result.txt"
    snakefile = tmp_path / "Analysis.smk"
    snakefile.write_text(SLOW_MODULE.format(out=out))
    lab.config["pipeline"] = {"snakefile": str(snakefile), "config": {}}
    lab.save()
    proc = start_cli(lab, "run")
    assert wait_until(lambda: any("sleep 47.5" in p for p in lab_processes(lab)), seconds=60, every=0.2)
    os.kill(proc.pid, signal.SIGINT)
    out_text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out_text
    snakefile.write_text(SLOW_MODULE.format(out=out).replace("sleep 47.5 && ", ""))
    result = lab.cli("run", timeout=170)
    assert result.returncode == 0, result.stdout
    assert out.read_text() == "done\n"
