"""make report: "are my backups OK?" at a glance, rendered by a real headless browser (Debian's Chromium).

The page's DOM, as Chromium leaves it after running the page's script, is asserted on: the verdict
line, one green/amber/red row per destination, errors folded in <details>, times with their zone,
ages in min/h/days (written by the server, then recomputed by the browser)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta

import pytest
import yaml
from backup import report
from conftest import SavedLab, run_cli

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DESTINATIONS = ["smb", "box", "secured"]
# A zone with a name that differs from the test machine's usual UTC: the page must say which it is.
ZONE = "America/New_York"
LOCAL_TIME = re.compile(r"<time datetime=\"[^\"]+\">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (EST|EDT)</time>")


def render(page, profile) -> str:
    """The DOM after the page's script ran. Without Chromium: a skip on a workstation, a failure in CI."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        message = "chromium is not installed (make test installs it with apt-get as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def first_backup(tmp_path_factory) -> SavedLab:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TZ", ZONE)
        return SavedLab.after_first_backup(tmp_path_factory.mktemp("first-backup"))


@pytest.fixture
def backed_up(first_backup):
    """A Lab after one successful backup to every destination, in ZONE (a copy of this module's)."""
    return first_backup.fresh()


@pytest.fixture
def make_report(tmp_path, monkeypatch):
    """`--report FILE` in ZONE (from the test's start: its runs too); returns (the file's own HTML,
    the browser's DOM)."""
    monkeypatch.setenv("TZ", ZONE)

    def make(lab) -> tuple[str, str]:
        page = tmp_path / "report.html"
        result = lab.cli("--report", str(page))
        assert result.returncode == 0 and result.stdout.strip() == f"wrote {page}", result.stderr
        return page.read_text(), render(page, tmp_path / "chromium")

    return make


def verdict(dom: str) -> tuple[str, str]:
    """The verdict line's colour and its text (tags removed)."""
    found = re.search(r'<p id="verdict" class="verdict (\w+)">(.*?)</p>', dom, re.S)
    assert found, dom[:3000]
    return found.group(1), html.unescape(re.sub(r"<[^>]+>", "", found.group(2)))


def row(dom: str, dest: str) -> tuple[str, str]:
    """A destination's row: its colour and its HTML."""
    found = re.search(rf'<tr class="dest (\w+)" id="dest-{dest}">(.*?)</tr>', dom, re.S)
    assert found, dom[:3000]
    return found.group(1), found.group(2)


def runs(dom: str) -> list[tuple[str, str]]:
    """The runs listed, newest first: each one's colour and its one-line summary."""
    return re.findall(r'<details class="run (\w+)"[^>]*><summary>(.*?)</summary>', dom, re.S)


def status_verdicts(lab) -> dict[str, str]:
    """What --status says of each destination (its status column)."""
    out = lab.cli("--status").stdout.splitlines()[2:]
    return {line.split()[0]: line for line in out if line.strip()}


def test_report_of_healthy_backups_says_all_ok(lab, make_report):
    assert lab.cli().returncode == 0
    raw, dom = make_report(lab)
    colour, text = verdict(dom)
    assert colour == "green" and text.startswith("All backups OK: smb, box and secured."), text
    for dest in DESTINATIONS:
        assert row(dom, dest)[0] == "green"
        assert '<span class="badge">ok</span>' in row(dom, dest)[1]
    assert '<details class="error">' not in dom
    # Local time with its zone, for each last success and the page itself.
    assert len(LOCAL_TIME.findall(dom)) >= 4, dom
    # Ages: written by the server (readable without JavaScript), recomputed by the browser.
    assert re.search(r'<span class="age" data-when="[^"]+">under 1 min ago</span>', raw)
    live = re.findall(r'<span class="age live" data-when="[^"]+">([^<]*)</span>', dom)
    assert len(live) >= 5 and set(live) <= {"under 1 min ago", "1 min ago"}, live
    ((run_colour, summary),) = runs(dom)
    assert run_colour == "green" and "smb ok, box ok, secured ok" in summary
    assert len(re.findall(r'<tr class="green"><td>manual</td>', dom)) == 5


def test_report_names_a_failing_destination_and_folds_its_error(backed_up, make_report):
    lab = backed_up
    shutil.rmtree(lab.secured / "CSVs")
    (lab.secured / "CSVs").write_text("a file where the CSVs folder was: nothing can be written into it")
    assert lab.cli().returncode == 1
    _raw, dom = make_report(lab)
    colour, text = verdict(dom)
    assert colour == "red", text
    assert text.startswith("NOT OK: secured FAILING (the last run failed)") and text.endswith("OK: smb and box."), text
    assert [row(dom, d)[0] for d in DESTINATIONS] == ["green", "green", "red"]
    # The error: one line, the whole of it on demand (a closed <details>).
    newest = sorted((lab.workdir / ".backup/runs").iterdir())[-1]
    record = json.loads((newest / "run.json").read_text())
    (error,) = [t["error"] for t in record["transfers"] if t["status"] == "failed"]
    cell = row(dom, "secured")[1]
    fold = re.search(r'<details class="error"><summary>([^<]*)</summary><pre>([^<]*)</pre></details>', cell)
    assert fold, cell
    summary, details = html.unescape(fold.group(1)), html.unescape(fold.group(2))
    assert summary.startswith("CSVs: ") and "\n" not in summary and len(summary) <= 100
    assert details == f"CSVs: {error}"
    assert LOCAL_TIME.search(cell)  # when it failed
    # --status says the same.
    said = status_verdicts(lab)
    assert "FAILING (the last run failed)" in said["secured"] and said["smb"].split()[-1] == "ok"
    # The runs: the failed one first, red, naming the destination; its error folded too.
    assert [(c, "secured FAILED" in s) for c, s in runs(dom)] == [("red", True), ("green", False)]
    assert dom.count('<details class="error">') == 2


