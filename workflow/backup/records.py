"""The record contract: every record that crosses a process or reaches a destination, typed once.

A ``TransferRecord`` is what one job did for one (stage, destination, dataset): the
marker file of that job, a row of the summary, a line of the status and the report, an
entry of the run record here and of the catalog record at the destination. A
``RunRecord`` is one run as this machine saw it. Version tags (``RUN_ID``,
``RUN_ID-pre``, ``RUN_ID-post``, ``TAG-retryN``) name what a run wrote at a destination.
Local state paths live here too: ``.backup/`` is this machine's cache of what the
destinations say (see catalog.py for what they say themselves).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

STATE_DIR = ".backup"
# Order of the stages of one run: a post-pipeline state comes after the pre-pipeline one.
STAGE_RANK = {"manual": 0, "pre": 0, "post": 1}
OK, WARNING, FAILED = "ok", "warning", "failed"
INTERRUPTED = "interrupted"  # a transfer or run stopped by a signal (Ctrl-C, SIGTERM) before it finished
NOT_SAFE = (FAILED, INTERRUPTED)  # a transfer in either state holds no restore point
# The process that owns a run (the command line, or Snakemake run by hand): a destination's
# in-progress marker names it, so a run on this machine can tell a live holder from a dead one.
OWNER_ENV = "BACKUP_OWNER_PID"
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-z]{2,8}$")  # see new_run_id
R = TypeVar("R")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique even for two runs within one second; in UTC, so that runs of machines in
    other time zones (a cluster's submit host, a laptop) and around a clock change sort by time at
    a destination they share."""
    now = now or datetime.now(UTC)
    # Milliseconds, then one random hex digit: ids of runs within one second still sort by time
    # (restore finds "the versions written after a run" by comparing ids).
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}{os.urandom(1).hex()[0]}"


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# --- version tags -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Tag:
    """What a run wrote at a destination is tagged RUN_ID (manual), RUN_ID-pre or RUN_ID-post; the
    versions it moved aside go to DATASET.versions/TAG/. A retry's first attempts go to TAG-retryN."""

    run_id: str
    rank: int = 0  # STAGE_RANK: orders pre before post of the same run
    stage: str = "manual"
    retry: int = 0

    def __str__(self) -> str:
        text = self.run_id if self.stage == "manual" else f"{self.run_id}-{self.stage}"
        return f"{text}-retry{self.retry}" if self.retry else text

    @classmethod
    def of(cls, run_id: str, stage: str, retry: int = 0) -> Tag:
        return cls(run_id, STAGE_RANK[stage], stage, retry)

    @classmethod
    def parse(cls, text: str) -> Tag | None:
        """The tag a folder or file is named by; None for anything else."""
        base, retry = text, 0
        head, sep, tail = text.rpartition("-retry")
        if sep and tail.isdigit():
            base, retry = head, int(tail)
        run_id, stage = base, "manual"
        head, _, tail = base.rpartition("-")
        if tail in ("pre", "post"):
            run_id, stage = head, tail
        if not RUN_ID.match(run_id):
            return None
        return cls(run_id, STAGE_RANK[stage], stage, retry)


def version_tag(run_id: str, stage: str) -> str:
    return str(Tag.of(run_id, stage))


def archive_timestamp(run_id: str) -> str:
    """TIMESTAMP of CSVs_archive_TIMESTAMP.zip: the run's start, the same for every archive of the run."""
    return run_id[:15].replace("-", "_")


# --- records ------------------------------------------------------------------------------------


def to_json(record: Any) -> dict:
    """A record as JSON data (None fields and empty lists are kept: readers rely on every key)."""
    return dataclasses.asdict(record)


def from_json(cls: type[R], data: dict | None) -> R | None:
    """A record from JSON data written by this or an earlier version (unknown keys are ignored)."""
    if not isinstance(data, dict):
        return None
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None  # a required field is missing: not a record of this kind


