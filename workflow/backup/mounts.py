"""Find where an SMB share is mounted, and tell a real mount from a plain folder.

rsync cannot write to ``smb://`` URLs: the share must be mounted (kernel CIFS,
GVFS or another FUSE client). An unmounted mount point is an ordinary empty
folder on the local disk, and writing there would silently fill that disk, so
every write to a share is preceded by ``check_on_network_fs``.
"""

from __future__ import annotations

import os
import re
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


def resolve_smb_target(value: str, mount_point: str | None, mounts: list[Mount]) -> str:
    """Turn an smb:// URL (or a local path) into the local folder rsync writes to.

    Raises MountError with a user-facing message when the share is not mounted.
    """
    if not is_smb_url(value):
        return value
    url = parse_smb_url(value)
    point = mount_point or find_share_mount(url, mounts)
    if point is None:
        raise MountError(
            f"share //{url.host}/{url.share} is not mounted (no cifs/smb3 or GVFS mount found); "
            f"mount it (e.g. 'gio mount smb://{url.host}/{url.share}') or set mount_point"
        )
    return str(Path(point, url.path)) if url.path else point
