#!/usr/bin/env python3
"""The lab's network on one machine: real servers behind emulated links, in a network namespace.

A namespace (bkbench) is joined to this one by a veth pair (10.231.0.1/30 here, 10.231.0.2/30
inside). Inside, on the namespace's own 127.0.0.1, run a real smbd (the NAS), `rclone serve
webdav` (stands in for Box) and a real sshd (secured storage); in front of each, on
10.231.0.2, a netlink.py proxy with the link's delay and rate. Nothing reaches a server but
through its link. The share is also mounted here with FUSE (`rclone mount`, no write cache):
how a lab machine without kernel CIFS writes to it with rsync.

    NAS (SMB, port 445)           0.5 ms each way, 1000 Mbit/s
    cloud (WebDAV as Box, 8080)   20 ms each way,  100 Mbit/s
    secured (SSH, port 22)        1 ms each way,   1000 Mbit/s

Everything started is stopped, the mount unmounted and the namespace and veth deleted, on
leaving the `with` block, on SIGINT/SIGTERM, and at the next start if a run was killed.

    python bench/netlab.py [--hold SECONDS]   bring it up, print how to reach it, hold, tear down
    python bench/netlab.py --down             only remove what an interrupted run left
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test suite's smbd config, one place for both
from servers import smb_conf  # noqa: E402

VENV_BIN = Path(sys.executable).parent
RCLONE = str(VENV_BIN / "rclone") if (VENV_BIN / "rclone").exists() else "rclone"
LAB = HERE / "data" / "netlab"
NS, VETH_HERE, VETH_NS = "bkbench", "bkb0", "bkb1"
HERE_ADDR, NS_ADDR = "10.231.0.1", "10.231.0.2"
SMB_USER, SMB_PASSWORD = "root", "bench-smb-Secret-2718"
BOX_USER, BOX_PASSWORD = "box-user", "bench-box-Secret-3141"
START_SECONDS = 20  # longest wait for any server, proxy or the mount to answer


@dataclass(frozen=True)
class LinkSpec:
    port: int  # the server's port on the namespace's loopback and the proxy's on NS_ADDR
    delay_ms: float  # each way
    rate_mbit: float


LINKS = {"smb": LinkSpec(445, 0.5, 1000), "box": LinkSpec(8080, 20, 100), "ssh": LinkSpec(22, 1, 1000)}


def sh(*cmd: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, **kw)


def in_ns(*cmd: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *cmd]


def raise_on_signal() -> None:
    """SIGTERM (and SIGINT, SIGHUP) raise, so that every `finally` tears the lab down."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def obscure(password: str) -> str:
    return sh(RCLONE, "obscure", "-", input=password).stdout.strip()


