"""make report: the HTML page, rendered by a real headless browser (Debian's Chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def render(page, profile) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (make test installs it with apt-get as root)")
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_shows_the_runs_in_a_browser(lab, tmp_path):
    assert lab.cli().returncode == 0
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "/proc/forbidden"
    lab.save()
    assert lab.cli().returncode == 1
    runs = sorted(p.name for p in (lab.workdir / ".backup/runs").iterdir())
    page = tmp_path / "report.html"
    result = lab.cli("--report", str(page))
    assert result.returncode == 0 and page.exists()
    dom = render(page, tmp_path / "chromium")
    for run in runs:
        assert f"Run {run} (backup)" in dom
    assert dom.count('<table class="run">') == 2
    # Each run lists its five transfers; the failed one says why.
    assert len(re.findall(r"<td>secured</td><td>CSVs</td>", dom)) == 2
    failed = json.loads((lab.workdir / ".backup/runs" / runs[1] / "run.json").read_text())
    (error,) = [t["error"] for t in failed["transfers"] if t["status"] == "failed"]
    row = re.search(r"<td>secured</td><td>CSVs</td>.*?</tr>", dom.split(f"Run {runs[1]}")[1], re.S).group(0)
    assert "FAILED" in row and html.escape(error) in row
    # The ages are computed by the page's script in the browser.
    assert len(re.findall(r"\d+\.\d h ago", dom)) == 3
