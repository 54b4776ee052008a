"""Real servers on 127.0.0.1 for the tests: Samba, OpenSSH, rclone's WebDAV server, a FUSE mount.

Each starts in its own temporary folder with its own config on a free high port, is
waited for (bounded in time), and is stopped by the fixture that started it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import VENV_BIN


class Unavailable(Exception):
    """The server's program is not installed and cannot be: the test is skipped, saying why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def spawn(cmd: list[str], output: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a server in its own session, its output to a file beside its config."""
    with open(output, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if not path:
        raise Unavailable(f"{program} is not installed (make test installs it with apt-get as root)")
    return path


def rclone() -> str:
    return str(VENV_BIN / "rclone") if (VENV_BIN / "rclone").exists() else need("rclone")


def obscure(password: str) -> str:
    out = subprocess.run([rclone(), "obscure", "-"], input=password, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def smb_conf(root: Path, port: int, share: Path, user: str) -> str:
    """smbd's config for one share on 127.0.0.1:``port``, every state folder under ``root``
    (also the network benchmark's NAS, bench/netlab.py)."""
    r = root
    return f"""[global]
  workgroup = WORKGROUP
  server role = standalone server
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  private dir = {r}/private
  lock directory = {r}/lock
  state directory = {r}/state
  cache directory = {r}/cache
  pid directory = {r}/pid
  ncalrpc dir = {r}/ncalrpc
  log file = {r}/log.%m
  passdb backend = tdbsam:{r}/private/passdb.tdb
  map to guest = never
  load printers = no
  disable spoolss = yes
  printcap name = /dev/null
[share]
  path = {share}
  read only = no
  valid users = {user}
"""


class Samba:
    """smbd serving one share, 'share', to user root with a password."""

    user = "root"
    password = "smb-test-Secret-4711"

    def __init__(self, root: Path):
        self.root = root
        self.share = root / "share"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Samba:
        smbd, smbpasswd = need("smbd"), need("smbpasswd")
        for sub in ("share", "private", "lock", "state", "cache", "pid", "ncalrpc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "smb.conf"
        conf.write_text(smb_conf(self.root, self.port, self.share, self.user))
        subprocess.run(
            [smbpasswd, "-c", str(conf), "-s", "-a", self.user],
            input=f"{self.password}\n{self.password}\n", capture_output=True, text=True, check=True,
        )  # fmt: skip
        cmd = [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"]
        self.proc = spawn(cmd, self.root / "smbd.out")
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class FuseMount:
    """The Samba share mounted with FUSE (rclone mount), as a lab machine without kernel CIFS would."""

    def __init__(self, samba: Samba, point: Path, cache_mode: str = "off"):
        self.samba, self.point, self.cache_mode = samba, point, cache_mode
        self.proc: subprocess.Popen | None = None

    def start(self) -> FuseMount:
        need("fusermount3")
        if not Path("/dev/fuse").exists():
            raise Unavailable("/dev/fuse is missing: FUSE mounts are impossible here")
        self.point.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RCLONE_SMB_PASS": obscure(self.samba.password), "RCLONE_CONFIG": "/dev/null"}
        remote = f":smb,host=127.0.0.1,port={self.samba.port},user={self.samba.user}:share"
        cmd = [rclone(), "mount", remote, str(self.point), "--vfs-cache-mode", self.cache_mode]
        cmd += ["--dir-cache-time", "1s"]
        if self.cache_mode != "off":  # the cache beside the mount point, not in the user's
            cmd += ["--cache-dir", str(self.point.parent / "rclone-cache")]
        self.proc = spawn(cmd, self.point.parent / "mount.out", env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rclone mount exited")
            if os.path.ismount(self.point):
                return self
            time.sleep(0.1)
        raise RuntimeError("the FUSE mount did not appear")

    def stop(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.point)], capture_output=True)
        if self.proc:
            stop(self.proc)


class Sshd:
    """OpenSSH's sshd for user root, key login only, with a throwaway host key and client key."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sshd:
        sshd, keygen = need("sshd"), need("ssh-keygen")
        need("ssh")
        self.root.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
        host_key = self.root / "host_ed25519"
        for key in (host_key, self.key):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        auth = self.root / "authorized_keys"
        auth.write_text(Path(f"{self.key}.pub").read_text())
        auth.chmod(0o600)
        host_pub = Path(f"{host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        conf = self.root / "sshd_config"
        conf.write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {auth}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
"""
        )
        self.proc = spawn([sshd, "-D", "-e", "-f", str(conf)], self.root / "sshd.out")
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class WebDav:
    """rclone serve webdav with a user and password: stands in for Box behind the remote 'Box-Folder'."""

    user = "box-user"
    password = "box-test-Secret-0815"

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.conf = root / "rclone.conf"
        self.proc: subprocess.Popen | None = None

    def write_conf(self, password: str | None = None) -> Path:
        self.conf.write_text(
            "[Box-Folder]\ntype = webdav\n"
            f"url = http://127.0.0.1:{self.port}/\nvendor = rclone\nuser = {self.user}\n"
            f"pass = {obscure(password or self.password)}\n"
        )
        return self.conf

    def start(self) -> WebDav:
        self.data.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        self.proc = spawn(
            [rclone(), "serve", "webdav", str(self.data), "--addr", f"127.0.0.1:{self.port}",
             "--user", self.user, "--pass", self.password, "--config", "/dev/null", "--dir-cache-time", "1s"],
            self.root / "webdav.out",
        )  # fmt: skip
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class Slurm:
    """A single-node SLURM (munge, slurmctld, slurmd) on 127.0.0.1; the analysis jobs of a run go to
    it. With ``accounting``, also slurmdbd on a MariaDB of its own, so that `sacct` (the SLURM
    executor plugin's default status query) answers. Its config must be /etc/slurm (the plugin
    clears SLURM_CONF inside its jobs) and its daemons use SLURM's and munge's default ports and
    socket (sacctmgr reaches slurmdbd through the default munge socket whatever AuthInfo says): one
    test cluster per machine, taken in turn through a lock file; the files there before are kept
    and put back."""

    ETC = Path("/etc/slurm")
    MUNGE = Path("/run/munge/munge.socket.2")
    LOCK = Path("/run/lock/lab-backup-test-slurm.lock")

    def __init__(self, root: Path, accounting: bool = False):
        self.root, self.accounting = root, accounting
        self.log = root / "slurmctld.log"
        self.saved: dict[Path, bytes | None] = {}
        self.procs: list[subprocess.Popen] = []
        self.lock: int | None = None

    def start(self) -> Slurm:
        try:
            return self._start()
        except Exception:
            self.stop()  # nothing left running, the machine's files put back
            raise

    def _take_turn(self, seconds: float = 600) -> None:
        """Wait (bounded) while another test process has the machine's one test cluster."""
        self.LOCK.parent.mkdir(parents=True, exist_ok=True)
        self.lock = os.open(self.LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another test SLURM held {self.LOCK} for {seconds} s") from None
                time.sleep(0.5)

    def _write(self, path: Path, text: str, mode: int = 0o644) -> None:
        self.saved.setdefault(path, path.read_bytes() if path.exists() else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def _start(self) -> Slurm:
        for program in ("munged", "munge", "slurmctld", "slurmd", "sinfo", "sacct"):
            need(program)
        if self.accounting:
            for program in ("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb"):
                need(program)
        if os.geteuid() != 0:
            raise Unavailable("a test SLURM cluster needs root (its daemons and /etc/slurm)")
        self._take_turn()
        for daemon in ("slurmctld", "slurmd", "slurmdbd"):  # an earlier test cluster that was not stopped
            subprocess.run(["pkill", "-x", daemon], capture_output=True)
        for sub in ("ctld", "d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._munge()
        host = socket.gethostname().split(".")[0]
        storage = (
            "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            if self.accounting
            else "AccountingStorageType=accounting_storage/none\n"
        )
        self._write(
            self.ETC / "slurm.conf",
            f"""ClusterName=labbackuptest
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
{storage}MpiDefault=none
ReturnToService=2
MinJobAge=300
StateSaveLocation={self.root}/ctld
SlurmdSpoolDir={self.root}/d
SlurmctldPidFile={self.root}/ctld/slurmctld.pid
SlurmdPidFile={self.root}/d/slurmd.pid
SlurmctldLogFile={self.log}
SlurmdLogFile={self.root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""",
        )
        if self.accounting:  # sacctmgr finds slurmdbd through slurm.conf
            self._slurmdbd()
        self.procs.append(spawn([need("slurmctld"), "-D", "-i"], self.root / "slurmctld.out"))
        self.procs.append(spawn([need("slurmd"), "-D"], self.root / "slurmd.out"))
        idle = lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout  # noqa: E731
        self._until(idle, "the test SLURM's node", seconds=30)
        return self

    def _munge(self) -> None:
        """munged with a key of its own on the default socket, unless one already answers there."""
        if self.MUNGE.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        munge = self.root / "munge"
        munge.mkdir(parents=True, exist_ok=True)
        self.MUNGE.parent.mkdir(parents=True, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.procs.append(spawn([need("munged"), "--foreground", "--force", f"--key-file={key}",
                                 f"--socket={self.MUNGE}", f"--pid-file={munge}/munged.pid",
                                 f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
                                munge / "munged.out"))  # fmt: skip
        self._until(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, "munged")

    def _slurmdbd(self) -> None:
        """A MariaDB of the test's own on a free port, and slurmdbd on SLURM's default port over it."""
        db, sock, port = self.root / "db", self.root / "mariadb.sock", free_port()
        subprocess.run([need("mariadb-install-db"), "--no-defaults", f"--datadir={db}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       capture_output=True, check=True)  # fmt: skip
        mariadbd = spawn([need("mariadbd"), "--no-defaults", f"--datadir={db}", "--user=root", f"--socket={sock}",
                          f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={self.root}/mariadb.pid"],
                         self.root / "mariadb.out")  # fmt: skip
        self.procs.append(mariadbd)
        wait_for_port(port, mariadbd)
        password = "acct-" + os.urandom(8).hex()
        sql = (f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")  # fmt: skip
        subprocess.run(["mariadb", "--no-defaults", f"--socket={sock}", "-e", sql], capture_output=True, check=True)
        self._write(
            self.ETC / "slurmdbd.conf",
            f"""AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
LogFile={self.root}/slurmdbd.log
PidFile={self.root}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
""",
            mode=0o600,  # slurmdbd refuses a config others can read
        )
        slurmdbd = spawn([need("slurmdbd"), "-D"], self.root / "slurmdbd.out")
        self.procs.append(slurmdbd)
        wait_for_port(6819, slurmdbd)
        added = subprocess.run(["sacctmgr", "-i", "add", "cluster", "labbackuptest"], capture_output=True, text=True)
        if added.returncode:
            raise RuntimeError(f"sacctmgr add cluster: {added.stdout} {added.stderr}")

    @staticmethod
    def _until(ready, what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {seconds} s")
            time.sleep(0.05)

    def submitted(self) -> int:
        """Batch jobs slurmctld was given (its own log)."""
        return self.log.read_text().count("_slurm_rpc_submit_batch_job") if self.log.exists() else 0

    def completed(self) -> list[str]:
        """Exit statuses of finished jobs, as slurmctld logged them."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.rsplit("WEXITSTATUS ", 1)[1].strip() for line in text.splitlines() if "WEXITSTATUS" in line]

    def accounted(self) -> list[tuple[str, str, str, str]]:
        """(job name, state, exit code, time limit) of every job in SLURM's accounting, as `sacct` reports them."""
        out = subprocess.run(["sacct", "-X", "-a", "-n", "-P", "--format=JobName,State,ExitCode,Timelimit"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return [tuple(line.split("|")) for line in out.stdout.splitlines() if line]

    def stop(self) -> None:
        if any(proc.poll() is None for proc in self.procs):
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        for proc in reversed(self.procs):
            stop(proc)
        for path, text in self.saved.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(text)
        if self.lock is not None:
            os.close(self.lock)  # the next test process's turn
            self.lock = None
