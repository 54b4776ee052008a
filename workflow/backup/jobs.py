"""The work behind each Snakemake job: ``python -m backup sync|pipeline|report ...``.

A sync job never raises for a failed transfer: it records the failure in its marker
and exits 0, so one destination failing never stops the others, and the report job
at the end turns failures into a non-zero exit. Only a broken job (a bug) exits
non-zero by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import logs, plan, progress, records, runner, sources, summary, transports
from .config import ConfigError, load_config
from .errors import ArchiveError


def _say(line: str) -> None:
    """One line per job on stdout; the CLI shows lines that start with 'backup: '."""
    # One write() per line, so lines of jobs running at once never interleave.
    os.write(sys.stdout.fileno(), f"backup: {line}\n".encode("utf-8", errors="replace"))


def _guarded(record: dict, work) -> None:
    """Run ``work``; any failure becomes status 'failed' with a one-line, masked error."""
    try:
        work()
    except (transports.TransferError, ArchiveError, ConfigError, KeyError) as exc:
        record.update(status="failed", error=runner.mask(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a bug must still leave a record and free the others
        record.update(status="failed", error=runner.mask(f"internal error: {type(exc).__name__}: {exc}"))


def _finish(record: dict, t0: float, log, marker: str, label: str, detail: str) -> None:
    record.update(finished=records.now_iso(), seconds=round(time.monotonic() - t0, 3))
    if record["status"] == "failed":
        log.error("FAILED: %s", record["error"])
    else:
        log.info("%s: %s", record["status"], detail)
    records.write_json(marker, record)
    _say(f"{label}: {record['status']} ({record['error'] or detail})")


def _archive_listing(run_id: str, stage: str, dataset: str, record: dict) -> sources.Listing:
    """In compressed mode a destination receives one file: the archive its archive job chose."""
    made = records.read_json(records.archive_marker(run_id, stage, dataset))
    if made is None:
        raise ArchiveError("the archive job left no record")
    if made["status"] == "failed":
        raise ArchiveError(f"no archive to send: {made['error']}")
    record["missing"] = made.get("missing", [])
    if not made.get("archive"):
        return sources.Listing(root="", missing=record["missing"])
    record.update(archive=os.path.basename(made["archive"]), archive_created=made["created"])
    return sources.single_file(made["archive"])


def sync(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    record = records.base_record(
        args.run_id,
        stage=args.stage,
        destination=args.dest,
        dataset=args.dataset,
        started=records.now_iso(),
        status="ok",
        error=None,
        files_total=0,
        files_sent=0,
        bytes_sent=0,
        files_verified=0,
    )
    log = logs.setup(None, args.run_id, job_log=args.log)

    def work() -> None:
        nonlocal log
        cfg = load_config(args.config, inherited=True)
        log = logs.setup(cfg["backups"]["log_file"], args.run_id, f"{args.stage} {args.dest}/{args.dataset}", args.log)
        transfer = plan.find(plan.plan(cfg, os.getcwd()), args.dest, args.dataset)
        record.update(mode=transfer.mode, tool=transfer.tool, target=transfer.target, source=transfer.source.root)
        transport = transports.for_transfer(transfer)
        if transfer.mode == "archive":
            listing = _archive_listing(args.run_id, args.stage, args.dataset, record)
        else:
            transport.prefetch(transfer, log)  # rclone lists the target while this walks the source
            listing, skipped = sources.for_transfer(transfer)
            record["missing"] = listing.missing
            for pattern in listing.missing:
                log.warning("source not found: %s", os.path.join(transfer.source.root, pattern))
            if skipped:
                record["skipped_links"] = skipped
                log.warning("symlinks not copied (an SMB share cannot hold them): %s", ", ".join(skipped))
        record.update(files_total=len(listing.files), bytes_total=listing.total_bytes)
        if listing.files:
            log.info(
                "sending %d files (%s) to %s",
                len(listing.files),
                summary.human_bytes(listing.total_bytes),
                transfer.target,
            )
            tag = args.run_id if args.stage == "manual" else f"{args.run_id}-{args.stage}"
            label = f"{args.stage} {args.dest}/{args.dataset}"
            reporter = progress.Reporter(label, len(listing.files), listing.total_bytes) if progress.wanted() else None
            result = transport.send(transfer, listing, log, version_tag=tag, progress=reporter)
            record.update(files_sent=result.files_sent, bytes_sent=result.bytes_sent)
            if result.vanished:
                log.warning("vanished from the source while being sent: %s", ", ".join(result.vanished))
                record["vanished"] = result.vanished
                listing = sources.without(listing, result.vanished)
            # A file written to while it was read may have reached the destination as a mix of old and
            # new: send those once more (own version folder) and compare them by content afterwards.
            # (Only listed files: one created since the listing, which rsync found walking, is not one.)
            listed = [name for name in result.sent if name in listing.sizes]
            changed = sorted(set(result.changed) | set(sources.changed_since_listed(listing, listed)))
            if changed:
                log.warning("changed while being sent, sending again: %s", ", ".join(changed))
                listing = sources.relisted(listing, changed)
                changed = [name for name in changed if name not in set(result.newer)]
                gone = [name for name in changed if name not in listing.sizes]
                if gone:
                    record["vanished"] = sorted(set(record.get("vanished", [])) | set(gone))
                    changed = [name for name in changed if name in listing.sizes]
                transport.send(transfer, sources.subset(listing, changed), log, version_tag=f"{tag}-retry1", force=True)
            content = cfg["backups"]["verify"] == "content"
            # Success means verified: every file the source holds is at the destination, same bytes.
            check = (
                transport.verify(transfer, listing, log)
                if content
                else transport.confirm(transfer, listing, result, log, recheck=changed)
            )
            # Newer at the destination: never sent again (a forced send could replace it), they fail.
            newer = set(result.newer)
            damaged = [name for name in check.differing if name not in newer]
            if damaged:
                # Differ although sent (changed while read, or damaged): sent once more, own version
                # folder; force: a damaged copy may have the source's size and time, which --update trusts.
                log.warning("differ after sending, sending again: %s", ", ".join(damaged))
                again = transport.send(transfer, sources.subset(listing, damaged), log,
                                       version_tag=f"{tag}-retry2", force=True)  # fmt: skip
                again.newer = sorted(newer | set(again.newer))
                check = (
                    transport.verify(transfer, listing, log)
                    if content
                    else transport.confirm(transfer, listing, again, log, recheck=sorted(set(changed) | set(damaged)))
                )
            record["files_verified"] = check.verified
            if not check.ok:
                raise transports.TransferError(check.problem())
            log.info("verified %d files at %s (%s)", check.verified, transfer.target,
                     "content" if content else "checksums of what was sent, size and time of the rest")  # fmt: skip
            if transfer.mode == "direct":  # what this run holds at the destination, for restores
                manifest = records.manifest_path(args.run_id, args.stage, args.dest, args.dataset)
                records.write_manifest(manifest, listing)
        if record["missing"] or record.get("vanished") or record.get("skipped_links"):
            record["status"] = "warning"

    _guarded(record, work)
    detail = f"{record['files_sent']} of {record['files_total']} files sent, {record['files_verified']} verified"
    if record.get("archive"):
        detail += f", {record['archive']}"
    _finish(record, t0, log, args.marker, f"{args.stage} {args.dest}/{args.dataset}", detail)
    return 0


def make_archive(args: argparse.Namespace) -> int:
    """Make (or reuse, when nothing changed) the dataset's ZIP for this stage."""
    from . import archive  # zlib-ng and threads: only for archive jobs

    t0 = time.monotonic()
    record = records.base_record(
        args.run_id,
        stage=args.stage,
        dataset=args.dataset,
        started=records.now_iso(),
        status="ok",
        error=None,
        archive=None,
        created=False,
        files=0,
        bytes=0,
        compressed_bytes=0,
    )
    log = logs.setup(None, args.run_id, job_log=args.log)

    def work() -> None:
        nonlocal log
        cfg = load_config(args.config, inherited=True)
        log = logs.setup(cfg["backups"]["log_file"], args.run_id, f"{args.stage} archive {args.dataset}", args.log)
        source = plan.source_of(cfg, args.dataset, os.getcwd())
        listing = sources.list_source(source)
        record["missing"] = listing.missing
        for pattern in listing.missing:
            log.warning("source not found: %s", os.path.join(source.root, pattern))
        if not listing.files:
            record["status"] = "warning"
            return
        folder = Path(plan.archive_dir(cfg, os.getcwd()))
        threads = max(1, args.threads)
        previous = archive.unchanged_archive(folder, args.dataset, source.root, listing.files, listing.sizes, threads)
        if previous:
            log.info("unchanged since %s: no new archive, that one is sent", previous.name)
            record.update(
                archive=str(previous),
                files=len(listing.files),
                bytes=listing.total_bytes,
                compressed_bytes=previous.stat().st_size,
            )
        else:
            level = cfg["backups"]["compression"]["level"]
            reporter = (
                progress.Reporter(f"{args.stage} archive {args.dataset}", len(listing.files), listing.total_bytes)
                if progress.wanted()
                else None
            )
            stamp = records.archive_timestamp(args.run_id)
            made = archive.create(
                folder, args.dataset, stamp, source.root, listing.files, level, threads,
                on_bytes=reporter.archived if reporter else None,
            )  # fmt: skip
            record.update(
                archive=str(made.path),
                created=True,
                files=made.files,
                bytes=made.bytes,
                compressed_bytes=made.compressed_bytes,
            )
            log.info(
                "made %s: %d files, %s -> %s (level %d, %d threads)",
                made.path.name,
                made.files,
                summary.human_bytes(made.bytes),
                summary.human_bytes(made.compressed_bytes),
                level,
                threads,
            )
        keep_last = cfg["backups"]["compression"]["keep_last"]
        if keep_last:
            for old in archive.prune(folder, args.dataset, keep_last, Path(record["archive"])):
                log.info("removed old local archive %s (keep_last: %d)", old.name, keep_last)
        if listing.missing:
            record["status"] = "warning"

    _guarded(record, work)
    name = os.path.basename(record["archive"]) if record["archive"] else "no archive: no files"
    detail = f"{name}, {'new' if record['created'] else 'unchanged, reused'}" if record["archive"] else name
    _finish(record, t0, log, args.marker, f"{args.stage} archive {args.dataset}", detail)
    return 0


