"""Live progress, read off a real terminal (tmux) while a large transfer runs; none without one."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from conftest import PROJECT, VENV_BIN

PROGRESS = re.compile(r"manual (secured|box)/CSVs: \d+% [\d.]+ [KMG]?B of [\d.]+ [KMG]?B.*/s")


def big_csv(lab, megabytes: int) -> None:
    block = os.urandom(1 << 20)
    with open(lab.csv_root / "all_envelope_rows_wide.csv", "wb") as fh:
        for i in range(megabytes):
            fh.write(block[:-4] + i.to_bytes(4, "big"))


def test_progress_is_shown_in_a_terminal(lab):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (make test installs it with apt-get as root)")
    big_csv(lab, 1000)
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.save()
    session = f"backup-test-{os.getpid()}"
    cli = [sys.executable, str(PROJECT / "scripts/backup_system.py"), "--config", str(lab.config_path),
           "--workdir", str(lab.workdir)]  # fmt: skip
    command = f"PATH={shlex.quote(str(VENV_BIN))}:$PATH {shlex.join(cli)}; echo DONE-$?; sleep 120"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", command], check=True)
    try:
        seen, screen = [], ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "DONE-" not in screen:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout  # fmt: skip
            seen += [m.group(0) for m in PROGRESS.finditer(screen)]
            time.sleep(0.1)
        assert "DONE-0" in screen, screen
        assert seen, "no progress line was ever on the screen"
        # When it ends, the status line is gone and the summary stands alone.
        assert "Backup summary:" in screen and not PROGRESS.search(screen.split("Backup summary:")[1])
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_no_progress_without_a_terminal(lab):
    big_csv(lab, 50)
    result = lab.cli()  # output captured: not a terminal
    assert result.returncode == 0
    assert "backup-progress" not in result.stdout and not PROGRESS.search(result.stdout)
    log = (lab.root / "backup.log").read_text()
    assert "backup-progress" not in log and "xfr#" not in log
