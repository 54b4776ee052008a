"""prune [--dry-run] [--from DEST]: remove what no restore point kept by the retention policy needs;
and backups.prune_after_backup, the same after a backup that succeeded."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import interrupts as signals
from .. import plan, summary
from . import Context, locked


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    """Every enabled destination (or --from one), under the project's lock."""
    from .. import prune

    chosen = plan.enabled_destinations(cfg["backups"], [args.only] if args.only else None)
    if args.source and args.source != "any":
        if args.source not in chosen:
            print(f"error: --from {args.source}: backups.destinations.{args.source} is not enabled", file=sys.stderr)
            return summary.EXIT_USAGE
        chosen = [args.source]
    if args.dry_run:
        return prune.command(cfg, workdir, chosen, dry_run=True)
    try:
        return locked(workdir, ctx.command, lambda: prune.command(cfg, workdir, chosen, dry_run=False))
    except signals.Interrupted:
        print(f"\ninterrupted ({ctx.interrupts.name}) while pruning: every kept restore point is intact; run prune "
              "again to finish", file=sys.stderr)  # fmt: skip
        return ctx.interrupts.exit_code


def after_backup(cfg: dict, workdir: Path, only: str | None, exit_code: int, log) -> int:
    """backups.prune_after_backup: prune what this run wrote to, after it succeeded. A prune that
    fails leaves the backup as it is: a warning (exit 3), never a failed backup."""
    from .. import prune

    print("\nPruning (backups.prune_after_backup):")
    status = prune.prune_all(cfg, workdir, plan.enabled_destinations(cfg["backups"], [only] if only else None),
                             dry_run=False, log=log)  # fmt: skip
    if status != summary.EXIT_OK:
        print("warning: the prune after the backup failed (above); the backup itself is complete", file=sys.stderr)
        return summary.EXIT_WARNINGS if exit_code == summary.EXIT_OK else exit_code
    return exit_code
