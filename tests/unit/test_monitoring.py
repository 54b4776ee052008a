"""monitoring.monitored: a start ping, then whatever the body does, a run record and exactly one end ping
(a real HTTP server on 127.0.0.1 plays the monitor and an Apprise json:// service)."""

from __future__ import annotations

import json

import pytest
from backup import logs, records
from backup.monitoring import monitored

PING = "/ping/abc"


def monitor(receiver, **extra) -> dict:
    return {"ping_url": receiver.url + PING, "timeout_seconds": 3, "on_failure": [], "on_success": [], **extra}


def begin(kind: str = "backup") -> records.RunRecord:
    return records.RunRecord(records.new_run_id(), kind=kind, started=records.now_iso())


def pings(receiver) -> list[str]:
    return [path for _, path, _ in receiver.requests if path.startswith(PING)]


def record(run: records.RunRecord, workdir) -> dict:
    return json.loads(records.run_record_path(run.run_id, workdir).read_text())


def test_success_pings_start_then_success_and_records_the_run(tmp_path, receiver):
    run = begin()
    with monitored(run, tmp_path, monitor(receiver), logs.setup(None, run.run_id)) as same:
        assert pings(receiver) == [PING + "/start"]  # before the body's work
        same.exit_status = 0
    assert pings(receiver) == [PING + "/start", PING]
    assert record(run, tmp_path)["exit_status"] == 0 and record(run, tmp_path)["finished"]


def test_a_warning_is_a_success(tmp_path, receiver):
    run = begin()
    with monitored(run, tmp_path, monitor(receiver), logs.setup(None, run.run_id)):
        run.exit_status = 3
    assert pings(receiver) == [PING + "/start", PING]


@pytest.mark.parametrize("status", [1, 130, None])  # failed, interrupted, never set by the body
def test_a_failing_or_missing_exit_status_pings_fail_once(tmp_path, receiver, status):
    run = begin()
    with monitored(run, tmp_path, monitor(receiver), logs.setup(None, run.run_id)):
        run.exit_status = status
    assert pings(receiver) == [PING + "/start", PING + "/fail"]
    assert record(run, tmp_path)["exit_status"] == (status or 1)


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("bug"), 1), (KeyboardInterrupt(), 130),
                                               (SystemExit(0), 1), (OSError(28, "No space"), 1)])  # fmt: skip
def test_an_exception_in_the_middle_pings_fail_writes_the_record_and_goes_on_up(tmp_path, receiver, error, status):
    run = begin("run")
    log_file = tmp_path / "backup.log"
    with pytest.raises(type(error)), monitored(run, tmp_path, monitor(receiver), logs.setup(log_file, run.run_id)):
        run.transfers.append(records.TransferRecord(run.run_id, "manual", "smb", "CSVs", status="ok"))
        run.exit_status = 0  # what the body had decided does not stand: it did not finish
        raise error
    assert pings(receiver) == [PING + "/start", PING + "/fail"]
    saved = record(run, tmp_path)
    assert saved["exit_status"] == status and saved["kind"] == "run" and len(saved["transfers"]) == 1
    assert type(error).__name__ in log_file.read_text()  # why, with its traceback, in backup.log


def test_an_exception_keeps_a_failing_status_the_body_had_set(tmp_path, receiver):
    run = begin()
    with pytest.raises(RuntimeError), monitored(run, tmp_path, monitor(receiver), logs.setup(None, run.run_id)):
        run.exit_status = 143  # stopped by SIGTERM, then something broke
        raise RuntimeError("after the stop")
    assert record(run, tmp_path)["exit_status"] == 143 and pings(receiver) == [PING + "/start", PING + "/fail"]


def test_a_record_that_cannot_be_written_fails_the_run_with_one_fail_ping(tmp_path, receiver, capsys):
    workdir = tmp_path / "work"
    workdir.write_text("a file where the state folder should be")
    run = begin()
    with monitored(run, workdir, monitor(receiver), logs.setup(None, run.run_id)):
        run.exit_status = 0
    assert run.exit_status == 1 and pings(receiver) == [PING + "/start", PING + "/fail"]
    assert "error: cannot write this run's record in" in capsys.readouterr().err


def test_the_end_notification_goes_to_the_failure_services(tmp_path, receiver):
    host = receiver.url.split("://", 1)[1]
    run = begin()
    watch = monitor(receiver, on_failure=[f"json://{host}/alert"], on_success=[f"json://{host}/ok"])
    with pytest.raises(ValueError), monitored(run, tmp_path, watch, logs.setup(None, run.run_id)):
        raise ValueError("broken")
    assert [path for _, path, _ in receiver.requests] == [PING + "/start", PING + "/fail", "/alert"]
