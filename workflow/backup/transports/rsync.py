"""rsync: to a local folder, the mount point of a share, or [user@]host:/path over SSH."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shlex
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

from .. import mounts, runner
from ..plan import Transfer, is_ssh_target, versions_folder
from ..sources import Listing, subset
from . import local
from .base import (
    Capabilities,
    SendFailed,
    SendResult,
    TransferError,
    TransportBase,
    VerifyResult,
    file_list,
    find_tool,
    folders_of,
    kind_changed,
    merged,
    outermost,
)
from .diagnoses import diagnose, exit_reason


class RsyncTransport(TransportBase):
    """rsync to a local folder, the mount point of a share, or [user@]host:/path over SSH."""

    name = "rsync"
    ITEM = re.compile(r"^([<>ch.*][fdLDS][^ ]{9}) (.*)$")
    # --out-format=ITEMIZE|CHECKSUM|NAME: the itemized change, the whole-file checksum (blank when rsync
    # computed none: nothing was sent), the name.
    OUT_FORMAT = "--out-format=%i|%C|%n"
    SUMMED = re.compile(r"^([<>ch.*][fdLDS][^ |]{9})\|([0-9a-f ]*)\|(.*)$")
    LIST = re.compile(r"^(\S{10})\s+([\d,.]+) (\d{4}/\d\d/\d\d) (\d\d:\d\d:\d\d) (.*)$")
    # An rsync at the other end that cannot do SHA-1 (older than 3.2.3, or built without it).
    NO_SHA1 = re.compile(r"checksum-choice|unknown checksum name|[Ff]ailed to negotiate")

    def __init__(self) -> None:
        self.sha1 = True  # ask rsync for SHA-1 whole-file checksums (false: the other side cannot)

    def resolve(self, transfer: Transfer, writing: bool = False) -> str:
        """Where rsync writes: a remote, or a local folder checked to be a mounted share if required
        (and, on a share, one that answers: ``writing`` before a write, see mounts.check_target)."""
        if is_ssh_target(transfer.target):
            return transfer.target
        table = mounts.read_mounts()
        try:
            target = mounts.resolve_smb_target(transfer.target, transfer.mount_point, table, writing)
            if transfer.require_mount:
                mounts.check_on_network_fs(target, table)
        except (mounts.MountError, ValueError) as exc:
            hint = "" if "mount it" in str(exc) else "; mount the share, or set require_mount: false for a local folder"
            raise TransferError(f"{exc}{hint}") from None
        return target

    def options(self, transfer: Transfer) -> list[str]:
        # --8-bit-output: names in rsync's itemized output as they are (only control characters
        # stay escaped as \#ooo, which unescape() undoes), so they match the file list.
        # No --devices/--specials: FIFOs, sockets and devices hold no data (sources.py names them as
        # skipped); rsync skips those it meets walking a folder ("skipping non-regular file").
        opts = ["--recursive", "--times", "--links", "--8-bit-output"]
        # SMB keeps no Unix owners or permissions. Times are compared in whole seconds (rsync's default
        # window), which SMB keeps; a wider --modify-window would make --update call every unchanged
        # file "newer" at the destination.
        if transfer.on_smb:
            opts.append("--no-links")  # a share cannot hold symlinks (the listing names those skipped)
        else:
            opts += ["--perms", "--owner", "--group"]
        if transfer.private:
            opts.append("--chmod=go-rwx")  # the files and folders it copies
        if is_ssh_target(transfer.target):
            if transfer.private:  # the folders it makes itself (--mkpath, --backup-dir): see _umask
                opts.append("--rsync-path=umask 077 && rsync")
            ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15"]
            if transfer.ssh_port:
                ssh += ["-p", str(transfer.ssh_port)]
            if transfer.ssh_key:
                ssh += ["-i", transfer.ssh_key, "-o", "IdentitiesOnly=yes"]
            if transfer.known_hosts:
                ssh += ["-o", f'UserKnownHostsFile="{transfer.known_hosts}"']  # ssh splits it on spaces
            opts += ["--rsh", shlex.join(ssh + _shared_connection(ssh, transfer.target))]
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
            reason = exit_reason("rsync", result.returncode)
            advice = diagnose(result.lines)
            detail = next((ln.strip() for ln in result.lines if ln.startswith("rsync:")), "")
            error = TransferError(f"{what}: {advice or reason}" + (f" ({detail})" if detail and not advice else ""))
            error.output = result.output  # type: ignore[attr-defined] - what _summed looks into
            raise error
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
        before_write=None,
        known=None,
        replace_newer: bool = False,
        settled=None,
    ) -> SendResult:
        """Send the listed files; ``force`` ignores matching size and time (still never older over newer,
        unless ``replace_newer``: then the target's newer copies are replaced, and kept as versions).

        ``progress``: a progress.Reporter, fed rsync's --info=progress2 lines. ``before_write``: called
        before anything may be written (rsync decides what to send itself: always, unless a dry run).
        ``known``: not needed (rsync reports the SHA-1 of every file it writes). ``settled``: not
        asked (rsync decides by size and time itself: ``refresh_times`` gave identical rewrites the
        source's time before).
        """
        target = self.resolve(transfer, writing=not dry_run)
        # An entry that changed kind (a folder at the target where the source now has a file, or the
        # reverse). With versions: rsync moves the old one into the versions folder itself (--backup
        # keeps what it removes to make way; --force lets it remove a folder that holds files, each
        # moved there first), and --info=backup names what it moved. Without: a file would be deleted
        # to make way for a folder, so those are looked for first and left out (a folder is never
        # removed without --force: rsync refuses, and says so); the run then fails, naming them.
        backup = bool(transfer.keep_versions and version_tag)
        preview = transfer.keep_versions and dry_run  # a dry run names what a run would move aside
        taken = [] if backup else self._taken(transfer, target, listing, log)
        clash = [] if preview else taken  # without versions: left out, then named in the failure
        if before_write and not dry_run:
            before_write()
        # rsync writes each file under a temporary name (.NAME.XXXXXX) and renames it when it is
        # complete and its checksum matches, so a killed transfer never leaves a partial file under a
        # final name. --info=skip1: it names each file it leaves alone because the destination's is
        # newer. --checksum-choice=sha1: the whole-file checksum rsync checks every file it writes
        # with is SHA-1, and --out-format's %C reports it, so the catalog gets each sent file's SHA-1
        # for free.
        update = [] if replace_newer else ["--update"]
        args = [*self.options(transfer), *update, "--mkpath", self.OUT_FORMAT, "--stats", "--info=skip1"]
        if backup:
            path = target.split(":", 1)[1] if is_ssh_target(target) else target
            args += ["--backup", f"--backup-dir={versions_folder(path, version_tag)}", "--force", "--info=backup"]
        elif transfer.keep_versions and dry_run:
            args.append("--force")  # as a run would (it names such folders: *deleting); nothing is written
        args += [f"--filter=- /{_pattern(folder)}/***" for folder in clash]
        if force:
            args.append("--ignore-times")
        if dry_run:
            args.append("--dry-run")
        parts = [listing] if dry_run else _parts(listing, self.streams(transfer, target))
        if progress and not dry_run and len(parts) == 1:
            args.append("--info=progress2")
        with _umask(transfer):
            if len(parts) == 1:
                out = self._send_part(args, listing, target, log, clash, progress.rsync if progress else None)
            else:  # many files to a share: side by side, each rsync paying its files' round trips
                with contextlib.suppress(OSError):  # what --mkpath does, once, not by each rsync at once
                    os.makedirs(target, exist_ok=True)
                versions = versions_folder(target, version_tag) if backup else None
                with _shared_folders(versions, parts), ThreadPoolExecutor(len(parts)) as pool:
                    jobs = [pool.submit(self._send_part, args, part, target, log, clash) for part in parts]
                out = merged([job.exception() or job.result() for job in jobs])
        if backup and out.displaced:
            log.warning("of another kind at the source: the destination's old entry is kept as version %s: %s",
                        version_tag, ", ".join(out.displaced))  # fmt: skip
        if preview and taken:  # files a run would move aside for folders (rsync names none of those)
            out.displaced = outermost(out.displaced + taken)
        if clash:
            raise SendFailed(f"send: {kind_changed(clash, set(clash))}", out.files_sent, out.bytes_sent)
        return out

    def _send_part(self, args: list[str], listing: Listing, target: str, log, clash: list[str], progress=None):
        """One rsync sending ``listing``'s files (all of them, or one part of a parallel send)."""
        with _naming(listing) as what:
            # Exit 24: some source files vanished while being sent; the rest went through.
            try:
                result = self._summed([*args, *what, target.rstrip("/") + "/"], log, "send", ok_codes=(0, 24),
                                      progress=progress)  # fmt: skip
            except TransferError as exc:  # what rsync wrote before it failed still counts
                output = getattr(exc, "output", "")
                done = self._sent(output.splitlines(), listing)
                refused = self._refused(output.splitlines())
                folders = folders_of(listing.files)
                message = f"send: {kind_changed(outermost(clash + refused), folders)}" if refused else str(exc)
                raise SendFailed(message, done.files_sent, done.bytes_sent) from None
        return self._sent(result.lines, listing)

    def streams(self, transfer: Transfer, target: str) -> int:
        """rsyncs side by side for one send: ``transfers`` (default 8) onto a network or FUSE mount,
        where each file costs round trips that one rsync pays one after the other; one elsewhere
        (a local disk, or SSH, where one stream fills the link)."""
        if is_ssh_target(target):
            return 1
        return transfer.transfers or (PARALLEL_ON_SHARE if _on_network(target) else 1)

    def capabilities(self, transfer: Transfer, log) -> Capabilities:
        """A share holds no symlinks (--no-links) and does not tell case apart; a folder's own file
        system is not asked about case. SHA-1s are computed where the files are: by the rsync at
        the other end of SSH (unless it cannot), here on this machine's disks; a mounted share's
        files would be read across the network."""
        return Capabilities(
            hashes=self.sha1 if is_ssh_target(transfer.target) else self.nearby(transfer),
            symlinks=self.keeps_symlinks(transfer),
            case_sensitive=False if transfer.on_smb else None,
            keeps_times=True,  # --times (a share keeps whole seconds)
        )

    def keeps_symlinks(self, transfer: Transfer) -> bool:
        return not transfer.on_smb  # rsync --no-links there

    def nearby(self, transfer: Transfer) -> bool:
        target = transfer.target
        return not (is_ssh_target(target) or transfer.require_mount or "://" in target or _on_network(target))

    def refresh_times(self, transfer: Transfer, listing: Listing, log, version_tag: str | None = None) -> None:
        """Give the listed files, which the destination holds with the source's bytes (``rewrites``),
        the source's time, sending no data: --size-only leaves a file of the same size alone and
        --times sets its time. (One whose size differs there after all is sent, its copy kept as a
        version; --update leaves one that is newer there for the send to name.)"""
        target = self.resolve(transfer, writing=True)
        args = [*self.options(transfer), "--update", "--size-only", "--mkpath"]
        if transfer.keep_versions and version_tag:
            path = target.split(":", 1)[1] if is_ssh_target(target) else target
            args += ["--backup", f"--backup-dir={versions_folder(path, version_tag)}"]
        with _naming(listing) as what, _umask(transfer):
            # 24: a file vanished meanwhile; the send that follows names it.
            self._run([*args, *what, target.rstrip("/") + "/"], log, "refresh times", ok_codes=(0, 24))

    NO_TARGET = re.compile(r'change_dir ".*" failed: No such file or directory')  # the sender's, over SSH
    # rsync refusing to remove what stands where an entry of another kind goes (without --force: a
    # folder that holds files, where the source has a file or symlink).
    REFUSED = re.compile(r"^(?:cannot delete non-empty directory|could not make way for new [a-z ]+): (.*)$")

    def _refused(self, lines: list[str]) -> list[str]:
        """The paths rsync would not make way at, if those are its only errors (else: none)."""
        refused = [unescape(m.group(1)) for m in map(self.REFUSED.match, lines) if m]
        others = [ln for ln in lines if ln.startswith("rsync:") and not self.NO_SHA1.search(ln)]
        return sorted(set(refused)) if refused and not others else []

    def _taken(self, transfer: Transfer, target: str, listing: Listing, log) -> list[str]:
        """The source's folders that the target holds as something else (a file, a symlink): where no
        versions are kept, rsync would delete those to make way. One lstat per folder on this
        machine; over SSH, one listing of just those paths."""
        folders = folders_of(listing.files)
        if not folders:
            return []
        taken = []
        if not is_ssh_target(target):
            for folder in folders:
                try:
                    if not stat.S_ISDIR(os.lstat(os.path.join(target, folder)).st_mode):
                        taken.append(folder)
                except OSError:
                    continue  # not there (or inside one that is not a folder: that one is named)
            return outermost(taken)
        with tempfile.TemporaryDirectory(prefix="backup-kinds-") as empty, file_list(sorted(folders), "\0") as named:
            args = [*self.options(transfer), "--list-only", "--no-recursive", "--no-human-readable", "--from0",
                    f"--files-from={named}", "--", target.rstrip("/") + "/", empty + "/"]  # fmt: skip
            # 23: some are not there; 12 (over SSH): the target folder is not there (yet).
            result = self._run(args, log, "list", ok_codes=(0, 12, 23))
        if result.returncode == 12 and not self.NO_TARGET.search(result.output):
            detail = diagnose(result.lines) or next((ln.strip() for ln in result.lines if ln.startswith("rsync:")), "")
            raise TransferError(f"list: {exit_reason('rsync', 12)}" + (f" ({detail})" if detail else ""))
        for line in result.lines:
            match = self.LIST.match(line)
            if match and match.group(1)[0] != "d" and unescape(match.group(5)) in folders:
                taken.append(unescape(match.group(5)))
        return outermost(taken)

    def _sent(self, lines: list[str], listing: Listing) -> SendResult:
        """What rsync's output says it sent. Counted: the listed files it wrote, each once (a file
        redone in rsync's second pass is named twice; one created since the listing, found walking
        a folder, is no file of this backup)."""
        out, seen, moved = SendResult(), set(), set()
        root = listing.root.rstrip("/") + "/"
        for line in lines:
            aside = _backed_up(line) if line.startswith("backed up ") else None
            if aside is None and line.startswith("*deleting "):  # removed to make way (a dry run names only these)
                aside = unescape(line.split("|", 2)[-1]).rstrip("/") if line.count("|") >= 2 else None
            if aside is not None:
                if aside not in listing.sizes:  # not a file replaced by its new version: made way
                    moved.add(aside)
                continue
            gone, changed = self.VANISHED.match(line), self.CHANGED.match(line)
            if gone or changed:
                name = unescape(gone.group(1) or gone.group(2) if gone else changed.group(1))
                rel = name[len(root) :] if name.startswith(root) else name
                (out.vanished if gone else out.changed).append(rel.removeprefix("./"))  # ROOT/./NAME
                continue
            match = self.SUMMED.match(line)
            if match and match.group(1)[1] in "fL" and match.group(1)[0] in "<>c":
                name = unescape(match.group(3))
                if name not in seen:  # a set: a list search per line is quadratic in the files sent
                    seen.add(name)
                    out.sent.append(name)
                if self.sha1 and len(match.group(2)) == 40 and match.group(1)[1] == "f":
                    out.sha1[name] = match.group(2)
            elif line.endswith(" is newer") and unescape(line[: -len(" is newer")]) in listing.sizes:
                out.newer.append(unescape(line[: -len(" is newer")]))
        listed = [name for name in out.sent if name in listing.sizes]
        out.files_sent, out.bytes_sent = len(listed), sum(listing.sizes[name] for name in listed)
        if moved:
            out.displaced = _made_way(moved, listing)
        return out

    def list(self, transfer: Transfer, log) -> dict[str, int]:
        """Files at the target, with sizes (a missing target is an empty one)."""
        return {path: size for path, (size, _) in self.tree(transfer, log).items()}

    def tree(self, transfer: Transfer, log, depth: int | None = None) -> dict[str, tuple[int, int]]:
        """Files at the target (``depth``: at most that many folders deep, 1 = the target's own
        files): path -> (size, modification time in ns; to the second over SSH). None there: empty."""
        target = self.resolve(transfer)
        if not is_ssh_target(target):
            try:
                return local.tree(target, depth)
            except OSError as exc:
                raise TransferError(f"list: cannot read {target}: {exc.strerror or exc}") from None
        args = [*self.options(transfer), "--list-only", "--no-human-readable"]
        if depth is not None:
            args.append(f"--exclude=/{'*/' * depth}")  # no folder deeper than ``depth``
        result = self._run([*args, target.rstrip("/") + "/"], log, "list", missing_ok=True)
        found = {}
        for line in result.lines:
            match = self.LIST.match(line)
            if match and match.group(1)[0] in "-l" and match.group(5) != ".":
                when = datetime.strptime(f"{match.group(3)} {match.group(4)}", "%Y/%m/%d %H:%M:%S")
                size = int(re.sub(r"[^0-9]", "", match.group(2)))
                found[unescape(match.group(5))] = (size, int(when.timestamp()) * 1_000_000_000)
        return found

    def read_files(self, transfer: Transfer, names: list[str], log) -> dict[str, bytes]:
        target = self.resolve(transfer)
        if is_ssh_target(target):
            return super().read_files(transfer, names, log)
        try:
            return local.read(target, names)
        except OSError as exc:
            raise TransferError(f"read: cannot read in {target}: {exc.strerror or exc}") from None

    def _summed(self, args: list[str], log, what: str, **kw) -> runner.Result:
        """Run rsync asking for SHA-1 checksums; without, if the other side cannot compute them."""
        if not self.sha1:
            return self._run(args, log, what, **kw)
        try:
            return self._run(["--checksum-choice=sha1", *args], log, what, **kw)
        except TransferError as exc:
            if not self.NO_SHA1.search(getattr(exc, "output", "")):
                raise
        log.warning("the rsync at the other end cannot compute SHA-1: hashing here instead")
        self.sha1 = False
        return self._run(args, log, what, **kw)

    def apply(self, transfer: Transfer, staging: str, writes: list[str], deletes: list[str], log) -> None:
        """Write ``writes`` (paths under ``staging``) to the target and remove ``deletes`` there, in
        one rsync: filter rules name exactly these paths, so nothing else can be touched; the
        removals happen after every write (--delete-after). A folder on this machine: local.apply."""
        target = self.resolve(transfer, writing=True)
        if not is_ssh_target(target):
            try:
                local.apply(target, staging, writes, deletes, transfer.private)
            except OSError as exc:
                log.error("cannot write the catalog in %s: %s", target, exc)
                advice = diagnose([str(exc)])
                raise TransferError(f"write the catalog: {advice + f' ({exc.strerror})' if advice else exc}") from None
            return
        rules: list[str] = []
        for path in [*writes, *deletes]:
            parts = path.split("/")
            rules += [f"+ /{'/'.join(parts[:i])}/" for i in range(1, len(parts))] + [f"+ /{path}"]
            os.makedirs(os.path.join(staging, *parts[:-1]), exist_ok=True)  # rsync must visit the folder
        filters = [f"--filter={rule}" for rule in dict.fromkeys(rules)] + ["--filter=- *"]
        args = [*self.options(transfer), "--mkpath", "--delete", "--delete-after", *filters]
        self._run([*args, "--", staging.rstrip("/") + "/", target.rstrip("/") + "/"], log, "write the catalog")

    def sha1_of(self, transfer: Transfer, names: list[str], log) -> dict[str, str]:
        """SHA-1 of files at the target, computed where they are (over SSH: on the server; only the
        checksums cross the network): a dry-run pull with --checksum names each file's SHA-1.
        Files that are not there are left out."""
        if not names:
            return {}
        if self.sha1:
            source = self.resolve(transfer).rstrip("/") + "/"
            with tempfile.TemporaryDirectory(prefix="backup-sum-") as empty, file_list(names, "\0") as listed:
                args = [*self.options(transfer), "--dry-run", "--checksum", self.OUT_FORMAT, "--from0",
                        f"--files-from={listed}", "--", source, empty + "/"]  # fmt: skip
                result = self._summed(args, log, "read checksums", ok_codes=(0, 23))
            if self.sha1:
                found = (self.SUMMED.match(line) for line in result.lines)
                return {unescape(m.group(3)): m.group(2) for m in found
                        if m and m.group(1)[1] == "f" and len(m.group(2)) == 40}  # fmt: skip
        return self._fetched_sums(transfer, names, log)

    def _fetched_sums(self, transfer: Transfer, names: list[str], log) -> dict[str, str]:
        """Where the other side cannot compute SHA-1: copy the files here and hash them."""
        from ..manifest import hash_files

        with tempfile.TemporaryDirectory(prefix="backup-sum-") as tmp:
            self.restore(transfer, tmp, log, files=names)
            present = [n for n in names if os.path.isfile(os.path.join(tmp, n))]
            return hash_files(tmp, present)

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
            # Exit 23 with a list: some were not there; the caller checks what arrived, file by file.
            result = self._run([*args, "--", source, dest.rstrip("/") + "/"], log, "restore",
                               ok_codes=(0, 23) if files is not None else (0,))  # fmt: skip
        sent = [unescape(m.group(2)) for m in map(self.ITEM.match, result.lines) if m and m.group(1)[1] in "fL"]
        return SendResult(files_sent=len(sent), sent=sent)

    # Attributes a removal must not copy from its empty source onto the target folder itself.
    KEEP_TARGET = ("--times", "--perms", "--owner", "--group", "--chmod=go-rwx")

    def remove(self, transfer: Transfer, log, files: list[str] = (), folders: list[str] = ()) -> None:
        """Remove the named ``files`` and ``folders`` (each with all it holds) inside the target, and
        nothing else (prune's deletions; a backup never calls this). On this machine, by name, never
        through a symlink; over SSH, one rsync from an empty folder with --delete whose filter rules
        take exactly these paths (``+ /NAME`` and ``+ /NAME/***``, then ``- *``). Already gone: fine."""
        names = [*files, *folders]
        if not names:
            return
        if any(not n or n.startswith("/") or ".." in n.split("/") for n in names):
            raise TransferError(f"remove: refusing a path outside {transfer.target}")
        target = self.resolve(transfer, writing=True)
        if not is_ssh_target(target):
            import shutil

            for name in names:
                path = os.path.join(target, name)
                try:
                    if name in folders and stat.S_ISDIR(os.lstat(path).st_mode):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    advice = diagnose([str(exc)])
                    raise TransferError(f"remove {path}: {advice or exc.strerror or exc}") from None
            return
        rules = []
        for name in names:
            parts = name.split("/")
            rules += [f"+ /{_pattern('/'.join(parts[:i]))}/" for i in range(1, len(parts))]
            rules += [f"+ /{_pattern(name)}", *([f"+ /{_pattern(name)}/***"] if name in folders else [])]
        filters = [f"--filter={rule}" for rule in dict.fromkeys(rules)] + ["--filter=- *"]
        args = [a for a in self.options(transfer) if a not in self.KEEP_TARGET]
        with tempfile.TemporaryDirectory(prefix="backup-remove-") as empty:
            self._run([*args, "--delete", *filters, "--", empty + "/", target.rstrip("/") + "/"], log, "remove",
                      missing_ok=True)  # fmt: skip


def _backed_up(line: str) -> str | None:
    """The name in rsync's 'backed up NAME to BACKUP_DIR/NAME' (--info=backup)."""
    rest = line[len("backed up ") :]
    at = rest.find(" to ")
    while at >= 0:
        if rest.endswith("/" + rest[:at]):
            return unescape(rest[:at])
        at = rest.find(" to ", at + 1)
    return None


def _made_way(moved: set[str], listing: Listing) -> list[str]:
    """The listed paths whose old entry of another kind rsync moved aside, from what it moved: a
    file inside a folder that is now a listed file, or a file (or symlink) that is now a folder."""
    folders = folders_of(listing.files)
    found = set()
    for name in moved:
        above = next((f for f in sorted(folders_of([name]), key=len) if f in listing.sizes), None)
        if above is not None:
            found.add(above)
        elif name in folders:
            found.add(name)
    return outermost(found)


def _pattern(name: str) -> str:
    """A name as an rsync filter pattern that matches only itself (the rule holds wildcards, so
    backslashes escape)."""
    return re.sub(r"([\\*?\[])", r"\\\1", name)


# One job makes several SSH connections to the same server (the catalog, its lock, the data, the
# record): each new one costs a handshake (key exchange, login) of several round trips. The first
# becomes a master that the others go through; it ends when the job does (``_close_shared``), or at
# the latest this long after its last use (a job killed outright).
SSH_PERSIST_SECONDS = 30
_masters: dict[str, list[str]] = {}


def _shared_connection(ssh: list[str], target: str) -> list[str]:
    """ssh options that share one connection per server and set of options within this process;
    none where no private folder for the socket can be had."""
    folder = os.path.join(tempfile.gettempdir(), f"lab-backup-ssh-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return []
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        return []  # not ours alone: another user could reach the socket
    key = hashlib.sha1("\0".join([*ssh, target.split(":", 1)[0]]).encode()).hexdigest()[:16]
    path = os.path.join(folder, f"{key}-{os.getpid()}")
    if len(path) > 80:  # a socket's path has room for about 100 bytes, and ssh adds 17 while it makes one
        return []
    options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", f"ControlPersist={SSH_PERSIST_SECONDS}"]
    if path not in _masters:
        if not _masters:
            atexit.register(_close_shared)
        _masters[path] = [*ssh, *options, target.split(":", 1)[0]]
    return options


def _close_shared() -> None:
    """End this process's SSH masters (when it exits): no connection outlives the job."""
    for argv in _masters.values():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([*argv[:1], "-O", "exit", *argv[1:]], capture_output=True, timeout=10)


def _on_network(path: str) -> bool:
    """``path`` (or the folder it will be made in) is on a network or FUSE mount."""
    mount = mounts.containing_mount(os.path.realpath(path), mounts.read_mounts())
    return mount is not None and mounts.is_network_or_fuse(mount.fstype)


# rsyncs side by side onto a mounted share where the config does not say (``transfers``), and the
# fewest files worth a part of their own (each rsync costs a start and a --files-from list).
PARALLEL_ON_SHARE = 8
FILES_PER_PART = 32


def _parts(listing: Listing, streams: int) -> list[Listing]:
    """``listing`` cut into at most ``streams`` runs of files in name order (a folder's files stay
    together), of about equal cost: a file costs its round trips (counted as 256 KiB) and its bytes."""
    count = min(streams, len(listing.files) // FILES_PER_PART)
    if count < 2:
        return [listing]
    cost = [listing.sizes[f] + 262_144 for f in listing.files]
    total, parts, start, acc = sum(cost), [], 0, 0
    for i, c in enumerate(cost):
        # A cut before the file whose middle lies past the next boundary (a big file starts a part).
        if i > start and acc + c / 2 > total * (len(parts) + 1) / count and len(parts) < count - 1:
            parts.append(subset(listing, listing.files[start:i]))
            start = i
        acc += c
    return [*parts, subset(listing, listing.files[start:])]


@contextmanager
def _shared_folders(versions: str | None, parts: list[Listing]):
    """The versions folder's folders that more than one part may need (its own, and the folders
    holding files of two neighbouring parts): made before the rsyncs start, since two of them
    making one folder for --backup-dir at once can fail (seen through a FUSE-mounted share:
    rsync's exit 11, nothing said), and removed afterwards where no rsync put anything in them."""
    made: list[str] = []
    if versions:
        # The deepest folder two neighbouring parts share (its parents come with it, below).
        shared = {""} | {os.path.commonpath(["/" + os.path.dirname(before.files[-1]),
                                             "/" + os.path.dirname(after.files[0])]).strip("/")
                         for before, after in zip(parts, parts[1:], strict=False)}  # fmt: skip
        for folder in sorted(shared):
            path = os.path.join(versions, folder) if folder else versions
            for step in _missing_parents(path):
                try:
                    os.mkdir(step)
                except OSError:
                    break  # the rsyncs make it then (and say so if they cannot)
                made.append(step)
    try:
        yield
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):  # not empty: an rsync kept a version there
                os.rmdir(path)


def _missing_parents(path: str) -> list[str]:
    """``path`` and those of its parents that do not exist, outermost first."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


@contextmanager
def _umask(transfer: Transfer):
    """A private destination's folders that rsync makes itself (the target's parents with --mkpath, the
    versions folders of --backup-dir) get the mode the umask leaves: --chmod covers only what it
    copies. Here: on this machine (the receiving rsync is a child of this one); over SSH, the
    --rsync-path of ``options`` sets the server's."""
    if not transfer.private or is_ssh_target(transfer.target):
        yield
        return
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


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


def unescape(name: str) -> str:
    """rsync writes unprintable bytes of names as \\#ooo (octal)."""
    if "\\#" not in name:
        return name
    raw = re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), name.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")
