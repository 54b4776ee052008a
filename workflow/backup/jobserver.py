"""The jobs of a Snakemake run, forked from one process that has already imported the package.

Each job (sync, archive, gate, pipeline, report, restore) is what ``python -m backup JOB ...``
runs. Started as that command, every job is a new interpreter importing the package and the
standard library behind it: 0.15-0.2 s of CPU before it does anything, for each job of each
run, more than a job that finds nothing to send does afterwards. The job server is started at a
run's first job, imports the package once, and forks a child per job that runs ``jobs.main``
just as ``python -m backup`` would: a process of its own in the run's process group (stopped
with it, see interrupts.py), writing to the same standard output, its exit status going back to
the rule that asked.

The rule's thread and the server talk over a socket pair; each job brings a socket pair of its
own, whose far end travels with the request (SCM_RIGHTS), so nothing listens at an address
another user could reach. If the server cannot be reached, the job runs as
``python -m backup``, as it always could.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import traceback

REQUEST_SIZE = 1 << 20  # a request is one job's argument list: far less


class JobServer:
    """The Snakemake process's side: ``run(argv)`` from any rule's thread. One per process
    (``shared``): the engine starts it early (``start``), the Snakefile's rules use it."""

    _shared: JobServer | None = None

    def __init__(self, package_dir: str) -> None:
        self.package_dir = package_dir
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    @classmethod
    def shared(cls, package_dir: str) -> JobServer:
        if cls._shared is None:
            cls._shared = cls(package_dir)
        return cls._shared

    def start(self) -> None:
        """Start the server now (it imports the package while Snakemake reads the workflow)."""
        with self._lock:
            self._server()

    def run(self, argv: list[str], tmpdir: str | None = None) -> None:
        """Run ``python -m backup ARGV``, forked (a dead server is started again), or as that command
        if no server can be started; a job that exits non-zero raises CalledProcessError, as
        Snakemake's ``shell()`` would. ``tmpdir``: the job's TMPDIR (Snakemake's tmpdir resource,
        which ``shell()`` also passes on)."""
        env = {"TMPDIR": tmpdir} if tmpdir else {}
        code = self._forked(argv, env)
        if code is None:
            code = subprocess.run([sys.executable, "-m", "backup", *argv], env={**self._env(), **env}).returncode
        if code != 0:
            raise subprocess.CalledProcessError(code, ["python", "-m", "backup", *argv])

    def _forked(self, argv: list[str], env: dict[str, str]) -> int | None:
        """The job's exit status, or None if the server could not take it (nothing was run)."""
        mine, theirs = socket.socketpair()
        with mine:
            try:
                with self._lock, theirs:
                    request = json.dumps({"argv": argv, "env": env}).encode()
                    socket.send_fds(self._server(), [request], [theirs.fileno()])
            except OSError:
                return None
            reply = b""
            while chunk := mine.recv(64):
                reply += chunk
        if not reply:  # the server died while the job ran: what became of the job is not known
            raise subprocess.CalledProcessError(-1, ["python", "-m", "backup", *argv], "the job server stopped")
        return int(reply)

    def _env(self) -> dict[str, str]:
        """The environment a job had as `PYTHONPATH=PACKAGE_DIR python -m backup` (from Snakemake's)."""
        return {**os.environ, "PYTHONPATH": self.package_dir}

    def _server(self) -> socket.socket:
        if self._proc is None or self._proc.poll() is not None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                command = [sys.executable, "-m", "backup.jobserver", str(theirs.fileno())]
                self._proc = subprocess.Popen(
                    command, pass_fds=[theirs.fileno()], env=self._env(), stdin=subprocess.DEVNULL
                )
            if self._socket:
                self._socket.close()
            self._socket = ours
        assert self._socket is not None
        return self._socket


def serve(fd: int) -> None:
    """The server: fork a child per request until the Snakemake process closes its end."""
    from backup import jobs, transfer, transports  # noqa: F401 - imported here once, not in every job

    control = socket.socket(fileno=fd)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the job's reply socket)
    while True:
        for key, _events in selector.select():
            if key.fileobj is control:
                request, fds, _flags, _address = socket.recv_fds(control, REQUEST_SIZE, 1)
                if not request:
                    return  # Snakemake has exited; a job still running is its process group's to stop
                reply = socket.socket(fileno=fds[0])
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(request), [control, reply, *(r for _pid, r in running.values())], selector)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, reply)
                selector.register(pidfd, selectors.EVENT_READ)
            else:
                pidfd = key.fd
                pid, reply = running.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _pid, status = os.waitpid(pid, 0)
                with reply, contextlib.suppress(OSError):
                    reply.sendall(str(os.waitstatus_to_exitcode(status)).encode())


def _child(request: dict, inherited: list[socket.socket], selector: selectors.BaseSelector) -> None:
    """In the forked child: run the job as ``python -m backup`` would, then exit with its status."""
    from backup import jobs

    code = 1
    try:
        selector.close()
        for sock in inherited:  # the server's: held here, they would outlive the server's own
            sock.close()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # found again from TMPDIR
        sys.argv = ["python -m backup", *request["argv"]]
        code = jobs.main(request["argv"])
    except SystemExit as exc:  # argparse's usage errors, sys.exit in a job: as the interpreter treats them
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - a bug in a job: its traceback, as the interpreter prints it
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