def gate(args: argparse.Namespace) -> int:
    """Let the pipeline start only after a successful pre-pipeline backup (unless told otherwise)."""
    cfg = load_config(args.config, inherited=True)
    log = logs.setup(cfg["backups"]["log_file"], args.run_id, "pipeline", job_log=args.log)
    failed = [r for r in records.stage_records(args.run_id, "pre") if r.get("status") == "failed"]
    error_file = records.pipeline_error(args.run_id)
    if failed and cfg["pipeline"]["require_pre_backup"]:
        names = ", ".join(f"{r['destination']}/{r['dataset']}" for r in failed)
        message = (
            f"pre-pipeline backup failed ({names}); the pipeline was not started "
            "(set pipeline.require_pre_backup: false to run it anyway)"
        )
        log.error(message)
        records.write_json(error_file, records.base_record(args.run_id, status="not run", error=message))
        _say(f"pipeline: not started: {message}")
        return 1
    if failed:
        log.warning("pre-pipeline backup failed, the pipeline runs anyway (pipeline.require_pre_backup: false)")
    records.write_json(args.marker, records.base_record(args.run_id, status="ok", failed_pre=len(failed)))
    return 0


def pipeline(args: argparse.Namespace) -> int:
    """Run the analysis command (the gate has passed); for a module pipeline, record that it finished."""
    cfg = load_config(args.config)  # the command itself is not in the inherited snapshot
    log = logs.setup(cfg["backups"]["log_file"], args.run_id, "pipeline", job_log=args.log)
    error_file = records.pipeline_error(args.run_id)
    if cfg["pipeline"].get("snakefile"):
        records.write_json(
            args.marker, records.base_record(args.run_id, status="ok", snakefile=cfg["pipeline"]["snakefile"])
        )
        _say(f"pipeline: ok (the jobs of {cfg['pipeline']['snakefile']} are done)")
        return 0
    command = cfg["pipeline"].get("command")
    if not command:
        message = "no pipeline.command in the config: nothing to run between the backups"
        log.error(message)
        records.write_json(error_file, records.base_record(args.run_id, status="failed", error=message))
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
    result = runner.run(command, log, shell=True, env={"PATH": path}, secrets=secrets)
    record = records.base_record(
        args.run_id,
        command=shown,
        started=started,
        finished=records.now_iso(),
        seconds=round(time.monotonic() - t0, 3),
        exit_status=result.returncode,
    )
    if result.returncode != 0:
        tail = result.lines[-1] if result.lines else ""
        message = f"pipeline command failed with exit status {result.returncode}: {tail}"[:400]
        records.write_json(error_file, {**record, "status": "failed", "error": message})
        _say(f"pipeline: FAILED ({message})")
        return 1
    records.write_json(args.marker, {**record, "status": "ok"})
    last = result.lines[-1].strip() if result.lines else ""
    _say(f"pipeline: ok ({record['seconds']:.1f} s){': ' + last if last else ''}")
    return 0


