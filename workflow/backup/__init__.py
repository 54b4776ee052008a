"""The lab backup system: config, planning, transports and the jobs the Snakemake rules run."""
