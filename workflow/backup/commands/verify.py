"""--verify [--sample N]: every enabled destination read back against its own catalog; nothing sent."""

from __future__ import annotations

from pathlib import Path

from .. import logs, plan, records, summary
from . import Context, locked, preflight


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    status = preflight.check(args, cfg, workdir, ctx)
    if status != summary.EXIT_OK:
        return status
    destinations = plan.enabled_destinations(cfg["backups"], [args.only] if args.only else None)
    return locked(workdir, ctx.command, lambda: verify(cfg, destinations, workdir, args.sample, args.cores))


def verify(cfg: dict, destinations: list[str], workdir: Path, sample: int | None, workers: int) -> int:
    """Every destination checked against its own catalog (one slice of it with ``sample``)."""
    from .. import verify as verify_mod

    log = logs.setup(plan.absolute(cfg["backups"]["log_file"], str(workdir)), records.new_run_id(), "verify")
    rows = verify_mod.verify_all(cfg, destinations, workdir, sample, log, workers)
    for row in rows:
        log.info("%s/%s: %d of %d files match the catalog%s", row.destination, row.dataset, row.files_verified,
                 row.files_total, f" ({row.error})" if row.error else "")  # fmt: skip
    slices = {r.destination: r.source for r in rows if r.source}
    what = ", ".join(f"{d}: {part}" for d, part in slices.items()) if sample else "everything"
    print(summary.table(rows, f"Verification against each destination's catalog ({what}; nothing was sent):",
                        verify=True))  # fmt: skip
    return summary.exit_status(rows)
