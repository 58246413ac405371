# Herald developer tasks: `make help` lists them. On a fresh machine with Python 3.11+,
# `make run` and `make test` do all the set-up they need.

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
MAKEFLAGS += --no-print-directory

# Where `python3 -m pip install uv` puts uv (the interpreter's and the user's scripts directories),
# so that `make install` works when uv is not on PATH yet.
PY_SCRIPT_DIRS := $(shell python3 -c 'import os, sysconfig as s; print(s.get_path("scripts") + ":" + s.get_path("scripts", os.name + "_user"))' 2>/dev/null)
export PATH := $(PATH):$(PY_SCRIPT_DIRS)

MYPY_TARGETS := libs/common/src $(wildcard services/*/src) $(wildcard tools/*/src) $(wildcard libs/*/tests/*.py services/*/tests/*.py) tests conftest.py scripts $(wildcard bench)
PYTEST_ARGS ?=

.PHONY: help install lint format test run infra bench up down docs

help: ## List the targets (the default)
	@echo "Herald: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-9s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install uv if it is missing (with pip), then the locked dependencies into .venv
	@command -v uv >/dev/null 2>&1 || { \
		echo "uv not found: installing it with pip"; \
		python3 -m pip install uv \
			|| python3 -m pip install --user uv \
			|| python3 -m pip install --user --break-system-packages uv; \
	}
	uv sync --frozen
	@# promtool (Debian's prometheus package) checks and unit-tests the alert rules in `make test`.
	@command -v promtool >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "promtool not found: installing Debian's prometheus package"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
				|| { apt-get update -qq >/dev/null 2>&1 \
					&& apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; } \
				|| echo "could not install it: the alert-rule tests will fail without promtool"; \
		else \
			echo "promtool not found; the alert-rule tests need it: sudo apt-get install prometheus" \
				"(Debian, Ubuntu), or a release from https://prometheus.io/download/ on PATH"; \
		fi; \
	}
	@# Chromium (Debian's chromium package) runs the console's browser tests (Playwright drives
	@# it: Playwright's own browser download is not used).
	@[ -x /usr/bin/chromium ] || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "/usr/bin/chromium not found: installing Debian's chromium package"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
				|| { apt-get update -qq >/dev/null 2>&1 \
					&& apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } \
				|| echo "could not install it: the console's browser tests will fail without it"; \
		else \
			echo "/usr/bin/chromium not found; the console's browser tests need it:" \
				"sudo apt-get install chromium (Debian, Ubuntu)"; \
		fi; \
	}

lint: install ## ruff check, ruff format --check, mypy --strict, configuration docs up to date
	uv run ruff check .
	uv run ruff format --check .
	uv run mypy $(MYPY_TARGETS)
	uv run python -m scripts.config_docs --check

format: install ## Format the code and apply ruff's safe fixes
	uv run ruff format .
	uv run ruff check --fix .

test: install lint ## Lint, then every test against a real RabbitMQ and PostgreSQL (PYTEST_ARGS=...)
	scripts/dev-infra.sh --tests
	uv run pytest $(PYTEST_ARGS)

infra: ## Start RabbitMQ and PostgreSQL unless they answer (Docker, else local servers)
	scripts/dev-infra.sh

run: install ## Start RabbitMQ and PostgreSQL if needed, migrate, run every service (Ctrl-C stops)
	scripts/dev-infra.sh
	uv run herald-migrate
	@mkdir -p var/mail var/sms var/push
	@echo "API on http://127.0.0.1:8000; what would be sent is stored under var/mail/, var/sms/ and var/push/; Ctrl-C stops everything"
	@echo "Development API key (made once, in var/dev-key; the API ensures it exists at start). Try:"
	@uv run python -m scripts.dev_key --curl
	HERALD_API_BOOTSTRAP_KEY="$$(uv run python -m scripts.dev_key)" uv run honcho start -f Procfile

bench: install ## Measure Herald and its peers (../shared/bench-peers) side by side; prints a table
	scripts/dev-infra.sh
	uv run python -m bench

up: ## Build the images and run everything in Docker Compose
	docker compose up -d --build

down: ## Stop and remove the Docker Compose containers
	docker compose down

docs: install ## Regenerate docs/configuration.md from the settings models
	uv run python -m scripts.config_docs
