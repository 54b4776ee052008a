"""Restore a dataset as it was after a run, from what a destination's catalog says alone.

The run is chosen among the destination's committed runs (``--run``, ``--at``, or the
latest). Its record says how the dataset was stored (direct copy or archive) and where, and
names the manifest of that state: every file's size, time and SHA-1. Direct mode: each file
comes from the earliest versions folder written after that run that holds it (what a later
run moved aside before overwriting it), or else from the current copy. Compressed mode: the
run's archive, checked against its SHA-256 first, extracted only if every entry can be one of
the manifest's files, no file growing past its manifest size (``archive.extract``). Everything
is written into a hidden staging folder inside the target, checked file by file against the
manifest, given the recorded modification time, and only then moved to its final name: nothing
unchecked ever has one. Symlinks come back from the manifest, where their target stays inside
the restored folder. With ``--from any``, what is damaged or missing at one destination comes
from the next one that holds the same run (all of it from that one's own state of the run, if
nothing came from the first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import plan
from .archive import extract, safe_name
from .catalog import Catalog, CatalogRun
from .errors import TransferError
from .manifest import Manifest, hash_files
from .records import Tag, TransferRecord

STAGING = ".lab-restore"


class RestoreError(Exception):
    """Restoring cannot start (nothing to restore, a bad target folder); one line says why."""


@dataclass
class Point:
    """A restore point: one committed run's state of a dataset at one destination."""

    catalog: Catalog
    run: CatalogRun
    record: TransferRecord

    @property
    def label(self) -> str:
        return f"run {self.run.tag} ({self.run.stage}, finished {self.run.finished})"


@dataclass
class Outcome:
    matched: int = 0
    expected: int = 0
    label: str = ""
    sources: dict[str, int] = field(default_factory=dict)  # destination -> files restored from it
    problems: list[str] = field(default_factory=list)  # one line each: what could not be restored, why
    skipped_links: list[str] = field(default_factory=list)  # links pointing outside the folder

    @property
    def complete(self) -> bool:
        """Every file of the run is back (links out of the folder apart: they are named)."""
        return self.matched + len(self.skipped_links) == self.expected and not self.problems


def points(cat: Catalog, dataset: str) -> list[Point]:
    """The destination's restore points of a dataset, oldest first."""
    found = []
    for run in cat.runs():
        record = run.restorable(dataset)
        if record is not None:
            found.append(Point(cat, run, record))
    return found


def choose(found: list[Point], run_id: str | None, at: str | None) -> str | None:
    """The tag to restore: the given run (its last stage), the last before ``at``, or the latest."""
    limit = datetime.strptime(at, "%Y-%m-%d %H:%M").astimezone() if at else None
    tags = []
    for p in found:
        if run_id and run_id not in (p.run.tag, p.run.run_id):
            continue
        if limit and datetime.fromisoformat(p.run.finished) > limit:
            continue
        tags.append(Tag.parse(p.run.tag))
    return str(max(tags)) if tags else None


def check_target(to: Path, live_roots: list[str], force: bool) -> None:
    """Never over the live sources, never into a folder that holds something (unless forced)."""
    if force:
        return
    real = Path(os.path.realpath(to))
    for root in live_roots:
        if real.is_relative_to(os.path.realpath(root)):  # includes real == root
            raise RestoreError(f"{to} is inside the live source {root}: refusing to overwrite it (or --force)")
    if to.exists() and any(to.iterdir()):
        raise RestoreError(f"{to} is not empty: restore into an empty or new folder (or --force)")


def catalogs(cfg: dict, workdir: Path, source: str, log) -> list[Catalog]:
    """The catalogs to restore from: one destination, or every enabled one for ``any``."""
    names = plan.enabled_destinations(cfg["backups"]) if source == "any" else [source]
    try:
        return [Catalog(plan.catalog_transfer(cfg, d, str(workdir)), workdir, log) for d in names]
    except ValueError as exc:
        raise RestoreError(str(exc)) from None


def candidates(cats: list[Catalog], dataset: str, run_id, at, notes: list[str]) -> list[Point]:
    """The restore points of the chosen run, one per destination that holds it, in config order."""
    found: list[Point] = []
    for cat in cats:
        try:
            cat.require()
            found += points(cat, dataset)
        except TransferError as exc:
            notes.append(f"{cat.destination}: {exc}")
    tag = choose(found, run_id, at)
    if tag is None:
        where = cats[0].destination if len(cats) == 1 else "any destination"
        when = f"in run {run_id}" if run_id else f"before {at}" if at else "yet"
        raise RestoreError(f"no successful backup of {dataset} to {where} {when} ({'; '.join(notes) or 'see list'})")
    return [p for p in found if p.run.tag == tag]


