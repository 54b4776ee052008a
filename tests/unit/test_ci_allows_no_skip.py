"""Under CI=true a skipped test is a failed one (a missing server must not hide behind a green run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    probe = tmp_path / "test_probe.py"
    probe.write_text("import pytest\n\ndef test_needs_smbd():\n    pytest.skip('smbd is missing')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    env["PYTHONPATH"] = str(TESTS)
    # --basetemp: pytest's own temporary folders under tmp_path, or it would first clear away the
    # oldest of the earlier runs' (a whole suite's, tens of seconds).
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "--rootdir", str(tmp_path),
           "--basetemp", str(tmp_path / "basetemp"), str(probe)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_a_skip_fails_under_ci(tmp_path):
    result = run_probe(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "skipped under CI=true, which allows no skip: Skipped: smbd is missing" in result.stdout


def test_a_skip_stays_a_skip_elsewhere(tmp_path):
    result = run_probe(tmp_path, None)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
