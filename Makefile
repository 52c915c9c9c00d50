# ept: `make run` runs the whole pipeline locally, `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EPT := $(VENV)/bin/ept
PYTEST := $(PY) -m pytest

.PHONY: setup system-deps browser-deps client-deps test test-unit test-integration lint run bench bench-sdk bench-sink bench-processors bench-alerts bench-integrations soak clean

# Everything a fresh machine needs: system packages, the virtualenv, the Kafka jars and
# Alertmanager (built from its Go module once; without Go, `ept run` goes without it and
# the Alertmanager tests fail, saying how to get it).
setup: system-deps $(VENV)/.installed
	@$(PY) -c "from ept.deploy.broker import resolve_jars; print('Kafka jars:', resolve_jars())"
	@echo "Alertmanager: $$(bash deploy/local/install-alertmanager.sh || echo 'not built (see above)')"

system-deps:
	@bash deploy/local/install-system-deps.sh

browser-deps:
	@bash deploy/local/install-system-deps.sh --browser

# The ClickHouse clients the SQL endpoint is tested with: the official JavaScript client
# (npm), the JDBC driver (Maven Central) and clickhouse-go (Go module proxy), the last two
# built once into ~/.cache/ept/clients.
client-deps: tests/clients/node_modules/.installed
	@bash deploy/local/install-system-deps.sh --clients
	@bash deploy/local/install-sql-clients.sh

tests/clients/node_modules/.installed: tests/clients/package-lock.json
	@bash deploy/local/install-system-deps.sh --clients
	cd tests/clients && npm ci --no-audit --no-fund --silent
	@touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[bench,registry]"
	@touch $@

# pytest's exit code 5 means no test was collected: a broken selection, so a failure.
test: setup browser-deps client-deps
	@$(PYTEST) -v; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests collected" >&2; fi; exit $$status

test-unit: $(VENV)/.installed
	$(PYTEST) -m unit -q

test-integration: setup browser-deps client-deps
	$(PYTEST) -m integration -v

# mypy resolves imports by path, not through setuptools' package-dir mapping: it checks
# the `ept` namespace through a tree of symlinks laid out as installed.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check producers processors schemas deploy tests bench examples
	@rm -rf build/typecheck && mkdir -p build/typecheck/ept
	@for entry in producers/*; do ln -s "$(CURDIR)/$$entry" build/typecheck/ept/; done
	@for folder in schemas processors deploy; do ln -s "$(CURDIR)/$$folder" build/typecheck/ept/$$folder; done
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p ept

run: setup
	$(EPT) run --demo

bench: bench-sdk bench-sink bench-processors bench-alerts bench-integrations

bench-sdk: setup
	$(PY) -m bench.sdk

bench-sink: setup
	$(PY) -m bench.sink

# quixstreams, the peer it is measured against, pins confluent-kafka below ept's: it runs
# from a virtualenv of its own.
PEERS_VENV ?= build/peers-venv

$(PEERS_VENV)/.installed: bench/peers.txt
	@test -x $(PEERS_VENV)/bin/python || python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers.txt
	@touch $@

bench-processors: setup $(PEERS_VENV)/.installed
	EPT_BENCH_PEER_PYTHON=$(PEERS_VENV)/bin/python EPT_BENCH_PY_SPY=$(PEERS_VENV)/bin/py-spy \
		$(PY) -m bench.processors

# Alert quality on a simulated day: live, backlog, a fast clock, re-sends (~10 min).
bench-alerts: setup
	$(PY) -m bench.alerts

bench-integrations: setup
	@bash deploy/local/install-system-deps.sh --bench
	$(PY) -m bench.integrations

# The chaos soak at full size: prints events, kills, lost, duplicated, peak memory.
soak: setup
	EPT_SOAK_EVENTS=$${EPT_SOAK_EVENTS:-1000000} $(PYTEST) -s -v tests/integration/test_chaos.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
