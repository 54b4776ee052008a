# The lab's composition: the backup workflow plus the run graph
# backup (pre) -> analysis pipeline -> backup (post).


include: "workflow/Snakefile"
include: "workflow/rules/pipeline.smk"


# Bare `snakemake` only backs up; `snakemake run_with_backups` wraps the analysis pipeline.
use rule backup_all as backup with:
    default_target: True


# The earlier name of run_with_backups, kept for those who know it (`run` is also a keyword
# inside a rule, and easily misread as one).
use rule run_with_backups as run
