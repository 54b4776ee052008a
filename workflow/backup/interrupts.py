"""Ctrl-C, SIGINT and SIGTERM stop the whole run, and nothing outlives the command line.

The command line runs Snakemake in a process group of its own, so that a Ctrl-C reaches only
the command line: it then stops that group (Snakemake, its jobs, rsync, rclone, the pipeline),
waits until every process of it has exited, and only then records the run as interrupted and
frees the project's lock (a second run must never start beside a first one's rsync). If the
command line itself is killed (SIGKILL), the kernel tells Snakemake (``die_with_parent``),
which stops its group the same way.

``STOP`` is how the group is told: Snakemake turns SIGTERM into "wait for the running jobs
to finish", which can take hours, so the engine listens for a signal of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time

STOP = signal.SIGUSR1
PR_SET_PDEATHSIG = 1
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
KILL_AFTER = 30.0  # seconds after a stop before what is left of the run is killed


def die_with_parent(parent: int) -> None:
    """For ``preexec_fn``: the child gets ``STOP`` when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(STOP), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request above: stop at once
        os._exit(EXIT_CODES[signal.SIGTERM])


def stop_own_group_on_signal() -> None:
    """In the engine (the leader of its group): on ``STOP``, SIGTERM every process of the group
    (jobs, rsync, rclone, the pipeline) and exit without Snakemake's wait for running jobs."""

    def stop(signum, _frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is not for this process
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGTERM)
        os._exit(EXIT_CODES[signal.SIGTERM])

    signal.signal(STOP, stop)


def _members(group: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == group:
            found.append(int(entry.name))
    return found


def _gone(group: int, seconds: float) -> bool:
    """Wait (bounded) until no live process of the group is left."""
    deadline = time.monotonic() + seconds
    while _members(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def wait_group(group: int, seconds: float = 20.0) -> None:
    """After the leader exited: wait (bounded) for the rest of its group, then kill what is left."""
    if not _gone(group, seconds):
        _kill(group)
        _gone(group, 5)


def _kill(group: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)


class Interrupted(Exception):
    """A signal came before anything needed stopping: the command ends where it is."""


class Interrupts:
    """While installed: SIGINT, SIGTERM and SIGHUP, instead of a KeyboardInterrupt somewhere.
    Before ``deferred`` is set, the first one raises ``Interrupted`` (nothing runs yet that must
    be stopped or recorded); after, it is remembered (``signum``) and passed on to the watched
    process groups, and the command line finishes the run itself."""

    def __init__(self) -> None:
        self.signum = 0
        self.deferred = False
        self.groups: set[int] = set()
        self.previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def install(self) -> Interrupts:
        for sig in EXIT_CODES:
            self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def watch(self, group: int) -> None:
        self.groups.add(group)
        if self.signum:  # the signal came while the group was being started
            self._tell(group)

    def done(self, group: int) -> None:
        """The group's leader has exited and been waited for: its id may be reused, never signal it."""
        self.groups.discard(group)

    def _on_signal(self, signum, _frame) -> None:
        first = not self.signum
        self.signum = self.signum or signum
        if not self.deferred:
            raise Interrupted(signum)
        if first:
            for group in self.groups:
                self._tell(group)
            # A process that ignores SIGTERM must not keep the run (and the lock) forever.
            timer = threading.Timer(KILL_AFTER, self._kill_all)
            timer.daemon = True
            timer.start()

    def _kill_all(self) -> None:
        for group in list(self.groups):
            _kill(group)

    @staticmethod
    def _tell(group: int) -> None:
        with contextlib.suppress(OSError):
            os.killpg(group, STOP)
