"""What each destination holds about itself: its catalog, ``.lab-backup/`` beside the datasets.

A new machine with only the config file can list, restore and check everything from it,
because everything needed is here, written through the destination's own transport:

    .lab-backup/FORMAT.json                 format version and this destination's id (written once)
    .lab-backup/README.txt                  this layout, for a person without this project
    .lab-backup/locks/TAG.json              in-progress marker of a run writing here: host, pid, start
    .lab-backup/runs/TAG.json               the run's record; written last: its presence is the commit
    .lab-backup/interrupted/TAG.json        a run's in-progress marker, found stale and taken over
    .lab-backup/manifests/DATASET-D.json.gz one per distinct state of a dataset (manifest.py)
    .lab-backup/sums/DATASET-D.sha1         the same state as ``sha1sum -c`` input
    .lab-backup/scrub.json                  the rolling check's position and history

TAG is the version tag (records.Tag): RUN_ID, RUN_ID-pre or RUN_ID-post. A run writes, in
this order: its in-progress marker (which is also the destination's lock), the data, each
dataset's manifest and checksum file, then its record, removing its marker in that same
last step. A reader trusts a run only when runs/TAG.json exists; its manifests are checked
against the digest in their names. Pointer files, never symlinks (SMB and Box cannot be
relied on to keep links).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import plan, records
from .errors import TransferError
from .manifest import Manifest
from .processes import process_alive
from .records import Tag, TransferRecord

CATALOG_DIR = plan.CATALOG_DIR
FORMAT_FILE = "FORMAT.json"
README_FILE = "README.txt"
LOCKS, RUNS, INTERRUPTED, MANIFESTS, SUMS = "locks", "runs", "interrupted", "manifests", "sums"
SCRUB_FILE = "scrub.json"
FORMAT_VERSION = 1
FORMAT_NAME = "lab-backup catalog"
# A run refreshes its in-progress marker this often while it writes; another machine's marker not
# refreshed for STALE_AFTER_HOURS was left by a run that died. (On this machine, a marker whose
# process is gone is stale at once.)
REFRESH_MINUTES = 10
STALE_AFTER_HOURS = 1

README = """This folder is the catalog of the lab's backups at this destination, written by
the lab backup system (a Snakemake workflow around rsync and rclone). Everything needed to
list, restore and check the backups without the machine that made them is here:

  FORMAT.json            format version and this destination's id
  runs/TAG.json          one per backup run, written last: a run without one did not finish.
                         Per dataset: status, counts, and the names of its manifest and checksums.
  locks/TAG.json         a run writing here now (it refreshes it every 10 minutes; one not
                         refreshed for an hour died)
  interrupted/TAG.json   a run that died, found by a later run
  manifests/NAME.json.gz every file of a dataset as one run left it: path, size, time, SHA-1
  sums/NAME.sha1         the same as sha1sum input. Check the newest state of a dataset with
                         no other tool:  cd DATASET_FOLDER && sha1sum -c PATH/TO/sums/NAME.sha1
                         (runs/TAG.json names the sums file of each dataset.)

TAG is the run id (YYYYMMDD-HHMMSS-NNNN) with -pre or -post for backups around the analysis
pipeline. Files replaced by a run are kept in DATASET_FOLDER.versions/TAG/. Restore with
  python scripts/backup_system.py restore --from DEST --dataset NAME --to DIR [--run TAG]
Never edit or delete files here by hand while a backup runs.
"""


class NoCatalog(TransferError):
    """The destination holds no catalog: never backed up there by this system (or the path is wrong)."""


@dataclass
class InProgress:
    """locks/TAG.json: a run is writing to this destination (and holds it)."""

    run_id: str
    tag: str
    stage: str
    host: str = ""
    pid: int = 0
    user: str = ""
    started: str = ""
    datasets: list[str] = field(default_factory=list)
    machine: str = ""  # this machine's id (two machines may share a host name, never an id)
    refreshed: str = ""  # the last time the run said it is still writing
    taken_over_by: str | None = None  # interrupted/TAG.json: the run that found it stale
    taken_over_at: str | None = None
    action: str = "backup"  # or "prune": what holds the destination, for the message that names it

    def describe(self) -> str:
        return f"run {self.tag} on host {self.host} (pid {self.pid}, started {self.started})"

    def here(self) -> bool:
        """Written on this machine (so its process can be looked up here)."""
        return self.machine == machine_id() if self.machine else self.host == os.uname().nodename


@dataclass
class CatalogRun:
    """runs/TAG.json: one stage of a run at this destination, written last (the commit)."""

    run_id: str
    tag: str
    stage: str
    destination: str
    destination_id: str = ""
    host: str = ""
    user: str = ""
    started: str = ""
    finished: str = ""
    tools: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # the config, with every secret removed
    transfers: list[TransferRecord] = field(default_factory=list)
    format: int = FORMAT_VERSION

    @classmethod
    def load(cls, data: dict | None) -> CatalogRun | None:
        run = records.from_json(cls, data)
        if run is not None:
            run.transfers = [t for t in (records.from_json(TransferRecord, d) for d in run.transfers or []) if t]
        return run

    def transfer(self, dataset: str) -> TransferRecord | None:
        return next((t for t in self.transfers if t.dataset == dataset), None)

    def restorable(self, dataset: str) -> TransferRecord | None:
        """The dataset's record if this run left a state of it to restore."""
        t = self.transfer(dataset)
        return t if t is not None and t.status != records.FAILED and t.manifest else None


