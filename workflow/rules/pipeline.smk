# The lab's run: pre-pipeline backup -> analysis pipeline -> post-pipeline backup.
# The pipeline is a shell command (pipeline.command), or a Snakemake workflow included as
# a module (pipeline.snakefile) whose jobs become part of this graph. The CLI runs the
# target pipeline_gate (the pre-pipeline backup) first and the rest after it, as bare
# Snakemake users run `pipeline_gate` then `run_with_backups`, so that no pipeline job starts
# before the pre-pipeline backup is done: a module's rules cannot be given an extra input
# without changing what their {input} means.

STAGE_INPUTS["post"] = [records.pipeline_marker(RUN_ID)]
GATE = records.gate_marker(RUN_ID)
PIPELINE_SNAKEFILE = CFG["pipeline"].get("snakefile")
PIPELINE_OUTPUTS = []


rule run_with_backups:
    input:
        records.pipeline_marker(RUN_ID),
        stage_markers("post"),
    log:
        f"logs/{RUN_ID}/report_run.log",
    localrule: True
    params:
        **JOB_PARAMS,
    run:
        run_job(
            "report",
            params,
            resources,
            only=params.only,
            stage=["pre", "post"],
            log=log[0],
        )


rule pipeline_gate:
    input:
        stage_markers("pre"),
    output:
        GATE,
    log:
        f"logs/{RUN_ID}/pipeline_gate.log",
    localrule: True
    params:
        **JOB_PARAMS,
    run:
        run_job(
            "gate",
            params,
            resources,
            only=params.only,
            marker=output[0],
            log=log[0],
        )


if PIPELINE_SNAKEFILE:

    module analysis:
        snakefile:
            backup_plan.absolute(PIPELINE_SNAKEFILE, os.getcwd())
        config:
            backup_config.pipeline_private(CONFIG_FILES)["config"]

    use rule * from analysis as analysis_*

    PIPELINE_OUTPUTS = list(rules.analysis_all.input)


rule pipeline:
    input:
        GATE,
        PIPELINE_OUTPUTS,
    output:
        records.pipeline_marker(RUN_ID),
    log:
        f"logs/{RUN_ID}/pipeline.log",
    localrule: True
    params:
        **JOB_PARAMS,
    run:
        run_job("pipeline", params, resources, marker=output[0], log=log[0])
