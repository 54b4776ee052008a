"""Find where an SMB share is mounted, and tell a real mount from a plain folder.

rsync cannot write to ``smb://`` URLs: the share must be mounted (kernel CIFS,
GVFS or another FUSE client). An unmounted mount point is an ordinary empty
folder on the local disk, and writing there would silently fill that disk, so
every write to a share is preceded by ``check_on_network_fs``.

A mounted share can still be unfit for a backup: a FUSE client that keeps written files in a
local cache and uploads them after ``close()`` (rclone mount with a VFS cache, S3QL, davfs2)
lets rsync finish, and read its files back, while the server has nothing; and a share whose
server is gone makes rsync fail minutes later with a misleading "is the destination full?".
``check_target`` refuses both, and ``resolve_smb_target`` calls it on every target it returns.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

NETWORK_FS_TYPES = {"cifs", "smb3", "smbfs", "nfs", "nfs4", "afs", "ceph", "glusterfs", "9p"}


class MountError(Exception):
    """The share is not mounted, or the target is not on a mounted share."""


@dataclass(frozen=True)
class SmbUrl:
    host: str
    share: str
    path: str  # inside the share, without leading slash


@dataclass(frozen=True)
class Mount:
    source: str
    point: str
    fstype: str


def is_smb_url(value: str) -> bool:
    return value.lower().startswith("smb://")


def parse_smb_url(value: str) -> SmbUrl:
    parts = urlsplit(value)
    if parts.scheme.lower() != "smb" or not parts.hostname:
        raise ValueError(f"{value!r} is not an smb://HOST/SHARE/path URL")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"{value!r} names no share (expected smb://HOST/SHARE/path)")
    if ".." in segments:
        raise ValueError(f"{value!r} may not contain '..'")
    return SmbUrl(parts.hostname, segments[0], "/".join(segments[1:]))


def _unescape(field: str) -> str:
    # /proc mount tables escape space, tab, newline and backslash as octal (\040).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """Parse the kernel's mount table (mountinfo format)."""
    mounts = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) < 5 or len(rest) < 2:
                continue
            mounts.append(Mount(source=_unescape(rest[1]), point=_unescape(fields[4]), fstype=rest[0]))
    return mounts


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    # "ramanfile.local" and "ramanfile" name the same server in practice.
    return a == b or a.split(".")[0] == b.split(".")[0]


def find_share_mount(url: SmbUrl, mounts: list[Mount], gvfs_root: str | Path | None = None) -> str | None:
    """Local folder where ``//host/share`` is mounted (kernel CIFS or GVFS), or None."""
    for m in mounts:
        # Kernel CIFS, and FUSE clients that name the share as //host/share (smbnetfs, fusesmb).
        if m.fstype in {"cifs", "smb3", "smbfs"} or (m.fstype.startswith("fuse") and m.source.startswith("//")):
            src = m.source.replace("\\", "/").lstrip("/").split("/")
            if len(src) >= 2 and _same_host(src[0], url.host) and src[1].lower() == url.share.lower():
                return m.point
    gvfs_root = Path(gvfs_root or f"/run/user/{os.getuid()}/gvfs")
    if gvfs_root.is_dir():
        for entry in gvfs_root.iterdir():
            name = entry.name
            if not name.startswith("smb-share:"):
                continue
            opts = dict(kv.split("=", 1) for kv in name[len("smb-share:") :].split(",") if "=" in kv)
            if _same_host(opts.get("server", ""), url.host) and opts.get("share", "").lower() == url.share.lower():
                return str(entry)
    return None


def containing_mount(path: str | Path, mounts: list[Mount]) -> Mount | None:
    """The mount whose mount point is the longest prefix of ``path``."""
    path = PurePosixPath(os.path.abspath(path))
    best = None
    for m in mounts:
        point = PurePosixPath(m.point)
        if (path == point or point in path.parents) and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def is_network_or_fuse(fstype: str) -> bool:
    return fstype in NETWORK_FS_TYPES or fstype == "fuse" or fstype.startswith("fuse.")


def check_on_network_fs(path: str | Path, mounts: list[Mount]) -> Mount:
    """Return the mount holding ``path``; raise MountError if it is a local filesystem."""
    # realpath resolves symlinks in the part that exists and keeps the rest as written.
    mount = containing_mount(os.path.realpath(path), mounts)
    if mount is None or not is_network_or_fuse(mount.fstype):
        fstype = mount.fstype if mount else "unknown"
        raise MountError(f"{path} is on a local {fstype} filesystem, not a mounted share")
    return mount


