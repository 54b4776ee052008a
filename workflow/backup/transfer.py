"""The transfer algorithm, over any transport: send; send again what changed while being read;
replace what is newer at the destination (with versions kept); check; send again what is
damaged; check again. Success means verified: every file the source holds is at the
destination with the same bytes.

Plain values in, a typed record out (``Outcome``); nothing is written but through the transport
(tests/unit/test_transfer_algorithm.py drives each branch with a fake one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import progress, rewrites, sources
from .errors import TransferError
from .plan import Transfer
from .sources import Listing
from .transports.base import SendFailed, SendResult, Transport, VerifyResult


@dataclass
class Outcome:
    """What a send did (jobs.sync copies it into the TransferRecord). Filled in step by step, so a
    step that fails leaves what came before it (what reached the destination still counts)."""

    listing: Listing  # as sent: less the files that vanished, with the size and time of those sent again
    # Only the first send counts (and a replacement of newer copies): files sent again are counted once.
    files_sent: int = 0
    bytes_sent: int = 0
    identical_rewrites: int = 0  # rewritten at the source with the same bytes: not sent (rewrites.py)
    displaced: list[str] = field(default_factory=list)  # entries of another kind moved into the versions
    replaced_newer: list[str] = field(default_factory=list)  # newer at the destination, replaced (versions kept)
    vanished: list[str] = field(default_factory=list)  # gone from the source while being sent
    files_verified: int = 0
    sha1: dict[str, str] = field(default_factory=dict)  # of every file the tools wrote or found identical


def send_verified(transfer: Transfer, transport: Transport, listing: Listing, log, *, tag: str, content: bool,
                  marking, known, base, label: str, outcome: Outcome | None = None) -> Outcome:  # fmt: skip
    """Send ``listing``, checked, under the version tag ``tag`` (its retries: TAG-retry1, TAG-retry2).
    ``content``: checked by content (verify: content), else by what the sends checked (``confirm``);
    ``marking``: called before anything is written (the catalog's in-progress marker goes first);
    ``known``: gives the SHA-1s this machine already knows for the files' sizes and times; ``base``:
    gives the destination's last state as its catalog has it (``rewrites.baseline``), asked only if
    needed; ``label``: the progress line's. Raises TransferError (SendFailed from a send) where the
    destination does not hold the source's files; ``outcome``, if given, is the one filled in."""
    out = outcome if outcome is not None else Outcome(listing)
    out.listing = listing
    reporter = progress.Reporter(label, len(listing.files), listing.total_bytes) if progress.wanted() else None
    same: dict[str, str] = {}  # rewritten with identical bytes: name -> SHA-1

    def settled(names, there) -> set[str]:  # rclone: what the destination holds as the source has it
        state = base()
        maybe = rewrites.candidates(state, listing, names)
        same.update(rewrites.identical(state, listing, maybe, there, 2 * 10**9) if maybe else {})
        return rewrites.held_as_listed(state, listing, names) | set(same)

    moved: list[str] = []
    direct = transfer.mode == "direct"
    # Identical rewrites are each tool's own step, not a capability: rsync decides what to send in its
    # own process, so they are given the source's time before; rclone's send asks ``settled``.
    if direct and transfer.tool == "rsync":
        rewritten, moved = _rewritten(transfer, transport, listing, log, tag, marking, base)
        same.update(rewritten)
    try:
        result = transport.send(transfer, listing, log, version_tag=tag, progress=reporter, before_write=marking,
                                known=known, settled=settled if direct else None)  # fmt: skip
    except SendFailed as exc:  # what reached the destination before it failed still counts
        out.files_sent, out.bytes_sent = exc.files_sent, exc.bytes_sent
        raise
    out.files_sent, out.bytes_sent = result.files_sent, result.bytes_sent
    out.identical_rewrites = len(same)
    out.displaced = result.displaced
    out.sha1 = sha1 = {**same, **result.sha1}
    if result.newer and transfer.keep_versions:
        _replace_newer(transfer, transport, listing, log, tag, out, result, marking)
    if result.vanished:
        log.warning("vanished from the source while being sent: %s", ", ".join(result.vanished))
        out.vanished = result.vanished
        listing = sources.without(listing, result.vanished)
    # A file written to while it was read may have reached the destination as a mix of old and
    # new: send those once more (own version folder) and compare them by content afterwards.
    # (Only listed files: one created since the listing, which rsync found walking, is not one.)
    listed = [name for name in result.sent if name in listing.sizes]
    changed = sorted(set(result.changed) | set(sources.changed_since_listed(listing, [*listed, *moved])))
    if changed:
        log.warning("changed while being sent, sending again: %s", ", ".join(changed))
        listing = sources.relisted(listing, changed)
        changed = [name for name in changed if name not in set(result.newer)]
        gone = [name for name in changed if name not in listing.sizes]
        if gone:
            out.vanished = sorted(set(out.vanished) | set(gone))
            changed = [name for name in changed if name in listing.sizes]
        _resend(transfer, transport, listing, changed, log, sha1, marking, version_tag=f"{tag}-retry1")
    out.listing = listing
    check = _checked(transfer, transport, listing, log, content, result, changed)
    # Newer at the destination: never sent again (a forced send could replace it), they fail.
    newer = set(result.newer)
    damaged = [name for name in check.differing if name not in newer]
    if damaged:
        # Differ although sent (changed while read, or damaged): sent once more, own version
        # folder; force: a damaged copy may have the source's size and time, which --update trusts.
        log.warning("differ after sending, sending again: %s", ", ".join(damaged))
        again = _resend(transfer, transport, listing, damaged, log, sha1, marking, version_tag=f"{tag}-retry2")
        again.newer = sorted(newer | set(again.newer))
        check = _checked(transfer, transport, listing, log, content, again, sorted(set(changed) | set(damaged)))
    out.files_verified = check.verified
    if not check.ok:
        raise TransferError(check.problem())
    log.info("verified %d files at %s (%s)", check.verified, transfer.target,
             "content" if content else "checksums of what was sent, size and time of the rest")  # fmt: skip
    return out


def _checked(transfer, transport, listing, log, content: bool, sent: SendResult, recheck) -> VerifyResult:
    """The check after sending: every listed file by content, or what the tool checked as it wrote
    (``sent``) and ``recheck`` (changed while read) by content."""
    if content:
        return transport.verify(transfer, listing, log)
    return transport.confirm(transfer, listing, sent, log, recheck=recheck)


def _resend(transfer, transport, listing, names, log, sha1: dict[str, str], marking, **how) -> SendResult:
    """Send ``names`` once more, forced (whatever their size and time there), with ``how`` (its own
    version tag; ``replace_newer``); the SHA-1s known for them become those of this send."""
    for name in names:
        sha1.pop(name, None)
    again = transport.send(transfer, sources.subset(listing, names), log, force=True, before_write=marking, **how)
    sha1.update(again.sha1)
    return again


def _rewritten(transfer, transport, listing, log, tag: str, marking, base) -> tuple[dict[str, str], list[str]]:
    """rsync: files rewritten with identical bytes (``rewrites``), whose copy at the destination is
    still the one the destination's last state recorded (its size and time, from one listing), get
    the source's time there in one pass that sends no data (--size-only), so the send that follows
    leaves them alone and no version copy is made. Returns them with their SHA-1, and those that
    changed again meanwhile (the pass may have given their old bytes the new time: sent forced)."""
    state = base()
    maybe = rewrites.candidates(state, listing)
    if not maybe:
        return {}, []
    window = 2 * 10**9 if transfer.on_smb else 10**9  # rsync compares times in whole seconds
    same = rewrites.identical(state, listing, maybe, transport.tree(transfer, log), window)
    if not same:
        return {}, []
    marking()
    transport.refresh_times(transfer, sources.subset(listing, same), log, version_tag=tag)
    moved = sources.changed_since_listed(listing, list(same))
    for name in moved:
        same.pop(name)
    return same, moved


def _replace_newer(transfer, transport, listing, log, tag: str, out: Outcome, result: SendResult, marking) -> None:
    """The destination holds a newer-dated copy (the source went back to an older one with its old
    date, or someone edited the copy there): the source is the truth for content, so its file is
    sent over it, and the copy there is kept in this run's versions folder. (Without versions it
    stays, and the run fails on it: nothing is ever lost.)"""
    names = sorted(n for n in result.newer if n in listing.sizes)
    log.warning("newer at the destination, replaced by the source's file (the copy there is kept as "
                "version %s): %s", tag, ", ".join(names))  # fmt: skip
    replaced = _resend(transfer, transport, listing, names, log, out.sha1, marking, version_tag=tag,
                       replace_newer=True)  # fmt: skip
    out.files_sent += replaced.files_sent
    out.bytes_sent += replaced.bytes_sent
    out.replaced_newer = names
    # From here they are files like the others: checked by what their send reported.
    result.newer = sorted(set(result.newer) - set(names))
    result.differ = sorted(set(result.differ) | set(replaced.differ))
    result.sha1.update(replaced.sha1)
