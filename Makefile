# Everyday commands. `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config/config.yaml
# A Snakemake profile for run and backup (make run PROFILE=profiles/slurm): where the pipeline's jobs go.
PROFILE ?=
PROFILE_ARG = $(if $(PROFILE),--profile "$(PROFILE)")
# The venv's tools (snakemake, rclone) come first for every command below.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup setup-slurm demo demo-snakemake run backup dry-run prune prune-dry-run status report test lint bench bench-network clean-demo

help:
	@echo "make demo     set up, then run backup -> demo pipeline -> backup on config/demo.yaml"
	@echo "make test     set up, then run the whole test suite"
	@echo "make run      backup (pre) -> analysis pipeline -> backup (post), on CONFIG=$(CONFIG)"
	@echo "make backup   back up now, on CONFIG=$(CONFIG)"
	@echo "make dry-run  show what a backup would send, without sending anything"
	@echo "make prune    remove what the retention policy (backups.retention) no longer keeps; prune-dry-run: what would go"
	@echo "make status   per destination: last successful backup, its age, newer failures"
	@echo "make report   backup-report.html: the last runs, per destination and dataset"
	@echo "make demo-snakemake   the demo with the pipeline as a Snakemake module"
	@echo "make setup    create .venv with pinned packages; install rsync if missing"
	@echo "make setup-slurm   add the pinned SLURM executor plugin to .venv (then: make run PROFILE=profiles/slurm)"
	@echo "make lint     ruff, snakefmt and snakemake --lint"
	@echo "make bench    benchmarks against the bare tools: rsync, rclone, sha256sum, zip -9 (bench/, ~10 minutes)"
	@echo "make bench-network   the same over emulated links to real servers in a network namespace (root; bench/network_bench.py)"

setup: $(VENV)/.installed $(VENV)/.compiled
	@scripts/setup.sh

# Every job is a new Python process: compiled once here, the package's bytecode is read, not
# compiled again, by each of them (also where PYTHONDONTWRITEBYTECODE keeps Python from saving it).
$(VENV)/.compiled: $(VENV)/.installed $(wildcard workflow/backup/*.py workflow/backup/*/*.py)
	@$(PY) -m compileall -q workflow/backup
	@touch $@

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

demo: setup
	$(PY) scripts/pipeline/run_workflows.py --config config/demo.yaml --if-missing
	$(PY) scripts/backup_system.py run --config config/demo.yaml

demo-snakemake: setup
	$(PY) scripts/pipeline/run_workflows.py --config config/demo.yaml --if-missing
	mkdir -p demo/workspace/raw && echo "session $$(date +%F)" >> demo/workspace/raw/sessions.txt
	$(PY) scripts/backup_system.py run --config config/demo.yaml --config config/demo-snakemake.yaml

run: setup
	$(PY) scripts/backup_system.py run --config "$(CONFIG)" $(PROFILE_ARG)

backup: setup
	$(PY) scripts/backup_system.py backup --config "$(CONFIG)" $(PROFILE_ARG)

# The SLURM executor plugin and what it brings (numpy, pandas) in a folder of their own in the
# venv, not among its packages: only a run given a profile puts it on Python's path
# (workflow/backup/engine.py), so every other run starts Snakemake as fast as without it.
CLUSTER_PACKAGES := $(VENV)/cluster-packages
setup-slurm: setup $(CLUSTER_PACKAGES)/.installed

$(CLUSTER_PACKAGES)/.installed: requirements-slurm.txt $(VENV)/.installed
	rm -rf $(CLUSTER_PACKAGES)
	@# An earlier set-up put the plugins among the venv's own packages: there every run would find them.
	@$(PY) -m pip uninstall --quiet --yes snakemake-executor-plugin-slurm snakemake-executor-plugin-slurm-jobstep 2>/dev/null || true
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(CLUSTER_PACKAGES) -r requirements-slurm.txt
	touch $@

dry-run: setup
	$(PY) scripts/backup_system.py backup --dry-run --config "$(CONFIG)"

prune: setup
	$(PY) scripts/backup_system.py prune --config "$(CONFIG)"

prune-dry-run: setup
	$(PY) scripts/backup_system.py prune --dry-run --config "$(CONFIG)"

status: setup
	$(PY) scripts/backup_system.py --status --config "$(CONFIG)"

report: setup
	$(PY) scripts/backup_system.py --report backup-report.html --config "$(CONFIG)"

# Three processes, a test file each at a time (a file's tests share its servers): on 2 cores a
# third keeps both busy while another waits on a server, a timeout or SLURM. The suite is bound by
# CPU: on 2026-12-02 the cores were busy 92% of a run with three (596 s, /proc/stat) and 94% with
# five (608 s), about 1,100 CPU-seconds either way, so more processes gain nothing. The files in
# collection order (pyproject.toml), the longest first (tests/conftest.py: LONGEST_FIRST), not
# xdist's default of the most tests first, which left SLURM's file to run alone at the end. The
# time follows the host's speed: 332-379 s on 2026-12-02 night and 2026-12-03 (629 CPU-seconds
# for the suite by /proc/stat, 660 for the whole .ci/run with its set-up), 519-831 s on a slower
# host on 2026-12-02 (992-1,213 CPU-seconds), near the 10-minute target there (issue 17's note).
test: setup setup-slurm
	@scripts/setup.sh --test
	$(PY) -m pytest -n 3 --dist loadfile

lint: setup
	ruff check workflow scripts tests bench
	ruff format --check workflow scripts tests bench
	snakefmt --check Snakefile workflow scripts/pipeline/Snakefile
	snakemake --lint --configfile config/demo.yaml
	snakemake --lint --configfile config/demo.yaml config/demo-snakemake.yaml

bench: setup
	@scripts/setup.sh --test
	$(PY) bench/transfer_bench.py
	$(PY) bench/archive_bench.py

bench-network: setup
	$(PY) bench/network_bench.py

clean-demo:
	rm -rf demo
	if [ -x $(PY) ]; then $(PY) scripts/forget_runs.py config/demo.yaml config/demo-snakemake.yaml; fi
