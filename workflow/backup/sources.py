"""List the files of a dataset: one walk of its include patterns under its root.

The list is what every transport sends (rsync ``--files-from``, rclone
``--files-from-raw``), so counting, sending and checking agree on one set of files.
Symlinks are listed as entries and never followed, so nothing outside the root
is reached through them. Special files (FIFOs, sockets, devices) hold no data to back up:
they are named as skipped, never listed, so no tool is asked to send them and no count
holds them. A root that is missing, not a folder, or matches no file at all is an error
(``SourceError``): an unmounted data disk must fail the backup, not pass as "0 of 0 sent".
"""

from __future__ import annotations

import functools
import glob
import os
import stat
from dataclasses import dataclass, field

from . import names
from .errors import TransferError
from .plan import Source, Transfer

GLOB_CHARS = set("*?[")
OWNER = os.geteuid()
DISK_HINT = "is the data disk mounted?"


class SourceError(TransferError):
    """The dataset's source cannot be read as a whole (the message names the root and what to check)."""


@dataclass
class Listing:
    root: str
    files: list[str] = field(default_factory=list)  # relative POSIX paths, sorted
    sizes: dict[str, int] = field(default_factory=dict)
    mtimes: dict[str, int] = field(default_factory=dict)  # st_mtime_ns as listed, to see later changes
    missing: list[str] = field(default_factory=list)  # include patterns that matched nothing
    links: set[str] = field(default_factory=set)  # entries that are symlinks
    special: list[str] = field(default_factory=list)  # FIFOs, sockets, devices: skipped, named
    unreadable: list[str] = field(default_factory=list)  # folders and files this user cannot read: skipped, named
    # What the include patterns matched (folders and files), when the listing is all of them: a tool
    # is then given these few names to walk itself (a list of every file is slow for rsync to read).
    tops: list[str] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def _readable(root: str, rel: str, st: os.stat_result) -> bool:
    """Whether this user may read a file that is not its own readable one (``_entry`` asks that
    first): the group's or others' read bit says so (no system call), or, where the mode says no,
    the kernel does (root, and ACLs, read more than the mode says)."""
    mode = st.st_mode
    if st.st_uid != OWNER and (mode & stat.S_IROTH or (mode & stat.S_IRGRP and st.st_gid in _groups())):
        return True
    return os.access(os.path.join(root, rel), os.R_OK)


@functools.cache
def _groups() -> frozenset[int]:
    """This process's groups (asked once, not once per file)."""
    return frozenset([os.getegid(), *os.getgroups()])


