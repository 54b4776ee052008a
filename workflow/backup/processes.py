"""Whether a process still runs: one small module, so that the lock, the catalog's markers and
the archive writer can ask without loading each other (archive.py loads zlib-ng)."""

from __future__ import annotations


def process_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie, killed but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True
