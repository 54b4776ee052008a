"""The job server (backup/jobserver.py): jobs forked from one warm process, their exit status
back to the rule, and the plain `python -m backup` when the server is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from backup.jobserver import JobServer
from conftest import PROJECT, Lab

PACKAGE = str(PROJECT / "workflow")


@pytest.fixture
def server():
    jobs = JobServer(PACKAGE)
    yield jobs
    if jobs._proc is not None:
        jobs._socket.close()  # what Snakemake's exit does: the server sees the end and leaves
        jobs._proc.wait(timeout=10)


def test_a_job_runs_forked_and_its_exit_status_comes_back(server, capfd):
    server.run(["sync", "--help"])  # exits 0, having printed its usage
    first = server._proc.pid
    assert "usage: python -m backup sync" in capfd.readouterr().out
    with pytest.raises(subprocess.CalledProcessError) as failed:
        server.run(["sync", "--no-such-option"])  # argparse: exit 2
    assert failed.value.returncode == 2
    assert "error: the following arguments are required: --config" in capfd.readouterr().err
    assert server._proc.pid == first and server._proc.poll() is None  # one server for every job


def test_a_dead_server_is_started_again_for_the_next_job(server, capfd):
    server.start()
    dead = server._proc.pid
    os.kill(dead, signal.SIGKILL)
    server._proc.wait(timeout=10)
    server.run(["sync", "--help"])
    assert "usage: python -m backup sync" in capfd.readouterr().out
    assert server._proc.pid != dead and server._proc.poll() is None


def test_a_job_runs_as_python_m_backup_when_no_server_can_be_started(server, capfd, monkeypatch):
    def cannot_start():
        raise OSError("fork: Resource temporarily unavailable")

    monkeypatch.setattr(server, "_server", cannot_start)
    server.run(["sync", "--help"])
    assert "usage: python -m backup sync" in capfd.readouterr().out
    assert server._proc is None  # no server ran it: the plain interpreter did
    with pytest.raises(subprocess.CalledProcessError) as failed:
        server.run(["sync", "--no-such-option"])
    assert failed.value.returncode == 2


def test_the_server_leaves_when_snakemake_does(server):
    server.start()
    server._socket.close()
    assert server._proc.wait(timeout=10) == 0


# Run by the pipeline job: the command lines of the processes above it (from /proc), and its TMPDIR.
ANCESTRY = (
    'python -c "import json, os, sys; pid, chain = os.getppid(), []\n'
    "for _ in range(8):\n"
    "    chain.append(open(f'/proc/{pid}/cmdline', 'rb').read().replace(bytes(1), b' ').decode().strip())\n"
    "    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
    "json.dump([chain, os.environ.get('TMPDIR')], open(sys.argv[1], 'w'))\" "
)


def test_a_runs_jobs_are_forked_from_its_job_server_with_snakemakes_tmpdir(tmp_path):
    lab = Lab(tmp_path)
    seen = tmp_path / "seen.json"
    lab.config["pipeline"] = {"command": ANCESTRY + str(seen)}
    lab.save()
    profile, tmpdir = tmp_path / "profile", tmp_path / "job-tmp"
    profile.mkdir()
    tmpdir.mkdir()
    (profile / "config.yaml").write_text(f"default-resources:\n  tmpdir: '{tmpdir}'\n")
    result = lab.cli("run", "--profile", str(profile))
    assert result.returncode == 0, result.stdout + result.stderr
    chain, job_tmpdir = json.loads(seen.read_text())
    # Above the command (and the shell that may run it): the job, a fork of the server (the same
    # command line), then the server itself, started by Snakemake (backup.engine).
    forked = [i for i, command in enumerate(chain) if "-m backup.jobserver " in command]
    assert len(forked) == 2 and forked[1] == forked[0] + 1 and forked[0] <= 1, chain
    assert "-m backup.engine" in chain[forked[1] + 1], chain
    assert not any(" -m backup pipeline" in command for command in chain), chain
    assert job_tmpdir == str(tmpdir)  # Snakemake's tmpdir resource, as shell() passed it
