"""``python -m backup.engine ARGS``: Snakemake's own command line, without its job-rate limiter.

Snakemake's default ``--max-jobs-per-timespan 100/1s`` re-arms a one-second timer after
every scheduling round, and the interpreter waits for the last one at exit: one second
added to every run, longer than a whole backup that finds nothing to send. The backup
jobs are few (one per destination and dataset), so there is nothing to limit.
"""

from __future__ import annotations

import json
import logging
import os
import sys

WAIT = "--wait"


def main(argv: list[str] | None = None) -> int:
    """``--wait``: import Snakemake first, then read {"argv": [...], "env": {...}} from one line of
    standard input (nothing: exit), so that the import overlaps the CLI's own checks."""
    from backup import interrupts

    interrupts.stop_own_group_on_signal()  # first: a stop may come while Snakemake is imported
    from snakemake import cli

    argv = sys.argv[1:] if argv is None else argv
    if argv == [WAIT]:
        line = sys.stdin.readline()
        if not line:
            return 0  # the command line stopped before it needed Snakemake
        message = json.loads(line)
        os.environ.update(message["env"])
        argv = message["argv"]
    try:
        parser, args = cli.parse_args(argv)
        args.max_jobs_per_timespan = None
        ok = cli.args_to_api(args, parser)
    except Exception as exc:  # noqa: BLE001 - printed the way snakemake's own main prints it
        cli.print_exception(exc)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    code = main()
    # Snakemake is done: its lock is released and its log written. Flush and leave without the
    # interpreter's teardown of every module Snakemake imported (a tenth of a second, each run).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
