"""A backup run watched from its start to its end, whatever happens in between.

``with monitored(run, workdir, monitor, log):`` sends the monitor's start ping on entering.
The body fills in the run's record (its transfers, pipeline and exit status). On leaving, in
every case, the record is written (.backup/runs/RUN_ID/run.json), then exactly one end ping is
sent, success or fail, and the notifications: fail for a failing exit status, for a body that
never set one, and for any exception (KeyboardInterrupt and SystemExit too), which goes on up.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import notify, records, summary


def failing(exit_status: int | None) -> bool:
    return exit_status not in (summary.EXIT_OK, summary.EXIT_WARNINGS)


@contextmanager
def monitored(run: records.RunRecord, workdir: Path, monitor: dict, log) -> Iterator[records.RunRecord]:
    """Yield ``run`` for the body to fill in; see the module docstring. ``monitor``: backups.notify."""
    notify.ping(monitor["ping_url"], "start", log, monitor["timeout_seconds"])
    try:
        yield run
    except BaseException as exc:
        if not failing(run.exit_status):  # what the body decided before it stopped stands if it failed
            ctrl_c = 128 + signal.SIGINT
            run.exit_status = ctrl_c if isinstance(exc, KeyboardInterrupt) else summary.EXIT_FAILED
        log.error("the run stopped on %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
    finally:
        _end(run, workdir, monitor, log)


def _end(run: records.RunRecord, workdir: Path, monitor: dict, log) -> None:
    """The run's record, then its one end ping and its notifications (also if the record cannot be written)."""
    if run.exit_status is None:
        run.exit_status = summary.EXIT_FAILED
    run.finished = records.now_iso()
    try:
        records.write_record(records.run_record_path(run.run_id, workdir), run)
    except OSError as exc:  # the project's own disk (full?): the destinations hold what the summary says
        if not failing(run.exit_status):
            run.exit_status = summary.EXIT_FAILED
        where = records.run_dir(run.run_id, workdir)
        print(f"\nerror: cannot write this run's record in {where}: {exc.strerror} (is the project's disk full?); "
              "each destination holds what the summary above says", file=sys.stderr)  # fmt: skip
    finally:
        failed = failing(run.exit_status)
        title, body = notify.message(run.run_id, run.kind, run.exit_status, run.transfers, run.pipeline)
        notify.ping(monitor["ping_url"], "fail" if failed else "success", log, monitor["timeout_seconds"], body)
        told = notify.notify(monitor["on_failure" if failed else "on_success"], title, body, log,
                             monitor["timeout_seconds"], failed)  # fmt: skip
        if told:
            log.info("notified %d services", told)
        log.info("finished with exit status %d", run.exit_status)
