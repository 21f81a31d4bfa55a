# The one entry point for building, testing and running the import worker.
# `make test` installs what the tests need (redis-server, promtool, chromium) when it is
# missing, so it works on a fresh machine.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/versori/import-worker/internal/buildinfo.Version=$(VERSION) -X github.com/versori/import-worker/internal/buildinfo.Commit=$(COMMIT)
BIN       := bin

.PHONY: all build test unit-test vet fuzz bench demo deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# deps installs the Debian packages the integration tests drive, when missing.
# The Sentinel tests run redis-server --sentinel, so redis-sentinel is not needed.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }
	@command -v redis-cli >/dev/null 2>&1 || { \
		echo "installing redis-tools (redis-cli, which builds the Redis Cluster of the e2e tests)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools) >/dev/null; }
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing prometheus (promtool)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (the console's browser test)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# test runs unit and integration tests with the race detector. Integration
# tests start their own redis-server processes on free ports (internal/redistest)
# and stop them afterwards; REDISTEST_REQUIRED makes a missing binary a failure,
# and CONSOLE_BROWSER_REQUIRED a missing chromium for the console's browser test.
# The FIGURE lines are the measured figures the end-to-end tests log.
test: SHELL := /bin/bash
test: deps vet
	set -o pipefail; REDISTEST_REQUIRED=1 CONSOLE_BROWSER_REQUIRED=1 $(GO) test -race -count=1 -timeout 14m -parallel 4 -v ./... \
		| grep -E '^(ok|FAIL|---|panic|\s+FIGURE|\s+\S+_test\.go:[0-9]+:)' | grep -vE '^--- (PASS|SKIP)'
	@$(GO) test -count=1 -cover ./versori/ | sed 's/^/coverage: /'

# fuzz runs every fuzz target for FUZZTIME each (a duration, or a count of
# inputs such as 30000x, which CI uses: a duration can end in a spurious
# "context deadline exceeded", golang/go#75804); the seed corpora in
# testdata/fuzz run with the unit tests anyway.
FUZZTIME ?= 10s
FUZZ_TARGETS := ./versori/:FuzzParseRetryAfter ./versori/:FuzzParseOrgID ./versori/:FuzzDecodeError ./versori/:FuzzDecodeConnector ./tasks/:FuzzDecodePayload \
	./versori/:FuzzParseRateLimit ./ratebudget/:FuzzSchedule ./ledger/:FuzzSanitize ./orglist/:FuzzParse ./rollout/:FuzzParseWaves ./ratebudget/:FuzzFairTurn ./gate/:FuzzParseCondition
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# bench measures the figures of BENCHMARKS.md, each beside its baseline from
# the same run, against redis-servers it starts itself, and prints one table
# (about 13 minutes). FIGURE picks one figure: rate, overhead, footprint,
# rollout, recovery, enqueue, adaptive, api or scale (BENCH_SCALE_N=n for a
# smaller rollout than 1,000,000). BENCH_OUT=file also writes
# the table there;
# BENCH_PPROF_DIR=dir saves CPU and heap profiles of the worker (figure 2).
# BENCH_FAKE_BURST=n gives figure 7's fake API limits a burst of n (1: none).
FIGURE ?=
bench: deps
	BENCH=1 REDISTEST_REQUIRED=1 $(GO) test ./bench/ -run 'TestBench/$(FIGURE)' -count=1 -v -timeout 30m

# demo runs a whole rollout on embedded defaults in one process: an in-memory
# Redis, the fake Versori API, a worker serving /metrics and a rollout of 3,000
# organisations, then prints the status and the path of a CSV report. It
# keeps nothing and needs nothing installed but Go. The demo tag links the
# in-memory Redis and the fake API, which the production binaries leave out.
demo:
	$(GO) run -tags demo ./cmd/enqueue demo

clean:
	rm -rf $(BIN)
