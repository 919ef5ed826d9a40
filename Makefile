# Scale — the two commands a new user needs:
#   make run    the whole pipeline in one process on the embedded default
#   make test   every test (Postgres, NATS and S3 tests run for real), plus a short fuzz run
GO       ?= go
FUZZTIME ?= 30s
N        ?= 1000
DIR      ?= corpus
SEED     ?= 1
MODULES  := ./... ./services/chaos-runner/...

.PHONY: build test vet lint fuzz run bench bench-lakh bench-pipeline corpus

build:
	$(GO) build $(MODULES)

vet:
	$(GO) vet $(MODULES)

lint: vet
	staticcheck $(MODULES)

test: vet
	$(GO) test -count=1 -timeout 20m $(MODULES)
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./internal/midiparse

run:
	$(GO) run ./cmd/scale $(ARGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -cpu 1 ./internal/midiparse

# Lakh size: 176,581 synthetic songs in a throwaway Postgres, similarity rebuild,
# then /v1/songs/{id}/similar under load (a few minutes).
bench-lakh:
	$(GO) run ./cmd/simbench $(ARGS)

# A synthetic corpus of real MIDI files: make corpus N=176581 DIR=/tmp/lakh SEED=1
corpus:
	$(GO) run ./cmd/synth -n $(N) -dir $(DIR) -seed $(SEED)

# The real pipeline (ingest, N extract processes, similarity) over a corpus folder:
# make corpus N=20000 DIR=/tmp/c && make bench-pipeline DIR=/tmp/c ARGS="-workers 1,2,4"
bench-pipeline:
	$(GO) run ./cmd/pipebench -dir $(DIR) $(ARGS)
