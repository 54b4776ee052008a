"""Paths that overlap, refused before anything runs (one line naming both keys, exit 2).

A backup written inside what it backs up copies itself on every run (archives inside archives,
``backup/CSVs/backup/CSVs/...``); a source that is its own destination is never copied; two
datasets, or two destinations, on one folder leave fewer copies than the config promises, or
one dataset's file over another's. Paths are compared as the file system resolves them (links,
``~``, relative to the project folder). Remote places (SSH, rclone remotes, smb:// URLs) are
another machine's folders and are not compared here.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from . import plan
from .config import ConfigError


@dataclass(frozen=True)
class Place:
    key: str  # the config key (or the project's own folder) it comes from
    path: str  # its real path
    kind: str = "own"  # copy: a dataset's copy | archives | base: a destination's own folder | own: the project's


def _real(path: str, workdir: str) -> str:
    return os.path.realpath(plan.absolute(path, workdir))


def _local(path: str) -> bool:
    return "://" not in path and not plan.is_ssh_target(path) and not _remote(path)


def _remote(path: str) -> bool:
    """An rclone remote ("Box-Folder:x", ":smb,host=...:x"), not a folder of this machine."""
    head = path.split("/", 1)[0]
    return ":" in head


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _target_key(destination: str, dataset: str) -> str:
    if destination == "smb":
        explicit = {"CSVs": "csvs_path", "Results": "results_path"}.get(dataset)
        return f"backups.destinations.smb.{explicit or 'base_path'}"
    return f"backups.destinations.{destination}.base_path"


def written(cfg: dict, workdir: str) -> list[Place]:
    """Every folder of this machine a run writes to: dataset copies, destinations' own folders,
    the archive folder, the log file and the project's state folders."""
    backups = cfg["backups"]
    places = [
        # Archives of several datasets share one folder by design (their names say whose they are).
        Place(
            f"{_target_key(t.destination, t.dataset)} (for {t.dataset})",
            _real(t.target, workdir),
            "copy" if t.mode == "direct" else "archives",
        )
        for t in plan.plan(cfg, workdir)
        if _local(t.target)
    ]
    for dest in plan.enabled_destinations(backups):
        try:
            base = plan.destination_base(backups, dest, workdir)
        except ValueError:  # no folder of its own set: nothing to compare
            continue
        if _local(base):
            places.append(Place(f"backups.destinations.{dest}.base_path", os.path.realpath(base), "base"))
    if any(plan.is_compressed(backups, d) for d in plan.enabled_destinations(backups)):
        places.append(Place("backups.compression.archive_dir", _real(backups["compression"]["archive_dir"], workdir)))
    places.append(Place("backups.log_file", _real(backups["log_file"], workdir)))
    for folder in (".backup", "logs", ".snakemake"):
        places.append(Place(f"the project's {folder} folder", os.path.realpath(os.path.join(workdir, folder))))
    return places


def _covered(place: str, root: str, include: list[str]) -> bool:
    """Whether an include pattern of a source reaches ``place`` (inside ``root``): a pattern
    covers what lies under the part of it before its first wildcard."""
    for pattern in include:
        rel = os.path.normpath(pattern)
        if rel == ".":
            return True
        parts = rel.split(os.sep)
        literal = []
        for part in parts:
            if glob.has_magic(part):
                break
            literal.append(part)
        prefix = os.path.join(root, *literal) if literal else root
        if _inside(place, prefix) or (len(literal) < len(parts) and _inside(prefix, place)):
            return True
    return False


def check(cfg: dict, source: str, workdir: str | None) -> None:
    """Raise ConfigError for the first overlap found (``source``: the config files, for the message).
    Without the project folder (``workdir``) relative paths cannot be placed: nothing is checked."""
    backups = cfg["backups"]
    if workdir is None or not backups["enabled"]:
        return
    used = {t.dataset for t in plan.plan(cfg, workdir)}
    roots = [
        (f"backups.sources.{name}.root", _real(spec["root"], workdir), list(spec["include"]))
        for name, spec in backups["sources"].items()
        if name in used
    ]
    places = written(cfg, workdir)
    for key, root, include in roots:
        for place in places:
            if place.path == root or _inside(root, place.path):
                raise ConfigError(
                    f"{source}: {key} ({root}) is {'the same folder as' if place.path == root else 'inside'} "
                    f"{place.key} ({place.path}): a backup must not write where it reads; move one of them"
                )
            if _inside(place.path, root) and _covered(place.path, root, include):
                raise ConfigError(
                    f"{source}: {place.key} ({place.path}) is inside {key} ({root}), which the backup reads: "
                    "each run would copy the backup itself; move it out of the source folder"
                )
    # Two copies in one folder (one dataset's files over another's), or two destinations in one
    # folder (two copies where the config promises three).
    for kind in ("copy", "base"):
        seen: dict[str, Place] = {}
        for place in (p for p in places if p.kind == kind):
            other = seen.setdefault(place.path, place)
            if other is not place:
                raise ConfigError(
                    f"{source}: {other.key} and {place.key} are the same folder ({place.path}): each dataset "
                    "and each destination needs a folder of its own, or copies are lost"
                )
