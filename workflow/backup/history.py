"""What each destination holds: its restore points, complete or interrupted (the ``list`` command).

Read from each destination's catalog alone, so it works the same from the machine that made
the backups and from a fresh clone with only the config.
"""

from __future__ import annotations

from pathlib import Path

from . import plan
from .catalog import INTERRUPTED, LOCKS, Catalog, NoCatalog, is_fresh
from .errors import TransferError
from .records import Tag
from .summary import ORDER, columns, human_bytes


def rows_of(cat: Catalog, dataset: str | None) -> list[tuple[str, ...]]:
    """One row per (run, dataset) here; interrupted and running runs as such."""
    rows = []
    for run in cat.runs():
        for t in run.transfers:
            if dataset and t.dataset != dataset:
                continue
            if t.status == "failed":
                state = f"failed: {t.error or '?'}"
            elif not t.manifest:
                state = "nothing to restore: " + (f"missing {', '.join(t.missing)}" if t.missing else "no files")
            else:
                state = "complete, with warnings" if t.status == "warning" else "complete"
            rows.append((cat.destination, run.tag, run.finished, run.stage, t.dataset, t.mode,
                         str(t.state_files), human_bytes(t.state_bytes), state))  # fmt: skip
    for folder in (LOCKS, INTERRUPTED):
        for marker in cat.markers(folder):
            running = folder == LOCKS and is_fresh(marker)
            state = "in progress" if running else f"interrupted (started on {marker.host}, pid {marker.pid})"
            for name in marker.datasets:
                if not dataset or name == dataset:
                    rows.append((cat.destination, marker.tag, marker.started, marker.stage, name, "", "", "", state))
    return sorted(rows, key=lambda r: (Tag.parse(r[1]) or Tag(""), r[4]))


def render(cfg: dict, workdir: Path, destinations: list[str], dataset: str | None, log) -> tuple[str, int]:
    """The table of restore points, and an exit status (1 if a destination could not be read)."""
    header = ("destination", "run", "time", "stage", "dataset", "mode", "files", "bytes", "state")
    rows: list[tuple[str, ...]] = []
    notes, status = [], 0
    for dest in sorted(destinations, key=lambda d: ORDER.get(d, 9)):
        try:
            cat = Catalog(plan.catalog_transfer(cfg, dest, str(workdir)), workdir, log)
        except ValueError as exc:
            notes.append(f"{dest}: {exc}")
            status = 2
            continue
        try:
            cat.require()
            rows += rows_of(cat, dataset)
        except NoCatalog as exc:
            notes.append(f"{dest}: {exc}")
        except TransferError as exc:
            notes.append(f"{dest}: cannot read its catalog: {exc}")
            status = 1
    text = columns([header, *rows]) if rows else "No restore points."
    return text + "".join(f"\n{note}" for note in notes), status
