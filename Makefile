# make test: bootstrap a fresh Debian machine (as root) and run every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := tshark radvd nftables iproute2
STAMP := $(VENV)/.installed

.PHONY: test lint format unit test-long fuzz bench apt venv clean

test: apt venv lint unit test-long

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): constraints.txt agent/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e 'agent[test]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: venv
	$(BIN)/pytest agent/tests -m "not long"

# The property tests with a large example count, and the bounded-time fuzz target.
test-long: venv
	$(BIN)/pytest agent/tests -m long --hypothesis-profile=long

fuzz: venv
	$(BIN)/python agent/tests/fuzz_decoder.py --seconds $${FUZZ_SECONDS:-60}

bench: venv
	$(BIN)/python bench/wire.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
