"""Check what each destination holds against its own catalog: everything, or a slice per call.

Every file a kept restore point needs is read where it is and its SHA-1 compared with the
catalog's: the current copies, the files in versions folders that earlier runs need, and
every recorded archive. Reading happens at the destination's end (rsync computes the
checksums on the server; Box reports the SHA-1 it keeps; an SMB server without hashes is
read back), so nothing here depends on this machine's records or on the sources.

``--sample N`` reads one of N slices of those files (by a hash of each file's place), the
next slice on each call, so N calls cover everything; the destination records in its catalog
(``scrub.json``) which slice was read last, when, and what was found.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import plan, records
from .catalog import SCRUB_FILE, Catalog
from .errors import TransferError
from .records import Tag, TransferRecord
from .restore import Versions, points

HISTORY = 50  # scrub.json keeps the last this many checks


@dataclass
class Want:
    """A file a restore point needs: where it is (folder, name) and the SHA-1 it must have."""

    dataset: str
    folder: str  # the target, or a versions folder beside it, that holds it
    name: str
    sha1: str
    target: str  # the dataset's folder


@dataclass
class Found:
    checked: dict[str, int] = field(default_factory=dict)  # dataset -> files read and matched
    wanted: dict[str, int] = field(default_factory=dict)  # dataset -> files in this check
    bad: dict[str, list[str]] = field(default_factory=dict)  # dataset -> "place: why"


def in_slice(want: Want, part: int, parts: int) -> bool:
    digest = hashlib.sha1(f"{want.folder}\0{want.name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:4], "big") % parts == part


def needed(cat: Catalog, datasets: list[str], log) -> tuple[list[Want], dict[str, str]]:
    """Every file the destination's kept restore points need, each once (the latest run's
    expectation wins where two runs need the same file at the same place), and the mode of
    each dataset that has restore points here."""
    wants: dict[tuple[str, str], Want] = {}
    modes: dict[str, str] = {}  # dataset -> the mode of its latest restore point here
    for dataset in datasets:
        found = points(cat, dataset)
        if found:
            modes[dataset] = found[-1].record.mode
        held: dict[str, Versions] = {}  # what each target's versions folder holds, listed once
        for point in found:
            state = cat.manifest(point.record.manifest)
            target = cat.locate(point.record)
            if point.record.mode == "archive":
                info = state.archive or {}
                name = info.get("name", "")
                wants[(target, name)] = Want(dataset, target, name, info.get("sha1", ""), target)
                continue
            if target not in held:
                held[target] = Versions(cat, target, log)
            versions = held[target]
            own = Tag.parse(point.run.tag)
            for name, sha1 in zip(state.files, state.sha1, strict=True):
                if name in state.links:
                    continue  # made from the manifest on restore; nothing to read
                folder = versions.folder(name, own)
                wants[(folder, name)] = Want(dataset, folder, name, sha1, target)
    return list(wants.values()), modes


def check(cat: Catalog, wants: list[Want], log) -> Found:
    """Read the SHA-1 of every wanted file where it is, one call per folder."""
    out = Found()
    by_folder: dict[str, list[Want]] = defaultdict(list)
    for want in wants:
        by_folder[want.folder].append(want)
        out.wanted[want.dataset] = out.wanted.get(want.dataset, 0) + 1
    for folder, group in sorted(by_folder.items()):
        there = cat.transport.sha1_of(dataclasses.replace(cat.transfer, target=folder), [w.name for w in group], log)
        for want in group:
            got = there.get(want.name)
            if got == want.sha1:
                out.checked[want.dataset] = out.checked.get(want.dataset, 0) + 1
                continue
            why = "missing" if got is None else "differs from the catalog's SHA-1"
            where = "" if folder == want.target else f" (in {folder.rsplit('/', 1)[-1]}, a version kept)"
            out.bad.setdefault(want.dataset, []).append(f"{want.name}{where}: {why}")
    return out


def verify_destination(cfg: dict, workdir: Path, dest: str, sample: int | None, log) -> list[TransferRecord]:
    """Check one destination (a slice of it with ``sample``); record the check in its catalog."""
    datasets = cfg["backups"]["destinations"][dest]["datasets"]
    rows = {d: TransferRecord("verify", "verify", dest, d) for d in datasets}
    cat = Catalog(plan.catalog_transfer(cfg, dest, str(workdir)), workdir, log)
    try:
        cat.require()
        wants, modes = needed(cat, datasets, log)
        scrub = _scrub_state(cat)
        part = None
        if sample:
            part = scrub.get("next", 0) % sample if scrub.get("parts") == sample else 0
            wants = [w for w in wants if in_slice(w, part, sample)]
        found = check(cat, wants, log)
        _record(cat, scrub, sample, part, found)
    except TransferError as exc:
        for row in rows.values():
            row.status, row.error = records.FAILED, str(exc)
        return list(rows.values())
    for dataset, row in rows.items():
        row.files_total, row.files_verified = found.wanted.get(dataset, 0), found.checked.get(dataset, 0)
        row.mode = modes.get(dataset, "")
        if sample:
            row.source = f"slice {part + 1} of {sample}"
        bad = found.bad.get(dataset, [])
        if bad:
            row.status, row.error = records.FAILED, f"{len(bad)} files missing or changed (e.g. {bad[0]})"
        elif dataset not in modes:
            row.status, row.error = records.WARNING, "no backup of this dataset here yet"
    return list(rows.values())


def _scrub_state(cat: Catalog) -> dict:
    if SCRUB_FILE not in cat.tree():
        return {}
    try:
        data = json.loads(cat.read(SCRUB_FILE) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _record(cat: Catalog, scrub: dict, sample: int | None, part: int | None, found: Found) -> None:
    """What was read, when, and what was wrong, in the destination's catalog."""
    entry = {"at": records.now_iso(), "slice": None if part is None else part + 1, "of": sample,
             "files": sum(found.wanted.values()), "bad": [b for v in found.bad.values() for b in v][:20]}  # fmt: skip
    scrub = {**scrub, "history": ([*scrub.get("history", []), entry])[-HISTORY:]}
    if sample:
        scrub.update(parts=sample, next=(part + 1) % sample)
    else:
        scrub["full"] = entry
    cat.apply({SCRUB_FILE: (json.dumps(scrub, indent=1, sort_keys=True) + "\n").encode()})


def verify_all(cfg: dict, destinations: list[str], workdir: Path, sample: int | None, log,
               workers: int = 2) -> list[TransferRecord]:  # fmt: skip
    """Every destination, ``workers`` at a time (each waits mostly on reading at its end)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = pool.map(lambda d: verify_destination(cfg, workdir, d, sample, log), destinations)
        return [row for rows in found for row in rows]
