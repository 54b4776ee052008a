"""A stage's entry in each destination's catalog: opened by its first job, committed by its last.

The jobs of one (run, stage, destination) agree through a small state file per destination
under ``.backup/runs/RUN_ID/catalog/STAGE/`` and an flock beside it. The first job to need
the destination reads its catalog and refuses it if another run holds it (a fresh
in-progress marker). Before anything is written there, this run's in-progress marker is
written (the destination's lock; with the format file on a destination's first backup, and
stale markers of dead runs moved to interrupted/), then the locks are listed again: if
another run wrote one in between and started earlier, this run steps back (restic's way).
A run that finds nothing to send writes no marker at all. Each job adds its dataset's
manifest if the destination does not hold that state yet. The job that finds every planned
dataset of the destination recorded writes the run record, which is the commit, and removes
the marker in the same step. A stage that is never committed (a job was killed) stays
visible at the destination as an in-progress marker, and the summary says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from . import config, manifest, plan, records
from .catalog import (
    FORMAT_FILE,
    INTERRUPTED,
    LOCKS,
    MANIFESTS,
    REFRESH_MINUTES,
    STALE_AFTER_HOURS,
    SUMS,
    Catalog,
    CatalogRun,
    InProgress,
    encode,
    is_fresh,
    lock_path,
    machine_id,
    manifest_path,
    run_path,
    sums_path,
)
from .errors import TransferError
from .records import StageState


@contextmanager
def _locked(run_id: str, stage: str, destination: str, workdir):
    """Hold the (run, stage, destination) flock; yield its state (None before the first job)."""
    path = records.stage_state_file(run_id, stage, destination, workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield records.read_record(path, StageState)
    finally:
        os.close(fd)


def _save(run_id: str, stage: str, destination: str, workdir, state: StageState) -> None:
    # Read only by this run's own jobs, under the flock: atomic, no need to wait for the disk.
    records.write_record(records.stage_state_file(run_id, stage, destination, workdir), state, durable=False)


def open_stage(cat: Catalog, run_id: str, stage: str, datasets: list[str], workdir) -> StageState:
    """The destination's catalog for this stage, opened (locked) once by whichever job comes first."""
    with _locked(run_id, stage, cat.destination, workdir) as state:
        if state is None:
            state = _open(cat, run_id, stage, datasets)
            _save(run_id, stage, cat.destination, workdir, state)
        return state


def _open(cat: Catalog, run_id: str, stage: str, datasets: list[str]) -> StageState:
    tag = records.version_tag(run_id, stage)
    state = StageState(started=records.now_iso(), datasets=list(datasets))
    try:
        info = cat.identity()
        writes: dict[str, bytes] = {}
        if info is None:
            info, writes = cat.new_identity()
        state.destination_id = info["destination_id"]
        others = [m for m in cat.markers(LOCKS) if m.tag != tag]
        fresh = [m for m in others if is_fresh(m)]
        if fresh:
            state.error = busy(cat, fresh[0])
            return state
        for stale in others:  # runs that died: their markers move to interrupted/, named as such
            stale.taken_over_by, stale.taken_over_at = tag, state.started
            writes[f"{INTERRUPTED}/{stale.tag}.json"] = encode(stale)
        state.took_over = [m.describe() for m in others]
        state.held = [p for p in cat.tree() if p.startswith((MANIFESTS + "/", SUMS + "/"))]
        if writes:  # writing anyway (a first backup here, or a takeover): the marker goes with it
            mark(cat, run_id, stage, state, writes, [lock_path(m.tag) for m in others])
            if FORMAT_FILE in writes:
                cat.keep_identity(info)  # the tree was listed again after the marker: its stamp is known
    except TransferError as exc:
        state.error = f"cannot use the catalog at {cat.destination}: {exc}"
    return state


