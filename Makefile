# liqstream — every target sets itself up (venv + pinned install) on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
LIQSTREAM_KAFKA_PORT ?= 9092

SERVE_PORT ?= 8050
.PHONY: help setup run serve test test-heavy test-explore test-fast test-kafka-python test-confluent-kafka lint bench chaos reader-death-repeat broker broker-stop clean chromium
CHROMIUM ?= /usr/bin/chromium

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The venv is rebuilt only when the lock or the project metadata change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade "pip==25.3"
	@echo "installing pinned dependencies into $(VENV) (first run: about a minute)"
	@$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,dask]"
	@touch $(STAMP)

# the peers `make bench` measures the job against (the optional `bench` extra; make test never needs it)
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,dask,bench]"
	@touch $(BENCH_STAMP)

setup: $(STAMP) ## create .venv and install the pinned dependencies

run: $(STAMP) ## the whole default job: broker, bundled scenario, pipeline, marts, DQ, summary
	@$(VENV)/bin/liqstream demo

serve: $(STAMP) ## the live desk on http://127.0.0.1:8050/ (SERVE_PORT=N to change; follows a running stream job)
	@$(VENV)/bin/liqstream serve --port $(SERVE_PORT)

test: $(STAMP) chromium ## the test suite (starts its own brokers; renders the report in headless Chromium)
	@$(PY) -m pytest -q -m "not heavy" --durations=25

test-heavy: $(STAMP) ## the full preset x seed scoring matrix against the simulator's ground truth (~10 min)
	@$(PY) -m pytest -q -s -m "slow or heavy" tests/unit/test_transform_scoring.py tests/unit/test_liqmap_score.py

test-explore: $(STAMP) ## property tests with fresh random examples each run (make test draws fixed ones)
	@LIQSTREAM_HYPOTHESIS_PROFILE=explore $(PY) -m pytest -q tests/unit/test_normalizers_property.py \
		tests/unit/test_ingest_fast_path.py tests/unit/test_avro_codec.py

test-kafka-python: $(STAMP) ## the stream job's chaos/restart tests with the readers on kafka-python (the default, ADR 033)
	@KAFKA_READER_CLIENT=kafka-python $(PY) -m pytest -q tests/integration/test_stream_job.py \
		tests/integration/test_fetch.py tests/integration/test_poison_records.py

test-confluent-kafka: $(STAMP) ## the same chaos/restart tests with the readers on confluent-kafka (librdkafka; not the default, ADR 033)
	@KAFKA_READER_CLIENT=confluent-kafka $(PY) -m pytest -q tests/integration/test_stream_job.py \
		tests/integration/test_fetch.py tests/integration/test_poison_records.py

test-fast: $(STAMP) ## unit tests only
	@$(PY) -m pytest -q -m "not integration and not slow"

lint: $(STAMP) ## ruff
	@$(VENV)/bin/ruff check schemas connectors pipelines tests

bench: $(BENCH_STAMP) ## benchmarks: the job against its peers (pinned extra .[bench]: kafka-python, confluent-kafka, Bytewax, DuckDB, Polars) side by side (--quick: BENCH_ARGS=--quick)
	@$(PY) -m bench.run $(BENCH_ARGS)

chaos: $(STAMP) ## fault campaign (~30-60 min; not in make test): fuzzed feeds, SIGKILLed stream job/backfill/producer; bench/chaos.json (CHAOS_ARGS=...)
	@$(PY) -m bench.chaos $(CHAOS_ARGS)

reader-death-repeat: $(STAMP) ## the reader-death tests 20 runs in a row with `make test` beside them (issue 16; RUNS=N)
	@scripts/repeat_reader_death.sh $(or $(RUNS),20)

broker: $(STAMP) ## start the local Kafka-protocol broker (Tansu) on 127.0.0.1:$(LIQSTREAM_KAFKA_PORT)
	@$(VENV)/bin/liqstream broker start --port $(LIQSTREAM_KAFKA_PORT)

broker-stop: $(STAMP) ## stop the local broker started by `make broker`
	@$(VENV)/bin/liqstream broker stop --port $(LIQSTREAM_KAFKA_PORT)

chromium: ## Debian's headless Chromium for the browser tests of the report and the desk (skipped with a reason if it cannot be installed)
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser tests will be skipped"; }

clean: ## remove the venv and generated data
	rm -rf $(VENV) data .pytest_cache
