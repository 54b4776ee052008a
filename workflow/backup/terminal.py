"""What the command line shows on its terminal: the engine's lines it passes on, the redrawn
status line of the running jobs, and output that survives its terminal going away."""

from __future__ import annotations

import contextlib
import shutil
import sys

from . import progress


def terminal_text(line: str) -> str | None:
    """What the terminal shows of a line of the engine's output: the pipeline's own lines, and
    each job's one line, also when it arrived glued to a part-line of Snakemake's (jobs and
    Snakemake share one pipe; a job writes its line whole, Snakemake not always)."""
    if line.startswith(progress.OUTPUT):
        return "  | " + line[len(progress.OUTPUT) :]
    at = line.find(progress.SAY)
    return "  " + line[at + len(progress.SAY) :] if at >= 0 else None


class StatusLine:
    """One redrawn line at the bottom of the terminal: the latest progress of each running job."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def update(self, text: str) -> None:
        label, _, state = text.partition(": ")
        self.jobs[label] = state
        line = " | ".join(f"{k}: {v}" for k, v in self.jobs.items())
        sys.stdout.write("\r\x1b[K" + line[: self.width])
        sys.stdout.flush()

    def clear(self) -> None:
        self.jobs.clear()
        sys.stdout.write("\r\x1b[K")
        sys.stdout.flush()


class QuietStream:
    """The terminal or pipe this command writes to may go away (an SSH session drops, a reader
    closes): that costs the output, never the run's record, its pings or its exit status."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
