"""Pure planning: which (destination, dataset) transfers exist and where each one lands.

Nothing here touches the disk or the network, so the Snakefile can call it at parse
time and tests can check the seed's layout directly.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DESTINATIONS = ("smb", "box", "secured")
STAGES = ("manual", "pre", "post")
# Each destination's catalog (catalog.py) lives in this folder of the destination's own folder.
CATALOG_DIR = ".lab-backup"


@dataclass(frozen=True)
class Source:
    name: str
    root: str
    include: tuple[str, ...]


@dataclass(frozen=True)
class Transfer:
    """One job: send one dataset to one destination."""

    destination: str
    dataset: str
    mode: str  # "direct" or "archive"
    tool: str  # "rsync" or "rclone"
    source: Source
    target: str  # local path, smb:// URL, or rclone "remote:path"
    require_mount: bool = False
    mount_point: str | None = None
    rclone_config: str | None = None
    password_env: str | None = None  # name of the variable holding the SMB password (rclone SMB)
    ssh_port: int | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    private: bool = False  # no group/world permissions at the destination
    on_smb: bool = False  # a Windows-style share: no owners, permissions or symlinks
    keep_versions: bool = False  # overwritten files go to TARGET.versions/RUN_ID first
    transfers: int | None = None  # files in flight at once (None: the transport's default for its link)
    tps_limit: float | None = None  # rclone's requests a second (None: the transport's default)


SSH_TARGET = re.compile(r"^(?:[^@/:]+@)?[^/:]+:")


def is_ssh_target(path: str) -> bool:
    """[user@]host:/path, as rsync writes it (a single letter is a Windows drive, not a host)."""
    return bool(SSH_TARGET.match(path)) and "://" not in path and not re.match(r"^[A-Za-z]:", path)


def absolute(path: str, project_dir: str) -> str:
    """Relative local paths in the config are relative to the project folder."""
    if "://" in path or is_ssh_target(path):
        return path
    return os.path.normpath(os.path.join(project_dir, os.path.expanduser(path)))


def is_compressed(backups: dict, destination: str) -> bool:
    override = backups["destinations"][destination].get("use_compression")
    return backups["compression"]["enabled"] if override is None else override


def smb_dataset_path(dest: dict, dataset: str) -> str:
    """The seed names two SMB folders: csvs_path for CSVs, results_path for Results."""
    explicit = {"CSVs": dest.get("csvs_path"), "Results": dest.get("results_path")}.get(dataset)
    return explicit or dest["base_path"].rstrip("/") + "/" + dataset


def target_for(backups: dict, destination: str, dataset: str, project_dir: str) -> str:
    """Where a dataset lands at a destination (PRODUCT.md, 'Where things land')."""
    dest = backups["destinations"][destination]
    compressed = is_compressed(backups, destination)
    if destination == "smb":
        path = smb_dataset_path(dest, dataset)
        if dest.get("transport") == "rclone":
            return rclone_smb_target(dest, path)
        return absolute(path, project_dir)
    if destination == "box":
        folder = dest["folder"].strip("/")
        return f"{dest['remote']}:{folder + '/' if folder else ''}{dataset}"
    if destination == "secured":
        return absolute(os.path.join(dest["base_path"], "backups" if compressed else dataset), project_dir)
    raise ValueError(f"unknown destination {destination!r}")


def rclone_smb_target(dest: dict, url: str) -> str:
    """rclone's address of an smb:// URL: a named remote, or an on-the-fly ':smb,...:' remote."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "smb" or not parts.hostname:
        raise ValueError(f"transport rclone needs smb://HOST/SHARE/path URLs, not {url!r}")
    path = unquote(parts.path).strip("/")
    if dest.get("rclone_remote"):
        return f"{dest['rclone_remote']}:{path}"
    options = [f"host={parts.hostname}"]
    user = dest.get("user") or (unquote(parts.username) if parts.username else None)
    if user:
        options.append(f"user={user}")
    port = dest.get("port") or parts.port
    if port:
        options.append(f"port={port}")
    return f":smb,{','.join(options)}:{path}"


def enabled_destinations(backups: dict, only: list[str] | None = None) -> list[str]:
    if not backups["enabled"]:
        return []
    return [
        name for name in DESTINATIONS if backups["destinations"][name].get("enabled") and (not only or name in only)
    ]


def lane(destination: str) -> str:
    """The Snakemake resource a sync job to ``destination`` takes one unit of."""
    return f"to_{destination}"


def resource_limits(backups: dict, nearby: set[str] = frozenset()) -> list[str]:
    """Snakemake's --resources for a run: each destination is sent ``datasets_at_once`` datasets at
    once (a sync job takes one unit of its ``to_DEST``): by default 2 across a network, where each
    waits on round trips, 1 to a folder on this machine (``nearby``), where they would only compete
    for the disk. ``network`` caps them all together: their sum, or 2 where every enabled
    destination is nearby (the memory a run takes grows with every job at once)."""
    dests = backups["destinations"]
    lanes = {name: dests[name].get("datasets_at_once") or (1 if name in nearby else 2) for name in DESTINATIONS}
    enabled = enabled_destinations(backups)
    far = [name for name in enabled if name not in nearby]
    total = sum(lanes[name] for name in enabled) if far else 2
    return [f"network={total}", *(f"{lane(name)}={n}" for name, n in lanes.items())]


