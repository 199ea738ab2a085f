# moltgate: the README's two commands are `make run` and `make test`; both set themselves up.
SHELL         := bash
GO            ?= go
BIN           := bin/moltgate
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The real OpenClaw gateway the end-to-end tests run, on Node 24 from npm (pinned).
OPENCLAW_DIR  := .cache/openclaw
NODE_PKG      := node@24.21.0
OPENCLAW_PKGS := openclaw@2026.9.6 openclaw-node@0.14.0
OPENCLAW_STAMP := $(OPENCLAW_DIR)/.installed-2026.9.6-0.14.0-24.21.0
TEST_TIMEOUT  ?= 30m

.PHONY: all build run test testdeps openclaw bench benchdeps fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/moltgate

## run: build and serve on the embedded defaults (data in ./data, development keys). The
## local driver's gateways (gateway create) run on the pinned Node and OpenClaw, installed
## into .cache/openclaw the first time, as make test does.
run: build $(OPENCLAW_STAMP)
	./$(BIN) serve

## test: install what the tests need, then run every test with the race detector: moltgate's
## module, then deploy/'s (the deployment files' checks, a module of its own so that the
## Kubernetes and Prometheus libraries they need stay out of moltgate's build).
test: testdeps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) -C deploy vet ./...
	$(GO) -C deploy test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

testdeps: openclaw
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (Debian package)"; \
	  { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; } || \
	  { echo "could not install redis-server: run 'apt-get install redis-server' as root" >&2; exit 1; }; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package, for the browser tests)"; \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "could not install chromium: run 'apt-get install chromium' as root" >&2; exit 1; }; }
	$(GO) mod download
	$(GO) -C deploy mod download

## openclaw: the pinned Node 24 and OpenClaw gateway in .cache/openclaw (the quick start runs it).
openclaw: $(OPENCLAW_STAMP)

# Node 24 first (OpenClaw needs >= 24.16; the machine's node may be older), then OpenClaw with
# that node first on PATH so its install scripts run under it.
$(OPENCLAW_STAMP):
	@echo "installing the pinned Node ($(NODE_PKG)) and OpenClaw ($(OPENCLAW_PKGS)) into $(OPENCLAW_DIR): first time only, about a minute"
	mkdir -p $(OPENCLAW_DIR)
	test -f $(OPENCLAW_DIR)/package.json || echo '{"name":"moltgate-openclaw-testenv","private":true}' > $(OPENCLAW_DIR)/package.json
	cd $(OPENCLAW_DIR) && npm install --save-exact --no-audit --no-fund --loglevel=error $(NODE_PKG)
	cd $(OPENCLAW_DIR) && PATH="$$PWD/node_modules/.bin:$$PATH" npm install --save-exact --no-audit --no-fund --loglevel=error $(OPENCLAW_PKGS)
	touch $@

## bench: the speed figures of the README's Performance section, with ratios to baselines
## measured in the same run. Lines starting with "bench " are the figures.
bench: testdeps benchdeps
	MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench . -benchtime 2s -cpu 1 ./policies/ ./proxy/authn/ ./keystore/
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'CredentialPaths' -benchtime 30000x -cpu 1 ./proxy/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'AuthFailureCheck' -benchtime 30000x -cpu 1 ./proxy/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'SpoolToRedis|AuditedRequest/spool' -benchtime 300000x ./audit/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'AuditedRequest/durable' -benchtime 20000x ./audit/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'Propagation' -benchtime 5000x ./store/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; MOLTGATE_BENCH_REPORT=1 $(GO) test -run '^$$' -bench 'Fresh' ./store/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; $(GO) test -run '^$$' -bench '^BenchmarkProxy$$' -benchtime 1x -count=1 -timeout 20m ./cmd/moltgate/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; $(GO) test -run '^$$' -bench '^BenchmarkWSRelay$$' -benchtime 1x -count=1 -timeout 20m ./cmd/moltgate/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; $(GO) test -run '^$$' -bench '^BenchmarkProvisionFly$$' -benchtime 1x -count=1 -timeout 10m ./provisioner/cloud/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; $(GO) test -run '^$$' -bench '^BenchmarkLocalCreate$$' -benchtime 1x -count=1 -timeout 10m ./cmd/moltgate/ | grep -E '^(bench |ok|FAIL|---)'
	set -o pipefail; $(GO) test -run '^$$' -bench '^BenchmarkReplicas$$' -benchtime 1x -count=1 -timeout 10m ./cmd/moltgate/ | grep -E '^(bench |ok|FAIL|---)'

benchdeps:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk (Debian package)"; \
	  { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  { echo "could not install wrk: run 'apt-get install wrk' as root" >&2; exit 1; }; }

## fuzz: a short run of every fuzz target (seeded from testdata/).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizePath$$' -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzClientIP$$' -fuzztime 30s ./proxy/
	$(GO) test -run '^$$' -fuzz '^FuzzCredential$$' -fuzztime 30s ./proxy/authn/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime 30s ./proxy/authn/
	$(GO) test -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime 30s ./policies/

clean:
	rm -rf bin
