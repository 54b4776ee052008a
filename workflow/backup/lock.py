"""One backup at a time per project: an flock on .backup/lock that names its holder.

The kernel releases an flock when its process dies, so a lock left by a killed run
is never in the way; its content (who held it) tells the next run that it was stale.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from . import records
from .processes import process_alive


class LockBusy(Exception):
    """Another backup holds the lock; the message names it."""


@contextmanager
def project_lock(workdir: Path, command: str):
    """Hold the project's lock while the body runs; yield a note if a stale lock was cleared."""
    path = Path(workdir, records.STATE_DIR, "lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)  # without touching the holder's details
        raise LockBusy(
            f"another backup is running in this project: pid {holder.get('pid', '?')}, started "
            f"{holder.get('started', '?')} ({holder.get('command', '?')}); wait for it to finish"
        ) from None
    try:
        previous = _read(fd)
        note = None
        if previous.get("pid"):
            state = "was killed" if not process_alive(int(previous["pid"])) else "ended without cleaning up"
            note = f"cleared a stale lock: pid {previous['pid']}, started {previous.get('started', '?')}, {state}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": records.now_iso(), "command": command}).encode(), 0)
        yield note
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