def busy(cat: Catalog, holder: InProgress) -> str:
    """Why this run may not write to the destination now: who holds it, and what to do."""
    stale_when = "its process ends" if holder.here() else f"{STALE_AFTER_HOURS} hour without news from it"
    return (
        f"another {holder.action} is writing to {cat.destination}: {holder.describe()}; wait for it to finish "
        f"(if it is not running any more, remove {plan.CATALOG_DIR}/{lock_path(holder.tag)} there, or wait: "
        f"it counts as stale after {stale_when})"
    )


def _marker(run_id: str, stage: str, state: StageState, refreshed: str = "", action: str = "backup") -> InProgress:
    return InProgress(run_id, records.version_tag(run_id, stage), stage, os.uname().nodename, owner_pid(), _user(),
                      state.started, state.datasets, machine_id(), refreshed, action=action)  # fmt: skip


def mark(cat: Catalog, run_id: str, stage: str, state: StageState, writes=None, deletes=(), action="backup") -> None:
    """Write this run's in-progress marker (with ``writes``), then list the locks again: if another
    run's marker is there too, both wrote at about the same time, and this one steps back (so does
    the other, or it wrote first and keeps the destination: never both)."""
    marker = _marker(run_id, stage, state, action=action)
    cat.apply({**(writes or {}), lock_path(marker.tag): encode(marker)}, list(deletes))
    state.marked = True
    cat.tree(refresh=True)
    # Only the others' markers are read (the common case: none, and nothing fetched).
    rival = next((m for m in cat.markers(LOCKS, besides=lock_path(marker.tag)) if is_fresh(m)), None)
    if rival is not None:
        cat.apply({}, [lock_path(marker.tag)])
        state.marked = False
        raise TransferError(busy(cat, rival))


@contextmanager
def holding(cat: Catalog, run_id: str, stage: str, workdir, log):
    """While a job writes, refresh this run's marker every REFRESH_MINUTES, so that another machine
    never takes a long transfer (a first backup to Box) for a dead one."""
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(REFRESH_MINUTES * 60):
            try:
                refresh_marker(cat, run_id, stage, workdir)
            except TransferError as exc:
                log.warning("could not refresh the in-progress marker at %s: %s", cat.destination, exc)

    thread = threading.Thread(target=refresh, name="marker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def refresh_marker(cat: Catalog, run_id: str, stage: str, workdir) -> None:
    with _locked(run_id, stage, cat.destination, workdir) as state:
        if state is not None and state.marked and not state.committed:
            marker = _marker(run_id, stage, state, refreshed=records.now_iso())
            cat.apply({lock_path(marker.tag): encode(marker)})


def _ensure_marked(cat: Catalog, run_id: str, stage: str, state: StageState | None, workdir) -> StageState:
    """This run's marker at the destination (under the stage's flock); a refusal is kept for the
    other jobs of the stage (nothing more is written there, and nothing committed)."""
    if state is None or state.error:
        raise TransferError(state.error if state else f"the catalog at {cat.destination} was not opened")
    if not state.marked:
        try:
            mark(cat, run_id, stage, state)
        except TransferError as exc:
            state.error = str(exc)
            raise
        finally:
            _save(run_id, stage, cat.destination, workdir, state)
    return state


def before_write(cat: Catalog, run_id: str, stage: str, workdir) -> None:
    """Called before anything is written at the destination: this run's marker goes there first."""
    with _locked(run_id, stage, cat.destination, workdir) as state:
        _ensure_marked(cat, run_id, stage, state, workdir)


def add_manifest(cat: Catalog, run_id: str, stage: str, name: str, workdir) -> None:
    """Put a dataset's manifest ``name`` (from this machine's cache) and its checksum file at the
    destination, unless it holds that state already."""
    with _locked(run_id, stage, cat.destination, workdir) as state:
        if state is None or state.error:
            raise TransferError(f"the catalog at {cat.destination} was not opened")
        if {manifest_path(name), sums_path(name)} - set(state.held):
            kept = records.cache_dir(workdir)  # manifest.save laid them out as the catalog does
            if not (kept / sums_path(name)).is_file():  # a manifest read from a catalog: no sums kept with it
                found = manifest.load(kept, name)
                if found is None:
                    raise TransferError(f"the manifest {name} is missing from this machine's cache")
                manifest.save(kept, found, again=True)
            missing = {path: (kept / path).read_bytes() for path in (manifest_path(name), sums_path(name))}
            _ensure_marked(cat, run_id, stage, state, workdir)
            cat.apply(missing)
            state.held += sorted(missing)
            _save(run_id, stage, cat.destination, workdir, state)


def commit_if_last(cat: Catalog, cfg: dict, run_id: str, stage: str, planned: list[str], workdir) -> bool:
    """If every planned dataset of this destination has its record, write the run's record at the
    destination (the commit) and remove the in-progress marker, in one step. True if committed."""
    with _locked(run_id, stage, cat.destination, workdir) as state:
        if state is None or state.error or state.committed:
            return bool(state and state.committed)
        done = [r for r in records.stage_records(run_id, stage, workdir) if r.destination == cat.destination]
        if not set(planned) <= {r.dataset for r in done}:
            return False  # another job of this destination is still running: it commits
        tag = records.version_tag(run_id, stage)
        run = CatalogRun(
            run_id=run_id, tag=tag, stage=stage, destination=cat.destination, destination_id=state.destination_id,
            host=os.uname().nodename, user=_user(), started=state.started, finished=records.now_iso(),
            tools=tool_versions(), config=config.public(cfg, recorded=True), transfers=done,
        )  # fmt: skip
        try:
            cat.apply({run_path(tag): encode(run)}, [lock_path(tag)] if state.marked else [])
            state.committed = True
        except TransferError as exc:
            state.commit_error = str(exc)
        _save(run_id, stage, cat.destination, workdir, state)
        return state.committed


def owner_pid() -> int:
    return int(os.environ.get(records.OWNER_ENV) or os.getppid())


def _user() -> str:
    try:
        return os.environ.get("USER") or os.environ.get("LOGNAME") or pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, OSError):
        return str(os.getuid())


