"""The summary table printed at the end of a run, and the exit status it implies."""

from __future__ import annotations

from . import names
from .plan import DESTINATIONS
from .records import NOT_SAFE

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WARNINGS = 0, 1, 2, 3
ORDER = {name: rank for rank, name in enumerate(DESTINATIONS)}  # tables list destinations in this order


def human_bytes(n: int) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    value, i = float(n), 0
    while value >= 1000 and i < len(units) - 1:
        value, i = value / 1000, i + 1
    return f"{int(n)} B" if i == 0 else f"{value:.1f} {units[i]}"


def exit_status(records: list) -> int:
    """The exit status a set of TransferRecords implies."""
    return exit_of(r.status for r in records)


def exit_of(statuses) -> int:
    statuses = set(statuses)
    if statuses & set(NOT_SAFE):
        return EXIT_FAILED
    if "warning" in statuses:
        return EXIT_WARNINGS
    return EXIT_OK


def few(items: list[str], most: int = 5) -> str:
    """Up to ``most`` names for a one-line note (the log has them all)."""
    more = len(items) - most
    return ", ".join(items[:most]) + (f" and {more} more (listed in the log)" if more > 0 else "")


def note(r) -> str:
    """The last column of a transfer's row: the error, or what else a person should know."""
    if r.error:
        return r.error
    parts = []
    if r.missing:
        parts.append("missing: " + ", ".join(r.missing))
    if r.vanished:
        parts.append("vanished while being sent: " + few(r.vanished))
    if r.unstorable:
        parts.append(f"cannot be stored at {r.destination}, not sent: {names.described(r.unstorable)}")
    if r.unreadable:
        parts.append(f"cannot read, skipped (permission denied): {few(r.unreadable)}")
    if r.skipped_links:
        parts.append(f"{len(r.skipped_links)} symlinks not copied (SMB cannot hold them; the catalog keeps them)")
    if r.replaced_newer:
        parts.append(f"the copy at {r.destination} of {few(r.replaced_newer)} had a newer date: replaced by "
                     f"the source's, kept as version {r.tag}")  # fmt: skip
    if r.displaced:
        parts.append(f"a folder became a file or the reverse: the old {few(r.displaced)} at {r.destination} "
                     f"kept as version {r.tag}")  # fmt: skip
    if r.skipped_special:
        parts.append(f"skipped, not files (FIFOs, sockets, devices hold no data): {few(r.skipped_special)}")
    if r.identical_rewrites:
        parts.append(f"{r.identical_rewrites} rewritten with identical bytes, not sent again")
    if r.archive:
        parts.append(r.archive + ("" if r.archive_created else " (unchanged, reused)"))
    return "; ".join(parts)


def table(records: list, title: str = "", verify: bool = False) -> str:
    """One row per (destination, dataset) of TransferRecords; ``verify`` shows verified counts
    instead of what was sent."""
    head = ("files verified", "") if verify else ("files sent", "bytes sent")
    rows = [("destination", "dataset", "mode", *head, "status", "note")]
    for r in sorted(records, key=lambda r: (ORDER.get(r.destination, 9), r.dataset)):
        rows.append(
            (
                r.destination,
                r.dataset,
                r.mode,
                f"{r.files_verified if verify else r.files_sent}/{r.files_total}",
                "" if verify else human_bytes(r.bytes_sent),
                r.status.upper(),
                note(r),
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