def restore(cfg: dict, workdir: Path, source: str, dataset: str, to: Path, log, run_id=None, at=None,
            dry_run=False, force=False) -> Outcome:  # fmt: skip
    """Restore ``dataset`` into ``to`` (see the module docstring)."""
    if source != "any" and source not in plan.DESTINATIONS:
        raise RestoreError(f"unknown destination {source!r} (smb, box, secured or any)")
    if at is not None:
        try:
            datetime.strptime(at, "%Y-%m-%d %H:%M")
        except ValueError:
            raise RestoreError(f"--at {at!r}: give a time as 'YYYY-MM-DD HH:MM', e.g. '2026-11-20 14:00'") from None
    notes: list[str] = []
    chosen = candidates(catalogs(cfg, workdir, source, log), dataset, run_id, at, notes)
    check_target(to, [plan.absolute(s["root"], str(workdir)) for s in cfg["backups"]["sources"].values()], force)
    out = Outcome(label=chosen[0].label)
    if dry_run:
        state = chosen[0].catalog.manifest(chosen[0].record.manifest)
        out.expected = len(state.files)
        for where, names in _plan_direct(chosen[0], state, log).items() if chosen[0].record.mode == "direct" else []:
            print(f"  would restore {len(names)} files from the {'versions ' + where if where else 'current copy'}")
        if chosen[0].record.mode == "archive":
            print(f"  would fetch {chosen[0].record.archive} and extract it into {to}")
        return out
    created = not to.exists()
    to.mkdir(parents=True, exist_ok=True)
    staging = to / f"{STAGING}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        return _restore_into(chosen, to, staging, out, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(to.iterdir()):
            to.rmdir()


def _restore_into(chosen: list[Point], to: Path, staging: Path, out: Outcome, log) -> Outcome:
    base: Manifest | None = None
    good: set[str] = set()
    problems: dict[str, str] = {}
    for point in chosen:
        where = point.catalog.destination
        try:
            state = point.catalog.manifest(point.record.manifest)
        except TransferError as exc:
            out.problems.append(f"{where}: {exc}")
            continue
        unsafe = next((f for f in state.files if not safe_name(f)), None)
        if unsafe is not None:
            out.problems.append(f"{where}: its manifest {state.name} names a file outside the dataset ({unsafe!r})")
            continue
        if base is None or (not good and state.name != base.name):
            # The first state, or another state of the same run (a source file changed between
            # destinations, or a catalog rewritten at one) where nothing came from the first one.
            base, out.expected = state, len(state.files)
            problems.clear()
            shutil.rmtree(staging, ignore_errors=True)
        elif state.name != base.name:
            continue  # another state of the same run: files come from one state only
        wanted = [f for f in state.files if f not in good and f not in state.links]
        try:
            fetched, bad = _fetch(point, state, wanted, staging, log)
        except TransferError as exc:
            problems.update((f, f"{where}: {exc}") for f in wanted if f not in problems)
            continue
        good |= set(fetched)
        out.sources[where] = out.sources.get(where, 0) + len(fetched)
        for name in fetched:
            problems.pop(name, None)
        problems.update((name, f"{where}: {why}") for name, why in bad.items())
        if len(good) == len(state.files) - len(state.links):
            break
    if base is None:
        raise TransferError("; ".join(out.problems) or "no manifest could be read")
    out.skipped_links = _links(base, staging)
    entries = base.entries()
    inside = os.path.realpath(to)
    # Files first, links last: nothing is ever written through a link this restore made.
    made = sorted(good) + sorted(set(base.links) - set(out.skipped_links))
    for name in made:
        final = to / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if not Path(os.path.realpath(final.parent)).is_relative_to(inside):  # a link already in the folder
            out.problems.append(f"{name}: its folder leads outside {to} (a symlink there): not restored")
            continue
        os.utime(staging / name, ns=(entries[name][1], entries[name][1]), follow_symlinks=False)
        os.replace(staging / name, final)
    out.matched = len(good) + len(base.links) - len(out.skipped_links)
    if problems:
        first = sorted(problems)[0]
        out.problems.append(
            f"{len(problems)} files could not be restored as that run left them (e.g. {first}: {problems[first]})"
        )
    log.info("restored %d of %d files of %s from %s", out.matched, out.expected, base.dataset, out.sources)
    return out


def _transfer(point: Point) -> plan.Transfer:
    """Where the run put the dataset, reached as the destination is now (the record's mode and folder)."""
    base = point.catalog.transfer
    return dataclasses.replace(base, dataset=point.record.dataset, target=point.catalog.locate(point.record),
                               mode=point.record.mode)  # fmt: skip


