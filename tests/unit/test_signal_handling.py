"""interrupts.Interrupts: a signal before anything runs ends the command; after, it is passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from backup import interrupts


def test_a_signal_before_the_run_raises_and_after_it_is_passed_on_to_the_group():
    watcher = interrupts.Interrupts().install()
    try:
        with pytest.raises(interrupts.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode
        assert watcher.exit_code == 130 and watcher.name == "SIGINT"
        watcher.signum, watcher.deferred = 0, True
        child = subprocess.Popen(["sleep", "30"], process_group=0)
        watcher.watch(child.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        assert child.wait(timeout=10) == -interrupts.STOP  # sleep does not handle STOP: it ended by it
        assert watcher.exit_code == 143
    finally:
        watcher.uninstall()