@dataclass
class TransferRecord:
    """One (stage, destination, dataset) of a run: what was sent, checked and recorded."""

    run_id: str
    stage: str
    destination: str
    dataset: str
    status: str = OK
    error: str | None = None
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    mode: str = ""  # direct | archive
    tool: str = ""  # rsync | rclone
    target: str = ""
    rclone_config: str = ""  # the rclone config file that names the target's remote ("" for rclone's own)
    # The dataset's folder inside the destination's own folder (where the catalog is): how another
    # machine finds the data, whatever path or remote name it reaches the destination by.
    folder: str | None = None
    source: str = ""
    files_total: int = 0
    bytes_total: int = 0
    files_sent: int = 0
    bytes_sent: int = 0
    files_verified: int = 0
    missing: list[str] = field(default_factory=list)  # include patterns that matched nothing
    vanished: list[str] = field(default_factory=list)  # gone from the source while being sent
    skipped_links: list[str] = field(default_factory=list)  # symlinks a share cannot hold
    skipped_special: list[str] = field(default_factory=list)  # FIFOs, sockets, devices: no data to send
    unreadable: list[str] = field(default_factory=list)  # source folders and files this user cannot read: skipped
    unstorable: dict[str, str] = field(default_factory=dict)  # names the destination cannot hold, with why
    # Newer-dated (or edited) at the destination: replaced by the source's content, the copy there kept
    # in the run's versions folder (the source is the truth for content; nothing is lost).
    replaced_newer: list[str] = field(default_factory=list)
    # A folder where the source now has a file, or the reverse: the old entry moved whole into the
    # run's versions folder, the new one sent.
    displaced: list[str] = field(default_factory=list)
    identical_rewrites: int = 0  # rewritten at the source with the same bytes: not sent again (rewrites.py)
    archive: str | None = None  # compressed mode: the archive's file name
    archive_created: bool = False
    manifest: str | None = None  # the catalog's manifest of this state (catalog.manifest_path)
    state_listing: str = ""  # the digest of the listing the state's manifest was made from (direct mode)
    state_files: int = 0  # files and bytes of the dataset's state (in compressed mode: in the archive)
    state_bytes: int = 0
    host: str = ""
    pid: int = 0

    @property
    def tag(self) -> str:
        return version_tag(self.run_id, self.stage)


@dataclass
class ArchiveRecord:
    """One archive job: the ZIP a stage sends for a dataset (made now, or reused unchanged)."""

    run_id: str
    stage: str
    dataset: str
    status: str = OK
    error: str | None = None
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    archive: str | None = None  # its path
    created: bool = False
    files: int = 0
    bytes: int = 0
    compressed_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    skipped_special: list[str] = field(default_factory=list)  # FIFOs, sockets, devices: not archived
    unreadable: list[str] = field(default_factory=list)  # source folders and files this user cannot read: not archived
    manifest: str | None = None  # the catalog's manifest of the state the archive holds
    host: str = ""
    pid: int = 0


@dataclass
class PipelineRecord:
    """The gate, the pipeline's run, or why it did not run."""

    run_id: str
    status: str = OK  # ok | failed | not run
    error: str | None = None
    command: str | None = None
    snakefile: str | None = None
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    exit_status: int | None = None
    failed_pre: int = 0


@dataclass
class RunRecord:
    """One run as this machine saw it: .backup/runs/RUN_ID/run.json."""

    run_id: str
    kind: str = "backup"  # backup | run
    command: str = ""
    config: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    exit_status: int | None = None
    pipeline: PipelineRecord | None = None  # of a `run`: what became of the pipeline
    transfers: list[TransferRecord] = field(default_factory=list)

    @classmethod
    def load(cls, data: dict | None) -> RunRecord | None:
        run = from_json(cls, data)
        if run is not None:
            run.transfers = [t for t in (from_json(TransferRecord, d) for d in run.transfers or []) if t]
            if isinstance(run.pipeline, dict):
                run.pipeline = from_json(PipelineRecord, {"run_id": run.run_id, **run.pipeline})
        return run


def stamp(record, **fields) -> None:
    """Who wrote a record, and from where."""
    record.host, record.pid = os.uname().nodename, os.getpid()
    for key, value in fields.items():
        setattr(record, key, value)


# --- local state: .backup/ ----------------------------------------------------------------------


def run_dir(run_id: str, project_dir: str | Path = ".") -> Path:
    return Path(project_dir, STATE_DIR, "runs", run_id)


def run_record_path(run_id: str, project_dir: str | Path = ".") -> Path:
    return run_dir(run_id, project_dir) / "run.json"


def run_config_path(run_id: str, project_dir: str | Path = ".") -> Path:
    """The run's validated, secret-free config (config.save_for_run), read by its jobs."""
    return run_dir(run_id, project_dir) / "config.json"


def marker_path(run_id: str, stage: str, destination: str, dataset: str) -> str:
    return f"{STATE_DIR}/runs/{run_id}/{stage}/{destination}/{dataset}.json"


