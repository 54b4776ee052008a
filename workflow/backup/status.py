"""What the records say about each destination: its last success and a newer failure.

``--status`` asks each destination's own catalog, so a machine that never made a backup
(a fresh clone after losing the lab machine) sees what the others did; where a destination
cannot be reached it falls back to this machine's run records and says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
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
            failed = next((t for t in done if t.status in records.NOT_SAFE), None)
            if failed:
                entry.update(failure=when, error=f"{failed.dataset}: {failed.error}", failure_run=run_id)
            else:
                entry.update(success=when, success_run=run_id)
    return state


def local_transfers(workdir: Path) -> list[TransferRecord]:
    """Every transfer this machine's run records hold."""
    return [t for run in records.load_runs(workdir) for t in run.transfers]


def place(transfer) -> tuple[str, str, str]:
    """Where a transfer (planned, or recorded) lands: one target string can name two places, as
    two rclone config files can give one remote name (the demo's Box-Folder is not the lab's)."""
    return transfer.destination, transfer.target, transfer.rclone_config or ""


def planned(cfg: dict, workdir, enabled: list[str]) -> set[tuple[str, str, str]]:
    """The places this config sends to now: the only places whose records count."""
    return {place(t) for t in plan.plan(cfg, str(workdir), enabled)}


def gather(cfg: dict, workdir: Path, enabled: list[str], log) -> tuple[list[TransferRecord], list[str]]:
    """What each destination's catalog records, and this machine's records of failures there that
    never reached it (a destination that could not be written to cannot say it failed); where a
    catalog cannot be read, this machine's records alone, with a note saying so. Only records of
    the places the config names now count (another config's destinations vouch for nothing)."""
    from .catalog import Catalog

    found: list[TransferRecord] = []
    notes: list[str] = []
    places = planned(cfg, workdir, enabled)
    local = [t for t in local_transfers(workdir) if place(t) in places]
    for dest in enabled:
        here = [t for t in local if t.destination == dest]
        try:
            cat = Catalog(plan.catalog_transfer(cfg, dest, str(workdir)), workdir, log)
            said = [t for run in cat.runs() for t in run.transfers] if cat.exists() else []
        except TransferError as exc:
            found += here
            notes.append(f"{dest}: its catalog cannot be read ({exc}); shown from this machine's records")
            continue
        # By stage: a run's pre-pipeline backup committed there says nothing of its post one.
        stages = {(t.run_id, t.stage) for t in said}
        found += said + [t for t in here if t.status in records.NOT_SAFE and (t.run_id, t.stage) not in stages]
    return found, notes


@dataclass(frozen=True)
class Health:
    """One destination's state for --status and the report: ok, or why not (FAILING, OVERDUE, NEVER)."""

    destination: str
    level: str  # ok | failing | overdue | never
    verdict: str  # the words shown
    success: str | None = None  # when the last successful run ended
    success_run: str | None = None
    age_hours: float | None = None
    failure: str | None = None  # the latest run's end, when it failed
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.level == "ok"


def assess(
    transfers: list[TransferRecord], enabled: list[str], warn_after_hours: float, now: datetime | None = None
) -> list[Health]:
    """Each enabled destination's health: FAILING when its latest run failed (whatever came before),
    NEVER without any success, OVERDUE when the last success is older than ``warn_after_hours``."""
    now = now or datetime.now().astimezone()
    state = per_destination(transfers)
    out = []
    for dest in sorted(enabled, key=lambda d: ORDER.get(d, 9)):
        entry = state.get(dest, {})
        success, failure = _when(entry.get("success")), _when(entry.get("failure"))
        age_h = (now - success).total_seconds() / 3600 if success else None
        # By run id, not by time: records keep whole seconds, and two runs can end in one second.
        latest_failed = failure is not None and entry.get("failure_run", "") > entry.get("success_run", "")
        if latest_failed:
            level, verdict = "failing", "FAILING (the last run failed)"
        elif success is None:
            level, verdict = "never", "NEVER"
        elif age_h > warn_after_hours:
            level, verdict = "overdue", f"OVERDUE (> {warn_after_hours:g} h)"
        else:
            level, verdict = "ok", "ok"
        out.append(Health(dest, level, verdict, entry.get("success"), entry.get("success_run"), age_h,
                          entry.get("failure") if latest_failed else None,
                          entry.get("error") if latest_failed else None))  # fmt: skip
    return out


def report(
    transfers: list[TransferRecord], enabled: list[str], warn_after_hours: float, now: datetime | None = None
) -> tuple[str, int]:
    """The --status table and its exit status: 1 unless every destination is ok."""
    rows = [("destination", "last success", "age", "status", "last failure (if newer)")]
    health = assess(transfers, enabled, warn_after_hours, now)
    for h in health:
        age = f"{h.age_hours:.1f} h" if h.age_hours is not None else "-"
        failure = f"{h.failure}: {h.error}" if h.failure else ""
        rows.append((h.destination, h.success or "never", age, h.verdict, failure))
    return columns(rows), 0 if all(h.ok for h in health) else 1
