# Transfers: one job per (stage, destination, dataset), never one per file.


rule sync:
    input:
        sync_inputs,
    output:
        records.marker_path(RUN_ID, "{stage}", "{dest}", "{dataset}"),
    log:
        f"logs/{RUN_ID}/{{stage}}/sync_{{dest}}_{{dataset}}.log",
    wildcard_constraints:
        stage="manual|pre|post",
        dest="smb|box|secured",
        dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    localrule: True
    conda:
        BACKUP_ENV
    resources:
        # At most `network` transfers at once, and one at a time per destination (the CLI and
        # the profiles give each a limit of 1): one server is not sent two datasets at once.
        network=1,
        to_smb=lambda wildcards: int(wildcards.dest == "smb"),
        to_box=lambda wildcards: int(wildcards.dest == "box"),
        to_secured=lambda wildcards: int(wildcards.dest == "secured"),
    params:
        **JOB_PARAMS,
    shell:
        "{params.job} sync {params.config} --run-id {params.run_id} --stage {wildcards.stage}"
        " --dest {wildcards.dest} --dataset {wildcards.dataset}"
        " --marker {output:q} --log {log:q}"


for _dest in backup_plan.DESTINATIONS:

    rule:
        name:
            f"sync_{_dest}"
        input:
            stage_markers("manual", _dest),
        log:
            f"logs/{RUN_ID}/manual/report_{_dest}.log",
        localrule: True
        conda:
            BACKUP_ENV
        params:
            **JOB_PARAMS,
            dest=_dest,
        shell:
            "{params.job} report {params.config} --run-id {params.run_id} --only={params.only:q} --stage manual"
            " --dest {params.dest} --log {log:q}"


rule restore:
    log:
        f"logs/{RUN_ID}/restore.log",
    localrule: True
    conda:
        BACKUP_ENV
    params:
        **JOB_PARAMS,
        options=restore_args,
    shell:
        "{params.job} restore {params.config} --run-id {params.run_id} {params.options} --log {log:q}"
