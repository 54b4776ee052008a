"""Restore a dataset from a destination, as it was after a given run.

Direct mode: each file of that run's manifest comes from the earliest versions folder
written after that run that holds it (what a later run moved aside before overwriting
it), or else from the destination's current copy. Compressed mode: that run's archive,
extracted without letting any entry land outside the target folder. Either way the result
is checked against the run's manifest.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
import zipfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from . import archive, plan, records, status, transports

STAGE_RANK = {"manual": 0, "pre": 0, "post": 1}


class RestoreError(Exception):
    """Restoring cannot go on; the message says why in one line."""


def tag_key(tag: str) -> tuple[str, int] | None:
    """Order of version folders: RUN_ID, RUN_ID-pre, RUN_ID-post. Retry folders hold first
    attempts that were found wrong, never a state to restore: None."""
    if "-retry" in tag:
        return None
    base, _, stage = tag.rpartition("-")
    if stage in ("pre", "post"):
        return base, STAGE_RANK[stage]
    return tag, 0


def choose_run(runs: list[dict], dest: str, dataset: str, run_id: str | None, at: str | None) -> dict:
    """The transfer record to restore: of the given run, the last one before ``at``, or the latest."""
    limit = datetime.strptime(at, "%Y-%m-%d %H:%M").astimezone() if at else None
    found = []
    for run in runs:
        for t in run.get("transfers", []):
            if t["destination"] != dest or t["dataset"] != dataset or t.get("status") not in ("ok", "warning"):
                continue
            if run_id and run["run_id"] != run_id:
                continue
            if limit and datetime.fromisoformat(t["finished"]) > limit:
                continue
            found.append({**t, "run_id": run["run_id"]})
    if not found:
        when = f"in run {run_id}" if run_id else f"before {at}" if at else "yet"
        raise RestoreError(f"no successful backup of {dataset} to {dest} {when} (see --status)")
    return max(found, key=lambda t: (t["run_id"], STAGE_RANK.get(t.get("stage", "manual"), 0)))


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


def restore(cfg: dict, workdir: Path, dest: str, dataset: str, to: Path, log, run_id=None, at=None,
            dry_run=False, force=False) -> tuple[int, int, str]:  # fmt: skip
    """Restore; return (files matched, files expected, which run)."""
    transfer = plan.find(plan.plan(cfg, str(workdir)), dest, dataset)
    chosen = choose_run(status.load_runs(workdir), dest, dataset, run_id, at)
    check_target(to, [plan.absolute(s["root"], str(workdir)) for s in cfg["backups"]["sources"].values()], force)
    label = f"run {chosen['run_id']} ({chosen.get('stage', 'manual')}, finished {chosen.get('finished')})"
    if chosen.get("mode") == "archive":
        return (*_from_archive(cfg, workdir, transfer, chosen, to, log, dry_run), label)
    manifest = records.read_manifest(
        Path(workdir, records.manifest_path(chosen["run_id"], chosen.get("stage", "manual"), dest, dataset))
    )
    if manifest is None:
        raise RestoreError(f"run {chosen['run_id']} left no manifest of {dataset} at {dest}")
    transport = transports.for_transfer(transfer)
    own = tag_key(chosen["run_id"] if chosen.get("stage", "manual") == "manual"
                  else f"{chosen['run_id']}-{chosen['stage']}")  # fmt: skip
    versions = dataclasses.replace(transfer, target=transfer.target.rstrip("/") + ".versions")
    held = transport.list(versions, log) if transfer.keep_versions else {}
    later: dict[str, list[tuple]] = defaultdict(list)
    for path in held:
        tag, _, name = path.partition("/")
        key = tag_key(tag)
        if key and key > own:
            later[name].append((key, tag))
    groups: dict[str, list[str]] = defaultdict(list)
    for name in manifest:
        groups[min(later[name])[1] if later.get(name) else ""].append(name)
    if dry_run:
        for tag, names in sorted(groups.items()):
            where = f"versions {tag}" if tag else "current copy"
            print(f"  would restore {len(names)} files from the {where}")
        return 0, len(manifest), label
    to.mkdir(parents=True, exist_ok=True)
    for tag, names in groups.items():
        source = dataclasses.replace(versions, target=plan.versions_folder(transfer.target, tag)) if tag else transfer
        transport.restore(source, str(to), log, files=sorted(names))
    matched = 0
    for name, (size, mtime_ns) in manifest.items():
        path = to / name
        if path.is_file() and path.stat().st_size == size and abs(path.stat().st_mtime_ns - mtime_ns) < 2e9 + 1:
            matched += 1
    return matched, len(manifest), label


def _from_archive(cfg, workdir, transfer, chosen, to: Path, log, dry_run) -> tuple[int, int]:
    name = chosen.get("archive")
    if not name:
        raise RestoreError(f"run {chosen['run_id']} recorded no archive")
    local = Path(plan.archive_dir(cfg, str(workdir))) / name
    expected = (archive.read_manifest(local) or {}).get("files")
    if dry_run:
        print(f"  would fetch {name} and extract it into {to}")
        return 0, len(expected or {})
    with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
        transports.for_transfer(transfer).restore(transfer, tmp, log, files=[name])
        fetched = Path(tmp) / name
        if not fetched.is_file():
            raise RestoreError(f"{name} is not at {transfer.target}")
        extract(fetched, to)
    if not expected:  # the local manifest is gone: the ZIP's CRCs were checked while extracting
        return len(list(p for p in to.rglob("*") if p.is_file())), 0
    matched = sum(1 for f, meta in expected.items() if (to / f).is_file() and archive.hash_file(str(to / f)) ==
                  meta["sha256"])  # fmt: skip
    return matched, len(expected)


def extract(zip_path: Path, to: Path) -> int:
    """Extract every entry inside ``to``; refuse absolute paths, '..' and links (zip-slip)."""
    base = to.resolve()
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            name = info.filename
            mode = info.external_attr >> 16
            if name.startswith("/") or ".." in Path(name).parts or stat.S_ISLNK(mode):
                raise RestoreError(f"{zip_path.name}: refusing entry {name!r} (it would land outside {to})")
            if not (base / name).resolve().is_relative_to(base):
                raise RestoreError(f"{zip_path.name}: refusing entry {name!r} (it would land outside {to})")
        to.mkdir(parents=True, exist_ok=True)
        for info in zf.infolist():
            target = base / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:  # CRC checked while reading
                shutil.copyfileobj(src, dst, 1 << 20)
        return len(zf.infolist())