def resolve_smb_target(value: str, mount_point: str | None, mounts: list[Mount], writing: bool = False) -> str:
    """Turn an smb:// URL (or a local path) into the local folder rsync writes to.

    Raises MountError with a user-facing message when the share is not mounted, or when its
    mount caches writes or does not answer (``check_target``: whatever require_mount says, as
    neither is a matter of the target being a mounted share).
    """
    if not is_smb_url(value):
        check_target(value, mounts, writing)
        return value
    url = parse_smb_url(value)
    point = mount_point or find_share_mount(url, mounts)
    if point is None:
        raise MountError(
            f"share //{url.host}/{url.share} is not mounted (no cifs/smb3 or GVFS mount found); "
            f"mount it (e.g. 'gio mount smb://{url.host}/{url.share}') or set mount_point"
        )
    target = str(Path(point, url.path)) if url.path else point
    check_target(target, mounts, writing)
    return target


# -- Mounts that cache writes ---------------------------------------------------------------

# rclone commands that serve a mount point through rclone's VFS (nfsmount: over NFS from localhost).
RCLONE_MOUNTS = {"mount", "cmount", "mount2", "nfsmount"}
# FUSE filesystems that always upload written files after close() has returned.
UPLOAD_LATER = {"fuse.s3ql": "an S3QL", "fuse.davfs": "a davfs2"}
WRITE_THROUGH = "use transport: rclone for this destination (it talks to the server)"


def _argv(proc: str, pid: str) -> list[str]:
    try:
        raw = Path(proc, pid, "cmdline").read_bytes()
    except OSError:
        return []  # gone, or not ours to read
    return [os.fsdecode(a) for a in raw.split(b"\0") if a]


def _names_point(proc: str, pid: str, argv: list[str], point: str) -> bool:
    """One of the arguments is ``point`` (a relative one taken from the process's own folder)."""
    cwd = None
    for arg in argv[1:]:
        if arg.startswith("-"):
            continue
        if not os.path.isabs(arg):
            try:
                cwd = cwd or os.readlink(Path(proc, pid, "cwd"))
            except OSError:
                continue
            arg = os.path.join(cwd, arg)
        if os.path.normpath(arg) == point:
            return True
    return False


def rclone_servers(point: str, proc: str = "/proc") -> list[tuple[str, list[str]]]:
    """(pid, arguments) of every rclone process mounting ``point``."""
    point = os.path.normpath(point)
    found = []
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        # The name first: reading another process's arguments waits for its memory map, which a
        # process stuck on a dead mount may hold for good; its name needs no such wait.
        try:
            comm = Path(proc, pid, "comm").read_bytes().strip()
        except OSError:
            continue
        if not comm.startswith(b"rclone") and comm != b"mount.rclone":
            continue
        argv = _argv(proc, pid)
        is_rclone = any("rclone" in os.path.basename(a) for a in argv[:2])  # the binary, or a wrapper running it
        # mount.rclone: rclone run by mount(8) for an fstab line, with -o options
        mounting = RCLONE_MOUNTS & set(argv) or (argv and os.path.basename(argv[0]) == "mount.rclone")
        if is_rclone and mounting and _names_point(proc, pid, argv, point):
            found.append((pid, argv))
    return found


def _option(argv: list[str], name: str) -> str | None:
    """The last value given for ``--name`` (as --name V, --name=V, or -o name=V / -o name_with_underscores=V)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-o") and (arg != "-o" or i + 1 < len(argv)):
            for opt in (arg[2:] or argv[i + 1]).split(","):  # mount helper style: -o vfs_cache_mode=writes
                key, _, val = opt.partition("=")
                if key.lstrip("-").replace("_", "-") == name:
                    value = val
    return value


def rclone_cache_mode(proc: str, pid: str, argv: list[str]) -> str | None:
    """--vfs-cache-mode of one rclone process: its command line, else RCLONE_VFS_CACHE_MODE, else
    rclone's default "off". None: it cannot be told (its environment is not readable)."""
    mode = _option(argv, "vfs-cache-mode")
    if mode is None:
        try:
            env = Path(proc, pid, "environ").read_bytes().split(b"\0")
        except OSError:
            return None
        given = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RCLONE_VFS_CACHE_MODE=")]
        mode = os.fsdecode(given[-1]) if given else "off"
    return mode.strip().lower()