def report(args: argparse.Namespace) -> int:
    """End of a target: print the stage's table (unless the CLI prints it) and fail on failures."""
    cfg = load_config(args.config, inherited=True)
    log = logs.setup(args.log, args.run_id)
    backups = cfg["backups"]
    if not backups["enabled"]:
        text = "backups are disabled (backups.enabled: false): nothing was backed up"
    elif args.dest and not backups["destinations"][args.dest].get("enabled"):
        text = f"destination {args.dest} is disabled (backups.destinations.{args.dest}.enabled: false): nothing to do"
    else:
        rows = [
            r
            for stage in args.stage
            for r in records.stage_records(args.run_id, stage)
            if not args.dest or r["destination"] == args.dest
        ]
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
    """`snakemake restore --config restore_from=... restore_dataset=... restore_to=...`."""
    from . import restore as restore_mod

    cfg = load_config(args.config, inherited=True)
    log = logs.setup(cfg["backups"]["log_file"], args.run_id, f"restore {args.source}/{args.dataset}", args.log)
    try:
        matched, expected, label = restore_mod.restore(
            cfg, Path.cwd(), args.source, args.dataset, Path(args.to).resolve(), log, run_id=args.run, at=args.at
        )
    except (restore_mod.RestoreError, transports.TransferError, ArchiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Restored {args.dataset} from {args.source}, {label}, into {args.to}: "
          f"{matched} of {expected} files match that run's manifest")  # fmt: skip
    return 0 if matched == expected else 1


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
    p.add_argument("--from", dest="source", required=True, choices=plan.DESTINATIONS)
    p.add_argument("--dataset", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--run")
    p.add_argument("--at")
    p.set_defaults(func=restore_job)
    p = sub.add_parser("gate", parents=[common])
    p.add_argument("--marker", required=True)
    p.set_defaults(func=gate)
    p = sub.add_parser("pipeline", parents=[common])
    p.add_argument("--marker", required=True)
    p.set_defaults(func=pipeline)
    p = sub.add_parser("report", parents=[common])
    p.add_argument("--stage", required=True, action="append", choices=plan.STAGES)
    p.add_argument("--dest", choices=plan.DESTINATIONS)
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
