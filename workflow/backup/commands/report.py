"""--report FILE: a self-contained HTML page of the last runs, per destination and dataset."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import logs, plan, summary
from . import Context


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    from .. import report

    enabled = plan.enabled_destinations(cfg["backups"])
    try:
        page = report.page(cfg, workdir, enabled, logs.setup(None, "report"))
        Path(args.report).write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {args.report}: {exc.strerror}", file=sys.stderr)
        return summary.EXIT_USAGE
    print(f"wrote {args.report}")
    return summary.EXIT_OK
