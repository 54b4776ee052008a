"""--status: per destination, the last successful backup, its age, and a newer failure."""

from __future__ import annotations

from pathlib import Path

from .. import logs, plan, summary
from . import Context


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    from .. import status

    if not cfg["backups"]["enabled"]:
        print("FAILING: backups are switched off (backups.enabled: false): nothing is being backed up")
        return summary.EXIT_FAILED
    quiet = logs.setup(None, "status")
    enabled = plan.enabled_destinations(cfg["backups"], [args.only] if args.only else None)
    transfers, notes = status.gather(cfg, workdir, enabled, quiet)
    text, worst = status.report(transfers, enabled, cfg["backups"]["warn_after_hours"])
    print(text + "".join(f"\nnote: {n}" for n in notes))
    return worst
