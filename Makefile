# Scale — the two commands a new user needs:
#   make run    the whole pipeline in one process on the embedded default
#   make test   every test (Postgres, NATS and S3 tests run for real), plus a short fuzz run
GO       ?= go
# The Go release Scale builds with: the go command fetches it from the module
# proxy on first use (about 10 s). 1.26.8, the machine's own, has known
# vulnerabilities in net/http, crypto/tls and crypto/x509 (govulncheck).
export GOTOOLCHAIN := go1.27.3
FUZZTIME ?= 30s
N        ?= 1000
DIR      ?= corpus
SEED     ?= 1
MODULES  := ./... ./services/chaos-runner/... ./deploy/...
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/scale-dev/scale/internal/buildinfo.version=$(VERSION)
BIN      ?= bin

# Linters, pinned. govulncheck reads a vulnerability database built here from
# the golang.org/x/vulndb module (the module proxy serves it; no other host is
# needed).
STATICCHECK_MODULE  := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK_MODULE  := golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
VULNDB              ?= $(HOME)/.cache/scale/vulndb-$(VULNDB_VERSION)
GOBIN_DIR           := $(shell $(GO) env GOPATH)/bin

.PHONY: build test vet lint tools fuzz run bench bench-go bench-lakh bench-overload bench-pipeline corpus images kube-binaries

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/scale ./services/ingest/cmd/ingest ./services/extract/cmd/extract \
		./services/similarity/cmd/similarity ./services/api/cmd/api
	cd services/chaos-runner && $(GO) build -ldflags "$(LDFLAGS)" -o ../../$(BIN)/ .

vet:
	$(GO) vet $(MODULES)

# Installs the linters (built with this Go release) and the vulnerability database.
tools: $(VULNDB)/index/db.json
	GOFLAGS= $(GO) install $(STATICCHECK_MODULE)
	GOFLAGS= $(GO) install $(GOVULNCHECK_MODULE)

$(VULNDB)/index/db.json:
	GOFLAGS= $(GO) mod download golang.org/x/vulndb@$(VULNDB_VERSION)
	cd / && GOFLAGS= $(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) \
		-vulns $$($(GO) env GOMODCACHE)/golang.org/x/vulndb@$(VULNDB_VERSION)/data/osv -out $(VULNDB)

lint: vet
	$(GOBIN_DIR)/staticcheck -checks=all $(MODULES)
	$(GOBIN_DIR)/govulncheck -db file://$(VULNDB) $(MODULES)

# The deploy module's control-plane tests run after the others, not beside them:
# together with the chaos experiments they overloaded the two cores and broke
# an experiment's timing.
test: lint
	$(GO) test -count=1 -timeout 30m ./... ./services/chaos-runner/...
	$(GO) test -count=1 -timeout 30m ./deploy/...
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x $(GO_BENCH_PACKAGES)
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/midiparse

# The Kubernetes control plane the chart's tests run on (kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok), built from the Go module
# proxy into ~/.cache/scale-k8s (15-20 min cold; nothing when cached).
kube-binaries:
	bash deploy/kube/binaries.sh

# Container images without a container engine: dist/images/NAME.tar (docker
# load) and dist/images/oci (an OCI layout for crane or skopeo).
images:
	$(GO) run ./cmd/images -out dist/images -version $(VERSION)

run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/scale $(ARGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -cpu 1 ./internal/midiparse

# The Go benchmarks of the write path and the object store (BenchmarkSaveOutcomes,
# BenchmarkWriteSimilar, BenchmarkGetS3 and BenchmarkGetFolder with the client's
# CPU per read) on the real Postgres and versitygw; make test runs each once so
# that none rots.
GO_BENCH_PACKAGES = ./internal/store ./internal/objstore
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 3s $(GO_BENCH_PACKAGES)

# Lakh size: 176,581 synthetic songs in a throwaway Postgres, similarity rebuild,
# then /v1/songs/{id}/similar under load (a few minutes).
bench-lakh:
	$(GO) run ./cmd/simbench $(ARGS)

# The API under open-loop overload (the load-shedding curve), at Lakh size:
# make bench-overload, or ARGS="-cache-songs 0 -max-in-flight 16" for the uncached API.
bench-overload:
	$(GO) run ./cmd/simbench -duration 5s -overload 5000,10000,20000,40000,60000 $(ARGS)

# A synthetic corpus of real MIDI files: make corpus N=176581 DIR=/tmp/lakh SEED=1
corpus:
	$(GO) run ./cmd/synth -n $(N) -dir $(DIR) -seed $(SEED)

# The real pipeline (ingest, N extract processes, similarity) over a corpus folder:
# make corpus N=20000 DIR=/tmp/c && make bench-pipeline DIR=/tmp/c ARGS="-workers 1,2,4"
bench-pipeline:
	$(GO) run ./cmd/pipebench -dir $(DIR) $(ARGS)
