"""The tests' own bound on a command (conftest.run_bounded): a hung command and everything it
started are killed with SIGKILL, even a child that ignores SIGTERM in a process group of its own
(as the CLI's Snakemake runs), so that no test waits forever."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import _session, run_bounded


def test_a_hung_command_and_all_it_started_are_killed_after_the_bound(tmp_path):
    script = "trap '' TERM; (set -m; trap '' TERM; sleep 3071 & wait) & sleep 3071 & wait"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_bounded(["bash", "-c", script], timeout=1)
    assert time.monotonic() - started < 15
    ps = subprocess.run(["ps", "-eo", "sid=,args="], capture_output=True, text=True, check=True).stdout
    assert caught.value.cmd == ["bash", "-c", script]
    assert "sleep 3071" not in ps, ps


def test_a_command_within_the_bound_gives_its_output_and_status():
    result = run_bounded(["bash", "-c", "echo out; echo err >&2; exit 3"], timeout=20)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_sessions_are_read_from_proc():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert _session(proc.pid) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert _session(proc.pid) == []
