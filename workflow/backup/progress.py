"""Live progress for a person at a terminal: one 'backup-progress:' line a second per job.

Jobs write them to stdout only when the CLI asks (BACKUP_PROGRESS=1, set when its own output
is a terminal); the CLI redraws them on one status line. In cron, CI or a log file there are
no progress lines at all, only the log lines.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from .summary import human_bytes

RSYNC = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)\s+\S+(?:\s+\(xfr#(\d+), \w+-chk=(\d+)/(\d+)\))?\s*$")
PREFIX = "backup-progress: "
# Lines of a job's stdout that the command line shows: a job's one line (jobs._say), and the
# pipeline's own output as it runs (`make run`).
SAY = "backup: "
OUTPUT = "pipeline-output: "


def wanted() -> bool:
    return os.environ.get("BACKUP_PROGRESS") == "1"


class Reporter:
    """Parses rsync's --info=progress2 and rclone's JSON stats; emits at most one line a second."""

    def __init__(self, label: str, total_files: int, total_bytes: int, every: float = 1.0):
        self.label, self.total_files, self.total_bytes, self.every = label, total_files, total_bytes, every
        self.last = 0.0

    def _emit(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            os.write(sys.stdout.fileno(), f"{PREFIX}{self.label}: {text}\n".encode("utf-8", "replace"))

    def rsync(self, line: str) -> bool:
        match = RSYNC.match(line)
        if not match:
            return False
        done = int(match.group(1).replace(",", ""))
        files = f", {match.group(4)} files" if match.group(4) else ""
        self._emit(f"{match.group(2)}% {human_bytes(done)} of {human_bytes(self.total_bytes)}{files}, "
                   f"{match.group(3)}")  # fmt: skip
        return True

    def rclone(self, line: str) -> bool:
        if '"stats"' not in line:
            return False
        try:
            stats = json.loads(line)["stats"]
        except (ValueError, KeyError, TypeError):
            return False
        total = stats.get("totalBytes") or self.total_bytes or 1
        pct = 100 * stats.get("bytes", 0) // max(total, 1)
        self._emit(
            f"{pct}% {human_bytes(stats.get('bytes', 0))} of {human_bytes(total)}, "
            f"{stats.get('transfers', 0)}/{stats.get('totalTransfers', 0)} files, "
            f"{human_bytes(int(stats.get('speed') or 0))}/s"
        )
        return True

    def archived(self, done: int) -> None:
        pct = 100 * done // max(self.total_bytes, 1)
        self._emit(f"archiving {pct}% {human_bytes(done)} of {human_bytes(self.total_bytes)}")