def _entry(root: str, rel: str, st: os.stat_result, out: dict[str, tuple[int, int]], listing: Listing) -> None:
    """A file, symlink or special file found at ``rel``; a file this user may not read is named in
    ``listing.unreadable`` and left out (the rest of the dataset still goes)."""
    mode = st.st_mode
    if stat.S_ISREG(mode) and not (st.st_uid == OWNER and mode & stat.S_IRUSR) and not _readable(root, rel, st):
        listing.unreadable.append(rel)  # (the first test: the common case, one's own file, without a call)
    elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        out[rel] = (st.st_size, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            listing.links.add(rel)
    else:
        listing.special.append(rel)


def _read_folder(root: str, rel: str, listing: Listing) -> list[os.DirEntry]:
    """The entries of one folder; a folder this user may not read is named in ``listing.unreadable``
    and left out whole, so the rest of the dataset still goes."""
    try:
        with os.scandir(os.path.join(root, rel) if rel else root) as found:
            return list(found)
    except PermissionError:
        if not rel:
            raise SourceError(f"cannot read source folder {root}: permission denied") from None
        listing.unreadable.append(rel)
        return []


def _walk(root: str, rel_dir: str, out: dict[str, tuple[int, int]], listing: Listing) -> None:
    stack = [rel_dir]
    while stack:
        rel = stack.pop()
        prefix = rel + "/" if rel else ""
        before = len(stack)
        try:
            for entry in _read_folder(root, rel, listing):
                if entry.is_dir(follow_symlinks=False):  # from the folder's listing: no system call
                    stack.append(prefix + entry.name)
                else:
                    _entry(root, prefix + entry.name, entry.stat(follow_symlinks=False), out, listing)
        except PermissionError:  # its names can be read, not the entries: it cannot be entered
            del stack[before:]  # (no file of it was taken: the first one's details failed)
            listing.unreadable.append(rel)


def _add(root: str, rel: str, out: dict[str, tuple[int, int]], listing: Listing) -> bool:
    try:
        st = os.lstat(os.path.join(root, rel))
    except FileNotFoundError:
        return False
    except PermissionError:  # a folder on its way may not be entered
        listing.unreadable.append(rel)
        return True
    if stat.S_ISDIR(st.st_mode):
        _walk(root, rel, out, listing)
    else:
        _entry(root, rel, st, out, listing)
    return True


def _check_root(source: Source) -> None:
    """A root that is missing or not a folder: the data disk is not there (or the config is wrong)."""
    try:
        st = os.stat(source.root)
    except FileNotFoundError:
        raise SourceError(f"source folder {source.root} of {source.name} does not exist: {DISK_HINT}") from None
    except OSError as exc:
        raise SourceError(f"cannot reach source folder {source.root} of {source.name}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source {source.root} of {source.name} is not a folder: {DISK_HINT}")


def list_source(source: Source) -> Listing:
    """Expand the include patterns of ``source``; patterns that match nothing go to ``missing``.
    Raises SourceError when the root is missing, not a folder, or holds none of the files."""
    _check_root(source)
    listing = Listing(root=source.root, tops=[])
    found: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns)
    for pattern in source.include:
        rel = os.path.normpath(pattern)
        if rel == ".":  # the whole root: its files by name (no top to hand a tool: "./x" names)
            _walk(source.root, "", found, listing)
            listing.tops = None
            continue
        # A name that exists as written wins over reading it as a glob ("Plot[final].png").
        mine: dict[str, tuple[int, int]] = {}  # this pattern's files (patterns may overlap)
        specials, unreadable = len(listing.special), len(listing.unreadable)
        ok = [rel] if _add(source.root, rel, mine, listing) else []
        if not ok and GLOB_CHARS & set(rel):
            matches = sorted(glob.glob(rel, root_dir=source.root, recursive=True))
            ok = [m for m in matches if _add(source.root, m, mine, listing)]
        found.update(mine)
        if not mine and (len(listing.special), len(listing.unreadable)) == (specials, unreadable):
            # nothing, or only empty folders (a sub-mount that is not mounted, say): a warning
            listing.missing.append(pattern)
            continue
        if listing.tops is not None:
            # A special file named by a pattern is no top: the tools walk only what is sent.
            listing.tops += [m for m in ok if m not in listing.special]
    if not found and listing.unreadable:
        raise SourceError(f"cannot read source folder {os.path.join(source.root, listing.unreadable[0])} of "
                          f"{source.name}: permission denied (let the backup's user read it)")  # fmt: skip
    if not found:
        raise SourceError(f"source folder {source.root} of {source.name} holds none of its files: {DISK_HINT}")
    # A tool walking the tops would meet the unreadable folders and fail: it gets the list instead.
    listing.tops = sorted(set(listing.tops)) if listing.tops is not None and not listing.unreadable else None
    listing.unreadable.sort()
    listing.special.sort()
    listing.files = sorted(found)
    listing.sizes = {name: size for name, (size, _) in found.items()}
    listing.mtimes = {name: mtime for name, (_, mtime) in found.items()}
    return listing


def _now(listing: Listing, names: list[str]) -> dict[str, tuple[int, int] | None]:
    """The current (size, mtime_ns) of ``names`` under the listing's root; None for those gone."""
    out: dict[str, tuple[int, int] | None] = {}
    for name in names:
        try:
            st = os.lstat(os.path.join(listing.root, name))
        except FileNotFoundError:
            out[name] = None
            continue
        out[name] = (st.st_size, st.st_mtime_ns)
    return out


def changed_since_listed(listing: Listing, names: list[str]) -> list[str]:
    """Those of ``names`` whose size or time is no longer what the listing saw (or that are gone)."""
    return [n for n, now in _now(listing, names).items() if now != (listing.sizes.get(n), listing.mtimes.get(n))]


def relisted(listing: Listing, names: list[str]) -> Listing:
    """The listing with the current size and time of ``names``; those that are gone are left out."""
    now = _now(listing, names)
    fresh = without(listing, [n for n, state in now.items() if state is None])
    for name, state in now.items():
        if state is not None and name in fresh.sizes:
            fresh.sizes[name], fresh.mtimes[name] = state
    return fresh


