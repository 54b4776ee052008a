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
