"""The summary table printed at the end of a run, and the exit status it implies."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WARNINGS = 0, 1, 2, 3
ORDER = {"smb": 0, "box": 1, "secured": 2}


def human_bytes(n: int) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    value, i = float(n), 0
    while value >= 1000 and i < len(units) - 1:
        value, i = value / 1000, i + 1
    return f"{int(n)} B" if i == 0 else f"{value:.1f} {units[i]}"


def exit_status(records: list[dict]) -> int:
    statuses = {r.get("status") for r in records}
    if "failed" in statuses:
        return EXIT_FAILED
    if "warning" in statuses:
        return EXIT_WARNINGS
    return EXIT_OK


def table(records: list[dict], title: str = "", verify: bool = False) -> str:
    """One row per (destination, dataset); ``verify`` shows verified counts instead of what was sent."""
    head = ("files verified", "") if verify else ("files sent", "bytes sent")
    rows = [("destination", "dataset", "mode", *head, "status", "note")]
    for r in sorted(records, key=lambda r: (ORDER.get(r["destination"], 9), r["dataset"])):
        note = r.get("error") or ""
        if not note and r.get("missing"):
            note = "missing: " + ", ".join(r["missing"])
        if not note and r.get("vanished"):
            note = "vanished while being sent: " + ", ".join(r["vanished"])
        if not note and r.get("skipped_links"):
            note = f"{len(r['skipped_links'])} symlinks not copied (SMB cannot hold them)"
        if not note and r.get("archive"):
            note = r["archive"] + ("" if r.get("archive_created") else " (unchanged, reused)")
        rows.append(
            (
                r["destination"],
                r["dataset"],
                r.get("mode", ""),
                f"{r.get('files_verified' if verify else 'files_sent', 0)}/{r.get('files_total', 0)}",
                "" if verify else human_bytes(r.get("bytes_sent", 0)),
                r.get("status", "?").upper(),
                note,
            )
        )
    return ((title + "\n") if title else "") + columns(rows)


def columns(rows: list[tuple[str, ...]]) -> str:
    """A plain text table: a header row, a rule, aligned columns; the last column runs free."""
    fixed = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(fixed)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:fixed])) + "  " + row[fixed])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(line.rstrip() for line in lines)