def single_file(path: str | os.PathLike) -> Listing:
    """A listing of one file (an archive) in its folder, as transports send it."""
    name, st = os.path.basename(path), os.stat(path)
    return Listing(root=os.path.dirname(os.fspath(path)), files=[name], sizes={name: st.st_size},
                   mtimes={name: st.st_mtime_ns}, tops=[name])  # fmt: skip


def without(listing: Listing, names: list[str]) -> Listing:
    """The same listing less some files (vanished ones, or all but those to resend)."""
    drop = set(names)
    files = [f for f in listing.files if f not in drop]
    return Listing(
        root=listing.root,
        files=files,
        sizes={f: listing.sizes[f] for f in files},
        mtimes={f: listing.mtimes[f] for f in files if f in listing.mtimes},
        missing=listing.missing,
        links=listing.links - drop,
        special=listing.special,
        unreadable=listing.unreadable,
    )


def union(listing: Listing, other: Listing) -> Listing:
    """The files of both listings (of one root); ``listing`` wins where both have a file."""
    files = sorted(set(listing.files) | set(other.files))
    sizes, mtimes = {**other.sizes, **listing.sizes}, {**other.mtimes, **listing.mtimes}
    return Listing(root=listing.root, files=files, sizes={f: sizes[f] for f in files},
                   mtimes={f: mtimes[f] for f in files if f in mtimes}, missing=listing.missing,
                   links=listing.links | other.links, special=listing.special,
                   unreadable=listing.unreadable)  # fmt: skip


def subset(listing: Listing, names) -> Listing:
    """The same listing with only ``names`` (files to check or send again)."""
    keep = set(names)
    return without(listing, [f for f in listing.files if f not in keep])


def for_transfer(transfer: Transfer, ignores_case: bool = False, held=None, keeps_links: bool = True):
    """What a transfer sends (and verifies): the source's files as ``sendable`` leaves them."""
    return sendable(transfer, list_source(transfer.source), ignores_case, held, keeps_links=keeps_links)


def _memo(path) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except (OSError, ValueError):
        return ""


def ignores_case(transfer: Transfer, transport, log) -> bool:
    """Whether the destination cannot tell names apart by case, as its transport's capabilities say
    (Box cannot either; a folder's own file system is not asked: taken to tell them apart)."""
    if transfer.on_smb:  # a share never can (its capabilities say so too): known without starting rclone,
        return True  # which would connect to the server only to say so
    return transport.capabilities(transfer, log).case_sensitive is False


def sendable(transfer: Transfer, listing: Listing, ignores_case: bool = False, held=None, memo=None,
             keeps_links: bool = True):  # fmt: skip
    """A listing less what the destination cannot hold. Returns it, the symlinks left out where it
    holds none (``keeps_links``, the transport's Capabilities.symlinks: an SMB share written by rsync;
    following them could leave the dataset; the catalog keeps them), and the names it cannot store,
    with why (``names.unstorable``; ``held``: what the destination holds, asked only when names clash
    by case; ``memo``: a file that keeps the key of the last set of names found storable here, so an
    unchanged dataset is not looked at again)."""
    # A share's naming rules, and rclone's lists of names (one a line, UTF-8): about the destination's
    # kind and the tool itself, not a capability.
    rules = {"share": transfer.on_smb, "rclone": transfer.tool == "rclone", "ignores_case": ignores_case}
    key = names.key(listing.files, **rules) if memo else ""
    known = key and _memo(memo) == key
    refused = {} if known else names.unstorable(listing.files, **rules, held=held)
    if key and not refused and not known:
        os.makedirs(os.path.dirname(memo), exist_ok=True)
        with open(f"{memo}.{os.getpid()}", "w", encoding="ascii") as fh:
            fh.write(key)
        os.replace(f"{memo}.{os.getpid()}", memo)
    skipped = [] if keeps_links else sorted(listing.links - set(refused))
    if not refused and not skipped:
        return listing, [], {}
    trimmed = without(listing, [*refused, *skipped])
    if not refused:  # rsync --no-links skips the links as it walks the tops
        trimmed.tops = [t for t in listing.tops or [] if t not in listing.links] if listing.tops is not None else None
    # (With names refused, the tools are given the list of files: walking the tops would meet them.)
    return trimmed, skipped, refused
