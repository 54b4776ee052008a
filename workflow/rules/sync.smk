# Transfers: one job per (stage, destination, dataset), never one per file.


rule sync:
    input:
        sync_inputs,
    output:
        records.marker_path(RUN_ID, "{stage}", "{dest}", "{dataset}"),
    log:
        f"logs/{RUN_ID}/{{stage}}/sync_{{dest}}_{{dataset}}.log",
    wildcard_constraints:
        stage=STAGE_NAMES,
        dest=DEST_NAMES,
        dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    localrule: True
    # A transfer waits on the network, not on a core: the resources below, not --cores, say how
    # many run at once (the pipeline's jobs keep the cores they ask for). Each destination is
    # sent `datasets_at_once` datasets at once (its lane, sized by plan.resource_limits), and
    # all of them together at most `network`.
    threads: 0
    resources:
        **DEST_RESOURCES,
        network=1,
    params:
        **JOB_PARAMS,
    run:
        run_job(
            "sync",
            params,
            resources,
            stage=wildcards.stage,
            dest=wildcards.dest,
            dataset=wildcards.dataset,
            marker=output[0],
            log=log[0],
        )


for _dest in backup_plan.DESTINATIONS:

    rule:
        name:
            f"sync_{_dest}"
        input:
            stage_markers("manual", _dest),
        log:
            f"logs/{RUN_ID}/manual/report_{_dest}.log",
        localrule: True
        params:
            **JOB_PARAMS,
            dest=_dest,
        run:
            run_job(
                "report",
                params,
                resources,
                only=params.only,
                stage="manual",
                dest=params.dest,
                log=log[0],
            )


rule restore:
    log:
        f"logs/{RUN_ID}/restore.log",
    localrule: True
    params:
        **JOB_PARAMS,
        options=restore_args,
    run:
        run_job("restore", params, resources, *params.options, log=log[0])
