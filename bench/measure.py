"""Time a command and sample the memory of its whole process tree.

Peak memory is the largest sum, over one sample, of the proportional set size (PSS,
from /proc/PID/smaps_rollup) of the command and every process below it: shared pages
(the Python interpreter, libc) count once, not once per process. Samples every 20 ms.
Reading smaps_rollup costs the kernel a walk of each process's memory, enough to slow a
two-core machine down, so timed runs do not sample memory (``memory=False``): they only
note when the first transfer process (rsync, or rclone copy) appeared.
"""

from __future__ import annotations

import csv
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    seconds: float
    peak_mb: float | None  # the whole tree's PSS at its largest (None: not sampled)
    first_transfer: float | None  # seconds from start until the first rsync / rclone copy began


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_transfer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    name = os.path.basename(argv[0])
    return name == b"rsync" or (name == b"rclone" and b"copy" in argv)


class Sampler(threading.Thread):
    def __init__(self, root: int, memory: bool, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root, self.memory, self.interval = root, memory, interval
        self.peak_kb, self.first_transfer_at = 0, None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            tree, todo, total = _children(), [self.root], 0
            while todo:
                pid = todo.pop()
                total += _pss_kb(pid) if self.memory else 0
                kids = tree.get(pid, [])
                todo += kids
                if self.first_transfer_at is None and any(_is_transfer(k) for k in kids):
                    self.first_transfer_at = time.perf_counter()
            self.peak_kb = max(self.peak_kb, total)
            self.done.wait(self.interval)


def run(cmd: list[str], cwd=None, env=None, ok=(0,), memory: bool = False) -> Measured:
    """Run ``cmd`` to its end; wall time, first transfer start, and (``memory``) peak tree memory."""
    os.sync()  # nobody pays for the dirty pages another command left
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid, memory, 0.02 if memory else 0.01)
    sampler.start()
    output, _ = proc.communicate()
    elapsed = time.perf_counter() - t0
    sampler.done.set()
    sampler.join()
    if proc.returncode not in ok:
        tail = output.decode(errors="replace").strip().splitlines()[-15:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))[:200]}\n" + "\n".join(tail))
    first = sampler.first_transfer_at - t0 if sampler.first_transfer_at else None
    return Measured(elapsed, round(sampler.peak_kb / 1024, 1) if memory else None, first)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """The rows as CSV (every key any row has), so that runs can be compared."""
    path.parent.mkdir(exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