def source_of(cfg: dict, dataset: str, project_dir: str) -> Source:
    """A dataset of backups.sources, with its root made absolute."""
    spec = cfg["backups"]["sources"][dataset]
    return Source(dataset, absolute(spec["root"], project_dir), tuple(spec["include"]))


def _transfer(cfg: dict, destination: str, dataset: str, project_dir: str, **fields) -> Transfer:
    """A transfer to ``destination`` with its connection settings (``fields`` override the rest)."""
    backups = cfg["backups"]
    dest = backups["destinations"][destination]
    rclone_config = dest.get("rclone_config")
    tool = "rclone" if destination == "box" or dest.get("transport") == "rclone" else "rsync"
    settings = dict(
        destination=destination,
        dataset=dataset,
        mode="archive" if is_compressed(backups, destination) else "direct",
        tool=tool,
        require_mount=dest.get("require_mount", False),
        mount_point=absolute(dest["mount_point"], project_dir) if dest.get("mount_point") else None,
        rclone_config=absolute(rclone_config, project_dir) if rclone_config else None,
        password_env=dest.get("password_env") if tool == "rclone" and destination == "smb" else None,
        ssh_port=dest.get("ssh_port"),
        ssh_key=absolute(dest["ssh_key"], project_dir) if dest.get("ssh_key") else None,
        known_hosts=absolute(dest["known_hosts"], project_dir) if dest.get("known_hosts") else None,
        private=dest.get("private", False),
        on_smb=destination == "smb",
        keep_versions=dest.get("keep_versions", False),
        transfers=dest.get("transfers"),
        tps_limit=dest.get("tps_limit"),
    )
    settings.update(fields)
    return Transfer(**settings)


def plan(cfg: dict, project_dir: str, only: list[str] | None = None) -> list[Transfer]:
    """All transfers of a run, one per (enabled destination, dataset)."""
    backups = cfg["backups"]
    return [
        _transfer(
            cfg,
            destination,
            dataset,
            project_dir,
            source=source_of(cfg, dataset, project_dir),
            target=target_for(backups, destination, dataset, project_dir),
        )  # fmt: skip
        for destination in enabled_destinations(backups, only)
        for dataset in backups["destinations"][destination]["datasets"]
    ]


def destination_base(backups: dict, destination: str, project_dir: str) -> str:
    """The destination's own folder: SMB's base_path, Box's remote:folder, secured's base_path."""
    dest = backups["destinations"][destination]
    needed = ("remote", "folder") if destination == "box" else ("base_path",)
    missing = [key for key in needed if dest.get(key) is None]
    if missing:
        raise ValueError(f"backups.destinations.{destination}.{missing[0]} is not set: {destination} cannot be reached")
    if destination == "box":
        return f"{dest['remote']}:{dest['folder'].strip('/')}"
    if destination == "smb" and dest.get("transport") == "rclone":
        return rclone_smb_target(dest, dest["base_path"])
    return absolute(dest["base_path"], project_dir)


def catalog_transfer(cfg: dict, destination: str, project_dir: str) -> Transfer:
    """Where the destination's catalog lives (CATALOG_DIR in its own folder), reached as its data is."""
    target = inside(destination_base(cfg["backups"], destination, project_dir), CATALOG_DIR)
    return _transfer(cfg, destination, CATALOG_DIR, project_dir, source=Source(CATALOG_DIR, "", ()), target=target,
                     mode="direct", keep_versions=False)  # fmt: skip


def within(base: str, target: str) -> str | None:
    """``target``'s path inside the folder ``base`` ("CSVs" for BASE/CSVs); None if it is elsewhere."""
    base = base if base.endswith(":") else base.rstrip("/") + "/"
    return target[len(base) :].strip("/") or None if target.startswith(base) else None


def inside(base: str, folder: str) -> str:
    """The place of ``folder`` inside ``base`` (the reverse of ``within``)."""
    return base + folder if base.endswith(":") else f"{base.rstrip('/')}/{folder}"


def catalog_key(transfer: Transfer) -> str:
    """A folder name for this machine's copies of one destination's catalog files."""
    return f"{transfer.destination}-{hashlib.sha1(transfer.target.encode()).hexdigest()[:12]}"


def versions_folder(target: str, tag: str) -> str:
    """Where overwritten files of ``target`` are kept: a dated folder beside the dataset's folder."""
    return f"{target.rstrip('/')}.versions/{tag}"


def archive_dir(cfg: dict, project_dir: str) -> str:
    return absolute(cfg["backups"]["compression"]["archive_dir"], project_dir)


def archived_datasets(transfers: list[Transfer]) -> list[str]:
    """Datasets that some destination receives as an archive: one archive job each."""
    return sorted({t.dataset for t in transfers if t.mode == "archive"})


def find(transfers: list[Transfer], destination: str, dataset: str) -> Transfer:
    for transfer in transfers:
        if transfer.destination == destination and transfer.dataset == dataset:
            return transfer
    raise KeyError(f"no transfer planned for {destination}/{dataset}")
