"""Run records: one JSON file per run, and what they say about each destination.

``.backup/runs/RUN_ID/run.json`` holds the run's id, times, command, exit status and,
per (stage, destination, dataset), mode, files and bytes sent, files verified, status
and error. ``--status`` reads only these files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from . import records
from .summary import ORDER, columns

RECORD = "run.json"


def write_run_record(workdir: Path, run_id: str, **fields) -> Path:
    path = records.run_dir(run_id, workdir) / RECORD
    records.write_json(path, {"run_id": run_id, **fields})
    return path


def load_runs(workdir: Path) -> list[dict]:
    """Every run record, oldest first (run ids sort by time)."""
    folder = Path(workdir, records.STATE_DIR, "runs")
    runs = [records.read_json(p) for p in sorted(folder.glob(f"*/{RECORD}"))] if folder.is_dir() else []
    return [r for r in runs if r]


def _when(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def per_destination(runs: list[dict]) -> dict[str, dict]:
    """For each destination: its last successful run and its last failed run (with the error)."""
    state: dict[str, dict] = {}
    for run in runs:
        outcome: dict[str, dict] = {}
        for t in run.get("transfers", []):
            dest = outcome.setdefault(t["destination"], {"failed": None, "finished": None})
            if t.get("status") == "failed" and dest["failed"] is None:
                dest["failed"] = f"{t['dataset']}: {t.get('error')}"
            dest["finished"] = max(filter(None, [dest["finished"], t.get("finished")]), default=run.get("finished"))
        for name, result in outcome.items():
            entry = state.setdefault(name, {"success": None, "failure": None, "error": None})
            when = result["finished"] or run.get("finished")
            if result["failed"]:
                entry.update(failure=when, error=result["failed"], failure_run=run["run_id"])
            else:
                entry.update(success=when, success_run=run["run_id"])
    return state


def report(
    runs: list[dict], enabled: list[str], warn_after_hours: float, now: datetime | None = None
) -> tuple[str, int]:
    """The --status table and its exit status (1 if a destination never succeeded or is overdue)."""
    now = now or datetime.now().astimezone()
    state = per_destination(runs)
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
