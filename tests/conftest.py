"""Shared test helpers: a temporary lab (sources, destinations, config) and independent hashing."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

CSV_NAMES = [
    "all_envelope_rows_wide.csv",
    "all_envelope_rows_wide_training.csv",
    "all_envelope_rows_wide_combined_base.csv",
    "all_envelope_rows_wide_combined_base_training.csv",
    "model_predictions.csv",
    "all_eye_prob_coords_wide.csv",
]
RESULT_DIRS = [
    "Results/Opto/Reaction_Matrices/",
    "Results/Opto/Reaction_Matrices/Overlay/",
    "Results/Opto/PER-Envelopes/",
    "Results/Opto/Training-PER-Envelopes/",
    "Results/Opto/Reaction_Predictions(Strictest)/",
    "Results/Opto/CombinedBase-PER-Envelopes/",
    "Results/Opto/CombinedBase-Training-PER-Envelopes/",
    "Results/Opto/Weekly-Training-Envelopes/",
]
# Names a careless shell script would break on.
TRICKY_NAMES = ["with space.png", "paren(1).svg", "unicodé-α.png", "-leading-dash.png"]


def hash_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under root, by relative path (independent of the code under test)."""
    out = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def env_with_venv() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if fields[0] != b"Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def run_bounded(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)``, except that a command still running
    after ``timeout`` seconds is killed with SIGKILL together with everything it started (its
    session: the CLI, Snakemake, its jobs, rsync, rclone), so that no test waits forever on a hung
    Snakemake; then subprocess.TimeoutExpired."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for _ in range(50):  # a process may fork while the last one is being killed
                members = _session(proc.pid)
                if not members:
                    break
                for pid in members:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            proc.communicate(timeout=10)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_cli(*args: str, workdir: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """scripts/backup_system.py as a user runs it, with state kept in ``workdir``."""
    cmd = [sys.executable, str(PROJECT / "scripts" / "backup_system.py"), *args, "--workdir", str(workdir)]
    return run_bounded(cmd, timeout, env=env_with_venv(), cwd=workdir)


class Lab:
    """A temporary lab: source trees, three local destinations and a config file."""

    def __init__(self, root: Path):
        self.root = root
        self.csv_root = root / "data" / "Combined"
        self.results_root = root / "data" / "cole"
        self.smb = root / "dest" / "smb"
        self.box = root / "dest" / "box"
        self.secured = root / "dest" / "secured"
        self.workdir = root / "work"
        self.workdir.mkdir(parents=True)
        self.rclone_conf = root / "rclone.conf"
        self.rclone_conf.write_text(f"[Box-Folder]\ntype = alias\nremote = {self.box}\n")
        self.config_path = root / "config.yaml"
        for i, name in enumerate(CSV_NAMES):
            self.write(self.csv_root / name, f"fly,trial,v0,v1\nfly{i},1,0.{i},0.{i + 1}\n" * (50 + i))
        for i, folder in enumerate(RESULT_DIRS):
            for j in range(3):
                self.write(self.results_root / folder / f"fig{j}.png", bytes([i, j]) * (100 + j))
        for name in TRICKY_NAMES:
            self.write(self.results_root / "Results/Opto/PER-Envelopes" / name, f"tricky {name}")
        self.config = {
            "backups": {
                "enabled": True,
                "log_file": str(root / "backup.log"),
                "sources": {
                    "CSVs": {"root": str(self.csv_root), "include": list(CSV_NAMES)},
                    "Results": {"root": str(self.results_root), "include": list(RESULT_DIRS)},
                },
                "compression": {"enabled": False},
                "destinations": {
                    "smb": {
                        "enabled": True,
                        "base_path": str(self.smb),
                        "csvs_path": str(self.smb / "flyTrackingData"),
                        "results_path": str(self.smb / "Figures"),
                        "require_mount": False,
                    },
                    "box": {
                        "enabled": True,
                        "remote": "Box-Folder",
                        "folder": "Ramanlab-Backups",
                        "rclone_config": str(self.rclone_conf),
                    },
                    "secured": {"enabled": True, "base_path": str(self.secured)},
                },
            }
        }
        self.save()

    @staticmethod
    def write(path: Path, content: str | bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)

    def save(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, allow_unicode=True))

    def cli(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        return run_cli(*args, "--config", str(self.config_path), workdir=self.workdir, timeout=timeout)

    def snakemake(self, *args: str, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "snakemake",
            "--snakefile", str(PROJECT / "Snakefile"),
            "--directory", str(self.workdir),
            "--configfile", str(self.config_path),
            "--cores", "2",
            *args,
        ]  # fmt: skip
        environ = {**env_with_venv(), **(env or {})}
        return run_bounded(cmd, timeout, env=environ, cwd=self.root)

    # Expected contents, in the seed's layout, computed from the sources.
    def csv_hashes(self) -> dict[str, str]:
        return {n: h for n, h in hash_tree(self.csv_root).items() if n in CSV_NAMES}

    def results_hashes(self) -> dict[str, str]:
        return {n: h for n, h in hash_tree(self.results_root).items() if any(n.startswith(d) for d in RESULT_DIRS)}


class SavedLab:
    """A lab in a state that takes backups to reach (``prepare(lab)``; what it returns is ``made``),
    made once per test module and kept as a copy, as a backup costs seconds of CPU and putting its
    folder back a tenth of one: ``fresh()`` puts the copy back for each test, which may then change
    anything in it (sources, config, destinations, workdir). It goes back to the same path, every
    file with its bytes and times (the config, the catalogs and the records name absolute paths)."""

    def __init__(self, root: Path, prepare) -> None:
        self.lab = Lab(root / "lab")
        self.made = prepare(self.lab)
        self.saved, self.config = root / "saved", copy.deepcopy(self.lab.config)
        shutil.copytree(self.lab.root, self.saved, symlinks=True)  # copy2: times kept to the nanosecond

    @classmethod
    def after_first_backup(cls, root: Path, prepare=None, *args: str) -> SavedLab:
        """A fresh Lab (``prepare`` may change it first) after its first backup (``made``: its result)."""

        def first(lab: Lab) -> subprocess.CompletedProcess:
            if prepare:
                prepare(lab)
            result = lab.cli(*args)
            assert result.returncode == 0, result.stdout + result.stderr
            return result

        return cls(root, first)

    def fresh(self) -> Lab:
        shutil.rmtree(self.lab.root)
        shutil.copytree(self.saved, self.lab.root, symlinks=True)
        self.lab.config = copy.deepcopy(self.config)
        return self.lab


@pytest.fixture(scope="module")
def first_backup(tmp_path_factory) -> SavedLab:
    """A test module's lab after one backup of everything to every destination (a module that needs
    another first state defines its own)."""
    return SavedLab.after_first_backup(tmp_path_factory.mktemp("first-backup"))


@pytest.fixture
def backed_up(first_backup) -> Lab:
    """That lab put back for this test (first_backup.fresh())."""
    return first_backup.fresh()


# `make test` runs the files on three workers, each taking the next file in collection order
# (--no-loadscope-reorder in pyproject.toml). The files that take longest, mostly waiting (SLURM's status checks,
# pipelines, servers), go first: started last, one of them would end the run alone.
LONGEST_FIRST = (
    "test_slurm.py",
    "test_run_pipeline.py",
    "test_prune.py",
    "test_backup_direct.py",
    "test_disaster_recovery.py",
    "test_type_changes.py",
    "test_identical_rewrites.py",
    "test_honest_results.py",
)


def pytest_collection_modifyitems(items):
    """Longest files first (LONGEST_FIRST), the rest as collected; a file's tests stay in order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a test never skips: a server or kernel feature it needs that is missing is a
    failure there (coverage must not vanish behind a green run)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped under CI=true, which allows no skip: {reason}"


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory):
    """The tests keep what they learn about tools and remotes (~/.cache/lab-backup) to themselves."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def _server(request, factory, name: str, make):
    import servers

    try:
        server = make(factory.mktemp(name)).start()
    except servers.Unavailable as exc:
        pytest.skip(f"{name}: {exc}")
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def samba(request, tmp_path_factory):
    import servers

    return _server(request, tmp_path_factory, "samba", servers.Samba)


@pytest.fixture(scope="session")
def sshd(request, tmp_path_factory):
    import servers

    return _server(request, tmp_path_factory, "sshd", servers.Sshd)


@pytest.fixture
def webdav(request, tmp_path_factory):
    """Per test: some tests stop it."""
    import servers

    return _server(request, tmp_path_factory, "webdav", servers.WebDav)


@pytest.fixture(scope="module")
def slurm(request, tmp_path_factory):
    """Per test module: a single-node SLURM (tests/servers.Slurm); with accounting where a test
    asks, `@pytest.mark.parametrize("slurm", [True], indirect=True)` (pytest then stops the one
    without first: the machine has one test cluster at a time)."""
    import servers

    accounting = getattr(request, "param", False)
    return _server(request, tmp_path_factory, "slurm", lambda root: servers.Slurm(root, accounting=accounting))


@pytest.fixture(scope="session")
def fuse_smb(request, tmp_path_factory, samba):
    import servers

    return _server(request, tmp_path_factory, "fuse", lambda root: servers.FuseMount(samba, root / "mnt"))


class Receiver:
    """A monitor or a notification service on 127.0.0.1: records every request, (method, path, body)."""

    def __init__(self):
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append((self.command, self.path, self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
