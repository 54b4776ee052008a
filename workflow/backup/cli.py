"""Command line: ``python scripts/backup_system.py [backup|run|restore|list|prune] [options]``.

The parser, the config checks every command shares, and a dispatch table: each action is a
module of backup.commands, imported only when it runs (see commands/__init__.py). backup and
run start Snakemake's child (engine_client.py) before the config is even read, so that its
import overlaps these checks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import PROJECT_DIR, plan, summary
from . import interrupts as signals
from .commands import SCREENFUL, Context
from .config import ConfigError, load_config
from .terminal import QuietStream

if TYPE_CHECKING:
    from .engine_client import Engine

EPILOG = """\
commands:
  backup    back up every enabled destination now (the default)
  run       backup (pre) -> analysis pipeline (pipeline.command) -> backup (post)
  restore   bring a dataset back from a destination, as it was after a run, from the destination alone:
            restore --from box|smb|secured|any --dataset CSVs --to DIR [--run RUN_ID | --at "2026-11-20 14:00"]
  list      the restore points each destination holds: list [--from DEST] [--dataset NAME]
  prune     remove the versions folders and archives that no restore point kept by the retention
            policy (backups.retention) needs: prune [--dry-run] [--from DEST]; no policy: nothing goes

exit status:
  0  every enabled destination succeeded
  1  a destination (or the pipeline) failed; the summary names it and why
  2  usage or config error, or another backup is running; nothing was transferred
  3  finished with warnings (for example a listed source file is missing)
  130/143  stopped by Ctrl-C (SIGINT) / SIGTERM: every job was stopped first, the run is recorded
     as interrupted and monitors are told it failed

Relative paths inside the config are relative to the project folder
({project}). Progress goes to the terminal, details to backup.log
(backups.log_file).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup_system.py",
        description="Back up the lab's CSVs and figure folders to SMB, Box and secured storage.",
        epilog=EPILOG.format(project=PROJECT_DIR),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["backup", "run", "restore", "list", "prune"],
        default="backup",
        help="default: backup",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="config file (default config/config.yaml); repeat to layer files, later ones win",
    )
    parser.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="list, per destination, the files that would be sent (prune: what would be removed); write nothing",
    )
    only = parser.add_mutually_exclusive_group()
    for dest in plan.DESTINATIONS:
        only.add_argument(
            f"--{dest}-only", dest="only", action="store_const", const=dest, help=f"only the {dest} destination"
        )
    parser.add_argument(
        "--list-files",
        action="store_true",
        help=f"with --dry-run: list every file that would be sent (default: the first {SCREENFUL} per transfer)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="read every file the kept backups need at every enabled destination and compare its SHA-1 with "
        "the destination's catalog; send nothing",
    )
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="with --verify: read the next of N slices (about 1/N of the files) at each destination; "
        "N calls cover everything",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="per destination: the last successful backup, its age, and a newer failure; exit 1 if a "
        "destination never succeeded or its last success is older than backups.warn_after_hours",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write a self-contained HTML page of the last runs (per destination and dataset) to FILE",
    )
    parser.add_argument("--cores", type=int, default=2, help="parallel jobs (default 2)")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="a Snakemake profile folder for the run (profiles/slurm: the pipeline's jobs go to SLURM; "
        "every backup job stays on this machine)",
    )
    rest = parser.add_argument_group("restore, list and prune (python scripts/backup_system.py restore ...)")
    rest.add_argument(
        "--from", dest="source", choices=[*plan.DESTINATIONS, "any"],
        help="the destination to restore from (any: the first that holds the run; damaged or missing files "
        "come from the next); list and prune: only this destination",
    )  # fmt: skip
    rest.add_argument("--dataset", help="CSVs, Results, ...")
    rest.add_argument("--to", metavar="DIR", help="an empty or new folder to restore into")
    when = rest.add_mutually_exclusive_group()
    when.add_argument("--run", metavar="RUN_ID", help="the state after this run (default: the latest)")
    when.add_argument("--at", metavar="'YYYY-MM-DD HH:MM'", help="the state of the last backup before this time")
    rest.add_argument("--force", action="store_true", help="allow a non-empty folder or the live sources")
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="folder for run records, job logs and Snakemake's state, and base of relative paths "
        "in the config (default: the project folder)",
    )
    return parser


