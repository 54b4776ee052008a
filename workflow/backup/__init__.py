"""The lab backup system: config, planning, transports and the jobs the Snakemake rules run."""

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]  # the Snakefile's folder; config/config.yaml by default
