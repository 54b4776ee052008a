"""``python -m backup.engine ARGS``: Snakemake's own command line, without its job-rate limiter.

Snakemake's default ``--max-jobs-per-timespan 100/1s`` re-arms a one-second timer after
every scheduling round, and the interpreter waits for the last one at exit: one second
added to every run, longer than a whole backup that finds nothing to send. The backup
jobs are few (one per destination and dataset), so there is nothing to limit.

``--cluster``: a profile may send jobs to a cluster: the executor plugins installed apart from the
venv's own packages (``make setup-slurm``: CLUSTER_PACKAGES) are put on Python's path, for
Snakemake here and, through PYTHONPATH, for the Snakemake a cluster job runs. Without it
Snakemake never sees them: it imports every executor plugin it finds at start, and the SLURM
plugin brings pandas (which Snakemake, finding it, also imports to store jobs' params): a second
and 50 MB more for every run that sends nothing to a cluster.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys

WAIT = "--wait"
CLUSTER = "--cluster"
CLUSTER_PACKAGES = "cluster-packages"  # in the venv's folder (sys.prefix): see the Makefile's setup-slurm


def add_cluster_packages() -> None:
    """The cluster's executor plugins, after the venv's own packages (which win where both hold one)."""
    folder = os.path.join(sys.prefix, CLUSTER_PACKAGES)
    if os.path.isdir(folder):
        sys.path.append(folder)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), folder]))


def main(argv: list[str] | None = None) -> int:
    """``--wait``: import Snakemake first, then read {"argv": [...], "env": {...}} from one line of
    standard input (nothing: exit), so that the import overlaps the CLI's own checks."""
    from backup import PROJECT_DIR, interrupts, jobserver

    interrupts.stop_own_group_on_signal()  # first: a stop may come while Snakemake is imported
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CLUSTER]:
        add_cluster_packages()
        argv = argv[1:]
    # Snakemake's import makes some hundred thousand objects and no garbage: the collector, running
    # again and again through them meanwhile, costs a tenth of each run's CPU. Collected afterwards
    # as usual, the imported objects set aside (frozen), not traversed again.
    gc.disable()
    from snakemake import cli

    gc.freeze()
    gc.enable()
    if argv == [WAIT]:
        line = sys.stdin.readline()
        if not line:
            return 0  # the command line stopped before it needed Snakemake
        message = json.loads(line)
        os.environ.update(message["env"])
        argv = message["argv"]
        # The jobs' server imports the package while Snakemake reads the workflow (jobserver.py).
        jobserver.JobServer.shared(str(PROJECT_DIR / "workflow")).start()
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
