# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
AZVENV := .venv-az
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench az-venv browser prometheus postgresql screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# The az CLI gets a venv of its own (it pins its own azure-* packages); created once, reused.
$(AZVENV)/.installed:
	$(PYTHON) -m venv $(AZVENV)
	$(AZVENV)/bin/pip install -q --upgrade pip
	$(AZVENV)/bin/pip install -q azure-cli==2.91.0
	touch $@

az-venv: $(AZVENV)/.installed

# Browser tests drive Debian's Chromium (Playwright's own download does not work here).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser tests will be skipped"

# The Prometheus gate is tested against a real server from Debian (started by the tests on a free port).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || test -x /usr/bin/prometheus || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   prometheus >/dev/null) || echo "warning: could not install prometheus; its gate test will be skipped"

# Several fleet workers share a real PostgreSQL from Debian (the tests start a throwaway cluster with initdb).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   postgresql >/dev/null) || echo "warning: could not install postgresql; the fleet workers test needs it"

demo: $(STAMP)
	$(BIN)/vmssctl demo

test: $(STAMP) az-venv browser prometheus postgresql
	$(BIN)/ruff check .
	$(BIN)/mypy
	VMSSCTL_AZ=$(CURDIR)/$(AZVENV)/bin/az $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP) browser postgresql
	$(BIN)/python bench/emulator.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/traffic.py
	$(BIN)/python bench/cli.py

screenshots: $(STAMP) browser
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) $(AZVENV) build *.egg-info