def tool_versions() -> dict:
    """What wrote a run: this project's commit, Python, Snakemake, rsync and rclone (asked once per
    installed binary, then kept in the user's cache: rclone takes a twentieth of a second to start,
    and beside a running copy a second rclone costs 40 MB)."""
    from .transports import find_tool

    home = records.user_cache()
    cache = home / "tools.json" if home else None
    known = (records.read_json(cache) if cache else None) or {}
    out = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "backup": _project_commit(),
        "snakemake": _snakemake_version(),
    }
    changed = False
    for tool in ("rsync", "rclone"):
        try:
            path = find_tool(tool)
            st = os.stat(path)
        except (TransferError, OSError):
            continue
        key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
        if known.get(tool, {}).get("key") != key:
            text = subprocess.run([path, "version" if tool == "rclone" else "--version"], capture_output=True,
                                  text=True, timeout=20).stdout  # fmt: skip
            match = re.search(r"v?(\d+\.\d+\.\d+)", text)
            known[tool] = {"key": key, "version": match.group(1) if match else "?"}
            changed = True
        out[tool] = known[tool]["version"]
    if changed and cache:
        with contextlib.suppress(OSError):
            records.write_json(cache, known)
    return out


def _snakemake_version() -> str:
    """From the name of its installed metadata folder (importlib.metadata scans every package)."""
    for folder in sys.path:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder or "."):
                if name.startswith("snakemake-") and name.endswith(".dist-info") and name[10:11].isdigit():
                    return name[10 : -len(".dist-info")]
    return "?"


def _project_commit() -> str:
    """The git commit of this checkout, read from .git without starting git."""
    git = Path(__file__).resolve().parents[2] / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                return ref_file.read_text().strip()[:12]
            packed = (git / "packed-refs").read_text()
            return next((ln.split()[0][:12] for ln in packed.splitlines() if ln.endswith(" " + ref)), "?")
        return head[:12]
    except OSError:
        return "?"