def manifest_path(name: str) -> str:
    return f"{MANIFESTS}/{name}"


def sums_path(manifest_name: str) -> str:
    return f"{SUMS}/{manifest_name[: -len('.json.gz')]}.sha1"


def run_path(tag: str) -> str:
    return f"{RUNS}/{tag}.json"


def lock_path(tag: str) -> str:
    return f"{LOCKS}/{tag}.json"


def machine_id() -> str:
    """This machine's id (systemd's /etc/machine-id), else its host name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as fh:
                found = fh.read().strip()
        except (OSError, UnicodeError):
            continue
        if found:
            return found
    return os.uname().nodename


def is_fresh(marker: InProgress, now: datetime | None = None, alive=None) -> bool:
    """A marker of a run that may still be writing: on this machine while its process lives; from
    another machine while it was started or refreshed within STALE_AFTER_HOURS."""
    if marker.here() and marker.pid:
        return (alive or process_alive)(marker.pid)
    times = []
    for value in (marker.started, marker.refreshed):
        with contextlib.suppress(TypeError, ValueError):
            times.append(datetime.fromisoformat(value))
    now = now or datetime.now().astimezone()
    return bool(times) and (now - max(times)).total_seconds() < STALE_AFTER_HOURS * 3600


class Catalog:
    """One destination's catalog, read and written through that destination's transport.

    Immutable files (run records, manifests) are kept in this machine's cache once read or
    written; what the destination holds is always asked of the destination (``tree``)."""

    def __init__(self, transfer: plan.Transfer, workdir: str | Path, log, transport=None) -> None:
        from . import transports

        self.transfer, self.log = transfer, log
        self.transport = transport or transports.for_transfer(transfer)
        self.cache = records.cache_dir(workdir)
        self.own = self.cache / "catalogs" / plan.catalog_key(transfer)
        self._tree: dict[str, tuple[int, int]] | None = None
        self._primed = None

    @property
    def destination(self) -> str:
        return self.transfer.destination

    @property
    def base(self) -> str:
        """The destination's own folder, as this machine reaches it (the catalog's parent)."""
        base = self.transfer.target[: -len(CATALOG_DIR)]  # "/x/" of "/x/.lab-backup", "Remote:" of "Remote:.lab-backup"
        return base[:-1] if base.endswith("/") else base

    def locate(self, record: TransferRecord) -> str:
        """Where a run put a dataset, as this machine reaches it: its folder inside the destination's
        folder (so a new machine, another mount point or remote name finds it), else where it was."""
        return plan.inside(self.base, record.folder) if record.folder else record.target

    def tree(self, refresh: bool = False) -> dict[str, tuple[int, int]]:
        """Every catalog file at the destination (two folders deep is all there is)."""
        if self._primed is not None and not refresh:
            self._tree, self._primed = self._primed.result(), None
        if self._tree is None or refresh:
            self._tree = self.transport.tree(self.transfer, self.log, depth=2)
        return self._tree

    def prime(self, listing) -> None:
        """Take the tree from a listing already under way (a future: a transport's prefetch)."""
        self._primed = listing

    def exists(self) -> bool:
        return FORMAT_FILE in self.tree()

    def require(self) -> dict:
        """The catalog's identity, for reading it; NoCatalog if there is none here (yet)."""
        info = self.identity()
        if info is None:
            raise NoCatalog(f"no catalog at {self.transfer.target}: nothing was backed up there yet")
        return info

    # --- reading ----------------------------------------------------------------------------------

    def _cached(self, path: str) -> Path:
        return self.cache / path if path.startswith(MANIFESTS + "/") else self.own / path

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """The bytes of catalog files; immutable ones from the cache where this machine has them."""
        out: dict[str, bytes] = {}
        fetch = []
        for path in paths:
            local = self._cached(path)
            if path.split("/")[0] in (RUNS, MANIFESTS, INTERRUPTED) and local.is_file():
                out[path] = local.read_bytes()
            else:
                fetch.append(path)
        if fetch:
            for path, data in self.transport.read_files(self.transfer, fetch, self.log).items():
                out[path] = data
                self._keep(path, data)
        return out

    def read(self, path: str) -> bytes | None:
        return self.read_many([path]).get(path)

    def _keep(self, path: str, data: bytes) -> None:
        local = self._cached(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local)

    def identity(self) -> dict | None:
        """FORMAT.json: the format and this destination's id (None: no catalog here yet)."""
        if not self.exists():
            return None
        # The format file is written once: the copy kept here serves while the listing shows the same size and time.
        kept = self.own / FORMAT_FILE
        if kept.is_file() and self._seen().is_file() and self._seen().read_text() == self._stamp():
            data = kept.read_bytes()
        else:
            data = self.read(FORMAT_FILE)
            if data is not None:
                self._keep(FORMAT_FILE, data)
                self._seen().write_text(self._stamp())
        try:
            info = json.loads(data or b"")
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
            raise TransferError(f"{self.where()}/{FORMAT_FILE} is not a catalog of this backup system")
        if info.get("version", 0) > FORMAT_VERSION:
            raise TransferError(
                f"the catalog at {self.where()} was written by a newer version (format {info.get('version')}): "
                "update this project (git pull)"
            )
        return info

    def _seen(self) -> Path:
        return self.own / f".{FORMAT_FILE}.seen"

    def _stamp(self) -> str:
        return json.dumps(self.tree()[FORMAT_FILE])

    def keep_identity(self, info: dict) -> None:
        """Remember the format file this run wrote (after a fresh listing shows its size and time)."""
        if FORMAT_FILE in self.tree():
            self._keep(FORMAT_FILE, _json_bytes(info))
            self._seen().write_text(self._stamp())

    def runs(self) -> list[CatalogRun]:
        """Every committed run here, oldest first."""
        paths = sorted(p for p in self.tree() if p.startswith(RUNS + "/") and p.endswith(".json"))
        found = []
        for data in self.read_many(paths).values():
            try:
                run = CatalogRun.load(json.loads(data))
            except ValueError:
                run = None
            if run is not None and Tag.parse(run.tag) is not None:
                found.append(run)
        return sorted(found, key=lambda r: Tag.parse(r.tag))

    def markers(self, folder: str = LOCKS, besides: str | None = None) -> list[InProgress]:
        """In-progress markers (locks/) or markers of runs found interrupted (interrupted/);
        ``besides``: all but this one (a run's own, which it just wrote: not read back)."""
        paths = sorted(p for p in self.tree() if p.startswith(folder + "/") and p.endswith(".json") and p != besides)
        found = []
        for data in self.read_many(paths).values():
            try:
                marker = records.from_json(InProgress, json.loads(data))
            except ValueError:
                marker = None
            if marker is not None:
                found.append(marker)
        return found

    def manifest(self, name: str) -> Manifest:
        """A manifest named in a run record, checked against the digest in its name."""
        if manifest_path(name) not in self.tree() and not (self.cache / manifest_path(name)).is_file():
            raise TransferError(f"the manifest {name} is missing from the catalog at {self.where()}")
        data = self.read(manifest_path(name))
        try:
            found = Manifest.from_bytes(data or b"")
        except ValueError as exc:
            raise TransferError(f"the manifest {name} at {self.where()} is damaged: {exc}") from None
        if found.name != name:
            raise TransferError(f"the manifest {name} at {self.where()} is damaged: its content does not match")
        return found

    def where(self) -> str:
        return f"{self.destination} ({self.transfer.target})"

    # --- writing ----------------------------------------------------------------------------------

    def apply(self, writes: dict[str, bytes], deletes: list[str] = ()) -> None:
        """Write catalog files and remove own markers, in one step of the transport (removals last)."""
        with tempfile.TemporaryDirectory(prefix="backup-catalog-") as staging:
            os.chmod(staging, 0o700 if self.transfer.private else 0o755)  # rsync gives .lab-backup its mode
            for path, data in writes.items():
                local = Path(staging, path)
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
            self.transport.apply(self.transfer, staging, sorted(writes), sorted(deletes), self.log)
        for path, data in writes.items():
            if path.split("/")[0] in (RUNS, MANIFESTS):
                self._keep(path, data)
        if self._tree is not None:
            for path in deletes:
                self._tree.pop(path, None)
            for path, data in writes.items():
                self._tree[path] = (len(data), 0)

    def new_identity(self) -> tuple[dict, dict[str, bytes]]:
        """A new destination id, and the files that introduce it (written with the first lock)."""
        info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "destination": self.destination,
                "destination_id": os.urandom(16).hex(), "created": records.now_iso(),
                "created_on": os.uname().nodename}  # fmt: skip
        return info, {FORMAT_FILE: _json_bytes(info), README_FILE: README.encode()}


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def encode(record) -> bytes:
    """A catalog record (run, marker) as the bytes written at the destination."""
    return _json_bytes(dataclasses.asdict(record))
