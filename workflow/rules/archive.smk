# Compressed mode: one archive job per (stage, dataset), shared by every destination
# that receives that dataset as a ZIP. No destination compressed: no archive jobs.


rule archive:
    input:
        stage_dependencies,
    output:
        records.archive_marker(RUN_ID, "{stage}", "{dataset}"),
    log:
        f"logs/{RUN_ID}/{{stage}}/archive_{{dataset}}.log",
    wildcard_constraints:
        stage=STAGE_NAMES,
        dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    localrule: True
    threads: 2
    params:
        **JOB_PARAMS,
    run:
        run_job(
            "archive",
            params,
            resources,
            stage=wildcards.stage,
            dataset=wildcards.dataset,
            threads=threads,
            marker=output[0],
            log=log[0],
        )
