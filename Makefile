# Silt — see README.md. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash

GO        ?= go
BIN       := bin/silt
# MinIO server used by the tests, built once with `go install` and cached.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/silt
MINIO_BIN := $(CACHE_DIR)/minio-$(MINIO_VERSION)
# Toxiproxy server (TCP fault proxy) for the fault tests, built the same way.
TOXIPROXY_VERSION := v2.12.0
TOXIPROXY_BIN := $(CACHE_DIR)/toxiproxy-server-$(TOXIPROXY_VERSION)
LOCALSTACK := $(GO) run ./localstack/cmd/localstack
TEST_TIMEOUT ?= 30m
# make chaos: length of the fault phase and the seed of the schedule
# (empty: a random one, printed).
CHAOS_DURATION ?= 10m
CHAOS_SEED ?=
# make fuzz: how long each fuzz target runs.
FUZZTIME ?= 5m

.PHONY: help build run test test-short lint bench bench-scale chaos fuzz localstack services-up services-down postgres minio toxiproxy haproxy pgbouncer kafka-clients nats chromium curl

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/silt
	$(GO) build -o $(BIN) ./cmd/silt

run: build postgres ## start Silt on its embedded default (private Postgres + file store under ./.silt), anonymous, on 127.0.0.1:8080
	./$(BIN) dev

test: postgres minio toxiproxy haproxy pgbouncer kafka-clients chromium curl ## start Postgres and MinIO (HAProxy, pgbouncer, Toxiproxy and real Kafka clients for the end-to-end, fault and Kafka tests, Chromium for the console's browser test, curl for the README's examples), run every test with -race, stop them
	$(LOCALSTACK) exec --minio-bin $(MINIO_BIN) --toxiproxy-bin $(TOXIPROXY_BIN) -- $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short: ## unit tests only (no services; integration tests skip)
	$(GO) test -short -race ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: postgres minio nats build ## run the benchmark suite against real Postgres (durable: fsync and synchronous_commit on), MinIO and NATS; results in docs/bench (see docs/benchmarks.md)
	$(LOCALSTACK) exec --fast=false --minio-bin $(MINIO_BIN) -- sh -c 'AWS_ACCESS_KEY_ID="$$SILT_TEST_MINIO_ACCESS_KEY" \
	  AWS_SECRET_ACCESS_KEY="$$SILT_TEST_MINIO_SECRET_KEY" ./$(BIN) bench --suite --out docs/bench \
	  --database-url "$$SILT_TEST_POSTGRES_URL" \
	  --objectstore "s3://silt-bench?endpoint=$$SILT_TEST_MINIO_ENDPOINT&region=us-east-1&unsigned_payload=true"'

bench-scale: postgres build ## run the metadata scale sweeps (simulated agents against a private, durable Postgres); results in docs/scale (see docs/scaling.md)
	./$(BIN) scale --suite --out docs/scale

chaos: postgres minio toxiproxy haproxy ## run the fault suite (CHAOS_DURATION, default 10m; CHAOS_SEED) and the overload test; verdict in chaos-results/<seed>/ (see docs/reliability.md)
	$(GO) build -o bin/chaos ./chaos/cmd/chaos
	./bin/chaos -duration $(CHAOS_DURATION) $(if $(CHAOS_SEED),-seed $(CHAOS_SEED)) -minio-bin $(MINIO_BIN) -toxiproxy-bin $(TOXIPROXY_BIN)

fuzz: ## run every Go fuzz target for FUZZTIME (default 5m) each; crashers land in <package>/testdata/fuzz (their seed corpora run in make test)
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

localstack: postgres minio haproxy ## run the local cluster natively: Postgres, MinIO, three agents and HAProxy on loopback
	@# Built, not `go run`: go run reports an interrupted program as failed, and Ctrl-C is how this one stops.
	$(GO) build -o bin/localstack ./localstack/cmd/localstack
	./bin/localstack cluster --minio-bin $(MINIO_BIN)

services-up: postgres minio toxiproxy ## start Postgres and MinIO in the background (state in .silt-services/; the env file also names the Toxiproxy binary)
	$(LOCALSTACK) up --minio-bin $(MINIO_BIN) --toxiproxy-bin $(TOXIPROXY_BIN)

services-down: ## stop what services-up started
	$(LOCALSTACK) down

postgres: ## install PostgreSQL server binaries with apt-get when missing
	@scripts/ensure-postgres.sh

minio: $(MINIO_BIN) ## build the pinned MinIO server (cached)

$(MINIO_BIN):
	@scripts/ensure-minio.sh $(MINIO_BIN) $(MINIO_VERSION)

toxiproxy: $(TOXIPROXY_BIN) ## build the pinned Toxiproxy server (cached), the TCP fault proxy of the fault tests

$(TOXIPROXY_BIN):
	@scripts/ensure-toxiproxy.sh $(TOXIPROXY_BIN) $(TOXIPROXY_VERSION)

haproxy: ## install HAProxy with apt-get when missing (for make localstack and the end-to-end tests)
	@scripts/ensure-apt.sh haproxy haproxy

pgbouncer: ## install pgbouncer with apt-get when missing (the tests of agents behind a pooler in transaction mode)
	@scripts/ensure-apt.sh pgbouncer pgbouncer

kafka-clients: ## install kcat and Debian's Kafka clients for Python (confluent-kafka, kafka-python) with apt-get when missing (for the Kafka tests)
	@scripts/ensure-apt.sh kcat kcat
	@scripts/ensure-apt-python.sh confluent_kafka python3-confluent-kafka
	@scripts/ensure-apt-python.sh kafka python3-kafka

chromium: ## install Debian's Chromium with apt-get when missing (the web console's browser test)
	@scripts/ensure-apt.sh chromium chromium

curl: ## install curl with apt-get when missing (the test that runs the README's examples)
	@scripts/ensure-apt.sh curl curl

nats: ## install the NATS server with apt-get when missing (benchmark baseline)
	@scripts/ensure-apt.sh nats-server nats-server
