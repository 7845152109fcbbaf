# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv on first use and install the project (and its chDB dbt adapter).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test install ui clean bench-ingest

$(INSTALLED): pyproject.toml adapters/dbt-chdb/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e adapters/dbt-chdb -e '.[dev]'
	@touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/billhouse demo

# Test files run in parallel, each whole on one worker (its module's store built once).
test: $(INSTALLED)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

bench-ingest: $(INSTALLED)
	$(BIN)/python -m bench.ingest

clean:
	-$(BIN)/billhouse ledger-stop
	rm -rf .billhouse target logs

# The Dagster UI on the embedded warehouse and ledger of BILLHOUSE_HOME (default .billhouse):
# the close-clock sensor (turn it on), (day, timezone) partitions, backfills; runs one at a time.
ui: $(INSTALLED)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.billhouse/dagster} ; mkdir -p $$DAGSTER_HOME ; \
	[ -e $$DAGSTER_HOME/dagster.yaml ] || cp orchestration/dagster.yaml $$DAGSTER_HOME/dagster.yaml ; \
	DAGSTER_HOME=$$DAGSTER_HOME $(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000