# action -> the module of backup.commands whose main() runs it
COMMANDS = {
    "report": "report",
    "restore": "restore",
    "prune": "prune",
    "list": "listing",
    "status": "status",
    "dry-run": "dry_run",
    "verify": "verify",
    "backup": "backup",
    "run": "backup",
}


def action(args: argparse.Namespace) -> str:
    """The one action a command line asks for: the first that applies, in this order."""
    if args.report:
        return "report"
    if args.command in ("restore", "prune", "list"):
        return args.command
    if args.status:
        return "status"
    if args.dry_run:
        return "dry-run"
    return "verify" if args.verify else args.command


def main(argv: list[str] | None = None) -> int:
    sys.stdout, sys.stderr = QuietStream(sys.stdout), QuietStream(sys.stderr)
    args = build_parser().parse_args(argv)
    workdir = Path(args.workdir).resolve() if args.workdir else PROJECT_DIR
    chosen = action(args)
    runs_workflow = chosen in ("backup", "run")
    interrupts = signals.Interrupts().install()
    engine = None
    try:
        if runs_workflow and workdir.is_dir():
            from .engine_client import Engine

            engine = Engine(workdir, interrupts, args.profile)
        return _main(chosen, args, argv, workdir, engine, interrupts)
    except signals.Interrupted:
        what = "before any backup started" if runs_workflow else "before it finished"
        print(f"\ninterrupted ({interrupts.name}) {what}: nothing was changed at any destination", file=sys.stderr)
        return interrupts.exit_code
    finally:
        interrupts.deferred = True  # from here a signal is only noted: nothing may interrupt the cleanup
        if engine:
            engine.cancel()


def _main(chosen: str, args, argv: list[str] | None, workdir: Path, engine: Engine | None,
          interrupts: signals.Interrupts) -> int:  # fmt: skip
    config_files = [os.path.abspath(p) for p in (args.config or [str(PROJECT_DIR / "config" / "config.yaml")])]
    try:
        cfg = load_config(config_files, workdir=str(workdir))  # relative paths are checked there
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    if args.only and cfg["backups"]["enabled"] and not cfg["backups"]["destinations"][args.only].get("enabled"):
        print(f"error: --{args.only}-only: backups.destinations.{args.only} is disabled (enabled: false), so "
              f"nothing would be backed up; enable it, or leave out --{args.only}-only", file=sys.stderr)  # fmt: skip
        return summary.EXIT_USAGE
    transfers = plan.plan(cfg, str(workdir), [args.only] if args.only else None)
    if args.command in ("restore", "list") or args.dry_run or args.verify or args.status or args.report:
        from . import mounts

        mounts.reads_only()  # nothing is written at a destination by this command
    if args.sample is not None and (not args.verify or args.sample < 1):
        print("error: --sample N goes with --verify, and N is 1 or more", file=sys.stderr)
        return summary.EXIT_USAGE
    if args.profile and not (Path(args.profile) / "config.yaml").is_file():
        print(f"error: --profile {args.profile}: no config.yaml in that folder (a Snakemake profile is a folder "
              "holding one, such as profiles/slurm)", file=sys.stderr)  # fmt: skip
        return summary.EXIT_USAGE
    command = " ".join(["backup_system.py", *(argv if argv is not None else sys.argv[1:])])
    ctx = Context(config_files, command, transfers, interrupts, engine)
    module = importlib.import_module(f".commands.{COMMANDS[chosen]}", __package__)
    return module.main(args, cfg, workdir, ctx)
