# The two commands at the top of README.md are `make demo` and `make test`.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_NOCOLOR := 1
export NO_COLOR := 1

.PHONY: tools deps-demo deps-test demo demo-destroy bench lint test test-fast molecule clean

# Controller tools (ansible, molecule, linters, pytest), pinned in tools/requirements.txt.
tools: $(VENV)/.installed
$(VENV)/.installed: tools/requirements.txt
	command -v uv >/dev/null || python3 -m pip install --quiet "uv==$$(sed -n 's/^# uv==//p' tools/requirements.in)"
	uv venv --quiet --allow-existing --python python3.11 $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip sync --quiet tools/requirements.txt
	touch $@

# A throw-away test host running the whole stack; prints what runs there and how to reach it.
# Debian packages the two commands need on this machine, installed when missing (tools/deps.sh).
deps-demo:
	bash tools/deps.sh demo

deps-test:
	bash tools/deps.sh test

demo: deps-demo tools
	python3 tools/demo.py up

demo-destroy:
	python3 tools/demo.py down

# Speed figures beside their anchors, measured in one run on a fresh demo host (tools/bench.py).
bench: deps-demo tools
	python3 tools/bench.py

lint: tools
	yamllint --strict .
	ansible-lint
	ruff check tools tests lookup_plugins filter_plugins strategy_plugins roles molecule
	ruff format --check tools tests lookup_plugins filter_plugins strategy_plugins roles molecule

# Everything: lint, the repository and wiring tests, the exec API package, every molecule
# scenario on booted test hosts. One pytest run reports it all (tests/).
# The slowest tests are listed at the end, to see where a run's time goes.
test: deps-test lint
	pytest --durations=15

# Everything but the molecule scenarios.
test-fast: lint
	pytest -m "not molecule"

clean: demo-destroy
	rm -rf $(VENV)
