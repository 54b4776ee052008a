"""list: the restore points each destination holds (``list [--from DEST] [--dataset NAME]``)."""

from __future__ import annotations

from pathlib import Path

from .. import logs, plan
from . import Context


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    from .. import history

    quiet = logs.setup(None, "list")
    chosen = [args.source] if args.source and args.source != "any" else plan.enabled_destinations(cfg["backups"])
    text, worst = history.render(cfg, workdir, chosen, args.dataset, quiet)
    print(text)
    return worst
