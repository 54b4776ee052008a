# The lab's composition: the backup workflow plus the run graph
# backup (pre) -> analysis pipeline -> backup (post).


include: "workflow/Snakefile"
include: "workflow/rules/pipeline.smk"


# Bare `snakemake` only backs up; `snakemake run` wraps the analysis pipeline.
use rule backup_all as backup with:
    default_target: True