def refuse_write_cache(mount: Mount, proc: str = "/proc") -> None:
    """Raise MountError if files written under ``mount`` reach the server only after close().

    rclone's VFS cache, in every mode but "off" (minimal caches files opened for reading and
    writing, which is how rsync opens the files it writes), answers writes from a local folder
    and uploads later: rsync, and a read-back check, would see the cache, not the server.
    """
    point = mount.point
    name = UPLOAD_LATER.get(mount.fstype)
    if mount.fstype == "fuse" and re.match(r"https?://", mount.source):
        name = "a davfs2"  # davfs2 mounts as plain "fuse", named by its URL
    if name:
        raise MountError(
            f"{point} is {name} mount, which keeps written files and uploads them later, so a backup there "
            f"cannot be verified: {WRITE_THROUGH}, or mount it without a write cache (kernel CIFS)"
        )
    local_nfs = mount.fstype.startswith("nfs") and re.match(r"(localhost|127\.[0-9.]+|\[?::1\]?):", mount.source)
    if mount.fstype != "fuse.rclone" and not local_nfs:
        return
    found = rclone_servers(point, proc)
    if not found:
        if local_nfs:
            return  # an NFS export of this machine, not rclone's
        _undetermined(point, "no rclone process with this mount point on its command line is visible")
    for pid, argv in found:
        mode = rclone_cache_mode(proc, pid, argv)
        if mode is None:
            _undetermined(point, f"cannot read the environment of rclone process {pid}")
        if mode != "off":
            raise MountError(
                f"{point} is an rclone mount that caches writes (--vfs-cache-mode {mode}) and uploads them after "
                f"rsync has finished, so a backup there cannot be verified: {WRITE_THROUGH}, or mount it with "
                "--vfs-cache-mode off"
            )


def _undetermined(point: str, why: str) -> None:
    raise MountError(
        f"cannot tell whether the rclone mount at {point} caches writes ({why}), so a backup there could not be "
        f"verified: {WRITE_THROUGH}, or mount it with --vfs-cache-mode off given on rclone's command line"
    )


# -- Mounts that do not answer ---------------------------------------------------------------

PROBE_SECONDS = 10.0  # a share that answers nothing in this time is unreachable (rsync would take minutes)
ANSWER_KEPT = 60.0  # a share that answered is not asked again for this long (targets are resolved often)
_answered: dict[tuple[str, bool], float] = {}  # (mount point, to a write?) -> time.monotonic() of its answer
# Errors that mean the server did not do what was asked (rclone reports every failure as EIO).
NO_ANSWER = {errno.EIO, errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT,
             errno.ECONNREFUSED, errno.ECONNRESET, errno.ESTALE}  # fmt: skip
CHECK = "check that the server is on and this machine can reach it (network, VPN), then mount it again if needed"

# Run in a child process: a call stuck in a FUSE or CIFS request cannot be killed until the server
# (or the FUSE program) answers, and a thread stuck so would keep this process from exiting.
# It prints the target's real path, then, before a write, makes and removes a hidden folder in the
# target's nearest existing folder on the mount: both go to the server (listings and attributes may
# come from the client's cache; no client we know caches folders made). A refusal (read-only, no
# permission) is an answer too. ENOTCONN at the mount point: the program serving a FUSE mount has
# stopped. Before a read (dry run, verify, restore, list) it only lists that folder: those write
# nothing, and a listing the client answers from its cache is as good as the server's for them.
PROBE = """
import os, secrets, sys
target, point, no_answer = sys.argv[1], sys.argv[2], {int(e) for e in sys.argv[3].split(",")}
writing = sys.argv[4] == "write"
real = os.path.realpath(target)
print(real, flush=True)
if real != point and not real.startswith(point.rstrip("/") + "/"):
    sys.exit(0)
try:
    os.stat(point)
    folder = real
    while len(folder) > len(point) and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    if writing:
        probe = os.path.join(folder, ".lab-backup-probe-%d-%s" % (os.getpid(), secrets.token_hex(4)))
        os.mkdir(probe)
        os.rmdir(probe)
    else:
        os.listdir(folder)
except OSError as exc:
    if exc.errno in no_answer:
        print(exc.errno, exc.strerror, flush=True)
"""


def probe(
    target: str, point: str, seconds: float = PROBE_SECONDS, writing: bool = True
) -> tuple[str | None, OSError | None]:
    """(real path of ``target``, the error that says its server did not answer); (None, None):
    no answer within ``seconds``. The child is left behind if stuck (a thread waits for it)."""
    no_answer = ",".join(map(str, sorted(NO_ANSWER)))
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", PROBE, target, point, no_answer, "write" if writing else "read"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        out, _ = child.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        threading.Thread(target=child.wait, daemon=True).start()  # reaped when the kernel lets it go
        return None, None
    lines = out.splitlines()
    if len(lines) > 1:
        code, _, text = lines[1].partition(" ")
        return lines[0], OSError(int(code), text)
    return (lines[0] if lines else target), None  # no output: the child failed to start; the path as given


