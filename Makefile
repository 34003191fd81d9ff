# ferry's make targets. `make help` lists them.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# Each plugin's commands: ferry-plugin-<name> (the plugin) and ferry-lab-<name>
# (`ferry lab`, which runs the simulator and is kept out of the plugin).
PLUGIN_CMDS := $(wildcard plugins/*/cmd/ferry-plugin-* plugins/*/cmd/ferry-lab-*)
GOFLAGS_TEST ?=
BENCH_FLAGS ?=

.PHONY: help build test unit e2e check fmt vet lint layering generate gen-check bench demo clean tools

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/ferry, one bin/ferry-plugin-<name> per plugin, and bin/ferry-lab-vsphere
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ferry ./cmd/ferry
	@for dir in $(PLUGIN_CMDS); do \
		p=$$(basename $$dir); \
		echo "$(GO) build -o $(BIN)/$$p ./$$dir"; \
		$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/$$p ./$$dir || exit 1; \
	done

test: unit e2e ## run every test tier that runs on a clean machine (unit, conformance, end-to-end)

unit: ## unit and conformance tests of both modules, with the race detector
	$(GO) test -race -count=1 $(GOFLAGS_TEST) $$($(GO) list ./... | grep -v /e2e)
	cd sdk && $(GO) test -race -count=1 $(GOFLAGS_TEST) ./...

e2e: ## end-to-end tests: real plugin subprocesses, real files
	$(GO) test -count=1 $(GOFLAGS_TEST) ./e2e/...

check: fmt vet lint gen-check layering ## gofmt, vet, staticcheck, generated code, layering

fmt: ## fail when gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# The benchmarks are Unix-only (rsync, /proc, getrusage), and so is the lab
# (a detached session, a unix socket). Everything else, the local plugin
# included, builds for Windows.
UNIX_ONLY := /bench|/plugins/vsphere/lab|/cmd/ferry-lab-vsphere

vet: ## go vet both modules, and the windows build
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...
	GOOS=windows $(GO) vet $$($(GO) list ./... | grep -vE '$(UNIX_ONLY)')
	cd sdk && GOOS=windows $(GO) vet ./...

lint: ## staticcheck both modules
	staticcheck ./...
	cd sdk && staticcheck ./...

layering: ## core, scheduler and config never import plugins; plugins import only the sdk
	@scripts/check-layering.sh

generate: ## regenerate the protocol code from sdk/proto and core/proxy/proto
	scripts/protogen.sh sdk/proto
	scripts/protogen.sh core/proxy/proto

gen-check: ## fail when the generated protocol code is not current
	@scripts/gen-check.sh

tools: ## install the code generators and the linter at their pinned versions
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

bench: build ## ferry side by side with cp and rsync: ratios and goals (BENCH_FLAGS=-quick for a smoke run)
	@command -v rsync >/dev/null || { echo "bench needs rsync: apt-get install rsync"; exit 1; }
	$(GO) build -o $(BIN)/ferry-bench ./bench/cmd/ferry-bench
	$(BIN)/ferry-bench -bin $(BIN) $(BENCH_FLAGS)

demo: build ## run the demo: the local plugin's lab, the vSphere lab on the simulator, then vSphere onto a simulated Hyper-V host
	@scripts/demo.sh

clean: ## remove build output
	rm -rf $(BIN)
