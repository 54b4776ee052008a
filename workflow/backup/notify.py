"""Telling people: Healthchecks-style pings and Apprise notifications.

A monitor that cannot be reached only ever costs a warning in backup.log and at most
``timeout_seconds``: it never changes a backup's result. Notification URLs often hold
tokens, so they are never logged (only their scheme is).
"""

from __future__ import annotations

import socket

from . import summary


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://..." if "://" in url else "(url)"


def ping(url: str | None, event: str, log, timeout: float, body: str = "") -> bool:
    """GET/POST the Healthchecks convention: URL/start, URL (success), URL/fail."""
    if not url:
        return False
    import urllib.error  # only when there is a monitor to ping
    import urllib.request

    target = url.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    try:
        request = urllib.request.Request(target, data=body.encode()[:10000] if body else None, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
        return True
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("could not ping the monitor (%s, %s): %s", _scheme(url), event, type(exc).__name__)
        return False


def notify(urls: list[str], title: str, body: str, log, timeout: float, failure: bool) -> int:
    """Send one message to every Apprise URL; return how many accepted it."""
    if not urls:
        return 0
    import apprise  # imported only when someone is to be notified: it is slow to import

    sent = 0
    for url in urls:
        client = apprise.Apprise()
        if not client.add(url):
            log.warning("notification URL not understood by Apprise (%s)", _scheme(url))
            continue
        for server in client:
            # Bound every service by our timeout, whatever its plugin's default.
            server.socket_connect_timeout = server.socket_read_timeout = timeout
        kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.SUCCESS
        if client.notify(title=title, body=body, notify_type=kind):
            sent += 1
        else:
            log.warning("a notification could not be delivered (%s)", _scheme(url))
    return sent


def message(run_id: str, kind: str, exit_code: int, rows: list, pipeline) -> tuple[str, str]:
    """Title and body: which destination failed and why (errors are already masked).
    ``rows``: TransferRecords; ``pipeline``: a PipelineRecord (of a `run`) or None."""
    verdicts = {0: "succeeded", 1: "FAILED", 3: "finished with warnings", 129: "INTERRUPTED (SIGHUP)",
                130: "INTERRUPTED (SIGINT)", 143: "INTERRUPTED (SIGTERM)"}  # fmt: skip
    verdict = verdicts.get(exit_code, f"ended with {exit_code}")
    title = f"Lab backup {verdict} on {socket.gethostname()} (run {run_id})"
    lines = [f"{kind} run {run_id}: {verdict} (exit status {exit_code})"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"- {r.stage} {r.destination}/{r.dataset}: {r.status}: {summary.note(r)}")
    if pipeline and pipeline.status != "ok":
        lines.append(f"- pipeline: {pipeline.status}: {pipeline.error}")
    ok = sum(1 for r in rows if r.status == "ok")
    lines.append(f"{ok} of {len(rows)} transfers ok.")
    return title, "\n".join(lines)
