"""Checks before anything is sent (--dry-run, --verify, backup, run): a named rclone remote that
rclone's config lacks, and a `run` without a pipeline, are config errors found before any job."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import logs, plan, summary, transports
from ..config import ConfigError
from . import Context


def check(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    """EXIT_OK, or EXIT_USAGE once the error is printed."""
    source = " + ".join(ctx.config_files)
    try:
        check_remotes(ctx.transfers, source)
        if args.command == "run" and not args.dry_run:
            check_pipeline(cfg, workdir, source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    return summary.EXIT_OK


def check_remotes(transfers: list[plan.Transfer], source: str) -> None:
    """A named rclone remote that rclone's config does not have is a config error: stop before any job."""
    seen = set()
    quiet = logs.setup(None, "preflight")
    for t in transfers:
        if t.tool != "rclone" or t.target.startswith(":") or (t.rclone_config, t.target.split(":")[0]) in seen:
            continue
        seen.add((t.rclone_config, t.target.split(":")[0]))
        try:
            transports.RcloneTransport().check_remote(t, quiet)
        except transports.TransferError as exc:
            key = "remote" if t.destination == "box" else "rclone_remote"
            raise ConfigError(f"{source}: backups.destinations.{t.destination}.{key}: {exc}") from None


def check_pipeline(cfg: dict, workdir: Path, source: str) -> None:
    """`run` needs a pipeline to run: say so before anything is sent."""
    pipeline = cfg["pipeline"]
    if not pipeline.get("command") and not pipeline.get("snakefile"):
        raise ConfigError(f"{source}: pipeline: `run` needs pipeline.command or pipeline.snakefile")
    snakefile = pipeline.get("snakefile")
    if snakefile and not Path(plan.absolute(snakefile, str(workdir))).is_file():
        raise ConfigError(f"{source}: pipeline.snakefile: {snakefile} does not exist")
