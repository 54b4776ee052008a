"""A self-contained HTML page of the last runs, from the run records (`make report`)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from html import escape

from .records import RunRecord
from .status import per_destination
from .summary import ORDER, human_bytes

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}.ok{color:#060}.warning{color:#a60}.failed{color:#b00;font-weight:bold}
.num{text-align:right}h2{margin-top:1.5em}small{color:#666}
"""
# Ages are computed in the reader's browser, so the page stays right when opened later.
SCRIPT = """
for (const el of document.querySelectorAll('[data-when]')) {
  const hours = (Date.now() - Date.parse(el.dataset.when)) / 3600000;
  el.textContent = hours < 48 ? hours.toFixed(1) + ' h ago' : (hours / 24).toFixed(1) + ' days ago';
}
"""


def _cell(value, cls: str = "") -> str:
    return f"<td{f' class={cls!r}' if cls else ''}>{escape(str(value))}</td>"


def page(cfg: dict, workdir, enabled: list[str], log) -> str:
    """The report of this config's destinations (their catalogs, and this machine's records)."""
    from . import records, status

    transfers, _notes = status.gather(cfg, workdir, enabled, log)
    return render(records.load_runs(workdir), enabled, transfers=transfers)


def render(runs: list[RunRecord], enabled: list[str], last: int = 20, transfers=None) -> str:
    state = per_destination(transfers if transfers is not None else [t for run in runs for t in run.transfers])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Backup report</title>",
        f"<style>{STYLE}</style></head><body><h1>Backup report</h1>",
        f"<p><small>Made {escape(datetime.now().astimezone().isoformat(timespec='seconds'))} "
        f"from {len(runs)} run records in .backup/runs/</small></p>",
        "<h2>Destinations</h2><table id='destinations'><tr><th>destination</th><th>last success</th>"
        "<th>age</th><th>last failure</th><th>error</th></tr>",
    ]
    for dest in sorted(enabled, key=lambda d: ORDER.get(d, 9)):
        entry = state.get(dest, {})
        success = entry.get("success")
        parts.append(
            "<tr>" + _cell(dest) + _cell(success or "never", "" if success else "failed")
            + (f"<td data-when='{escape(success)}'></td>" if success else "<td>-</td>")
            + _cell(entry.get("failure") or "") + _cell(entry.get("error") or "") + "</tr>"
        )  # fmt: skip
    parts.append("</table>")
    parts.append(f"<h2>Last {min(last, len(runs))} runs</h2>")
    for run in reversed(runs[-last:]):
        started, finished = run.started, run.finished
        seconds = ""
        with contextlib.suppress(ValueError):
            seconds = f"{(datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds():.0f} s"
        pipeline = run.pipeline
        parts.append(
            f"<h3 id='run-{escape(run.run_id)}'>Run {escape(run.run_id)} ({escape(run.kind)}): "
            f"exit status {escape(str(run.exit_status))}</h3><p><small>{escape(started)} to {escape(finished)}"
            f" ({seconds}); {escape(run.command)}"
            + (f"; pipeline: {escape(pipeline.status)}" if pipeline else "") + "</small></p>"
        )  # fmt: skip
        parts.append(
            "<table class='run'><tr><th>stage</th><th>destination</th><th>dataset</th><th>mode</th>"
            "<th>files sent</th><th>bytes sent</th><th>verified</th><th>seconds</th><th>status</th><th>note</th></tr>"
        )
        for t in run.transfers:
            parts.append(
                "<tr>" + _cell(t.stage) + _cell(t.destination) + _cell(t.dataset) + _cell(t.mode)
                + _cell(f"{t.files_sent}/{t.files_total}", "num") + _cell(human_bytes(t.bytes_sent), "num")
                + _cell(t.files_verified, "num") + _cell(t.seconds, "num") + _cell(t.status.upper(), t.status)
                + _cell(t.error or t.archive or "") + "</tr>"
            )  # fmt: skip
        parts.append("</table>")
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)
