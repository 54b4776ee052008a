"""Real servers on 127.0.0.1 for the tests: Samba, OpenSSH, rclone's WebDAV server, a FUSE mount.

Each starts in its own temporary folder with its own config on a free high port, is
waited for (bounded in time), and is stopped by the fixture that started it.
"""

from __future__ import annotations

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
    """A single-node SLURM (munge, slurmctld, slurmd) on 127.0.0.1, without accounting; the analysis
    jobs of a run go to it. Its config must be /etc/slurm/slurm.conf (the SLURM executor plugin
    clears SLURM_CONF inside its jobs): one test cluster per machine, the file there before kept
    and put back."""

    CONF = Path("/etc/slurm/slurm.conf")

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "slurmctld.log"
        self.saved: bytes | None = None
        self.procs: list[subprocess.Popen] = []

    def start(self) -> Slurm:
        try:
            return self._start()
        except Exception:
            self.stop()  # nothing left running, the machine's slurm.conf put back
            raise

    def _start(self) -> Slurm:
        for program in ("munged", "slurmctld", "slurmd", "sinfo"):
            need(program)
        if os.geteuid() != 0:
            raise Unavailable("a test SLURM cluster needs root (its daemons and /etc/slurm/slurm.conf)")
        subprocess.run(["pkill", "-x", "slurmctld"], capture_output=True)  # an earlier test cluster
        subprocess.run(["pkill", "-x", "slurmd"], capture_output=True)
        for sub in ("ctld", "d", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.procs.append(spawn([need("munged"), "--foreground", "--force", f"--key-file={key}",
                                 f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
                                 f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
                                munge / "munged.out"))  # fmt: skip
        host = socket.gethostname().split(".")[0]
        self.saved = self.CONF.read_bytes() if self.CONF.exists() else None
        self.CONF.parent.mkdir(parents=True, exist_ok=True)
        self.CONF.write_text(
            f"""ClusterName=labbackuptest
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={munge}/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
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
"""
        )
        self.procs.append(spawn([need("slurmctld"), "-D", "-i"], self.root / "slurmctld.out"))
        self.procs.append(spawn([need("slurmd"), "-D"], self.root / "slurmd.out"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
            if "idle" in state.stdout:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"the test SLURM did not come up: {state.stdout} {state.stderr}")

    def submitted(self) -> int:
        """Batch jobs slurmctld was given (its own log)."""
        return self.log.read_text().count("_slurm_rpc_submit_batch_job") if self.log.exists() else 0

    def completed(self) -> list[str]:
        """Exit statuses of finished jobs, as slurmctld logged them."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.rsplit("WEXITSTATUS ", 1)[1].strip() for line in text.splitlines() if "WEXITSTATUS" in line]

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        for proc in reversed(self.procs):
            stop(proc)
        if self.saved is not None:
            self.CONF.write_bytes(self.saved)
        else:
            self.CONF.unlink(missing_ok=True)
