"""Files rewritten with identical bytes: recognised by content, never sent again.

The lab's analysis rewrites its figures on every run; most come out byte for byte the same,
with a new modification time. A tool deciding by size and time would send each again (and
move the identical copy into the versions folder). The destination's catalog says what it
holds: the manifest of its last state, with a SHA-1 per file. A file whose size is what that
state recorded but whose time is not is read here once and hashed; the same SHA-1 means the
destination already holds these bytes. Nothing at the destination is read.

Trusted only when that state is surely what the destination holds: the latest run there of
this dataset left it (verified), and no run since may have written (none interrupted, none
still marked as writing). Otherwise every file goes the usual way.
"""

from __future__ import annotations

import json

from . import manifest, records
from .catalog import INTERRUPTED, LOCKS, RUNS, Catalog, CatalogRun
from .errors import TransferError
from .manifest import Manifest
from .records import Tag
from .sources import Listing


def _tagged(cat: Catalog, folder: str) -> list[tuple[Tag, str]]:
    """The catalog's files in ``folder`` whose names are tags, oldest first (by name: nothing read)."""
    found = []
    for path in cat.tree():
        head, _, name = path.rpartition("/")
        tag = Tag.parse(name[: -len(".json")]) if head == folder and name.endswith(".json") else None
        if tag is not None:
            found.append((tag, path))
    return sorted(found)


def baseline(cat: Catalog, dataset: str, tag: str, unless: str | None = None, log=None) -> Manifest | None:
    """The dataset's state the destination holds for sure (see the module's docstring), or None;
    None too when its listing's digest is ``unless`` (nothing changed: no manifest is read). ``tag``:
    this run and stage's (a run's pre stage is the post stage's baseline). Reads the newest run
    records only, until one holds the dataset (a catalog grows by two a day). Anything it cannot
    read makes it None: a shortcut never fails a backup."""
    try:
        return _baseline(cat, dataset, Tag.parse(tag), unless)
    except (TransferError, OSError, ValueError) as exc:
        if log is not None:
            log.warning("the destination's last state could not be read (every file goes the usual way): %s", exc)
        return None


def _baseline(cat: Catalog, dataset: str, own: Tag | None, unless: str | None) -> Manifest | None:
    last = since = None
    for tag, path in reversed(_tagged(cat, RUNS)):
        if tag == own:
            continue
        run = CatalogRun.load(json.loads(cat.read(path) or b"null"))
        if run is not None and run.transfer(dataset) is not None:
            last, since = run, tag
            break
    if last is None:
        return None
    held = last.restorable(dataset)
    if held is None or held.mode != "direct" or held.status in records.NOT_SAFE or held.state_listing == unless:
        return None
    for tag, _ in [*_tagged(cat, LOCKS), *_tagged(cat, INTERRUPTED)]:
        if tag != own and tag > since:
            return None  # a run after it may have written files it does not describe
    return cat.manifest(held.manifest)


def candidates(base: Manifest | None, listing: Listing, names=None) -> list[str]:
    """Those of ``names`` (default: every listed file) that ``base`` holds with the same size and
    another time (nothing is read)."""
    if base is None:
        return []
    entries, found = base.entries(), []
    for name in listing.files if names is None else names:
        held = entries.get(name)
        if held is not None and held[0] == listing.sizes.get(name) and held[1] != listing.mtimes.get(name):
            found.append(name)
    return [name for name in found if name not in listing.links and name not in base.links]


def identical(base: Manifest, listing: Listing, names: list[str], there: dict, window: int) -> dict[str, str]:
    """Those of ``names`` (``candidates``) whose bytes are what ``base`` recorded: name -> SHA-1
    (read here, once). ``there``: the destination's own (size, time) by name: a copy whose size or
    time is not what ``base`` recorded (within ``window`` ns) was changed there since: not counted."""
    entries = base.entries()
    unchanged_there = []
    for name in names:
        held, found = entries[name], there.get(name)
        if found is not None and found[0] == held[0] and abs(found[1] - held[1]) <= window:
            unchanged_there.append(name)
    hashes = manifest.hash_files(listing.root, unchanged_there)
    return {name: sha1 for name, sha1 in hashes.items() if sha1 == entries[name][2]}


def held_as_listed(base: Manifest | None, listing: Listing, names) -> set[str]:
    """Those of ``names`` the state holds with the source's size and time (a destination that
    cannot take a new time without the bytes again keeps the old one: these are not sent)."""
    if base is None:
        return set()
    entries = base.entries()
    return {
        name
        for name in names
        if name not in listing.links
        and (held := entries.get(name)) is not None
        and (held[0], held[1]) == (listing.sizes.get(name), listing.mtimes.get(name))
    }
