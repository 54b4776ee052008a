"""The work behind each Snakemake job: ``python -m backup sync|pipeline|report ...``.

A sync job never raises for a failed transfer: it records the failure in its marker
and exits 0, so one destination failing never stops the others, and the report job
at the end turns failures into a non-zero exit. Only a broken job (a bug) exits
non-zero by itself.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path

from . import commit, logs, manifest, names, plan, progress, records, rewrites, runner, sources, summary, transports
from .catalog import Catalog
from .config import ConfigError, for_run, pipeline_private
from .errors import ArchiveError
from .records import TransferRecord
from .transfer import Outcome, send_verified


def _say(line: str) -> None:
    """One line per job on stdout; the CLI shows lines that start with 'backup: '."""
    # One write() per line, so lines of jobs running at once never interleave.
    os.write(sys.stdout.fileno(), f"backup: {line}\n".encode("utf-8", errors="replace"))


def _guarded(record, work) -> None:
    """Run ``work``; any failure becomes status 'failed' with a one-line, masked error."""
    try:
        work()
    except (transports.TransferError, ArchiveError, ConfigError, KeyError) as exc:
        record.status, record.error = records.FAILED, runner.mask(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug must still leave a record and free the others
        record.status, record.error = records.FAILED, runner.mask(f"internal error: {type(exc).__name__}: {exc}")


def _finish(record, t0: float, log, marker: str, label: str, detail: str) -> None:
    record.finished, record.seconds = records.now_iso(), round(time.monotonic() - t0, 3)
    if record.status == records.FAILED:
        log.error("FAILED: %s", record.error)
    else:
        log.info("%s: %s", record.status, detail)
    records.write_record(marker, record)
    _say(f"{label}: {record.status} ({record.error or detail})")


def _archive_listing(run_id: str, stage: str, dataset: str, record: TransferRecord):
    """In compressed mode a destination receives one file: the archive its archive job chose."""
    made = records.read_record(records.archive_marker(run_id, stage, dataset), records.ArchiveRecord)
    if made is None:
        raise ArchiveError("the archive job left no record")
    if made.status == records.FAILED:
        raise ArchiveError(f"no archive to send: {made.error}")
    record.missing, record.skipped_special, record.unreadable = made.missing, made.skipped_special, made.unreadable
    if not made.archive:
        return sources.Listing(root="", missing=record.missing), None
    record.archive, record.archive_created = os.path.basename(made.archive), made.created
    return sources.single_file(made.archive), made.manifest


def _held(listing, whole, skipped: list[str]):
    """What a state of the dataset holds: what was sent, and the symlinks a share could not take
    (the catalog keeps them)."""
    return sources.union(listing, sources.subset(whole, skipped)) if skipped else listing


def _archived_state(cache: Path, name: str, record: TransferRecord) -> manifest.Summary:
    found = manifest.load(cache, name)
    if found is None:
        raise ArchiveError(f"the manifest of {record.archive} is missing from {cache}")
    return manifest.Summary.of(found)


# What a send did, as the record keeps it (the rest of transfer.Outcome is for the manifest).
SENT = ("files_sent", "bytes_sent", "identical_rewrites", "displaced", "replaced_newer", "vanished", "files_verified")


class _Sync:
    """One sync job: its steps, and what they leave for the end whatever step failed: the record,
    the log (the job's own until the config names backup.log), the catalog (the last job commits it)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.label = args, f"{args.stage} {args.dest}/{args.dataset}"
        self.record = TransferRecord(args.run_id, args.stage, args.dest, args.dataset, started=records.now_iso())
        records.stamp(self.record)
        self.log = logs.setup(None, args.run_id, job_log=args.log)
        self.cat: Catalog | None = None  # the destination's catalog, once this job knows it
        self.cfg: dict = {}
        self.planned: list[str] = []

    def run(self) -> None:
        """The steps (``sync`` runs them guarded: a failure becomes the record's)."""
        args, record = self.args, self.record
        cfg = for_run(args.config, args.run_id)
        self.log = log = logs.setup(cfg["backups"]["log_file"], args.run_id, self.label, args.log)
        workdir = os.getcwd()
        transfer = plan.find(plan.plan(cfg, workdir), args.dest, args.dataset)
        record.mode, record.tool, record.target, record.source = (
            transfer.mode, transfer.tool, transfer.target, transfer.source.root
        )  # fmt: skip
        record.rclone_config = transfer.rclone_config or ""
        transport = transports.for_transfer(transfer)
        cat = Catalog(plan.catalog_transfer(cfg, args.dest, workdir), workdir, log, transport)
        record.folder = plan.within(cat.base, transfer.target)
        planned = list(cfg["backups"]["destinations"][args.dest]["datasets"])
        self.cat, self.cfg, self.planned = cat, cfg, planned  # whatever happens next, the last job commits
        archived = None
        if transfer.mode == "archive":
            listing, archived = _archive_listing(args.run_id, args.stage, args.dataset, record)
            whole, skipped = listing, []
        else:
            listing, whole, skipped = self.sendable(transfer, transport, workdir)
        state = commit.open_stage(cat, args.run_id, args.stage, planned, workdir)  # the catalog, read (and locked)
        if state.error:
            raise transports.TransferError(state.error)
        for holder in state.took_over:
            log.warning("took over the stale in-progress marker of %s: that run did not finish", holder)
        self.name_left_out(transfer, listing, skipped)
        record.files_total, record.bytes_total = len(listing.files), listing.total_bytes
        sent, now = Outcome(listing), None  # now: the digest of what the state holds, if asked before sending
        if listing.files:
            sent, now = self.send(transfer, transport, listing, _held(listing, whole, skipped), workdir)
        # What this run holds at the destination, for restores from any machine: the manifest.
        cache = records.cache_dir(workdir)
        if transfer.mode == "archive":
            state_now = _archived_state(cache, archived, record) if archived else None
        else:
            digest = now if sent.listing is listing else None  # the same files as before sending: known
            state_now = self.direct_state(transfer, transport, cache, _held(sent.listing, whole, skipped), sent.sha1,
                                          digest)  # fmt: skip
        if state_now is not None:
            commit.add_manifest(cat, args.run_id, args.stage, state_now.name, workdir)
            record.manifest, record.state_files, record.state_bytes = state_now.name, state_now.files, state_now.bytes
            record.state_listing = state_now.listing
        if sent.sha1:  # a manifest was built: the job lives on beside the others and their tools, whose sum peaks
            runner.give_back_memory()
        if any((record.missing, record.vanished, record.skipped_links, record.skipped_special, record.replaced_newer,
                record.unstorable, record.unreadable, record.displaced)):  # fmt: skip
            record.status = records.WARNING

    def sendable(self, transfer, transport, workdir: str):
        """Direct mode: the source listed, less what the destination cannot hold (into the record).
        Returns what is sent, the whole listing, and the symlinks left out."""
        args, record, log = self.args, self.record, self.log
        # rclone lists the target, and the catalog beside it, while this walks the source.
        self.cat.prime(transport.prefetch(transfer, log, beside=self.cat.transfer))
        whole = sources.list_source(transfer.source)  # a missing or empty root fails here
        folds = sources.ignores_case(transfer, transport, log)
        there = functools.partial(transport.list, transfer, log)  # asked only if names clash by case
        memo = records.cache_dir(workdir) / "storable" / f"{args.dest}-{args.dataset}"  # names found storable
        listing, skipped, refused = sources.sendable(transfer, whole, folds, there, memo,
                                                     keeps_links=transport.keeps_symlinks(transfer))  # fmt: skip
        # Kept printable: records are JSON (UTF-8), and a name may not be.
        record.unstorable = {names.shown(name): why for name, why in refused.items()}
        record.unreadable = [names.shown(name) for name in whole.unreadable]
        record.skipped_special = whole.special
        return listing, whole, skipped

    def name_left_out(self, transfer, listing, skipped: list[str]) -> None:
        """Warn of what is not sent (in compressed mode the archive job named the source's part)."""
        record, log, direct = self.record, self.log, transfer.mode == "direct"
        record.missing = record.missing or listing.missing
        for pattern in listing.missing if direct else []:
            log.warning("source not found: %s", os.path.join(transfer.source.root, pattern))
        if record.skipped_special and direct:
            log.warning("not files, skipped (FIFOs, sockets, devices hold no data): %s",
                        ", ".join(record.skipped_special))  # fmt: skip
        for name, why in sorted(record.unstorable.items()):
            log.warning("cannot be stored at %s, not sent: %s (%s)", self.args.dest, name, why)
        if record.unreadable and direct:
            log.warning("cannot read, skipped (permission denied; let the backup's user "
                        "read them): %s", ", ".join(record.unreadable))  # fmt: skip
        if skipped:
            record.skipped_links = skipped
            log.warning("symlinks not copied (an SMB share cannot hold them; the catalog keeps them): %s",
                        ", ".join(skipped))  # fmt: skip

    def send(self, transfer, transport, listing, held, workdir: str) -> tuple[Outcome, str | None]:
        """Send ``listing``, checked (transfer.send_verified), while this run's in-progress marker is
        kept fresh; what it did goes into the record, whatever step failed. Returns the outcome, and
        the digest of what the state holds (``held``) where it was asked before sending."""
        args, log, cat = self.args, self.log, self.cat
        # What the dataset holds: the tool sends only what the destination lacks (the outcome says how much).
        log.info("backing up %d files (%s) to %s: sending what it lacks", len(listing.files),
                 summary.human_bytes(listing.total_bytes), transfer.target)  # fmt: skip
        content = self.cfg["backups"]["verify"] == "content"
        marking = functools.partial(commit.before_write, cat, args.run_id, args.stage, workdir)
        carried = functools.partial(manifest.carried, records.cache_dir(workdir), args.dataset, listing)
        # The destination's last state, read only where files may have been rewritten: rsync needs it
        # before sending (its own step: transfer._rewritten), unless the state's listing is this one
        # (nothing changed); rclone asks later.
        now = manifest.listing_digest(held) if transfer.tool == "rsync" else None
        tag = records.version_tag(args.run_id, args.stage)
        base = functools.cache(lambda: rewrites.baseline(cat, args.dataset, tag, unless=now, log=log))
        sent = Outcome(listing)
        try:
            with commit.holding(cat, args.run_id, args.stage, workdir, log):
                send_verified(transfer, transport, listing, log, tag=tag, content=content, marking=marking,
                              known=carried, base=base, label=self.label, outcome=sent)  # fmt: skip
        finally:
            for name in SENT:
                setattr(self.record, name, getattr(sent, name))
        return sent, now

    def direct_state(self, transfer, transport, cache: Path, held, known: dict[str, str], digest):
        """The manifest of what a direct send left at the destination; None where no files are left
        (all vanished while sent: not a state to restore, ever)."""
        ask = functools.partial(transport.sha1_of, transfer, log=self.log)  # for files that moved while read
        try:
            return manifest.of_listing(cache, self.args.dataset, held, known, ask, digest) if held.files else None
        except ValueError as exc:
            raise transports.TransferError(f"no manifest of this state: {exc}; run the backup again") from None


def sync(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    job = _Sync(args)
    record = job.record
    _guarded(record, job.run)
    for field in ("vanished", "skipped_links", "skipped_special", "replaced_newer", "displaced"):
        setattr(record, field, [names.shown(name) for name in getattr(record, field)])  # records are UTF-8 JSON
    detail = f"{record.files_sent} of {record.files_total} files sent, {record.files_verified} verified"
    if record.archive:
        detail += f", {record.archive}"
    _finish(record, t0, job.log, args.marker, job.label, detail)
    if job.cat is not None:
        try:
            commit.commit_if_last(job.cat, job.cfg, args.run_id, args.stage, job.planned, os.getcwd())
        except Exception as exc:  # noqa: BLE001 - the summary reports a destination left uncommitted
            job.log.error("could not commit the catalog at %s: %s", args.dest, runner.mask(str(exc)))
    return 0


def make_archive(args: argparse.Namespace) -> int:
    """Make (or reuse, when nothing changed) the dataset's ZIP for this stage."""
    from . import archive  # zlib-ng and threads: only for archive jobs

    t0 = time.monotonic()
    record = records.ArchiveRecord(args.run_id, args.stage, args.dataset, started=records.now_iso())
    records.stamp(record)
    label = f"{args.stage} archive {args.dataset}"
    log = logs.setup(None, args.run_id, label, args.log)  # the job's log, until the config names backup.log

    def work() -> None:
        cfg = for_run(args.config, args.run_id)
        logs.setup(cfg["backups"]["log_file"], args.run_id, label, args.log)  # the same logger, also to backup.log
        source = plan.source_of(cfg, args.dataset, os.getcwd())
        listing = sources.list_source(source)  # a missing or empty root fails the archive, so its sends
        record.missing, record.skipped_special = listing.missing, listing.special
        record.unreadable = [names.shown(name) for name in listing.unreadable]
        for pattern in listing.missing:
            log.warning("source not found: %s", os.path.join(source.root, pattern))
        if listing.unreadable:
            log.warning("cannot read, not archived (permission denied; let the backup's user "
                        "read them): %s", ", ".join(record.unreadable))  # fmt: skip
        if listing.special:
            log.warning("not files, not archived (FIFOs, sockets, devices): %s", ", ".join(listing.special))
        folder = Path(plan.archive_dir(cfg, os.getcwd()))
        threads = max(1, args.threads)
        previous = archive.unchanged_archive(folder, args.dataset, source.root, listing.files, listing.sizes, threads)
        if previous:
            log.info("unchanged since %s: no new archive, that one is sent", previous.name)
            record.archive, record.files, record.bytes = str(previous), len(listing.files), listing.total_bytes
            record.compressed_bytes = previous.stat().st_size
        else:
            level = cfg["backups"]["compression"]["level"]
            reporter = progress.Reporter(label, len(listing.files), listing.total_bytes) if progress.wanted() else None
            stamp = records.archive_timestamp(args.run_id)
            made = archive.create(
                folder, args.dataset, stamp, source.root, listing.files, level, threads,
                on_bytes=reporter.archived if reporter else None,
            )  # fmt: skip
            record.archive, record.created, record.files = str(made.path), True, made.files
            record.bytes, record.compressed_bytes = made.bytes, made.compressed_bytes
            sizes = f"{summary.human_bytes(made.bytes)} -> {summary.human_bytes(made.compressed_bytes)}"
            log.info("made %s: %d files, %s (level %d, %d threads)", made.path.name, made.files, sizes, level, threads)
        state_now = archive.catalog_manifest(Path(record.archive))
        if state_now is None:
            raise ArchiveError(f"{Path(record.archive).name} has no usable manifest beside it")
        manifest.save(records.cache_dir(os.getcwd()), state_now)
        record.manifest = state_now.name
        keep_last = cfg["backups"]["compression"]["keep_last"]
        if keep_last:
            for old in archive.prune(folder, args.dataset, keep_last, Path(record.archive)):
                log.info("removed old local archive %s (keep_last: %d)", old.name, keep_last)
        if listing.missing or listing.special or listing.unreadable:
            record.status = records.WARNING

    _guarded(record, work)
    name = os.path.basename(record.archive) if record.archive else "no archive: no files"
    detail = f"{name}, {'new' if record.created else 'unchanged, reused'}" if record.archive else name
    _finish(record, t0, log, args.marker, label, detail)
    return 0


def gate(args: argparse.Namespace) -> int:
    """Let the pipeline start only after a successful pre-pipeline backup (unless told otherwise)."""
    cfg = for_run(args.config, args.run_id)
    log = logs.setup(cfg["backups"]["log_file"], args.run_id, "pipeline", job_log=args.log)
    planned = plan.plan(cfg, os.getcwd(), args.only.split(",") if args.only else None)
    failed = [r for r in records.stage_rows(args.run_id, "pre", planned, os.getcwd()) if r.status == records.FAILED]
    if failed and cfg["pipeline"]["require_pre_backup"]:
        names = ", ".join(f"{r.destination}/{r.dataset}" for r in failed)
        message = (
            f"pre-pipeline backup failed ({names}); the pipeline was not started "
            "(set pipeline.require_pre_backup: false to run it anyway)"
        )
        log.error(message)
        records.write_record(records.pipeline_error(args.run_id),
                             records.PipelineRecord(args.run_id, status="not run", error=message))  # fmt: skip
        _say(f"pipeline: not started: {message}")
        return 1
    if failed:
        log.warning("pre-pipeline backup failed, the pipeline runs anyway (pipeline.require_pre_backup: false)")
    records.write_record(args.marker, records.PipelineRecord(args.run_id, failed_pre=len(failed)))
    return 0


def pipeline(args: argparse.Namespace) -> int:
    """Run the analysis command (the gate has passed); for a module pipeline, record that it finished."""
    cfg = for_run(args.config, args.run_id)
    log = logs.setup(cfg["backups"]["log_file"], args.run_id, "pipeline", job_log=args.log)
    error_file = records.pipeline_error(args.run_id)
    if cfg["pipeline"].get("snakefile"):
        records.write_record(args.marker, records.PipelineRecord(args.run_id, snakefile=cfg["pipeline"]["snakefile"]))
        _say(f"pipeline: ok (the jobs of {cfg['pipeline']['snakefile']} are done)")
        return 0
    command = pipeline_private(args.config)["command"]  # not in the run's saved config
    if not command:
        message = "no pipeline.command in the config: nothing to run between the backups"
        log.error(message)
        records.write_record(error_file, records.PipelineRecord(args.run_id, status=records.FAILED, error=message))
        _say(f"pipeline: {message}")
        return 1
    started, t0 = records.now_iso(), time.monotonic()
    # The pipeline runs in the user's environment, which may hold the SMB password: mask it too.
    smb_password = os.environ.get(cfg["backups"]["destinations"]["smb"].get("password_env") or "")
    secrets = [smb_password] if smb_password else []
    shown = runner.mask(command, secrets)
    _say(f"pipeline: running {shown}")
    # "python" in the command is this environment's Python (the venv's), as under `make`.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    # Its output also reaches the terminal as it comes (through the command line, or plain under
    # Snakemake run by hand); Python pipelines are asked not to hold it back in a buffer.
    echo = progress.OUTPUT if os.environ.get("BACKUP_CLI") else ""
    result = runner.run(command, log, shell=True, env={"PATH": path, "PYTHONUNBUFFERED": "1"}, secrets=secrets,
                        echo=echo)  # fmt: skip
    record = records.PipelineRecord(args.run_id, command=shown, started=started, finished=records.now_iso(),
                                    seconds=round(time.monotonic() - t0, 3), exit_status=result.returncode)  # fmt: skip
    if result.returncode != 0:
        tail = result.lines[-1] if result.lines else ""
        record.status = records.FAILED
        record.error = f"pipeline command failed with exit status {result.returncode}: {tail}"[:400]
        records.write_record(error_file, record)
        _say(f"pipeline: FAILED ({record.error})")
        return 1
    records.write_record(args.marker, record)
    last = result.lines[-1].strip() if result.lines else ""
    _say(f"pipeline: ok ({record.seconds:.1f} s){': ' + last if last else ''}")
    return 0


def report(args: argparse.Namespace) -> int:
    """End of a target: print the stage's table (unless the CLI prints it) and fail on failures."""
    cfg = for_run(args.config, args.run_id)
    log = logs.setup(args.log, args.run_id)
    backups = cfg["backups"]
    if not backups["enabled"]:
        text = "backups are disabled (backups.enabled: false): nothing was backed up"
    elif args.dest and not backups["destinations"][args.dest].get("enabled"):
        text = f"destination {args.dest} is disabled (backups.destinations.{args.dest}.enabled: false): nothing to do"
    else:
        planned = plan.plan(cfg, os.getcwd(), [args.dest] if args.dest else args.only.split(",") if args.only else None)
        rows = [r for stage in args.stage for r in records.stage_rows(args.run_id, stage, planned, os.getcwd())]
        text = summary.table(rows, f"Backup summary (run {args.run_id}, {' + '.join(args.stage)})")
        log.info("%s", text)
        if not os.environ.get("BACKUP_CLI"):
            print(text, flush=True)
        return 1 if summary.exit_status(rows) == summary.EXIT_FAILED else 0
    log.info("%s", text)
    if not os.environ.get("BACKUP_CLI"):
        print(text, flush=True)
    return 0


def restore_job(args: argparse.Namespace) -> int:
    """`snakemake restore --config restore_from=... restore_dataset=... restore_to=...`: the restore command."""
    from .commands.restore import command

    cfg = for_run(args.config, args.run_id)
    return command(cfg, Path.cwd(), args.source, args.dataset, args.to, run_id=args.run, at=args.at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backup", description="Jobs of the backup workflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    common.add_argument("--run-id", required=True)
    common.add_argument("--log", help="this job's log file")
    p = sub.add_parser("sync", parents=[common])
    p.add_argument("--stage", required=True, choices=plan.STAGES)
    p.add_argument("--dest", required=True, choices=plan.DESTINATIONS)
    p.add_argument("--dataset", required=True)
    p.add_argument("--marker", required=True)
    p.set_defaults(func=sync)
    p = sub.add_parser("archive", parents=[common])
    p.add_argument("--stage", required=True, choices=plan.STAGES)
    p.add_argument("--dataset", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--marker", required=True)
    p.set_defaults(func=make_archive)
    p = sub.add_parser("restore", parents=[common])
    p.add_argument("--from", dest="source", required=True, choices=[*plan.DESTINATIONS, "any"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--run")
    p.add_argument("--at")
    p.set_defaults(func=restore_job)
    p = sub.add_parser("gate", parents=[common])
    p.add_argument("--marker", required=True)
    p.add_argument("--only", default="", help="the destinations of this run (default: every enabled one)")
    p.set_defaults(func=gate)
    p = sub.add_parser("pipeline", parents=[common])
    p.add_argument("--marker", required=True)
    p.set_defaults(func=pipeline)
    p = sub.add_parser("report", parents=[common])
    p.add_argument("--stage", required=True, action="append", choices=plan.STAGES)
    p.add_argument("--dest", choices=plan.DESTINATIONS)
    p.add_argument("--only", default="", help="the destinations of this run (default: every enabled one)")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
