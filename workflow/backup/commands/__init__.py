"""The command line's actions, one module each, every one entered as ``main(args, cfg, workdir, ctx) -> int``
(the exit status); cli.py parses, validates the config and picks one. A module is imported only
when its action runs: a quick one (status, list, report) loads no Snakemake and no zlib-ng."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine_client import Engine
    from ..interrupts import Interrupts
    from ..plan import Transfer

SCREENFUL = 20  # names listed per transfer by --dry-run, unless --list-files


@dataclass
class Context:
    """What every action is given besides its arguments, its config and its project folder."""

    config_files: list[str]  # absolute, in the order they were layered
    command: str  # the command line as typed: named by the lock and the run record
    transfers: list[Transfer]  # the plan: every enabled (destination, dataset), or --DEST-only's
    interrupts: Interrupts
    engine: Engine | None = None  # Snakemake's child, started early for backup and run


def locked(workdir: Path, command: str, body: Callable[[], int]) -> int:
    """``body()`` under the project's lock (one backup at a time); another holder, or a state folder
    that cannot be written, is a usage error: nothing was done."""
    from .. import summary
    from ..lock import LockBusy, project_lock

    try:
        with project_lock(workdir, command) as note:
            if note:
                print(f"note: {note}")
            return body()
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    except OSError as exc:  # the log file or the state folder cannot be written
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return summary.EXIT_USAGE