def test_report_shows_a_stale_destination_in_amber(lab, make_report):
    warn_seconds = 10.8
    lab.config["backups"]["warn_after_hours"] = warn_seconds / 3600  # 0.003 h
    lab.save()
    assert lab.cli().returncode == 0
    time.sleep(warn_seconds + 1)  # secured's success is now overdue ...
    secured = lab.config["backups"]["destinations"]["secured"]
    secured["enabled"] = False  # ... while smb and box succeed again, in one run
    lab.save()
    assert lab.cli().returncode == 0
    secured["enabled"] = True
    lab.save()
    # Status first, then the report: each must read smb's success within the window, also on a slow machine.
    said = status_verdicts(lab)
    _raw, dom = make_report(lab)
    colour, text = verdict(dom)
    assert colour == "amber", text
    stale = r"NOT OK: secured OVERDUE \(> 0\.003 h\), last success (under )?1 min ago\. OK: smb and box\."
    assert re.fullmatch(stale, text), text
    assert [row(dom, d)[0] for d in DESTINATIONS] == ["green", "green", "amber"]
    assert "OVERDUE (&gt; 0.003 h)" in row(dom, "secured")[1]
    assert "OVERDUE" in said["secured"] and "OVERDUE" not in said["smb"] + said["box"]
    assert "amber</span> OVERDUE" in dom  # the legend says what amber means


def test_report_speaks_only_of_this_configs_destinations(backed_up, make_report, tmp_path):
    """A destination moved elsewhere: its old success there no longer counts, nor is it listed; the runs
    of another config in the same folder (here: between two of this config's) are not listed at all."""
    lab = backed_up
    other = yaml.safe_load(yaml.safe_dump(lab.config))
    for name, dest in other["backups"]["destinations"].items():
        dest["enabled"] = name != "box"
        if "base_path" in dest:
            dest["base_path"] = str(tmp_path / "elsewhere" / name)
            dest.pop("csvs_path", None), dest.pop("results_path", None)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    ours = {p.name for p in (lab.workdir / ".backup/runs").iterdir()}
    assert run_cli("--config", str(tmp_path / "other.yaml"), workdir=lab.workdir).returncode == 0
    (other_run,) = {p.name for p in (lab.workdir / ".backup/runs").iterdir()} - ours
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "/proc/forbidden"
    lab.save()
    assert lab.cli().returncode == 1
    all_runs = sorted(p.name for p in (lab.workdir / ".backup/runs").iterdir())
    assert len(all_runs) == 3 and all_runs[1] == other_run
    _raw, dom = make_report(lab)
    colour, text = verdict(dom)
    assert colour == "red" and text.startswith("NOT OK: secured FAILING"), text
    assert row(dom, "secured")[0] == "red" and ">never<" in row(dom, "secured")[1]
    # The other config's run is not there; the earlier run lists smb and box, not secured's old place.
    assert f'id="run-{other_run}"' not in dom
    listed = runs(dom)
    assert len(listed) == 2 and "The last 2 runs from this machine" in dom
    assert listed[0][0] == "red" and "secured FAILED" in listed[0][1]
    assert listed[1][0] == "green" and listed[1][1].endswith("smb ok, box ok"), listed[1][1]


def test_ages_read_the_same_with_and_without_javascript(tmp_path):
    """The server's fallback text and the browser's script say the same age, in min, h or days."""
    now = datetime.now().astimezone()
    ages = {"under 1 min ago": timedelta(seconds=20), "12 min ago": timedelta(minutes=12, seconds=20),
            "5 h ago": timedelta(hours=5, minutes=10), "3 days ago": timedelta(days=3, hours=2)}  # fmt: skip
    spans = [report.ago((now - delta).isoformat(timespec="seconds"), now) for delta in ages.values()]
    page = tmp_path / "ages.html"
    page.write_text(f"<!doctype html><body>{'|'.join(spans)}<script>{report.SCRIPT}</script></body>")
    fallback = re.findall(r'<span class="age" data-when="[^"]+">([^<]*)</span>', page.read_text())
    browser = re.findall(r'<span class="age live" data-when="[^"]+">([^<]*)</span>', render(page, tmp_path / "c"))
    assert fallback == browser == list(ages)
    # The thresholds, on the server's side.
    assert [report.age_text(h) for h in (59.9 / 60, 1, 47.9, 48, -1)] == [
        "59 min ago", "1 h ago", "47 h ago", "2 days ago", "under 1 min ago",
    ]  # fmt: skip