class Lab:
    """The namespace, its servers and proxies, the FUSE mount; `with Lab() as lab:` brings it up and down."""

    def __init__(self, root: Path = LAB) -> None:
        self.root = root
        self.share, self.box_data, self.secured = root / "smb/share", root / "box/data", root / "secured"
        self.mount = root / "mnt"
        self.key, self.known_hosts = root / "ssh/id_ed25519", root / "ssh/known_hosts"
        self.rclone_conf = root / "rclone.conf"
        self.procs: list[subprocess.Popen] = []

    # -- addresses the benchmark writes into its configs -----------------------------------------

    smb_port, ssh_port, box_port = LINKS["smb"].port, LINKS["ssh"].port, LINKS["box"].port
    smb_password = SMB_PASSWORD

    def smb_url(self, folder: str) -> str:
        return f"smb://{SMB_USER}@{NS_ADDR}:{self.smb_port}/share/{folder}"

    def ssh_target(self, path: Path) -> str:
        return f"root@{NS_ADDR}:{path}"

    def ssh_command(self) -> str:
        """The `-e` of an rsync to secured storage, as a person writes it."""
        return f"ssh -p {self.ssh_port} -i {self.key} -o UserKnownHostsFile={self.known_hosts} -o BatchMode=yes"

    # -- up and down --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        raise_on_signal()
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        self.down()  # what an interrupted run left, by the same names
        for d in (self.share, self.box_data, self.secured, self.mount, self.key.parent, self.root / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        self.network()
        self.samba()
        self.webdav()
        self.sshd()
        wait_in_ns([spec.port for spec in LINKS.values()])
        for name, spec in LINKS.items():
            self.proxy(name, spec)
        for spec in LINKS.values():
            wait_for_port(NS_ADDR, spec.port)
        self.write_rclone_conf()
        self.fuse_mount()
        sh("ssh", *self.ssh_command().split()[1:], f"root@{NS_ADDR}", "true")  # the whole way, once

    def down(self) -> None:
        """Unmount, stop every process this lab started (recorded in pids), delete the namespace and veth."""
        sh("fusermount3", "-u", "-z", str(self.mount), check=False)
        pids = [p.pid for p in self.procs] + self.recorded_pids()
        pids += [int(p) for p in sh("ip", "netns", "pids", NS, check=False).stdout.split()]
        stop_all(pids)
        self.procs.clear()
        (self.root / "pids").unlink(missing_ok=True)
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", VETH_HERE, check=False)

    def recorded_pids(self) -> list[int]:
        """Processes of an earlier run of this lab that still run the command it started them with."""
        found = []
        for line in (self.root / "pids").read_text().splitlines() if (self.root / "pids").exists() else []:
            pid, _, cmd = line.partition(" ")
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().startswith(cmd):
                    found.append(int(pid))
            except (OSError, ValueError):
                pass
        return found

    def spawn(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        """A process in its own process group, its output to logs/NAME.out, its pid recorded."""
        with open(self.root / "logs" / f"{name}.out", "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        with open(self.root / "pids", "a") as fh:
            shown = cmd[4:] if cmd[:3] == ["ip", "netns", "exec"] else cmd  # `ip netns exec` execs the command
            fh.write(f"{proc.pid} {' '.join(shown[:2])}\n")
        return proc

    def network(self) -> None:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", VETH_HERE, "type", "veth", "peer", "name", VETH_NS)
        sh("ip", "link", "set", VETH_NS, "netns", NS)
        sh("ip", "addr", "add", f"{HERE_ADDR}/30", "dev", VETH_HERE)
        sh("ip", "link", "set", VETH_HERE, "up")
        sh(*in_ns("ip", "addr", "add", f"{NS_ADDR}/30", "dev", VETH_NS))
        sh(*in_ns("ip", "link", "set", VETH_NS, "up"))
        sh(*in_ns("ip", "link", "set", "lo", "up"))

    def proxy(self, name: str, spec: LinkSpec) -> None:
        cmd = [sys.executable, str(HERE / "netlink.py"), "--listen", f"{NS_ADDR}:{spec.port}",
               "--target", f"127.0.0.1:{spec.port}", "--delay-ms", str(spec.delay_ms),
               "--rate-mbit", str(spec.rate_mbit)]  # fmt: skip
        self.spawn(f"link-{name}", in_ns(*cmd))

    # -- the servers --------------------------------------------------------------------------

    def samba(self) -> None:
        r = self.root / "smb"
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        conf = r / "smb.conf"
        conf.write_text(smb_conf(r, self.smb_port, self.share, SMB_USER))
        sh(need("smbpasswd"), "-c", str(conf), "-s", "-a", SMB_USER, input=f"{SMB_PASSWORD}\n{SMB_PASSWORD}\n")
        smbd = [need("smbd"), "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"]
        self.spawn("smbd", in_ns(*smbd))

    def webdav(self) -> None:
        cmd = [RCLONE, "serve", "webdav", str(self.box_data), "--addr", f"127.0.0.1:{self.box_port}",
               "--user", BOX_USER, "--pass", BOX_PASSWORD, "--config", "/dev/null",
               "--dir-cache-time", "1s"]  # fmt: skip
        self.spawn("webdav", in_ns(*cmd))

    def sshd(self) -> None:
        d = self.key.parent
        host_key = d / "host_ed25519"
        for key in (host_key, self.key):
            key.unlink(missing_ok=True)
            Path(f"{key}.pub").unlink(missing_ok=True)
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        auth = d / "authorized_keys"
        auth.write_text(Path(f"{self.key}.pub").read_text())
        auth.chmod(0o600)
        kind, body = Path(f"{host_key}.pub").read_text().split()[:2]
        host = NS_ADDR if self.ssh_port == 22 else f"[{NS_ADDR}]:{self.ssh_port}"
        self.known_hosts.write_text(f"{host} {kind} {body}\n")
        conf = d / "sshd_config"
        conf.write_text(
            f"""Port {self.ssh_port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {d}/sshd.pid
AuthorizedKeysFile {auth}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PermitRootLogin prohibit-password
StrictModes no
"""
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation folder
        self.spawn("sshd", in_ns(need("sshd"), "-D", "-e", "-f", str(conf)))

    def write_rclone_conf(self) -> None:
        """Box-Folder (the WebDAV server) and NAS (the share, for rclone's smb backend), through the links.

        pacer_min_sleep: rclone's WebDAV backend spaces one process's requests at least 10 ms apart by
        default, which caps a process at about 33 files a second whatever the link (375 figures: 12.1 s
        with 16 transfers; 3.8 s at 1 ms; 2.5 s with 32 transfers, the link's rate). The stand-in is a
        cloud without that pacing; every variant uses this same remote."""
        self.rclone_conf.write_text(
            f"[Box-Folder]\ntype = webdav\nurl = http://{NS_ADDR}:{self.box_port}/\nvendor = rclone\n"
            "pacer_min_sleep = 1ms\n"
            f"user = {BOX_USER}\npass = {obscure(BOX_PASSWORD)}\n\n"
            f"[NAS]\ntype = smb\nhost = {NS_ADDR}\nport = {self.smb_port}\nuser = {SMB_USER}\n"
            f"pass = {obscure(SMB_PASSWORD)}\n"
        )

    def fuse_mount(self) -> None:
        env = {**os.environ, "RCLONE_SMB_PASS": obscure(SMB_PASSWORD), "RCLONE_CONFIG": "/dev/null"}
        remote = f":smb,host={NS_ADDR},port={self.smb_port},user={SMB_USER}:share"
        cmd = [RCLONE, "mount", remote, str(self.mount), "--vfs-cache-mode", "off", "--dir-cache-time", "1s"]
        proc = self.spawn("mount", cmd, env)
        deadline = time.monotonic() + START_SECONDS
        while not os.path.ismount(self.mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FUSE mount did not appear (see {self.root / 'logs/mount.out'})")
            time.sleep(0.1)


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path:
        return path
    raise SystemExit(f"{program} is not installed (apt-get install samba openssh-server)")


def stop_all(pids: list[int], seconds: float = 5) -> None:
    """SIGTERM each process's group (each was started as a group leader), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in set(pids):
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, sig)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            for p in pids:
                reap(p)
            time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_for_port(host: str, port: int, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {seconds} s")


WAIT_SCRIPT = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
for port in map(int, sys.argv[2:]):
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on 127.0.0.1:{port} in the namespace")
        time.sleep(0.05)
"""


def wait_in_ns(ports: list[int]) -> None:
    """The servers listen on the namespace's loopback, which only a process inside it can reach."""
    cmd = in_ns(sys.executable, "-c", WAIT_SCRIPT, str(START_SECONDS), *map(str, ports))
    result = sh(*cmd, check=False, timeout=START_SECONDS + 10)
    if result.returncode:
        raise RuntimeError(result.stderr.strip() or "a server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold", type=float, default=600, help="seconds to keep it up (Ctrl-C ends sooner)")
    parser.add_argument("--down", action="store_true", help="only remove what an interrupted run left")
    args = parser.parse_args()
    if args.down:
        Lab().down()
        return 0
    with Lab() as lab:
        print(f"up: share {lab.smb_url('')} (mounted at {lab.mount}), Box-Folder in {lab.rclone_conf}, "
              f"secured {lab.ssh_target(lab.secured)} via `{lab.ssh_command()}`", flush=True)  # fmt: skip
        time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
