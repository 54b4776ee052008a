"""Notifications: a real HTTP server on 127.0.0.1 (conftest.Receiver) receives the pings and an Apprise JSON message."""

from __future__ import annotations

import json
import socket
import time


def configure(lab, receiver_url, **extra):
    host_port = receiver_url.split("://", 1)[1]
    lab.config["backups"]["notify"] = {
        "ping_url": f"{receiver_url}/ping/abc-123",
        "on_failure": [f"json://{host_port}/alert"],
        "on_success": [f"json://{host_port}/ok"],
        "timeout_seconds": 3,
        **extra,
    }
    lab.save()


def test_success_pings_start_and_success_and_notifies(lab, receiver):
    configure(lab, receiver.url)
    result = lab.cli()
    assert result.returncode == 0, result.stdout
    paths = [path for _, path, _ in receiver.requests]
    assert paths[0] == "/ping/abc-123/start"
    assert "/ping/abc-123" in paths and "/ok" in paths and "/alert" not in paths
    (body,) = [json.loads(b) for _, p, b in receiver.requests if p == "/ok"]
    assert "succeeded" in body["title"] and "5 of 5 transfers ok" in body["message"]


def test_failure_pings_fail_and_names_the_destination(lab, receiver):
    configure(lab, receiver.url)
    lab.config["backups"]["destinations"]["secured"]["base_path"] = "/proc/forbidden"
    lab.save()
    result = lab.cli()
    assert result.returncode == 1
    paths = [path for _, path, _ in receiver.requests]
    assert "/ping/abc-123/fail" in paths and "/alert" in paths and "/ok" not in paths
    (body,) = [json.loads(b) for _, p, b in receiver.requests if p == "/alert"]
    assert "FAILED" in body["title"]
    assert "manual secured/CSVs: failed:" in body["message"]
    fail_ping = next(b for _, p, b in receiver.requests if p == "/ping/abc-123/fail").decode()
    assert "secured/CSVs" in fail_ping


def test_unreachable_notifier_changes_nothing(lab):
    # One port where nothing listens, one that accepts and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    port = silent.getsockname()[1]
    try:
        lab.config["backups"]["notify"] = {
            "ping_url": f"http://127.0.0.1:{port}/ping",
            "on_success": ["json://127.0.0.1:1/nothing-here"],
            "timeout_seconds": 2,
        }
        lab.save()
        t0 = time.monotonic()
        result = lab.cli()
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert result.returncode == 0, result.stdout
    assert elapsed < 60
    log = (lab.root / "backup.log").read_text()
    assert "could not ping the monitor (http://..., start)" in log
    assert "could not be delivered (json://...)" in log
    assert f"127.0.0.1:{port}" not in log  # notification URLs may hold tokens: never logged
    assert f"127.0.0.1:{port}" not in result.stdout + result.stderr
