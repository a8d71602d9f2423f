# robe-lab: every target first runs the one-command set-up (Debian packages + .venv), except
# `make plots`, `make compare` and `make sweep-plan`, which only need .venv (never root, never Debian packages).
# Targets that build networks need root: started as a normal user, `robe-lab` runs them through
# sudo (results stay the user's). Every target is a `robe-lab` command (`.venv/bin/robe-lab --help`).

PYTHON := .venv/bin/python
ROBE_LAB := .venv/bin/robe-lab
PROFILE ?= paper
export PYTHONPATH := $(CURDIR)

.PHONY: help setup venv compare test lint unit-test integration-test validate-links validate-transport experiment1 experiment2 ablation record-sites plots bench bench-sweep sweep-plan soak fresh-check clean-net shell clean

help:
	@echo "robe-lab make targets (each is a robe-lab command: .venv/bin/robe-lab --help; root targets use sudo themselves):"
	@echo "  sudo make validate-links   build Figure 3 and measure link fidelity (RTT, loss, rate) on both paths"
	@echo "  sudo make validate-transport  set-up and join times of every strategy vs the paper's formulas; mptcp-user vs kernel"
	@echo "  sudo make experiment1      experiment 1 (loss sweep on the default path); PROFILE=paper|quick|asymmetric|ips|ips-user|outage JOBS=16; then Figure 8"
	@echo "  sudo make experiment2      experiment 2 (hybrid access page loads, Figure 9); PROFILE=paper|quick|zero|direct|browser|browser-quick|ips|outage JOBS2=3 (browser: 1); then Figure 9"
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
	@echo "  sudo make shell FIG=fig7 ARGS=\"--strategy robe-sim --site google.com\"  a topology to use by hand (fig3|fig7)"
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
	$(ROBE_LAB) fresh-check $(ARGS)

validate-links: setup
	$(ROBE_LAB) validate-links $(ARGS)

validate-transport: setup
	$(ROBE_LAB) validate-transport $(if $(VJOBS),-j $(VJOBS)) $(ARGS)

experiment1: setup
	$(ROBE_LAB) experiment1 --profile $(PROFILE) $(if $(JOBS),-j $(JOBS)) $(ARGS)

bench: setup
	$(ROBE_LAB) bench $(ARGS)

bench-sweep: setup
	$(ROBE_LAB) bench-sweep $(ARGS)

sweep-plan: venv
	$(ROBE_LAB) sweep-plan $(or $(FOLDER),results/experiment1/paper) $(ARGS)

soak: setup
	$(ROBE_LAB) soak $(ARGS)

experiment2: setup
	$(ROBE_LAB) experiment2 --profile $(PROFILE) $(if $(JOBS2),-j $(JOBS2)) $(ARGS)

ablation: setup
	$(ROBE_LAB) ablation $(if $(JOBS2),-j $(JOBS2)) $(ARGS)

record-sites: setup
	@if [ -z "$(SITES)" ]; then echo "usage: make record-sites SITES='https://www.example.com/ ...' [ARGS='--out DIR']" >&2; exit 2; fi
	$(ROBE_LAB) record-sites $(SITES) $(ARGS)

plots: venv
	$(ROBE_LAB) plots $(ARGS)

compare: venv
	@if [ -z "$(RUNS)" ]; then echo "usage: make compare RUNS='results/experiment1/paper results/experiment1/quick' [ARGS='--out DIR --metric request']" >&2; exit 2; fi
	$(ROBE_LAB) compare $(RUNS) $(ARGS)

clean-net: setup
	$(ROBE_LAB) clean-net $(ARGS)

# A Figure 3 or 7 network to use by hand: FIG=fig3|fig7, ARGS="--strategy robe-sim --site google.com --loss 30 --cli"
shell: setup
	$(ROBE_LAB) shell $(or $(FIG),fig7) $(ARGS)

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