def archive_marker(run_id: str, stage: str, dataset: str) -> str:
    return f"{STATE_DIR}/runs/{run_id}/archives/{stage}/{dataset}.json"


def gate_marker(run_id: str) -> str:
    """Written once the pre-pipeline backup allows the pipeline to start."""
    return f"{STATE_DIR}/runs/{run_id}/pre-gate.json"


def pipeline_error(run_id: str) -> str:
    """Why the pipeline did not run or failed (not a Snakemake output: it survives the failure)."""
    return f"{STATE_DIR}/runs/{run_id}/pipeline-error.json"


def pipeline_marker(run_id: str) -> str:
    return f"{STATE_DIR}/runs/{run_id}/pipeline.json"


def commit_state_dir(run_id: str, stage: str, project_dir: str | Path = ".") -> Path:
    """Where the jobs of one stage agree on opening and committing each destination's catalog."""
    return run_dir(run_id, project_dir) / "catalog" / stage


def cache_dir(project_dir: str | Path = ".") -> Path:
    """This machine's copies of catalog files (immutable ones: manifests, run records)."""
    return Path(project_dir, STATE_DIR, "cache")


def user_cache() -> Path | None:
    """What this user's tools are and can do (rclone remotes' features, tool versions): facts
    about the machine, kept across project folders. None where there is no usable home."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(home, "lab-backup") if os.path.isabs(home) else None


def write_json(path: str | Path, data: dict, durable: bool = True) -> None:
    """Write JSON atomically: a reader never sees half a marker. ``durable``: on disk before the
    name appears (not needed for what only this run's own processes read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def write_record(path: str | Path, record, durable: bool = True) -> None:
    write_json(path, to_json(record), durable)


def read_record(path: str | Path, cls: type[R]) -> R | None:
    return from_json(cls, read_json(path))


@dataclass
class StageState:
    """What the jobs of one (run, stage, destination) know of its catalog."""

    destination_id: str = ""
    held: list[str] = field(default_factory=list)  # manifests and sums the destination holds
    error: str | None = None  # the destination's catalog cannot be used: nothing may be sent there
    took_over: list[str] = field(default_factory=list)  # stale markers of earlier runs, now in interrupted/
    started: str = ""
    marked: bool = False  # this run's in-progress marker is at the destination
    datasets: list[str] = field(default_factory=list)
    committed: bool = False
    commit_error: str | None = None


def stage_state_file(run_id: str, stage: str, destination: str, workdir) -> Path:
    return commit_state_dir(run_id, stage, workdir) / f"{destination}.json"


def state_of(run_id: str, stage: str, destination: str, workdir) -> StageState | None:
    return read_record(stage_state_file(run_id, stage, destination, workdir), StageState)


def stage_rows(run_id: str, stage: str, expected: list, workdir) -> list[TransferRecord]:
    """The records of a stage, as the summary shows them: a planned transfer without a record failed
    without saying why, and a destination whose catalog entry was not committed is not safe."""
    found = {(r.destination, r.dataset): r for r in stage_records(run_id, stage, workdir)}
    rows = []
    for t in expected:
        row = found.get((t.destination, t.dataset))
        if row is None:
            row = TransferRecord(run_id, stage, t.destination, t.dataset, mode=t.mode, status=FAILED,
                                 error=f"the job did not finish; see .backup/runs/{run_id}/snakemake.log")  # fmt: skip
        state = state_of(run_id, stage, t.destination, workdir)
        if row.status != FAILED and not (state and state.committed):
            why = (state.commit_error or "a job of this destination did not finish") if state else "never opened"
            row.status, row.error = FAILED, f"not recorded in the destination's catalog: {why}"
        rows.append(row)
    return rows


def stage_records(run_id: str, stage: str, project_dir: str | Path = ".") -> list[TransferRecord]:
    """All transfer records of one stage of a run, in a stable order."""
    folder = run_dir(run_id, project_dir) / stage
    found = [read_record(p, TransferRecord) for p in sorted(folder.glob("*/*.json"))]
    return [r for r in found if r]


def load_runs(project_dir: str | Path) -> list[RunRecord]:
    """Every local run record, oldest first (run ids sort by time)."""
    folder = Path(project_dir, STATE_DIR, "runs")
    found = [RunRecord.load(read_json(p)) for p in sorted(folder.glob("*/run.json"))] if folder.is_dir() else []
    return [r for r in found if r]