class Versions:
    """What the versions folder beside a dataset's folder holds: name -> the tags of the runs that
    moved a copy of it aside (retries hold first attempts found wrong: never a state to restore)."""

    def __init__(self, cat: Catalog, target: str, log) -> None:
        self.target = target
        self.held: dict[str, list[Tag]] = defaultdict(list)
        versions = dataclasses.replace(cat.transfer, target=target.rstrip("/") + ".versions")
        for path in cat.transport.list(versions, log):  # whatever the config says now: what is there
            folder, _, name = path.partition("/")
            tag = Tag.parse(folder)
            if tag is not None and not tag.retry:
                self.held[name].append(tag)

    def source(self, name: str, after: Tag) -> str:
        """The tag of the versions folder that holds ``name`` as it was after the run ``after``: the
        earliest one written later; '' when no later run replaced it (the current copy)."""
        later = [t for t in self.held.get(name, ()) if t > after]
        return str(min(later)) if later else ""

    def folder(self, name: str, after: Tag) -> str:
        tag = self.source(name, after)
        return plan.versions_folder(self.target, tag) if tag else self.target


def _plan_direct(point: Point, state: Manifest, log, names: list[str] | None = None) -> dict[str, list[str]]:
    """Which versions folder each file comes from ('' = the current copy)."""
    versions, own = Versions(point.catalog, point.catalog.locate(point.record), log), Tag.parse(point.run.tag)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in state.files if names is None else names:
        if name not in state.links:
            groups[versions.source(name, own)].append(name)
    return groups


def _fetch(point: Point, state: Manifest, names: list[str], staging: Path, log) -> tuple[list[str], dict[str, str]]:
    """Bring ``names`` into ``staging`` and check each against the manifest; (good, {bad: why})."""
    if not names:
        return [], {}
    transfer = _transfer(point)
    if point.record.mode == "archive":
        _fetch_archive(point, transfer, state, names, staging, log)
    else:
        for tag, group in _plan_direct(point, state, log, names).items():
            where = plan.versions_folder(transfer.target, tag) if tag else transfer.target
            point.catalog.transport.restore(dataclasses.replace(transfer, target=where), str(staging), log,
                                            files=sorted(group))  # fmt: skip
    entries = state.entries()
    present = [n for n in names if (staging / n).is_file() and not (staging / n).is_symlink()]
    hashes = hash_files(str(staging), present)
    good, bad = [], {}
    for name in names:
        size, _, sha1 = entries[name]
        if name not in hashes:
            bad[name] = "not at the destination"
        elif hashes[name] != sha1 or (staging / name).stat().st_size != size:
            bad[name] = "its bytes differ from the catalog's SHA-1 (changed or damaged since that run)"
            (staging / name).unlink()
        else:
            good.append(name)
    return good, bad


def _fetch_archive(point: Point, transfer: plan.Transfer, state: Manifest, names: list[str], staging: Path,
                   log) -> None:  # fmt: skip
    """Fetch the run's archive, check it is the one the catalog names, extract ``names`` from it."""
    import hashlib

    info = state.archive or {}
    name = info.get("name") or point.record.archive
    fetched = staging.with_name(staging.name + "-archive")
    try:
        point.catalog.transport.restore(transfer, str(fetched), log, files=[name])
        path = fetched / name
        if not path.is_file():
            raise TransferError(f"the archive {name} is not at {transfer.target}")
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        if path.stat().st_size != info.get("size") or digest.hexdigest() != info.get("sha256"):
            raise TransferError(
                f"the archive {name} is damaged: its size or SHA-256 differs from the catalog's (truncated or changed)"
            )
        extract(path, staging, set(names), dict(zip(state.files, state.sizes, strict=True)))
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def _links(state: Manifest, staging: Path) -> list[str]:
    """Make the manifest's symlinks in ``staging``; those that lead out of the folder, directly or
    through other links (a link out of the restored folder is how a restore, or whoever uses the
    folder next, could write elsewhere), are not made: their names are returned."""
    skipped = []
    for name, target in sorted(state.links.items()):
        path = staging / name
        if os.path.isabs(target):
            skipped.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)
    root = Path(os.path.realpath(staging))
    for name in sorted(set(state.links) - set(skipped)):  # all made: now chains resolve as they will
        if not Path(os.path.realpath(staging / name)).is_relative_to(root):
            skipped.append(name)
    for name in skipped:
        with contextlib.suppress(FileNotFoundError):
            (staging / name).unlink()
    return sorted(skipped)
