"""Remove what no kept restore point needs: the ``prune`` command (and ``prune_after_backup``).

A backup never deletes anything at a destination; this is the one explicit command that does,
and only with a retention policy (retention.py). Per destination, from its catalog alone:

1. Which restore points stay: per dataset, the policy over the runs that hold a state of it
   (a run whose dataset failed is no restore point of it, so it cannot push out the last good
   one); a run stays if it stays for any dataset. A run that holds no restore point at all (it
   failed everywhere) stays while it is the newest (``--status`` reports it), else it goes.
2. What the kept points need. Direct mode: restore takes a file of run R from the earliest
   versions folder after R that holds it (retry folders skipped), else the current copy
   (restore.Versions); that folder's copy is needed, and so are the retry folders before it
   that hold the file (never read by a restore; kept where unsure). Compressed mode: the
   archive each kept run names.
3. What goes: every runs/TAG.json of a run that does not stay; every versions folder
   (``FOLDER.versions/TAG``, named exactly as a tag) that holds nothing needed; every archive
   named as the dataset's archives are (``DATASET_archive_YYYYMMDD_HHMMSS[_N].zip``) that no kept
   run names (in a folder that also holds a dataset's direct copies, only the archives the
   runs pruned now named: an archive-named file there could be a current copy); every manifest
   and checksum file no remaining run names. Current copies, and anything else at the
   destination, are never touched.

Order, so that a prune killed at any point leaves every kept point restorable: the
destination's lock first (an in-progress marker, commit.py's); the pruned runs' records
(from then on ``list`` and ``restore`` no longer offer them, and nothing that a remaining run
needs is touched); then the data; then the catalog's manifests, with the marker removed in
that last step. Everything is decided again from what the destination holds, under the lock,
so running prune again finishes what a killed one left, and no run committed meanwhile can
lose anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import commit, logs, plan, records, retention, runner, summary
from .catalog import (
    INTERRUPTED,
    LOCKS,
    MANIFESTS,
    SUMS,
    Catalog,
    CatalogRun,
    NoCatalog,
    encode,
    is_fresh,
    lock_path,
    run_path,
)
from .errors import TransferError
from .records import Tag

MANIFEST_FILE = re.compile(rf"^{MANIFESTS}/[^/]+\.json\.gz$")
SUMS_FILE = re.compile(rf"^{SUMS}/[^/]+\.sha1$")


def archive_pattern(dataset: str) -> re.Pattern:
    """The names archive.free_name gives a dataset's archives, and nothing else."""
    return re.compile(rf"^{re.escape(dataset)}_archive_\d{{8}}_\d{{6}}(?:_\d+)?\.zip$")


# --- pure planning ------------------------------------------------------------------------------


def version_folders(listing: dict[str, int]) -> tuple[dict[str, list[Tag]], dict[Tag, tuple[int, int]]]:
    """From a listing of FOLDER.versions ("TAG/path": size): each path's folders holding it, in
    order, and each folder's files and bytes. Only folders named exactly as a tag count."""
    held: dict[str, list[Tag]] = defaultdict(list)
    sizes: dict[Tag, tuple[int, int]] = {}
    for path, size in listing.items():
        folder, _, name = path.partition("/")
        tag = Tag.parse(folder)
        if tag is None or str(tag) != folder or not name:
            continue
        held[name].append(tag)
        files, total = sizes.get(tag, (0, 0))
        sizes[tag] = (files + 1, total + size)
    for tags in held.values():
        tags.sort()
    return held, sizes


def needed_versions(kept: list[tuple[Tag, list[str]]], held: dict[str, list[Tag]]) -> set[Tag]:
    """The versions folders a kept run (its tag, its files) needs: for each of its files, the
    earliest non-retry folder after the run that holds it (where restore takes it from), and any
    retry folder before that one holding it."""
    # Names compared without case: on a share (or Box) a file renamed only by case was moved aside
    # under its new spelling; keeping a folder too many is safe, removing a needed one is not.
    folded: dict[str, list[Tag]] = defaultdict(list)
    for name, tags in held.items():
        folded[name.lower()] += tags
    for tags in folded.values():
        tags.sort()
    needed: set[Tag] = set()
    for own, files in kept:
        for name in files:
            for tag in folded.get(name.lower(), ()):
                if tag > own:
                    needed.add(tag)
                    if not tag.retry:
                        break
    return needed


