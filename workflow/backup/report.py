"""A self-contained HTML page that answers "are my backups OK?" (`make report`).

One verdict line, then one coloured row per destination of this config (from the same
``status.assess`` as ``--status``, so the two never disagree), then this machine's last runs
that concern those destinations. Times are local with their zone; ages are written here and
recomputed by the reader's browser, so the page stays right when it is opened later.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime
from html import escape

from .records import FAILED, INTERRUPTED, WARNING, RunRecord, TransferRecord
from .status import Health, place
from .summary import ORDER, human_bytes

# green: safe; amber: it worked, but not lately; red: the latest run failed, or nothing ever worked.
COLOUR = {"ok": "green", "overdue": "amber", "failing": "red", "never": "red"}
RANK = {"green": 0, "amber": 1, "red": 2}
LAST = 20  # runs shown
WORD = {"green": "ok", "amber": "WARNING", "red": "FAILED"}  # a run's transfers at one destination

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:75em}
table{border-collapse:collapse;margin:0.5em 0 1em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.num{text-align:right}small,.meta{color:#555}
.verdict{font-size:1.3em;font-weight:bold;padding:0.6em 0.9em;border-radius:6px;border-left:8px solid}
.green{--fg:#116329;--bg:#dafbe1}.amber{--fg:#7d4e00;--bg:#fff3c4}.red{--fg:#a40e26;--bg:#ffebe9}
.verdict.green,.verdict.amber,.verdict.red{color:var(--fg);background:var(--bg);border-color:var(--fg)}
tr.green>td:first-child,tr.amber>td:first-child,tr.red>td:first-child{border-left:8px solid var(--fg)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:bold;color:var(--fg);background:var(--bg)}
details>summary{cursor:pointer}details pre{white-space:pre-wrap;margin:0.4em 0;max-width:60em}
details.run{margin:0.3em 0}details.run>summary{padding:2px 0}
#destinations{width:100%}#destinations td:nth-child(-n+4){white-space:nowrap}
.legend{list-style:none;padding:0;color:#555;font-size:0.9em}.legend li{margin:2px 0}.notes{color:#7d4e00}
"""
# Ages are recomputed in the reader's browser (the page stays right when opened later); the text
# written here by age_text() is what a reader without JavaScript sees. Keep the two alike.
SCRIPT = """
function ago(hours) {
  const minutes = Math.max(hours, 0) * 60;
  if (minutes < 1) return 'under 1 min ago';
  if (minutes < 60) return Math.floor(minutes) + ' min ago';
  if (hours < 48) return Math.floor(hours) + ' h ago';
  return Math.floor(hours / 24) + ' days ago';
}
for (const el of document.querySelectorAll('[data-when]')) {
  const when = Date.parse(el.dataset.when);
  if (!isNaN(when)) { el.textContent = ago((Date.now() - when) / 3600000); el.classList.add('live'); }
}
"""


def age_text(hours: float) -> str:
    """'under 1 min ago', '12 min ago', '5 h ago', '3 days ago' (as SCRIPT's ago())."""
    minutes = max(hours, 0) * 60
    if minutes < 1:
        return "under 1 min ago"
    if minutes < 60:
        return f"{int(minutes)} min ago"
    if hours < 48:
        return f"{int(hours)} h ago"
    return f"{int(hours // 24)} days ago"


def _parse(iso: str | None) -> datetime | None:
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(iso).astimezone()
    return None


def when(iso: str | None) -> str:
    """A record's time as this machine's local time with its zone, e.g. 2026-11-26 04:05:12 CET."""
    moment = _parse(iso)
    if moment is None:
        return escape(iso or "-")
    return f'<time datetime="{escape(iso)}">{escape(moment.strftime("%Y-%m-%d %H:%M:%S %Z"))}</time>'


