"""The command line's Snakemake child (engine_client.Engine), started before it is known to be needed."""

from __future__ import annotations

import signal

from backup import interrupts
from backup.engine_client import Engine


def test_a_child_told_nothing_is_stopped_at_once_not_left_to_import_snakemake(tmp_path):
    """A config error or a held lock cancels the child before it was given a run: it is killed
    (it has started nothing), instead of finishing its second of importing Snakemake first."""
    engine = Engine(tmp_path, interrupts.Interrupts())
    engine.cancel()
    assert engine.proc.returncode == -signal.SIGKILL


def test_a_child_that_was_given_a_run_is_never_killed_by_cancel(tmp_path):
    engine = Engine(tmp_path, interrupts.Interrupts())
    code, lines = engine.run([str(tmp_path / "missing.yaml")], ["backup_all"], "20261202-000000-test", None, 1, [])
    assert code != 0 and any("missing.yaml" in line for line in lines), lines  # Snakemake ran, and said why it failed
    engine.cancel()  # after its run: nothing left to stop
    assert engine.proc.returncode == code
