"""The command line's side of the Snakemake child (engine.py is the child's side).

The child is ``python -m backup.engine --wait``: it imports Snakemake at once, then reads one
JSON line on its standard input, ``{"argv": [...], "env": {...}}``, and runs Snakemake's own
command line with it; its standard output (Snakemake's and every job's) comes back here,
where progress lines (progress.PREFIX) redraw the status line, job lines (progress.SAY) and
the pipeline's own (progress.OUTPUT) reach the terminal, and everything else only the log.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from . import PROJECT_DIR, engine, progress, records
from . import interrupts as signals
from .terminal import StatusLine, terminal_text


class Engine:
    """Snakemake in a child process, started as soon as the command line knows it will need it: it
    imports Snakemake (about a second of CPU) while this process checks the config, the remotes and
    the lock, then runs what ``run`` tells it. Job lines go to the terminal, everything to a log."""

    def __init__(self, workdir: Path, interrupts: signals.Interrupts, profile: str | None = None) -> None:
        """``profile``: the run's --profile. With one (or $SNAKEMAKE_PROFILE, which Snakemake also reads)
        Snakemake is given the cluster's executor plugins (engine.CLUSTER); without, every job runs here."""
        self.workdir, self.tty, self.interrupts, self.profile = workdir, sys.stdout.isatty(), interrupts, profile
        self.told = False  # whether it was given a run (before, it has only been importing Snakemake)
        cluster = [engine.CLUSTER] if profile or os.environ.get("SNAKEMAKE_PROFILE") else []
        env = {
            **os.environ,
            "BACKUP_CLI": "1",
            records.OWNER_ENV: str(os.getpid()),  # the process a destination's in-progress marker names
            "BACKUP_PROGRESS": "1" if self.tty else "0",
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR / "workflow"), os.environ.get("PYTHONPATH")])),
        }
        # backup.engine is snakemake's own command line, without its job-rate limiter (see engine.py),
        # in a process group of its own that this process stops as a whole (see interrupts.py).
        command = [sys.executable, "-m", "backup.engine", *cluster, engine.WAIT]
        self.proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0,
            preexec_fn=functools.partial(signals.die_with_parent, os.getpid()),
        )  # fmt: skip
        interrupts.watch(self.proc.pid)

    def cancel(self) -> None:
        """Not needed after all (a config error, a held lock, a failed pre-pipeline backup): the
        child, told nothing, has started nothing; it is stopped at once rather than left to finish
        importing Snakemake (a second of CPU) before it would see the end of its input."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            if not self.told:
                self.proc.kill()
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            self.proc.wait()
        self.interrupts.done(self.proc.pid)

    def run(
        self,
        config_files: list[str],
        targets: list[str],
        run_id: str,
        only: str | None,
        cores: int,
        options: list[str],
    ) -> tuple[int, list[str]]:
        """Run Snakemake on ``targets``; ``options``: the run's own (its --resources, a --profile)."""
        argv = [
            "--snakefile", str(PROJECT_DIR / "Snakefile"),
            "--directory", str(self.workdir),
            "--cores", str(cores),
            "--keep-going",
            # The project's lock (lock.py) keeps runs apart; Snakemake's own would outlive a stopped
            # run and refuse the next one, as would the stopped run's incomplete outputs.
            "--nolock", "--rerun-incomplete",
            *options,
            "--configfile", *config_files,
            "--config", f"run_id={run_id}", *([f"only={only}"] if only else []),
            "--", *targets,
        ]  # fmt: skip
        # What this process set after the child started (rclone's obscured SMB password).
        env = {k: v for k, v in os.environ.items() if k.startswith("BACKUP_")}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # The log first: once Snakemake is told what to run, nothing here may fail before it ends.
        log_path = records.run_dir(run_id, self.workdir) / "snakemake.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        log_fh = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below, quietly
        live = StatusLine() if self.tty else None
        try:
            try:
                self.told = True
                self.proc.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # the child died before it was told what to run: its output below says why
            for line in self.proc.stdout:
                if line.startswith(progress.PREFIX):
                    if live:
                        live.update(line[len(progress.PREFIX) :].rstrip("\n"))
                    continue  # progress is for the eyes only: not in logs
                with contextlib.suppress(OSError):  # a full disk costs the log, not the run
                    log_fh.write(line)
                lines.append(line.rstrip("\n"))
                shown = terminal_text(line)
                if shown is not None:
                    if live:
                        live.clear()
                    print(shown, end="", flush=True)
            if live:
                live.clear()
            returncode = self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                log_fh.close()
        if self.interrupts.signum:  # its group was told to stop: wait until every process of it is gone
            signals.wait_group(self.proc.pid)
        self.interrupts.done(self.proc.pid)
        return returncode, lines
