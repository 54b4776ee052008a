"""backup and run: Snakemake runs the jobs (run: backup pre -> the pipeline -> backup post), then
this prints the summary from the run's marker files and sets the exit status; the monitor sees
the run from its start to its end and the run's record is written whatever happens."""

from __future__ import annotations

import os
from pathlib import Path

from .. import config, logs, monitoring, plan, records, runner, summary, transports
from ..engine_client import Engine
from . import Context, locked, preflight
from .prune import after_backup


def main(args, cfg: dict, workdir: Path, ctx: Context) -> int:
    status = preflight.check(args, cfg, workdir, ctx)
    if status != summary.EXIT_OK:
        return status

    def run() -> int:
        # From here on a signal stops the jobs, and the run is recorded, before the lock is freed.
        ctx.interrupts.deferred = True
        return _run(args, cfg, workdir, ctx, ctx.engine or Engine(workdir, ctx.interrupts, args.profile))

    return locked(workdir, ctx.command, run)


def _run(args, cfg: dict, workdir: Path, ctx: Context, engine: Engine) -> int:
    run = records.RunRecord(records.new_run_id(), kind=args.command, command=ctx.command, config=ctx.config_files,
                            started=records.now_iso())  # fmt: skip
    log_file = cfg["backups"]["log_file"]
    log = logs.setup(plan.absolute(log_file, str(workdir)), run.run_id, "cli")
    log.info("started: %s (config %s)", args.command, ", ".join(ctx.config_files))
    with monitoring.monitored(run, workdir, cfg["backups"]["notify"], log):
        print(f"Run {run.run_id}: {args.command}, config {', '.join(ctx.config_files)}")
        returncode, lines = _snakemake(args, cfg, ctx, engine, run.run_id)
        run.exit_status = _outcome(args, workdir, ctx.transfers, engine.interrupts, run, returncode, lines, log)
        if cfg["backups"]["prune_after_backup"] and not monitoring.failing(run.exit_status):
            run.exit_status = after_backup(cfg, workdir, args.only, run.exit_status, log)
    print(f"\nLog: {log_file}   Run records: .backup/runs/{run.run_id}/   Exit status: {run.exit_status}")
    return run.exit_status


def _snakemake(args, cfg: dict, ctx: Context, engine: Engine, run_id: str) -> tuple[int, list[str]]:
    """Run the jobs; Snakemake's exit status and its output lines."""
    transfers = ctx.transfers
    if not cfg["backups"]["enabled"]:
        print("backups are disabled (backups.enabled: false): no backup step will transfer anything")
    if any(t.tool == "rclone" for t in transfers):
        from ..transports import rclone  # while Snakemake starts: the jobs find the SMB password ready

        rclone.obscure_once(transfers)
    nearby = {t.destination for t in transfers if transports.for_transfer(t).nearby(t)}
    options = ["--resources", *plan.resource_limits(cfg["backups"], nearby)]
    options += ["--profile", os.path.abspath(args.profile)] if args.profile else []
    config.save_for_run(cfg, ctx.config_files, run_id, engine.workdir)  # what the Snakefile and the jobs read
    runner.give_back_memory()  # what validating the config took: this process waits for the run now

    # The marker files are the targets, not the rules backup_all and run: their report job would
    # only print the summary this command prints itself, and cost a process at the end of the run.
    def markers(stage: str) -> list[str]:
        return [records.marker_path(run_id, stage, t.destination, t.dataset) for t in transfers]

    if args.command == "run":
        # The pre-pipeline backup (and its gate) first, then the pipeline and the post backup:
        # two invocations of one graph, so no pipeline job can start before the gate.
        # The second Snakemake imports itself while the first runs the pre-pipeline backup.
        second = Engine(engine.workdir, engine.interrupts, engine.profile)
        returncode, lines = engine.run(ctx.config_files, ["pipeline_gate"], run_id, args.only, args.cores, options)
        if returncode != 0 or engine.interrupts.signum:
            second.cancel()
            return returncode, lines
        targets = [records.pipeline_marker(run_id), *markers("post")]
        returncode, more = second.run(ctx.config_files, targets, run_id, args.only, args.cores, options)
        return returncode, lines + more
    return engine.run(ctx.config_files, markers("manual") or ["backup_all"], run_id, args.only, args.cores, options)


def _outcome(args, workdir: Path, transfers: list[plan.Transfer], stopped, run: records.RunRecord, returncode: int,
             lines: list[str], log) -> int:  # fmt: skip
    """Print each stage's summary (and the pipeline's fate) into ``run``; return the exit status.
    ``stopped``: the run's Interrupts (a signal stopped every job before this point, see Engine.run)."""
    exit_code = summary.EXIT_OK
    stages = ["pre", "post"] if args.command == "run" else ["manual"]
    for stage in stages:
        if stage == "post" and not (workdir / records.pipeline_marker(run.run_id)).exists():
            error = records.read_record(workdir / records.pipeline_error(run.run_id), records.PipelineRecord)
            reason = error.error if error else f"see .backup/runs/{run.run_id}/snakemake.log"
            label = "NOT RUN" if error and error.status == "not run" else "FAILED"
            if stopped.signum and not error:
                label, reason = "INTERRUPTED", f"stopped by {stopped.name}"
            run.pipeline = records.PipelineRecord(run.run_id, status=label.lower(), error=reason)
            print(f"\nPipeline {label}: {reason}\nPost-pipeline backup: not run.")
            exit_code = summary.EXIT_FAILED
            continue
        if stage == "post":
            run.pipeline = records.PipelineRecord(run.run_id)
            print("\nPipeline: ok")
        rows = records.stage_rows(run.run_id, stage, transfers, workdir)
        if stopped.signum:
            rows = [_interrupted(row, stopped.name) for row in rows]
        run.transfers += rows
        if rows:
            text = summary.table(rows, f"Backup summary ({stage}):" if stage != "manual" else "Backup summary:")
            log.info("%s", text)
            print("\n" + text)
    rows_status = summary.exit_status(run.transfers)
    if stopped.signum:
        done = sum(1 for r in run.transfers if r.status in (records.OK, records.WARNING))
        print(f"\nInterrupted ({stopped.name}): every job was stopped; {done} of {len(run.transfers)} transfers had "
              "finished and are recorded at their destination, the others are not a restore point.")  # fmt: skip
        return stopped.exit_code
    if rows_status == summary.EXIT_FAILED or exit_code == summary.EXIT_FAILED:
        return summary.EXIT_FAILED
    if returncode != 0:
        print("\nThe workflow failed; its last lines:\n" + "\n".join(lines[-15:]))
        return summary.EXIT_FAILED
    return rows_status


def _interrupted(row: records.TransferRecord, signal_name: str) -> records.TransferRecord:
    """A transfer a signal stopped: no record of its own (its job was stopped), or not committed at
    its destination. A transfer that failed by itself keeps its own error."""
    unfinished = not row.started or (row.error or "").startswith("not recorded in the destination's catalog")
    if row.status == records.FAILED and unfinished:
        row.status, row.error = records.INTERRUPTED, f"stopped by {signal_name} before it was complete and recorded"
    return row