def ago(iso: str | None, now: datetime) -> str:
    """How long ago, as of now (the browser updates it)."""
    moment = _parse(iso)
    if moment is None:
        return "-"
    hours = (now - moment).total_seconds() / 3600
    return f'<span class="age" data-when="{escape(iso)}">{age_text(hours)}</span>'


def folded(text: str, width: int = 100) -> str:
    """An error on one line, the whole of it on demand."""
    first = text.strip().splitlines()[0] if text.strip() else text
    line = first if len(first) <= width else first[: width - 1] + "…"
    return f'<details class="error"><summary>{escape(line)}</summary><pre>{escape(text)}</pre></details>'


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(health: list[Health], now: datetime) -> tuple[str, str]:
    """The one line at the top, and its colour: the worst destination's."""
    if not health:
        return "red", "NOT OK: no destination is enabled in this config"
    colour = max((COLOUR[h.level] for h in health), key=RANK.get)
    good = [h.destination for h in health if h.ok]
    if len(good) == len(health):
        oldest = min((h.success for h in health), key=lambda s: _parse(s) or now)
        return colour, f"All backups OK: {escape(_and(good))}. Oldest last success: {ago(oldest, now)}."
    bad = []
    for h in health:
        if not h.ok:
            since = f", last success {ago(h.success, now)}" if h.success else ""
            words = "NEVER succeeded" if h.level == "never" else h.verdict
            bad.append(f"{escape(h.destination)} {escape(words)}{since}")
    rest = f" OK: {escape(_and(good))}." if good else ""
    return colour, f"NOT OK: {'; '.join(bad)}.{rest}"


def destinations(health: list[Health], now: datetime) -> list[str]:
    rows = [
        "<table id='destinations'><tr><th>destination</th><th>status</th><th>last success</th>"
        "<th>age</th><th>latest run failed</th></tr>"
    ]
    for h in health:
        name, success = escape(h.destination), when(h.success) if h.success else "never"
        failure = f"{when(h.failure)}: {folded(h.error or 'no reason recorded')}" if h.failure else ""
        rows.append(
            f'<tr class="dest {COLOUR[h.level]}" id="dest-{name}"><td>{name}</td>'
            f'<td><span class="badge">{escape(h.verdict)}</span></td><td>{success}</td>'
            f"<td>{ago(h.success, now)}</td><td>{failure}</td></tr>"
        )
    rows.append("</table>")
    return rows


def legend(warn_after_hours: float) -> str:
    hours = f"{warn_after_hours:g} h"
    return (
        "<ul class='legend'>"
        f"<li><span class='badge green'>green</span> ok: the latest run succeeded, within {hours} "
        "(backups.warn_after_hours)</li>"
        f"<li><span class='badge amber'>amber</span> OVERDUE: the last success is older than {hours}</li>"
        "<li><span class='badge red'>red</span> FAILING: the latest run failed; NEVER: no backup has succeeded</li>"
        "</ul>"
    )


def concerning(runs: list[RunRecord], places: set[tuple[str, str, str]]) -> list[RunRecord]:
    """Each run cut down to its transfers to these places; runs with none left are left out
    (a demo's or another config's runs say nothing about this config's backups)."""
    kept = []
    for run in runs:
        mine = [t for t in run.transfers if place(t) in places]
        if mine:
            kept.append(dataclasses.replace(run, transfers=mine))
    return kept


def _colour(statuses: list[str]) -> str:
    if FAILED in statuses or INTERRUPTED in statuses:
        return "red"
    return "amber" if WARNING in statuses else "green"


def _transfer_row(t: TransferRecord) -> str:
    note = folded(t.error) if t.error else escape(t.archive or "")
    cells = [t.stage, t.destination, t.dataset, t.mode, f"{t.files_sent}/{t.files_total}", human_bytes(t.bytes_sent),
             t.files_verified, t.seconds]  # fmt: skip
    tds = "".join(f"<td{' class=num' if i >= 4 else ''}>{escape(str(c))}</td>" for i, c in enumerate(cells))
    return f'<tr class="{_colour([t.status])}">{tds}<td>{escape(t.status.upper())}</td><td>{note}</td></tr>'


