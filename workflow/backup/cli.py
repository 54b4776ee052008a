"""Command line: ``python scripts/backup_system.py [backup|run] [options]``.

A thin layer over the Snakemake workflow: it validates the config, starts
``snakemake`` with a fresh run id, shows one line per finished job, and prints the
summary table from the run's marker files. ``--dry-run`` asks rsync and rclone
what they would send, and writes nothing anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import interrupts as signals
from . import logs, manifest, names, notify, plan, progress, records, runner, sources, summary, transports
from .config import ConfigError, load_config
from .lock import LockBusy, project_lock

PROJECT_DIR = Path(__file__).resolve().parents[2]
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


def _archive_preview(cfg: dict, transfer: plan.Transfer, workdir: Path, cache: dict) -> tuple[sources.Listing, str]:
    """What the archive job would do for a dataset: reuse an unchanged archive or make a new one."""
    from . import archive

    if transfer.dataset not in cache:
        listing = sources.list_source(transfer.source)
        folder = Path(plan.archive_dir(cfg, str(workdir)))
        previous = archive.unchanged_archive(
            folder, transfer.dataset, transfer.source.root, listing.files, listing.sizes, os.cpu_count() or 1
        )
        if previous:
            files = sources.single_file(previous)
            note = f"  unchanged since {previous.name}: no new archive would be made; that one is sent"
        elif listing.files:
            stamp = records.archive_timestamp(records.new_run_id())
            name = archive.free_name(folder, transfer.dataset, stamp).name
            files = sources.Listing(root=str(folder))
            note = (
                f"  would make {folder / name} from {len(listing.files)} files "
                f"({summary.human_bytes(listing.total_bytes)}) and send it"
            )
        else:
            files, note = sources.Listing(root=str(folder)), "  nothing to archive: no source files"
        files.missing, files.special = listing.missing, listing.special
        cache[transfer.dataset] = (files, note)
    return cache[transfer.dataset]


SCREENFUL = 20  # names listed per transfer by --dry-run, unless --list-files


def dry_run(cfg: dict, transfers: list[plan.Transfer], workdir: Path, list_all: bool = False) -> int:
    """Ask each tool what it would send; print it, then the totals; touch nothing."""
    quiet = logs.setup(None, "dry-run")
    outcomes: list[str] = []
    totals = [("destination", "dataset", "files to send", "bytes to send", "note")]
    print("Dry run: nothing is written at any destination.\n")
    if not cfg["backups"]["enabled"]:
        print("backups are disabled (backups.enabled: false): nothing would be backed up")
        return summary.EXIT_OK
    archives: dict = {}
    for transfer in transfers:
        print(f"{transfer.destination} {transfer.dataset} -> {transfer.target} ({transfer.tool}, {transfer.mode})")
        try:
            skipped: list[str] = []
            refused: dict[str, str] = {}
            transport = transports.for_transfer(transfer)
            if transfer.mode == "archive":
                listing, note = _archive_preview(cfg, transfer, workdir, archives)
                print(note)
            else:
                folds = sources.ignores_case(transfer, transport, quiet)
                held = functools.partial(transport.list, transfer, quiet)  # asked only if names clash by case
                listing, skipped, refused = sources.for_transfer(transfer, folds, held)
            for pattern in listing.missing:
                print(f"  warning: source not found: {os.path.join(transfer.source.root, pattern)}")
            for link in skipped:
                print(f"  warning: symlink not copied (an SMB share cannot hold it): {link}")
            for name in listing.special:
                print(f"  warning: not a file, skipped (FIFO, socket or device): {name}")
            for name in listing.unreadable:
                print(f"  warning: cannot read, skipped (permission denied): {names.shown(name)}")
            for name, why in sorted(refused.items()):
                print(f"  warning: cannot be stored at {transfer.destination}, not sent: {names.shown(name)} ({why})")
            warned = listing.missing or skipped or listing.special or listing.unreadable or refused
            outcomes.append("warning" if warned else "ok")
            total = len(listing.files)
            if transfer.mode == "direct":
                listing = _without_rewrites(listing, transfer.dataset, workdir)
            result = (
                transport.send(transfer, listing, quiet, dry_run=True) if listing.files else transports.SendResult()
            )
        except (transports.TransferError, OSError) as exc:
            reason = f"cannot read {exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
            print(f"  FAILED: {reason}\n")
            outcomes.append("failed")
            totals.append((transfer.destination, transfer.dataset, "-", "-", "FAILED"))
            continue
        if listing.files or transfer.mode == "direct":
            print(f"  would send {result.files_sent} of {total} files ({summary.human_bytes(result.bytes_sent)}):")
        shown = result.sent if list_all else result.sent[:SCREENFUL]
        for name in shown:
            print(f"    {name}")
        if len(shown) < len(result.sent):
            print(f"    ... and {len(result.sent) - len(shown)} more (--list-files lists every one)")
        print()
        note = outcomes[-1].upper() if outcomes[-1] != "ok" else ""
        totals.append((transfer.destination, transfer.dataset, str(result.files_sent),
                       summary.human_bytes(result.bytes_sent), note))  # fmt: skip
    print("Would send (nothing was written):\n" + summary.columns(totals))
    return summary.exit_of(outcomes)


def _without_rewrites(listing, dataset: str, workdir):
    """A dry run's preview of identical rewrites, from this machine's last state of the dataset (no
    destination is asked): files whose bytes are the same, with a new time, are left out of what
    would be sent, and counted (the run decides against each destination's catalog)."""
    from . import rewrites  # the catalogs' code: only a dry run needs it here

    base = manifest.latest(records.cache_dir(workdir), dataset)
    maybe = rewrites.candidates(base, listing)
    if not maybe:
        return listing
    recorded = base.entries()
    same = rewrites.identical(base, listing, maybe, {name: recorded[name][:2] for name in maybe}, 0)
    if same:
        print(f"  {len(same)} rewritten with identical bytes since the last backup: not sent again")
    return sources.without(listing, list(same)) if same else listing


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


def _restore(args, cfg: dict, workdir: Path) -> int:
    from . import restore

    if not (args.source and args.dataset and args.to):
        print("error: restore needs --from, --dataset and --to", file=sys.stderr)
        return summary.EXIT_USAGE
    return restore.command(cfg, workdir, args.source, args.dataset, Path(args.to), run_id=args.run, at=args.at,
                           dry_run=args.dry_run, force=args.force)  # fmt: skip


def _prune(args, cfg: dict, workdir: Path, command: str, interrupts) -> int:
    """The prune command: every enabled destination (or --from one), under the project's lock."""
    from . import prune

    chosen = plan.enabled_destinations(cfg["backups"], [args.only] if args.only else None)
    if args.source and args.source != "any":
        if args.source not in chosen:
            print(f"error: --from {args.source}: backups.destinations.{args.source} is not enabled", file=sys.stderr)
            return summary.EXIT_USAGE
        chosen = [args.source]
    if args.dry_run:
        return prune.command(cfg, workdir, chosen, dry_run=True)
    try:
        with project_lock(workdir, command) as note:
            if note:
                print(f"note: {note}")
            return prune.command(cfg, workdir, chosen, dry_run=False)
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    except signals.Interrupted:
        print(f"\ninterrupted ({interrupts.name}) while pruning: every kept restore point is intact; run prune "
              "again to finish", file=sys.stderr)  # fmt: skip
        return interrupts.exit_code


def _prune_after(cfg: dict, workdir: Path, only: str | None, exit_code: int, log) -> int:
    """backups.prune_after_backup: prune what this run wrote to, after it succeeded. A prune that
    fails leaves the backup as it is: a warning (exit 3), never a failed backup."""
    from . import prune

    print("\nPruning (backups.prune_after_backup):")
    status = prune.prune_all(cfg, workdir, plan.enabled_destinations(cfg["backups"], [only] if only else None),
                             dry_run=False, log=log)  # fmt: skip
    if status != summary.EXIT_OK:
        print("warning: the prune after the backup failed (above); the backup itself is complete", file=sys.stderr)
        return summary.EXIT_WARNINGS if exit_code == summary.EXIT_OK else exit_code
    return exit_code


def check_pipeline(cfg: dict, workdir: Path, source: str) -> None:
    """`run` needs a pipeline to run: say so before anything is sent."""
    pipeline = cfg["pipeline"]
    if not pipeline.get("command") and not pipeline.get("snakefile"):
        raise ConfigError(f"{source}: pipeline: `run` needs pipeline.command or pipeline.snakefile")
    snakefile = pipeline.get("snakefile")
    if snakefile and not Path(plan.absolute(snakefile, str(workdir))).is_file():
        raise ConfigError(f"{source}: pipeline.snakefile: {snakefile} does not exist")


def verify(cfg: dict, destinations: list[str], workdir: Path, sample: int | None, workers: int) -> int:
    """--verify: every destination checked against its own catalog (one slice of it with --sample)."""
    from . import verify as verify_mod

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


def terminal_text(line: str) -> str | None:
    """What the terminal shows of a line of the engine's output: the pipeline's own lines, and
    each job's one line, also when it arrived glued to a part-line of Snakemake's (jobs and
    Snakemake share one pipe; a job writes its line whole, Snakemake not always)."""
    if line.startswith(progress.OUTPUT):
        return "  | " + line[len(progress.OUTPUT) :]
    at = line.find(progress.SAY)
    return "  " + line[at + len(progress.SAY) :] if at >= 0 else None


class StatusLine:
    """One redrawn line at the bottom of the terminal: the latest progress of each running job."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def update(self, text: str) -> None:
        label, _, state = text.partition(": ")
        self.jobs[label] = state
        line = " | ".join(f"{k}: {v}" for k, v in self.jobs.items())
        sys.stdout.write("\r\x1b[K" + line[: self.width])
        sys.stdout.flush()

    def clear(self) -> None:
        self.jobs.clear()
        sys.stdout.write("\r\x1b[K")
        sys.stdout.flush()


class Engine:
    """Snakemake in a child process, started as soon as the command line knows it will need it: it
    imports Snakemake (a third of a second) while this process checks the config, the remotes and
    the lock, then runs what ``run`` tells it. Job lines go to the terminal, everything to a log."""

    def __init__(self, workdir: Path, interrupts: signals.Interrupts) -> None:
        self.workdir, self.tty, self.interrupts = workdir, sys.stdout.isatty(), interrupts
        env = {
            **os.environ,
            "BACKUP_CLI": "1",
            records.OWNER_ENV: str(os.getpid()),  # the process a destination's in-progress marker names
            "BACKUP_PROGRESS": "1" if self.tty else "0",
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR / "workflow"), os.environ.get("PYTHONPATH")])),
        }
        # backup.engine is snakemake's own command line, without its job-rate limiter (see engine.py),
        # in a process group of its own that this process stops as a whole (see interrupts.py).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backup.engine", "--wait"], cwd=workdir, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0,
            preexec_fn=functools.partial(signals.die_with_parent, os.getpid()),
        )  # fmt: skip
        interrupts.watch(self.proc.pid)

    def cancel(self) -> None:
        """Not needed after all: the child sees the end of its input and exits."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait()

    def run(
        self,
        config_files: list[str],
        targets: list[str],
        run_id: str,
        only: str | None,
        cores: int,
        options: list[str],
    ) -> tuple[int, list[str]]:
        """Run Snakemake on ``targets``; ``options``: the run's own (its --resources, a --profile)."""
        argv = [
            "--snakefile", str(PROJECT_DIR / "Snakefile"),
            "--directory", str(self.workdir),
            "--cores", str(cores),
            "--keep-going",
            # The project's lock (lock.py) keeps runs apart; Snakemake's own would outlive a stopped
            # run and refuse the next one, as would the stopped run's incomplete outputs.
            "--nolock", "--rerun-incomplete",
            *options,
            "--configfile", *config_files,
            "--config", f"run_id={run_id}", *([f"only={only}"] if only else []),
            "--", *targets,
        ]  # fmt: skip
        # The validated config's digest (config.VALIDATED_ENV), set after the child started.
        env = {k: v for k, v in os.environ.items() if k.startswith("BACKUP_")}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # The log first: once Snakemake is told what to run, nothing here may fail before it ends.
        log_path = records.run_dir(run_id, self.workdir) / "snakemake.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        log_fh = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below, quietly
        live = StatusLine() if self.tty else None
        try:
            try:
                self.proc.stdin.write(json.dumps({"argv": argv, "env": env}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # the child died before it was told what to run: its output below says why
            for line in self.proc.stdout:
                if line.startswith(progress.PREFIX):
                    if live:
                        live.update(line[len(progress.PREFIX) :].rstrip("\n"))
                    continue  # progress is for the eyes only: not in logs
                with contextlib.suppress(OSError):  # a full disk costs the log, not the run
                    log_fh.write(line)
                lines.append(line.rstrip("\n"))
                shown = terminal_text(line)
                if shown is not None:
                    if live:
                        live.clear()
                    print(shown, end="", flush=True)
            if live:
                live.clear()
            returncode = self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                log_fh.close()
        if self.interrupts.signum:  # its group was told to stop: wait until every process of it is gone
            signals.wait_group(self.proc.pid)
        self.interrupts.done(self.proc.pid)
        return returncode, lines


class QuietStream:
    """The terminal or pipe this command writes to may go away (an SSH session drops, a reader
    closes): that costs the output, never the run's record, its pings or its exit status."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    sys.stdout, sys.stderr = QuietStream(sys.stdout), QuietStream(sys.stderr)
    args = build_parser().parse_args(argv)
    workdir = Path(args.workdir).resolve() if args.workdir else PROJECT_DIR
    quick = args.dry_run or args.verify or args.status or args.report
    runs_workflow = args.command in ("backup", "run") and not quick
    interrupts = signals.Interrupts().install()
    engine = None
    try:
        engine = Engine(workdir, interrupts) if runs_workflow and workdir.is_dir() else None
        return _main(args, argv, workdir, engine, interrupts)
    except signals.Interrupted:
        what = "before any backup started" if runs_workflow else "before it finished"
        print(f"\ninterrupted ({interrupts.name}) {what}: nothing was changed at any destination", file=sys.stderr)
        return interrupts.exit_code
    finally:
        interrupts.deferred = True  # from here a signal is only noted: nothing may interrupt the cleanup
        if engine:
            engine.cancel()


def _main(args, argv: list[str] | None, workdir: Path, engine: Engine | None, interrupts) -> int:
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
    if args.report:
        enabled = plan.enabled_destinations(cfg["backups"])
        try:
            from . import report

            page = report.page(cfg, workdir, enabled, logs.setup(None, "report"))
            Path(args.report).write_text(page, encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.report}: {exc.strerror}", file=sys.stderr)
            return summary.EXIT_USAGE
        print(f"wrote {args.report}")
        return summary.EXIT_OK
    if args.command == "restore":
        return _restore(args, cfg, workdir)
    if args.command == "prune":
        command = " ".join(["backup_system.py", *(argv if argv is not None else sys.argv[1:])])
        return _prune(args, cfg, workdir, command, interrupts)
    only = [args.only] if args.only else None
    if args.command == "list":
        from . import history

        quiet = logs.setup(None, "list")
        chosen = [args.source] if args.source and args.source != "any" else plan.enabled_destinations(cfg["backups"])
        text, worst = history.render(cfg, workdir, chosen, args.dataset, quiet)
        print(text)
        return worst
    if args.status:
        from . import status

        if not cfg["backups"]["enabled"]:
            print("FAILING: backups are switched off (backups.enabled: false): nothing is being backed up")
            return summary.EXIT_FAILED
        quiet = logs.setup(None, "status")
        enabled = plan.enabled_destinations(cfg["backups"], only)
        transfers, notes = status.gather(cfg, workdir, enabled, quiet)
        text, worst = status.report(transfers, enabled, cfg["backups"]["warn_after_hours"])
        print(text + "".join(f"\nnote: {n}" for n in notes))
        return worst
    try:
        check_remotes(transfers, " + ".join(config_files))
        if args.command == "run" and not args.dry_run:
            check_pipeline(cfg, workdir, " + ".join(config_files))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    if args.dry_run:
        return dry_run(cfg, transfers, workdir, args.list_files)

    command = " ".join(["backup_system.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        with project_lock(workdir, command) as note:
            if note:
                print(f"note: {note}")
            if args.verify:
                return verify(cfg, plan.enabled_destinations(cfg["backups"], only), workdir, args.sample, args.cores)
            # From here on a signal stops the jobs, and the run is recorded, before the lock is freed.
            interrupts.deferred = True
            return _run(args, cfg, config_files, transfers, workdir, command, engine or Engine(workdir, interrupts))
    except LockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summary.EXIT_USAGE
    except OSError as exc:  # the log file or the state folder cannot be written
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return summary.EXIT_USAGE


def _interrupted(row: records.TransferRecord, signal_name: str) -> records.TransferRecord:
    """A transfer a signal stopped: no record of its own (its job was stopped), or not committed at
    its destination. A transfer that failed by itself keeps its own error."""
    unfinished = not row.started or (row.error or "").startswith("not recorded in the destination's catalog")
    if row.status == records.FAILED and unfinished:
        row.status, row.error = records.INTERRUPTED, f"stopped by {signal_name} before it was complete and recorded"
    return row


def _run(args, cfg: dict, config_files: list[str], transfers: list[plan.Transfer], workdir: Path, command: str,
         engine: Engine) -> int:  # fmt: skip
    run_id, started = records.new_run_id(), records.now_iso()
    log_file = cfg["backups"]["log_file"]
    log = logs.setup(plan.absolute(log_file, str(workdir)), run_id, "cli")

    # The marker files are the targets, not the rules backup_all and run: their report job would
    # only print the summary this command prints itself, and cost a process at the end of the run.
    def markers(stage: str) -> list[str]:
        return [records.marker_path(run_id, stage, t.destination, t.dataset) for t in transfers]

    monitor = cfg["backups"]["notify"]
    log.info("started: %s (config %s)", args.command, ", ".join(config_files))
    notify.ping(monitor["ping_url"], "start", log, monitor["timeout_seconds"])
    print(f"Run {run_id}: {args.command}, config {', '.join(config_files)}")
    if not cfg["backups"]["enabled"]:
        print("backups are disabled (backups.enabled: false): no backup step will transfer anything")
    if any(t.tool == "rclone" for t in transfers):
        from .transports import rclone  # while Snakemake starts: the jobs find the SMB password ready

        rclone.obscure_once(transfers)
    nearby = {t.destination for t in transfers if transports.for_transfer(t).nearby(t)}
    options = ["--resources", *plan.resource_limits(cfg["backups"], nearby)]
    options += ["--profile", os.path.abspath(args.profile)] if args.profile else []
    runner.give_back_memory()  # what validating the config took: this process waits for the run now
    if args.command == "run":
        # The pre-pipeline backup (and its gate) first, then the pipeline and the post backup:
        # two invocations of one graph, so no pipeline job can start before the gate.
        returncode, lines = engine.run(config_files, ["pipeline_gate"], run_id, args.only, args.cores, options)
        if returncode == 0 and not engine.interrupts.signum:
            targets = [records.pipeline_marker(run_id), *markers("post")]
            returncode, more = Engine(workdir, engine.interrupts).run(config_files, targets, run_id, args.only,
                                                                      args.cores, options)  # fmt: skip
            lines += more
    else:
        targets = markers("manual") or ["backup_all"]
        returncode, lines = engine.run(config_files, targets, run_id, args.only, args.cores, options)

    exit_code = summary.EXIT_OK
    stopped = engine.interrupts  # a signal stopped every job before this point (see Engine.run)
    stages = ["pre", "post"] if args.command == "run" else ["manual"]
    all_rows: list[records.TransferRecord] = []
    pipeline = None
    for stage in stages:
        if stage == "post" and not (workdir / records.pipeline_marker(run_id)).exists():
            error = records.read_record(workdir / records.pipeline_error(run_id), records.PipelineRecord)
            reason = error.error if error else f"see .backup/runs/{run_id}/snakemake.log"
            label = "NOT RUN" if error and error.status == "not run" else "FAILED"
            if stopped.signum and not error:
                label, reason = "INTERRUPTED", f"stopped by {stopped.name}"
            pipeline = records.PipelineRecord(run_id, status=label.lower(), error=reason)
            print(f"\nPipeline {label}: {reason}\nPost-pipeline backup: not run.")
            exit_code = summary.EXIT_FAILED
            continue
        if stage == "post":
            pipeline = records.PipelineRecord(run_id)
            print("\nPipeline: ok")
        rows = records.stage_rows(run_id, stage, transfers, workdir)
        if stopped.signum:
            rows = [_interrupted(row, stopped.name) for row in rows]
        all_rows += rows
        if rows:
            text = summary.table(rows, f"Backup summary ({stage}):" if stage != "manual" else "Backup summary:")
            log.info("%s", text)
            print("\n" + text)
    rows_status = summary.exit_status(all_rows)
    if stopped.signum:
        exit_code = stopped.exit_code
        done = sum(1 for r in all_rows if r.status in (records.OK, records.WARNING))
        print(f"\nInterrupted ({stopped.name}): every job was stopped; {done} of {len(all_rows)} transfers had "
              "finished and are recorded at their destination, the others are not a restore point.")  # fmt: skip
    elif rows_status == summary.EXIT_FAILED or exit_code == summary.EXIT_FAILED:
        exit_code = summary.EXIT_FAILED
    elif returncode != 0:
        exit_code = summary.EXIT_FAILED
        print("\nThe workflow failed; its last lines:\n" + "\n".join(lines[-15:]))
    else:
        exit_code = rows_status
    if cfg["backups"]["prune_after_backup"] and exit_code in (summary.EXIT_OK, summary.EXIT_WARNINGS):
        exit_code = _prune_after(cfg, workdir, args.only, exit_code, log)
    run = records.RunRecord(run_id, kind=args.command, command=command, config=config_files, started=started,
                            finished=records.now_iso(), exit_status=exit_code, pipeline=pipeline,
                            transfers=all_rows)  # fmt: skip
    try:
        records.write_record(records.run_record_path(run_id, workdir), run)
    except OSError as exc:  # the project's own disk (full?): the destinations hold what the summary says
        if exit_code in (summary.EXIT_OK, summary.EXIT_WARNINGS):
            exit_code = run.exit_status = summary.EXIT_FAILED
        where = records.run_dir(run_id, workdir)
        print(f"\nerror: cannot write this run's record in {where}: {exc.strerror} (is the project's disk full?); "
              "each destination holds what the summary above says", file=sys.stderr)  # fmt: skip
    title, body = notify.message(run_id, args.command, exit_code, all_rows, pipeline)
    failed = exit_code not in (summary.EXIT_OK, summary.EXIT_WARNINGS)
    notify.ping(monitor["ping_url"], "fail" if failed else "success", log, monitor["timeout_seconds"], body)
    told = notify.notify(monitor["on_failure" if failed else "on_success"], title, body, log,
                         monitor["timeout_seconds"], failed)  # fmt: skip
    if told:
        log.info("notified %d services", told)
    log.info("finished with exit status %d", exit_code)
    print(f"\nLog: {log_file}   Run records: .backup/runs/{run_id}/   Exit status: {exit_code}")
    return exit_code
