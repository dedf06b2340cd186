# Weft developer entry points. `make lab` and `make test` are the two a newcomer runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
MOCHA := node_modules/.bin/mocha --reporter ./test/harness/reporter.cjs
NODES ?= 3
PODS ?= 2
CIDR ?= 10.244.0.0/16
VNI ?= 42
# kube-apiserver (and kubectl when the machine has none) for test/kube, built
# once from the Go module proxy and cached outside the repository.
WEFT_CACHE ?= $(HOME)/.cache/weft
export WEFT_CACHE
export PATH := $(PATH):$(WEFT_CACHE)/bin

.PHONY: help deps gen verify-gen build typecheck kube-tools kube-node-tools test test-unit test-integration test-e2e test-kube test-kube-nodes bench lab lab-down kube-lab kube-lab-down clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install system packages and npm dependencies (idempotent)
	@hack/install-deps.sh

gen: deps ## regenerate pkg/api/gen from proto/
	@hack/gen-proto.sh

verify-gen: deps ## fail if pkg/api/gen is not what proto/ generates
	@hack/verify-gen.sh

build: deps ## compile to dist/
	@node_modules/.bin/tsc -p tsconfig.build.json
	@chmod +x dist/cmd/*/main.js
	@hack/bundle.sh

typecheck: deps ## type-check everything, tests included
	@node_modules/.bin/tsc -p tsconfig.json --noEmit

kube-tools: ## build kube-apiserver (and kubectl if missing) for the Kubernetes tests; cached, 10-20 min the first time
	@hack/build-kube-apiserver.sh kube-apiserver >/dev/null
	@command -v kubectl >/dev/null || hack/build-kube-apiserver.sh kubectl >/dev/null

kube-node-tools: kube-tools ## build kubelet, kube-proxy, kube-scheduler, kube-controller-manager for make kube-lab; cached, a few minutes after kube-tools
	@for t in kubelet kube-proxy kube-scheduler kube-controller-manager; do hack/build-kube-apiserver.sh $$t >/dev/null; done

test: deps verify-gen typecheck build kube-tools ## install what is needed, then run every test suite
	@$(MOCHA) 'test/unit/**/*.test.ts' 'test/integration/**/*.test.ts' 'test/e2e/**/*.test.ts' 'test/kube/**/*.test.ts'

test-unit: deps ## unit tests only (pure logic)
	@$(MOCHA) 'test/unit/**/*.test.ts'

test-integration: deps build ## integration tests (real etcd)
	@$(MOCHA) 'test/integration/**/*.test.ts'

test-e2e: deps build ## end-to-end tests (network namespaces, real kernel)
	@$(MOCHA) 'test/e2e/**/*.test.ts'

test-kube: deps build kube-tools ## Kubernetes tests (real kube-apiserver, deploy/ manifests, controller in Kubernetes mode)
	@$(MOCHA) 'test/kube/**/*.test.ts'

test-kube-nodes: deps kube-node-tools ## Weft on real kubelets: a kube-lab cluster (containerd + kubelet per node namespace), DaemonSet, cross-node pods, hostPort, token identity, rolling update, Node deletion
	@$(MOCHA) 'test/kube-nodes/**/*.test.ts'

bench: deps build kube-tools ## benchmarks: tables printed and written to bench/results/
	@node --import tsx test/bench/run.ts

lab: deps build ## a whole Weft cluster in network namespaces on this machine
	@node --import tsx hack/lab.ts up --nodes $(NODES) --pods $(PODS) --cidr $(CIDR) --vni $(VNI)

lab-down: ## remove everything `make lab` created
	@node --import tsx hack/lab.ts down

kube-lab: deps kube-node-tools ## a real Kubernetes cluster (containerd + kubelet per node) in namespaces, Weft installed from deploy/, ping matrix
	@node --import tsx hack/kube-lab.ts up --nodes $(NODES)

kube-lab-down: ## remove everything `make kube-lab` created
	@node --import tsx hack/kube-lab.ts down

clean: ## remove build output
	rm -rf dist
