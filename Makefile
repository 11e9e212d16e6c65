# pki-operator developer interface. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
GO ?= go
K8S_VERSION := v1.36.3
DEVCLUSTER := target/devcluster/devcluster
HELM_VERSION := v3.19.0
HELM := target/tools/helm
CLUSTER_DIR ?= $(CURDIR)/target/cluster
GO_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=36 \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: test
test: fmt-check clippy crds-check unit e2e demo ## Everything CI checks: fmt, clippy, CRDs up to date, unit and e2e tests, the demo
	@echo "make test: all checks passed"

.PHONY: fmt-check
fmt-check: ## Check Rust formatting
	$(CARGO) fmt --all -- --check

.PHONY: fmt
fmt: ## Format the Rust code
	$(CARGO) fmt --all

.PHONY: clippy
clippy: ## Lint with clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: generate
generate: ## Regenerate crds/ from the Rust types
	$(CARGO) run --locked --quiet --bin crdgen

.PHONY: crds-check
crds-check: ## Fail when crds/ differs from the Rust types
	$(CARGO) run --locked --quiet --bin crdgen -- --check

.PHONY: unit
unit: ## Unit tests (no cluster needed)
	$(CARGO) test --locked --lib --bins

.PHONY: packages
packages: ## Install the Debian packages the tests and the demo run as real peers (BIND9, aiosmtpd, openssl), only when missing
	scripts/ensure-packages.sh

.PHONY: e2e
e2e: packages $(DEVCLUSTER) $(HELM) ## End-to-end tests against a real local control plane (and the e2e crate's own tests: simulators, BIND9)
	$(CARGO) build --locked --bin pki-operator --bin kubectl-pki
	PKI_E2E_DEVCLUSTER=$(CURDIR)/$(DEVCLUSTER) PKI_E2E_HELM=$(CURDIR)/$(HELM) \
		$(CARGO) test --locked -p pki-operator-e2e -- $(E2E_ARGS)

# Helm from the Go module proxy (no release downloads here); the chart is rendered with it in e2e.
$(HELM):
	@command -v $(GO) >/dev/null || { echo "Go is required to build helm"; exit 1; }
	mkdir -p $(dir $(HELM))
	GOBIN=$(CURDIR)/$(dir $(HELM)) $(GO) install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36" \
		helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: devcluster
devcluster: $(DEVCLUSTER) ## Build the local control plane (kube-apiserver + etcd + controllers, from Go modules)

# Rebuilt only when its sources change; Go's own build cache keeps rebuilds to a relink.
$(DEVCLUSTER): e2e/controlplane/go.mod e2e/controlplane/go.sum $(wildcard e2e/controlplane/*.go)
	@command -v $(GO) >/dev/null || { echo "Go is required to build the local control plane"; exit 1; }
	cd e2e/controlplane && CGO_ENABLED=0 $(GO) build -p 2 -trimpath -ldflags "$(GO_LDFLAGS)" -o $(CURDIR)/$(DEVCLUSTER) .
	ln -sf devcluster target/devcluster/kubectl

.PHONY: cluster
cluster: $(DEVCLUSTER) ## Start the local control plane in the background and print the kubeconfig path
	@if [ -f $(CLUSTER_DIR)/ready ] && kill -0 $$(cat $(CLUSTER_DIR)/devcluster.pid) 2>/dev/null; then \
		echo "already running"; \
	else \
		mkdir -p $(CLUSTER_DIR); \
		nohup $(DEVCLUSTER) up --dir $(CLUSTER_DIR) > $(CLUSTER_DIR)/devcluster.log 2>&1 & \
		for i in $$(seq 1 120); do [ -f $(CLUSTER_DIR)/ready ] && break; sleep 0.5; done; \
		[ -f $(CLUSTER_DIR)/ready ] || { tail -20 $(CLUSTER_DIR)/devcluster.log; exit 1; }; \
	fi
	@echo "kubeconfig: $(CLUSTER_DIR)/kubeconfig"
	@echo "  export KUBECONFIG=$(CLUSTER_DIR)/kubeconfig; alias kubectl=$(CURDIR)/target/devcluster/kubectl"

.PHONY: cluster-down
cluster-down: ## Stop the local control plane started by `make cluster`
	@if [ -f $(CLUSTER_DIR)/devcluster.pid ] && kill $$(cat $(CLUSTER_DIR)/devcluster.pid) 2>/dev/null; then \
		for i in $$(seq 1 60); do kill -0 $$(cat $(CLUSTER_DIR)/devcluster.pid) 2>/dev/null || break; sleep 0.5; done; \
		echo "stopped"; \
	else echo "not running"; fi

.PHONY: run
NAMESPACE ?= demo
.PHONY: demo-ca
demo-ca: $(DEVCLUSTER) ## Create the CA key pair Secret demo-ca that examples/issuer-ca.yaml uses, in $(NAMESPACE) (default demo)
	KUBECTL="$(CURDIR)/target/devcluster/kubectl" scripts/demo-ca.sh $(NAMESPACE)

run: ## Run the operator against $KUBECONFIG (e.g. the one `make cluster` prints)
	$(CARGO) run --locked --bin pki-operator -- --admin-address 127.0.0.1:8080

.PHONY: bench
bench: $(DEVCLUSTER) ## Measure the guide's performance and crash-safety targets (release build) and write BENCHMARKS.md
	$(CARGO) build --release --locked --bin pki-operator
	PKI_E2E_OPERATOR=$(CURDIR)/target/release/pki-operator PKI_E2E_DEVCLUSTER=$(CURDIR)/$(DEVCLUSTER) \
		$(CARGO) run --release --locked --quiet -p pki-operator-e2e --bin bench -- $(BENCH_ARGS)

.PHONY: demo
demo: packages $(DEVCLUSTER) ## The main job: control plane + SCM and Nexus simulators + operator, apply examples/demo, wait Ready, email one alert, summarise, clean up
	$(CARGO) build --locked --bin pki-operator
	PKI_E2E_DEVCLUSTER=$(CURDIR)/$(DEVCLUSTER) $(CARGO) run --locked --quiet -p pki-operator-e2e --bin demo