def kept_runs(runs: list[CatalogRun], policy: retention.Policy, now: datetime | None = None) -> dict[str, list[str]]:
    """Which runs stay (tag -> why): the policy per dataset over the runs that hold a state of it;
    a run with no restore point at all while it is the newest run."""
    points: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for run in runs:
        for t in run.transfers:
            if run.restorable(t.dataset):
                points[t.dataset].append((run.tag, finished(run)))
    kept: dict[str, list[str]] = {}
    for _, found in sorted(points.items()):
        for tag, why in retention.decide(found, policy, now).items():
            kept.setdefault(tag, [])
            kept[tag] += [r for r in why if r not in kept[tag]]
    newest = max((Tag.parse(tag) for tag in kept), default=None)
    for run in runs:
        pointless = run.tag not in kept and not any(run.restorable(t.dataset) for t in run.transfers)
        if pointless and (newest is None or Tag.parse(run.tag) > newest):
            kept[run.tag] = ["newest run (no restore point)"]
    return kept


def finished(run: CatalogRun) -> datetime:
    """When a run's state was complete (its record's end; else its start, from the run id)."""
    for value in (run.finished, run.started):
        with contextlib.suppress(TypeError, ValueError):
            when = datetime.fromisoformat(value)
            return when if when.tzinfo else when.astimezone()
    return datetime.strptime(run.run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


# --- what a destination holds, and what goes -----------------------------------------------------


@dataclass
class Removal:
    """One versions folder (``name`` = its tag, in ``folder`` = FOLDER.versions) or one archive."""

    kind: str  # "versions" | "archive"
    folder: str
    name: str
    files: int
    bytes: int

    @property
    def place(self) -> str:
        return f"{self.folder.rstrip('/')}/{self.name}"


@dataclass
class Plan:
    destination: str
    policy: retention.Policy
    runs: list[CatalogRun] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)
    data: list[Removal] = field(default_factory=list)
    catalog: dict[str, int] = field(default_factory=dict)  # catalog files that go: path -> size
    notes: list[str] = field(default_factory=list)

    @property
    def removed(self) -> list[CatalogRun]:
        return [run for run in self.runs if run.tag not in self.kept]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.data) + sum(self.catalog.values())

    def empty(self) -> bool:
        return not (self.removed or self.data or self.catalog)


