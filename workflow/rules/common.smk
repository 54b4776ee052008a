# Helpers shared by every rule: the validated config, the run id and the plan.
import os
import sys

from snakemake.exceptions import WorkflowError

# The importable package the jobs run lives beside this rules/ folder.
BACKUP_PKG_DIR = os.path.normpath(os.path.join(workflow.current_basedir, ".."))
sys.path.insert(0, BACKUP_PKG_DIR)

from backup import config as backup_config  # noqa: E402
from backup import jobserver as backup_jobserver  # noqa: E402
from backup import plan as backup_plan  # noqa: E402
from backup import records  # noqa: E402

# One run id per invocation. Set by the CLI with --config run_id=...; otherwise made
# once and kept in the environment, so a re-parse in a job process sees the same id.
RUN_ID = str(
    config.get("run_id") or os.environ.setdefault("BACKUP_RUN_ID", records.new_run_id())
)
if not records.RUN_ID.match(RUN_ID):
    # Catalogs and restores find a run by its id's shape: another one would be lost there.
    raise WorkflowError(
        f"run id {RUN_ID!r} is not of the form YYYYMMDD-HHMMSS-xxxx (UTC date and time, then 2-8 "
        "letters or digits), e.g. BACKUP_RUN_ID=$(date -u +%Y%m%d-%H%M%S)-lab"
    )

# Our own loader reads the config files (not Snakemake's merged `config`), so that
# `--configfile demo.yaml` never inherits keys from the lab's config.yaml. The command line
# saved the run's validated config (config.save_for_run); Snakemake run by hand validates
# it here, and its first job saves it for the others.
CONFIG_FILES = [str(p) for p in workflow.overwrite_configfiles] or [
    backup_config.DEFAULT_CONFIG
]
try:
    CFG = backup_config.saved_for_run(
        CONFIG_FILES, RUN_ID
    ) or backup_config.load_config(CONFIG_FILES, workdir=os.getcwd())
except backup_config.ConfigError as exc:
    raise WorkflowError(str(exc))
ONLY = [d for d in str(config.get("only") or "").split(",") if d]
# The process a destination's in-progress marker names (records.OWNER_ENV): the command line
# sets it; Snakemake run by hand is the owner itself. Jobs inherit it.
os.environ.setdefault("BACKUP_OWNER_PID", str(os.getpid()))
TRANSFERS = backup_plan.plan(CFG, os.getcwd(), ONLY)
ARCHIVED = backup_plan.archived_datasets(TRANSFERS)

# Every job is `python -m backup JOB ...` run by this Python (the project's venv), so a conda env
# or container would decide nothing: the rules declare none, and run their job from a `run:`
# block, which Snakemake's lint accepts without one; profiles/default has those blocks run in
# threads (force-use-threads), not as a new Snakemake process each. The job itself is forked
# from the run's job server (jobserver.py), which has imported the package once.
JOBS = backup_jobserver.JobServer.shared(BACKUP_PKG_DIR)
CONFIG_ARGV = [arg for path in CONFIG_FILES for arg in ("--config", path)]

# Passed to every job as params (none of them is a secret: params land in .snakemake/).
JOB_PARAMS = dict(run_id=RUN_ID, only=",".join(ONLY))


def run_job(name, params, resources, *args, **options):
    """The job NAME of this run (backup/jobs.py): `python -m backup NAME --config ... --run-id ...
    ARGS --OPTION VALUE ...` (a list value repeats its option), forked from the job server.
    """
    argv = [name, *CONFIG_ARGV, "--run-id", params.run_id, *args]
    for option, value in options.items():
        for one in value if isinstance(value, list) else [value]:
            argv += [f"--{option.replace('_', '-')}", str(one)]
    JOBS.run(argv, tmpdir=resources.get("tmpdir"))


# Extra inputs per stage: the composition makes "post" wait for the pipeline.
STAGE_INPUTS = {}


# Wildcard constraints from the package: a new destination or stage needs no edit here.
DEST_NAMES = "|".join(backup_plan.DESTINATIONS)
STAGE_NAMES = "|".join(backup_plan.STAGES)


def lane_use(dest):
    return lambda wildcards: int(wildcards.dest == dest)


# A sync job takes one unit of its destination's lane (plan.resource_limits sizes each lane).
DEST_RESOURCES = {
    backup_plan.lane(dest): lane_use(dest) for dest in backup_plan.DESTINATIONS
}


def stage_markers(stage, destination=None):
    """Marker files of every planned transfer of a stage (optionally one destination)."""
    return [
        records.marker_path(RUN_ID, stage, t.destination, t.dataset)
        for t in TRANSFERS
        if destination in (None, t.destination)
    ]


def stage_dependencies(wildcards):
    return STAGE_INPUTS.get(wildcards.stage, [])


def sync_inputs(wildcards):
    """A sync job waits for its stage's prerequisites and, in compressed mode, its archive."""
    inputs = list(stage_dependencies(wildcards))
    if wildcards.dataset in ARCHIVED and any(
        t.destination == wildcards.dest
        and t.dataset == wildcards.dataset
        and t.mode == "archive"
        for t in TRANSFERS
    ):
        inputs.append(
            records.archive_marker(RUN_ID, wildcards.stage, wildcards.dataset)
        )
    return inputs


def restore_args(wildcards):
    """The restore target's options, from --config restore_from=... restore_dataset=... restore_to=..."""
    wanted = {"from": "restore_from", "dataset": "restore_dataset", "to": "restore_to"}
    missing = [key for key in wanted.values() if not config.get(key)]
    if missing:
        raise WorkflowError(
            f"snakemake restore needs --config restore_from={DEST_NAMES}|any restore_dataset=NAME "
            "restore_to=DIR [restore_run=RUN_ID | restore_at='YYYY-MM-DD HH:MM']"
        )
    args = [
        arg for flag, key in wanted.items() for arg in (f"--{flag}", str(config[key]))
    ]
    for flag in ("run", "at"):
        if config.get(f"restore_{flag}"):
            args += [f"--{flag}", str(config[f"restore_{flag}"])]
    return args
