"""--dry-run: ask rsync and rclone what they would send, per destination; write nothing anywhere."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .. import logs, manifest, names, plan, records, sources, summary, transports
from . import SCREENFUL, Context, preflight


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    status = preflight.check(args, cfg, workdir, ctx)
    return status if status != summary.EXIT_OK else dry_run(cfg, ctx.transfers, workdir, args.list_files)


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
                keeps_links = transport.keeps_symlinks(transfer)
                listing, skipped, refused = sources.for_transfer(transfer, folds, held, keeps_links)
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
    from .. import rewrites  # the catalogs' code: only a dry run needs it here

    base = manifest.latest(records.cache_dir(workdir), dataset)
    maybe = rewrites.candidates(base, listing)
    if not maybe:
        return listing
    recorded = base.entries()
    same = rewrites.identical(base, listing, maybe, {name: recorded[name][:2] for name in maybe}, 0)
    if same:
        print(f"  {len(same)} rewritten with identical bytes since the last backup: not sent again")
    return sources.without(listing, list(same)) if same else listing


def _archive_preview(cfg: dict, transfer: plan.Transfer, workdir: Path, cache: dict) -> tuple[sources.Listing, str]:
    """What the archive job would do for a dataset: reuse an unchanged archive or make a new one."""
    from .. import archive

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