def _config_targets(cfg: dict, destination: str, workdir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Where the config puts each dataset of the destination now: (direct, compressed) by dataset."""
    backups = cfg["backups"]
    direct, archived = {}, {}
    out = archived if plan.is_compressed(backups, destination) else direct
    for dataset in backups["destinations"][destination].get("datasets", []):
        with contextlib.suppress(KeyError, ValueError):
            out[dataset] = plan.target_for(backups, destination, dataset, str(workdir)).rstrip("/")
    return direct, archived


def make_plan(cat: Catalog, cfg: dict, workdir: Path, policy: retention.Policy, log) -> Plan:
    """What goes at one destination (reads its catalog and lists its folders; writes nothing)."""
    out = Plan(cat.destination, policy, runs=cat.runs())
    out.kept = kept_runs(out.runs, policy)
    direct_of, archive_of = _config_targets(cfg, cat.destination, workdir)
    direct: dict[str, list[tuple[Tag, list[str]]]] = {t: [] for t in direct_of.values()}
    archives: dict[str, set[str]] = {t: set() for t in archive_of.values()}  # folder -> archives needed
    datasets: dict[str, set[str]] = defaultdict(set)  # archive folder -> datasets whose archives are there
    for dataset, target in archive_of.items():
        datasets[target].add(dataset)
    named_by_removed: dict[str, set[str]] = defaultdict(set)
    states: dict[str, object] = {}
    for run in out.runs:
        for t in run.transfers:
            target = cat.locate(t).rstrip("/")
            if t.mode == "archive":
                archives.setdefault(target, set())
                datasets[target].add(t.dataset)
                if run.tag not in out.kept and t.archive:
                    named_by_removed[target].add(t.archive)
            else:
                direct.setdefault(target, [])
            if run.tag not in out.kept or run.restorable(t.dataset) is None:
                continue
            if t.manifest not in states:  # unchanged runs share a manifest: read each once
                states[t.manifest] = cat.manifest(t.manifest)  # unreadable: nothing goes
            state = states[t.manifest]
            if t.mode == "archive":
                archives[target] |= {name for name in (t.archive, (state.archive or {}).get("name")) if name}
            else:
                direct[target].append((Tag.parse(run.tag), [f for f in state.files if f not in state.links]))
    for target, kept in sorted(direct.items()):
        folder = target + ".versions"
        listing = cat.transport.list(dataclasses.replace(cat.transfer, target=folder), log)
        held, sizes = version_folders(listing)
        needed = needed_versions(kept, held)
        out.data += [Removal("versions", folder, str(tag), *sizes[tag]) for tag in sorted(sizes) if tag not in needed]
    for target, needed in sorted(archives.items()):
        there = cat.transport.tree(dataclasses.replace(cat.transfer, target=target), log, depth=1)
        mixed = target in direct
        for name, (size, _) in sorted(there.items()):
            if name in needed or not any(archive_pattern(d).match(name) for d in datasets[target]):
                continue
            if mixed and name not in named_by_removed[target]:
                out.notes.append(f"left {target}/{name}: named by no run, in a folder that also holds direct copies")
                continue
            out.data.append(Removal("archive", target, name, 1, size))
    names = {t.manifest for run in out.runs if run.tag in out.kept for t in run.transfers if t.manifest}
    for path, (size, _) in sorted(cat.tree().items()):
        stem = path.split("/", 1)[-1]
        manifest = stem if MANIFEST_FILE.match(path) else stem[: -len(".sha1")] + ".json.gz"
        if (MANIFEST_FILE.match(path) or SUMS_FILE.match(path)) and manifest not in names:
            out.catalog[path] = size
    return out


# --- doing it -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _owned_by_this_process():
    """The in-progress marker names the process that holds the destination (commit.owner_pid):
    here, this one, so a prune that is killed leaves a marker that is stale at once."""
    before = os.environ.get(records.OWNER_ENV)
    os.environ[records.OWNER_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(records.OWNER_ENV, None)
        else:
            os.environ[records.OWNER_ENV] = before


def _lock(cat: Catalog, run_id: str) -> records.StageState:
    """The destination's lock, as a backup takes it (commit.mark): refused while another run's
    marker is fresh; the markers of dead runs are moved to interrupted/."""
    state = records.StageState(started=records.now_iso(), datasets=[])
    others = cat.markers(LOCKS)
    fresh = [m for m in others if is_fresh(m)]
    if fresh:
        raise TransferError(commit.busy(cat, fresh[0]))
    writes = {}
    for stale in others:
        stale.taken_over_by, stale.taken_over_at = run_id, state.started
        writes[f"{INTERRUPTED}/{stale.tag}.json"] = encode(stale)
    commit.mark(cat, run_id, "manual", state, writes, [lock_path(m.tag) for m in others], action="prune")
    return state


def remove(cat: Catalog, removals: list[Removal], log) -> None:
    """Versions folders (each with all it holds) and archives, one transport call per folder."""
    by_folder: dict[str, list[Removal]] = defaultdict(list)
    for removal in removals:
        by_folder[removal.folder].append(removal)
    for folder, group in by_folder.items():
        for removal in group:
            log.info("prune %s: removing %s (%d files, %d bytes)", cat.destination, removal.place, removal.files,
                     removal.bytes)  # fmt: skip
        cat.transport.remove(dataclasses.replace(cat.transfer, target=folder), log,
                             files=[r.name for r in group if r.kind == "archive"],
                             folders=[r.name for r in group if r.kind == "versions"])  # fmt: skip


def execute(cat: Catalog, cfg: dict, workdir: Path, policy: retention.Policy, log) -> Plan:
    """Prune one destination under its lock (see the module docstring for the order)."""
    run_id = records.new_run_id()
    with _owned_by_this_process():
        state = _lock(cat, run_id)
        try:
            found = make_plan(cat, cfg, workdir, policy, log)  # again, under the lock
            if found.removed:
                cat.apply({}, [run_path(run.tag) for run in found.removed])
            remove(cat, found.data, log)
            cat.apply({}, [*found.catalog, lock_path(records.version_tag(run_id, "manual"))])
            state.marked = False
        finally:
            if state.marked:  # failed part-way: free the destination (a killed prune's marker is stale at once)
                with contextlib.suppress(TransferError):
                    cat.apply({}, [lock_path(records.version_tag(run_id, "manual"))])
    return found


# --- the command --------------------------------------------------------------------------------


def _show(found: Plan, dry_run: bool) -> list[str]:
    verb = "would remove" if dry_run else "removed"
    lines = [f"Prune {found.destination} ({found.policy.describe()}):"]
    for run in found.runs:
        why = found.kept.get(run.tag)
        state = f"keep    ({', '.join(why)})" if why else verb
        lines.append(f"  {run.tag:<30} finished {run.finished:<26} {state}")
    for removal in found.data:
        what = f"{removal.files} files, " if removal.kind == "versions" else ""
        lines.append(f"  {verb} {removal.place} ({what}{summary.human_bytes(removal.bytes)})")
    manifests = sum(1 for p in found.catalog if p.startswith(MANIFESTS + "/"))
    if found.catalog:
        lines.append(f"  {verb} {manifests} manifests and {len(found.catalog) - manifests} checksum files that no "
                     "kept run names")  # fmt: skip
    lines += [f"  note: {note}" for note in found.notes]
    return lines


def prune_all(cfg: dict, workdir: Path, destinations: list[str], dry_run: bool, log) -> int:
    """Prune (or, dry, plan) each destination; print what goes and what it frees; the exit status."""
    backups = cfg["backups"]
    policies = {d: retention.policy_for(backups, d) for d in destinations}
    if all(p.empty() for p in policies.values()):
        print("No retention policy (backups.retention): nothing is removed at any destination.")
        return summary.EXIT_OK
    rows = [("destination", "policy", "runs kept", "runs removed", "versions folders", "archives", "bytes freed",
             "status")]  # fmt: skip
    status = summary.EXIT_OK
    for dest in destinations:
        if policies[dest].empty():
            rows.append((dest, "none", "all", "0", "0", "0", "0 B", "no policy: nothing removed"))
            continue
        try:
            cat = Catalog(plan.catalog_transfer(cfg, dest, str(workdir)), workdir, log)
            cat.require()
            found = make_plan(cat, cfg, workdir, policies[dest], log)
            if not dry_run and not found.empty():
                found = execute(cat, cfg, workdir, policies[dest], log)
        except NoCatalog as exc:
            rows.append((dest, policies[dest].describe(), "0", "0", "0", "0", "0 B", f"nothing here: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - one destination failing never stops the others
            shown = runner.mask(str(exc) if isinstance(exc, (TransferError, ValueError)) else
                                f"internal error: {type(exc).__name__}: {exc}")  # fmt: skip
            print(f"error: cannot prune {dest}: {shown}: nothing more was removed there", file=sys.stderr)
            log.error("prune %s: %s", dest, shown)
            rows.append((dest, policies[dest].describe(), "-", "-", "-", "-", "-", "FAILED"))
            status = summary.EXIT_FAILED
            continue
        print("\n".join(_show(found, dry_run)) + "\n")
        kinds = [r.kind for r in found.data]
        rows.append((dest, policies[dest].describe(), str(len(found.kept)), str(len(found.removed)),
                     str(kinds.count("versions")), str(kinds.count("archive")), summary.human_bytes(found.bytes),
                     "dry run" if dry_run else "ok"))  # fmt: skip
        log.info("prune %s: %d runs kept, %d removed, %d bytes %s", dest, len(found.kept), len(found.removed),
                 found.bytes, "would be freed" if dry_run else "freed")  # fmt: skip
    title = "Would free (dry run: nothing was removed):" if dry_run else "Pruned:"
    print(title + "\n" + summary.columns(rows))
    return status


def command(cfg: dict, workdir: Path, destinations: list[str], dry_run: bool) -> int:
    """``backup_system.py prune [--dry-run] [--from DEST]``."""
    log = logs.setup(None if dry_run else plan.absolute(cfg["backups"]["log_file"], str(workdir)),
                     records.new_run_id(), "prune")  # fmt: skip
    return prune_all(cfg, workdir, destinations, dry_run, log)
