# timebok: `make demo` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lint test test-unit test-browser demo portal screenshots bench chaos chaos-nhn chaos-redis schema clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install timebok with its dev tools

lint: $(STAMP)  ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP)  ## all tests: unit, integration (real Redis + PostgreSQL), e2e (worker processes)
	$(BIN)/python -m pytest -q

test-browser: $(STAMP)  ## only the patient pages in headless Chromium (also part of `make test`)
	$(BIN)/python -m pytest -q tests/e2e/test_portal.py

test-unit: $(STAMP)  ## only the pure unit tests
	$(BIN)/python -m pytest -q tests/unit

schema: $(STAMP)  ## regenerate schemas/booking-request.schema.json
	$(BIN)/python -m worker.request > schemas/booking-request.schema.json

demo: $(STAMP)  ## run the whole booking flow on embedded defaults and print the inbox
	$(BIN)/timebok demo

portal: $(STAMP)  ## the patient pages on embedded defaults: api + worker + simulator, prints the URL
	$(BIN)/timebok demo --portal

screenshots: $(STAMP)  ## docs/screenshots/*.png: the booking guide's steps in headless Chromium
	$(BIN)/python -m tests.e2e.screenshots

bench: $(STAMP)  ## throughput benchmark against Celery's own ceiling
	$(BIN)/timebok bench

chaos: $(STAMP)  ## RabbitMQ, 2,000 bookings: workers, RabbitMQ, PostgreSQL, simulator killed / restarted; nothing lost
	TIMEBOK_CHAOS_BOOKINGS=$${TIMEBOK_CHAOS_BOOKINGS:-2000} $(BIN)/python -m pytest -q -s tests/chaos/test_chaos.py -k rabbitmq

chaos-nhn: $(STAMP)  ## the RabbitMQ run with the EPJ side on nhn (AMQP 1.0 + CMS), 2,000 bookings; nothing lost
	TIMEBOK_CHAOS_BOOKINGS=$${TIMEBOK_CHAOS_BOOKINGS:-2000} $(BIN)/python -m pytest -q -s tests/chaos/test_chaos.py -k nhn

chaos-redis: $(STAMP)  ## the same on Redis (2,000 bookings): what kombu's Redis transport loses, as figures
	TIMEBOK_CHAOS_BOOKINGS=$${TIMEBOK_CHAOS_BOOKINGS:-2000} $(BIN)/python -m pytest -q -s tests/chaos/test_chaos.py -k redis

clean:  ## remove the virtualenv and local state
	rm -rf $(VENV) .timebok .pytest_cache .mypy_cache .ruff_cache