def run_block(run: RunRecord, now: datetime, open_: bool) -> str:
    """One run: a one-line summary (when, what, per destination), its transfers on demand."""
    by_dest: dict[str, list[str]] = {}
    for t in run.transfers:
        by_dest.setdefault(t.destination, []).append(t.status)
    pipeline = run.pipeline.status if run.pipeline else None
    colour = _colour([s for v in by_dest.values() for s in v] + [FAILED if pipeline in (FAILED, INTERRUPTED) else ""])
    dests = ", ".join(
        f"{escape(d)} {WORD[_colour(s)]}" for d, s in sorted(by_dest.items(), key=lambda kv: ORDER.get(kv[0], 9))
    )
    seconds = ""
    start, end = _parse(run.started), _parse(run.finished)
    if start and end:
        seconds = f" in {(end - start).total_seconds():.0f} s"
    head = (
        f'<details class="run {colour}" id="run-{escape(run.run_id)}"{" open" if open_ else ""}><summary>'
        f'<span class="badge">{WORD[colour]}</span> {when(run.started)} ({ago(run.finished or run.started, now)})'
        f" · {escape(run.kind)} · {dests}" + (f" · pipeline {escape(pipeline)}" if pipeline else "") + "</summary>"
    )
    meta = (
        f"<p class='meta'><small>Run {escape(run.run_id)}: {escape(run.command)}; finished {when(run.finished)}"
        f"{seconds}, exit status {escape(str(run.exit_status))}</small></p>"
    )
    table = [
        "<table class='transfers'><tr><th>stage</th><th>destination</th><th>dataset</th><th>mode</th>"
        "<th>files sent</th><th>bytes sent</th><th>verified</th><th>seconds</th><th>status</th><th>note</th></tr>",
        *(_transfer_row(t) for t in run.transfers),
        "</table></details>",
    ]
    return "\n".join([head, meta, *table])


def page(cfg: dict, workdir, enabled: list[str], log, now: datetime | None = None) -> str:
    """The report of this config's destinations: their catalogs, and this machine's records."""
    from . import records, status

    now = now or datetime.now().astimezone()
    transfers, notes = status.gather(cfg, workdir, enabled, log)
    warn = cfg["backups"]["warn_after_hours"]
    health = status.assess(transfers, enabled, warn, now)
    runs = concerning(records.load_runs(workdir), status.planned(cfg, workdir, enabled))
    return render(health, runs, notes, warn, now)


def render(health: list[Health], runs: list[RunRecord], notes: list[str], warn: float, now: datetime) -> str:
    """The page: verdict, destinations, legend, and the last LAST runs (newest first, the newest open)."""
    colour, line = verdict(health, now)
    stamp = now.isoformat(timespec="seconds")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Backup report</title>",
        f"<style>{STYLE}</style></head><body><h1>Backup report</h1>",
        f'<p id="verdict" class="verdict {colour}">{line}</p>',
        *(["<ul class='notes'>", *(f"<li>{escape(n)}</li>" for n in notes), "</ul>"] if notes else []),
        f"<p class='meta'><small>Made {when(stamp)} ({ago(stamp, now)}) for the destinations "
        f"{escape(_and([h.destination for h in health]) if health else '-')}, from their catalogs and this "
        "machine's run records (.backup/runs/).</small></p>",
        "<h2>Destinations</h2>",
        *destinations(health, now),
        legend(warn),
        f"<h2>{'The last run' if len(runs) == 1 else f'The last {min(LAST, len(runs))} runs'} from this machine</h2>",
    ]
    if not runs:
        parts.append("<p>No run on this machine has sent to these destinations yet.</p>")
    latest = list(reversed(runs[-LAST:]))
    parts += [run_block(run, now, open_=i == 0) for i, run in enumerate(latest)]
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)