def _silent_mark(point: str) -> Path | None:
    """Where this user notes that the share at ``point`` did not answer (the file's time: when).
    Each job of a run would otherwise wait the whole probe time for it again."""
    from .records import user_cache

    cache = user_cache()
    return cache / "silent-mounts" / hashlib.sha1(point.encode()).hexdigest()[:16] if cache else None


def _silent_since(point: str) -> float | None:
    """Seconds since the share at ``point`` last did not answer (None: not noted)."""
    mark = _silent_mark(point)
    try:
        return time.time() - mark.stat().st_mtime if mark else None
    except OSError:
        return None


def _note_silent(point: str, silent: bool) -> None:
    mark = _silent_mark(point)
    with contextlib.suppress(OSError):
        if mark and silent:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(point)
        elif mark:
            mark.unlink(missing_ok=True)


def share_of(target: str, mount: Mount) -> str:
    """The folder that stands for one server: the mount point, or for a FUSE mount that holds many
    shares under one point (GVFS: /run/user/UID/gvfs/smb-share:server=...,share=...) that share's."""
    if mount.fstype.startswith("fuse.gvfs"):
        inside = os.path.relpath(os.path.abspath(target), mount.point).split(os.sep)[0]
        if inside not in (".", ".."):
            return os.path.join(mount.point, inside)
    return mount.point


def check_reachable(target: str, mount: Mount, seconds: float = PROBE_SECONDS, writing: bool = True) -> str:
    """The real path of ``target``; MountError unless the server behind ``mount`` answers in time
    (``writing``: to making a folder; else to a listing)."""
    point = mount.point
    share = share_of(target, mount)  # what answers or not: the mount, or one share of a GVFS mount
    # It answered a moment ago (a listing, which its client may answer from a cache, is no answer
    # for a write).
    if time.monotonic() - _answered.get((share, writing), -ANSWER_KEPT) < ANSWER_KEPT:
        return os.path.realpath(target)
    ago = _silent_since(share)
    if ago is not None and ago < ANSWER_KEPT:  # another job of this run waited for it just now
        raise MountError(f"the share mounted at {share} is unreachable (no answer within {seconds:.0f} s, "
                         f"{ago:.0f} s ago): {CHECK}")  # fmt: skip
    real, failure = probe(target, point, seconds, writing)
    _note_silent(share, real is None)
    if real is None:
        raise MountError(f"the share mounted at {share} is unreachable (no answer within {seconds:.0f} s): {CHECK}")
    if failure and failure.errno == errno.ENOTCONN:
        raise MountError(
            f"the mount at {point} is broken (the program serving it has stopped): unmount it "
            f"('fusermount -u {point}' or 'umount -l {point}') and mount it again"
        )
    if failure:
        raise MountError(
            f"the share mounted at {share} is unreachable or failing (a test folder could not be made there: "
            f"{failure.strerror}): {CHECK}; the mount's own log says more"
        )
    _answered[(share, False)] = _answered[(share, writing)] = time.monotonic()
    return real


_reads_only = False  # this process writes nothing at any destination (see reads_only)


def reads_only() -> None:
    """This process only reads at destinations (--dry-run, --verify, list, restore): its probes
    list a folder instead of making one. A backup job's probes always make one, even before a
    read: a listing may come from the client's cache while the server is gone, and the job's next
    reads and writes would then wait on it for good, where the probe's child gives up in time."""
    global _reads_only
    _reads_only = True


def check_target(target: str, mounts: list[Mount], writing: bool = False) -> None:
    """Refuse a target on a mount that caches writes or whose server does not answer (MountError).

    Local folders pass untouched. A path on a network or FUSE mount is resolved (symlinks) in the
    probe's child process, as that alone may hang; a local one here.
    """
    writing = writing or not _reads_only
    path = os.path.abspath(target)
    mount = containing_mount(path, mounts)
    if mount is not None and is_network_or_fuse(mount.fstype):
        refuse_write_cache(mount)
        real = check_reachable(path, mount, writing=writing)
    else:
        mount, real = None, os.path.realpath(path)
    moved = containing_mount(real, mounts)  # a symlink may lead to another mount
    if moved is not None and moved != mount and is_network_or_fuse(moved.fstype):
        refuse_write_cache(moved)
        check_reachable(real, moved, writing=writing)
