"""restore: bring a dataset back from a destination, as it was after a run (restore.py does it).

The one implementation of the command, its messages and its exit statuses, whether it is typed
(``backup_system.py restore ...``) or a Snakemake job (``snakemake restore --config ...``, jobs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .. import logs, plan, records, summary
from ..errors import TransferError
from . import Context


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    return command(cfg, workdir, args.source, args.dataset, args.to, run_id=args.run, at=args.at,
                   dry_run=args.dry_run, force=args.force)  # fmt: skip


def command(cfg: dict, workdir: Path, source: str | None, dataset: str | None, to: str | None, run_id=None,
            at=None, dry_run=False, force=False) -> int:  # fmt: skip
    """The restore command (``backup_system.py restore`` and ``snakemake restore``): its lines and
    its exit status (0 all back, 1 failed or incomplete, 2 a usage error, nothing to restore or a
    bad folder, 3 back but for symlinks that point outside the folder)."""
    from ..mounts import reads_only
    from ..restore import RestoreError, restore

    reads_only()  # nothing is written at a destination
    if not (source and dataset and to):  # an empty --to is no folder (not the current one)
        print("error: restore needs --from, --dataset and --to", file=sys.stderr)
        return summary.EXIT_USAGE
    if dataset not in cfg["backups"]["sources"]:
        known = ", ".join(cfg["backups"]["sources"])
        print(f"error: no dataset {dataset!r} in the config (backups.sources has: {known})", file=sys.stderr)
        return summary.EXIT_USAGE
    log = logs.setup(None if dry_run else plan.absolute(cfg["backups"]["log_file"], str(workdir)),
                     records.new_run_id(), f"restore {source}/{dataset}")  # fmt: skip
    folder = Path(to).resolve()
    try:
        out = restore(cfg, workdir, source, dataset, folder, log, run_id=run_id, at=at, dry_run=dry_run, force=force)
    except RestoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    except (TransferError, OSError) as exc:
        reason = f"cannot write {exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
        print(f"error: restore failed: {reason}", file=sys.stderr)
        return summary.EXIT_FAILED
    if dry_run:
        print(f"Dry run: {out.expected} files of {dataset} from {source}, {out.label}; nothing written")
        return summary.EXIT_OK
    where = ", ".join(f"{n} from {d}" for d, n in out.sources.items()) or "nothing fetched"
    print(f"Restored {dataset}, {out.label}, into {folder} ({where}): "
          f"{out.matched} of {out.expected} files match that run's manifest")  # fmt: skip
    for problem in out.problems:
        print(f"error: {problem}", file=sys.stderr)
    if out.skipped_links:
        print(f"warning: {len(out.skipped_links)} symlinks not restored: they point outside {folder} "
              f"(e.g. {out.skipped_links[0]})", file=sys.stderr)  # fmt: skip
    log.info("restored into %s: %d of %d files match (%s)", folder, out.matched, out.expected, out.label)
    if not out.complete:
        return summary.EXIT_FAILED
    return summary.EXIT_WARNINGS if out.skipped_links else summary.EXIT_OK
