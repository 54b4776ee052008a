# The lab's run: pre-pipeline backup -> analysis pipeline -> post-pipeline backup.

STAGE_INPUTS["post"] = [records.pipeline_marker(RUN_ID)]


rule run:
    input:
        records.pipeline_marker(RUN_ID),
        stage_markers("post"),
    log:
        f"logs/{RUN_ID}/report_run.log",
    localrule: True
    conda:
        BACKUP_ENV
    params:
        **JOB_PARAMS,
    shell:
        "{params.job} report {params.config} --run-id {params.run_id} --stage pre --stage post --log {log:q}"


rule pipeline:
    input:
        stage_markers("pre"),
    output:
        records.pipeline_marker(RUN_ID),
    log:
        f"logs/{RUN_ID}/pipeline.log",
    localrule: True
    conda:
        BACKUP_ENV
    params:
        **JOB_PARAMS,
    shell:
        "{params.job} pipeline {params.config} --run-id {params.run_id} --marker {output:q} --log {log:q}"
