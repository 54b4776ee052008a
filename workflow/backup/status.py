"""What the records say about each destination: its last success and a newer failure.

``--status`` asks each destination's own catalog, so a machine that never made a backup
(a fresh clone after losing the lab machine) sees what the others did; where a destination
cannot be reached it falls back to this machine's run records and says so.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

from . import plan, records
from .errors import TransferError
from .records import TransferRecord
from .summary import ORDER, columns


def _when(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def per_destination(transfers: list[TransferRecord]) -> dict[str, dict]:
    """For each destination: its last successful run and its last failed run (with the error).
    A run (all its stages) failed at a destination if any of its transfers there failed."""
    runs: dict[str, dict[str, list[TransferRecord]]] = defaultdict(lambda: defaultdict(list))
    for t in transfers:
        runs[t.run_id][t.destination].append(t)
    state: dict[str, dict] = {}
    for run_id in sorted(runs):  # run ids sort by time
        for dest, done in runs[run_id].items():
            entry = state.setdefault(dest, {"success": None, "failure": None, "error": None})
            when = max((t.finished for t in done if t.finished), default=None)
            failed = next((t for t in done if t.status == records.FAILED), None)
            if failed:
                entry.update(failure=when, error=f"{failed.dataset}: {failed.error}", failure_run=run_id)
            else:
                entry.update(success=when, success_run=run_id)
    return state


def local_transfers(workdir: Path) -> list[TransferRecord]:
    """Every transfer this machine's run records hold."""
    return [t for run in records.load_runs(workdir) for t in run.transfers]


def gather(cfg: dict, workdir: Path, enabled: list[str], log) -> tuple[list[TransferRecord], list[str]]:
    """What each destination's catalog records, and this machine's records of failures there that
    never reached it (a destination that could not be written to cannot say it failed); where a
    catalog cannot be read, this machine's records alone, with a note saying so. Only records of
    the places the config names now count (another config's destinations vouch for nothing)."""
    from .catalog import Catalog

    found: list[TransferRecord] = []
    notes: list[str] = []
    local = local_transfers(workdir)
    for dest in enabled:
        targets = {t.target for t in plan.plan(cfg, str(workdir), [dest])}
        here = [t for t in local if t.destination == dest and t.target in targets]
        try:
            cat = Catalog(plan.catalog_transfer(cfg, dest, str(workdir)), workdir, log)
            said = [t for run in cat.runs() for t in run.transfers] if cat.exists() else []
        except TransferError as exc:
            found += here
            notes.append(f"{dest}: its catalog cannot be read ({exc}); shown from this machine's records")
            continue
        runs = {t.run_id for t in said}
        found += said + [t for t in here if t.status == records.FAILED and t.run_id not in runs]
    return found, notes


def report(
    transfers: list[TransferRecord], enabled: list[str], warn_after_hours: float, now: datetime | None = None
) -> tuple[str, int]:
    """The --status table and its exit status (1 if a destination never succeeded or is overdue)."""
    now = now or datetime.now().astimezone()
    state = per_destination(transfers)
    rows = [("destination", "last success", "age", "status", "last failure (if newer)")]
    worst = 0
    for dest in sorted(enabled, key=lambda d: ORDER.get(d, 9)):
        entry = state.get(dest, {})
        success, failure = _when(entry.get("success")), _when(entry.get("failure"))
        age_h = (now - success).total_seconds() / 3600 if success else None
        if success is None:
            verdict, worst = "NEVER", 1
        elif age_h > warn_after_hours:
            verdict, worst = f"OVERDUE (> {warn_after_hours:g} h)", 1
        else:
            verdict = "ok"
        newer_failure = ""
        # By run id, not by time: records keep whole seconds, and two runs can end in one second.
        if failure and (success is None or entry.get("failure_run", "") > entry.get("success_run", "")):
            newer_failure = f"{entry['failure']}: {entry['error']}"
            if verdict == "ok":
                verdict = "ok, but failed since"
        rows.append(
            (
                dest,
                entry.get("success") or "never",
                f"{age_h:.1f} h" if age_h is not None else "-",
                verdict,
                newer_failure,
            )
        )
    return columns(rows), worst
