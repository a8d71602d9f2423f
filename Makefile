# robe-lab: every target first runs the one-command set-up (Debian packages + .venv), except
# `make plots`, `make compare` and `make sweep-plan`, which only need .venv (never root, never Debian packages).
# Targets that build networks need root and say so.

PYTHON := .venv/bin/python
PROFILE ?= paper
JOBS ?= 16
export PYTHONPATH := $(CURDIR)

.PHONY: help setup venv compare test lint unit-test integration-test validate-links validate-transport experiment1 experiment2 ablation record-sites plots bench bench-sweep sweep-plan soak fresh-check clean-net clean

help:
	@echo "robe-lab make targets:"
	@echo "  sudo make validate-links   build Figure 3 and measure link fidelity (RTT, loss, rate) on both paths"
	@echo "  sudo make validate-transport  set-up and join times of every strategy vs the paper's formulas; mptcp-user vs kernel"
	@echo "  sudo make experiment1      experiment 1 (loss sweep on the default path); PROFILE=paper|quick|asymmetric JOBS=16"
	@echo "  sudo make experiment2      experiment 2 (hybrid access page loads, Figure 9); PROFILE=paper|quick|zero|direct|browser|browser-quick JOBS2=3 (browser: 1)"
	@echo "  sudo make ablation         experiment 2's ablation: every abl-* profile, then the improvement-against-factor figure"
	@echo "  make record-sites SITES=URLS  record live pages into HAR files (needs internet; not run in CI)"
	@echo "  make plots                 regenerate every figure and report from stored results (no root)"
	@echo "  make compare RUNS=\"D1 D2\"  overlay result folders of one experiment, test every cell, diff metadata"
	@echo "  sudo make bench            userspace RobE transport against kernel MPTCP: goodput, CPU per set-up, memory"
	@echo "  sudo make bench-sweep      attempts/min, canary error, memory and idle CPU against 1..64 experiment 1 networks"
	@echo "  make sweep-plan            where a stored experiment 1 sweep spent its time; replayed wall time of other settings"
	@echo "  make soak                  the HAAP and the userspace server on loopback under good and hostile clients (60 s)"
	@echo "  make test                  ruff, mypy, unit tests; and, when root, the integration tests"
	@echo "  sudo make fresh-check      the README's commands on a fresh Debian 12 root (debootstrap + systemd-nspawn)"
	@echo "  sudo make clean-net        remove what dead robe-lab runs left (rl-* namespaces, processes, temp folders)"
	@echo "  make setup                 install missing Debian packages and build .venv (every target does this)"
	@echo "  make clean                 remove .venv and caches"

setup:
	@bash scripts/setup.sh

# Only the venv: for the targets that read stored results (no root, no Debian packages).
venv:
	@bash scripts/setup.sh --venv-only

define require_root
	@if [ "$$(id -u)" != 0 ]; then \
		echo "error: 'make $@' builds network namespaces and needs root: run 'sudo make $@'" >&2; exit 2; fi
endef

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

unit-test: setup
	$(PYTHON) -m pytest -q tests/unit

integration-test: setup
	$(call require_root)
	$(PYTHON) -m pytest -q tests/integration

# The README's test command: lint, type-check, unit tests, and the root tests when run as root.
test: lint unit-test
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory integration-test; \
	else echo "note: not root: integration tests (namespaces, kernel MPTCP) skipped; run 'sudo make test'"; fi

# The README's commands on a fresh Debian 12 root (debootstrap, cached in /var/cache/robe-lab),
# under systemd-nspawn, on a clean clone of HEAD; ARGS="--rev REV --rebuild --keep" pass options.
fresh-check: setup
	$(call require_root)
	$(PYTHON) -m provision.fresh_check $(ARGS)

validate-links: setup
	$(call require_root)
	$(PYTHON) -m experiments.validate_links $(ARGS)

validate-transport: setup
	$(call require_root)
	$(PYTHON) -m experiments.validate_transport -j $(or $(VJOBS),8) $(ARGS)

experiment1: setup
	$(call require_root)
	$(PYTHON) -m experiments.experiment1 --profile $(PROFILE) -j $(JOBS) $(ARGS)

bench: setup
	$(call require_root)
	$(PYTHON) -m experiments.bench_transport $(ARGS)

bench-sweep: setup
	$(call require_root)
	$(PYTHON) -m experiments.bench_sweep $(ARGS)

sweep-plan: venv
	$(PYTHON) -m experiments.sweep_plan $(or $(FOLDER),results/experiment1/paper) $(ARGS)

soak: setup
	$(PYTHON) -m experiments.soak $(ARGS)

experiment2: setup
	$(call require_root)
	$(PYTHON) -m experiments.experiment2 --profile $(PROFILE) $(if $(JOBS2),-j $(JOBS2)) $(ARGS)

ablation: setup
	$(call require_root)
	$(PYTHON) -m experiments.ablation -j $(or $(JOBS2),3) $(ARGS)

record-sites: setup
	@if [ -z "$(SITES)" ]; then echo "usage: make record-sites SITES='https://www.example.com/ ...' [ARGS='--out DIR']" >&2; exit 2; fi
	$(PYTHON) -m webreplay.record $(SITES) $(ARGS)

plots: venv
	$(PYTHON) -m analysis.plots $(ARGS)

compare: venv
	@if [ -z "$(RUNS)" ]; then echo "usage: make compare RUNS='results/experiment1/paper results/experiment1/quick' [ARGS='--out DIR --metric request']" >&2; exit 2; fi
	$(PYTHON) -m analysis.compare $(RUNS) $(ARGS)

clean-net: setup
	$(call require_root)
	$(PYTHON) -m topologies.cleanup $(ARGS)

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
