# sandbox-operator: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NODE ?= fake
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv deps test unit lint cluster-test node-test demo cluster-up cluster-down cluster-status cluster-build \
	manifests image image-import image-lock chart-sync helm bench bench-pool clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml tools/localcluster/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[operator,mcp,test]' -e tools/localcluster
	touch $@

venv: $(VENV)/.installed ## create .venv with the pinned Python dependencies

# checkov (the manifest scanner tests/unit/test_checkov.py runs) in a virtualenv of its own: its pins clash with ours.
CHECKOV_VERSION := 3.3.30
.venv-checkov/.installed:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip==25.3
	.venv-checkov/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

deps: venv .venv-checkov/.installed ## install everything the tests need (Debian packages, Python packages; Go must be on PATH)
	@command -v go >/dev/null || { echo "the Go toolchain is required to build the local cluster (go.dev/doc/install)" >&2; exit 1; }
	bash tools/localcluster/localcluster/node-deps.sh

test: deps ## the full suite: lint, types, unit tests, local-cluster tests, real-node tests
	$(MAKE) lint
	$(PY) -m localcluster build --all  # every binary and image the tests use, before any test's timeout starts
	$(PY) -m pytest -m "not cluster and not node" $(PYTEST_ARGS)
	$(PY) -m pytest -m "cluster" $(PYTEST_ARGS)
	$(PY) -m pytest -m "node" $(PYTEST_ARGS)

unit: venv .venv-checkov/.installed ## the fast unit tests only (no cluster)
	$(PY) -m pytest -m "not cluster and not node" $(PYTEST_ARGS)

lint: venv ## ruff and mypy --strict on the operator package
	$(VENV)/bin/ruff check operator tests bench scripts tools examples
	$(VENV)/bin/mypy operator/sandbox_operator

cluster-test: venv ## the tests that need a real API server (starts the local cluster if none runs)
	$(PY) -m pytest -m "cluster" $(PYTEST_ARGS)

node-test: venv ## the tests that need a real kubelet (make cluster-up NODE=real first)
	$(PY) -m pytest -m "node" $(PYTEST_ARGS)

cluster-build: venv ## build and cache the cluster binaries (~/.cache/sandbox-operator)
	$(PY) -m localcluster build

cluster-up: venv ## start the local cluster (NODE=real adds a kubelet + containerd node)
	$(PY) -m localcluster up --node $(NODE)

cluster-down: venv ## stop the local cluster and remove its state
	$(PY) -m localcluster down

cluster-status: venv ## show what the local cluster runs
	$(PY) -m localcluster status

demo: deps ## bring up the local cluster, run the operator, create a Sandbox and watch it expire
	$(PY) scripts/demo.py

manifests: venv ## regenerate crds/ and deploy/ from the models, then the chart's copies
	$(PY) -m sandbox_operator.manifests
	$(PY) -m localcluster.chart_files

image: venv ## build the operator image offline as an OCI archive in ~/.cache/sandbox-operator/images (with Docker: docker build .)
	$(PY) -m localcluster.operator_image build

image-import: venv ## import the operator image into the local cluster's real node (make cluster-up NODE=real first)
	$(PY) -m localcluster.operator_image import

image-lock: venv ## regenerate image/requirements.txt after changing pyproject's dependencies
	$(PY) -m localcluster.operator_image lock

chart-sync: venv ## copy crds/ and deploy/ into charts/sandbox-operator
	$(PY) -m localcluster.chart_files

helm: venv ## build helm from its pinned Go module and print its path
	@$(PY) -c "from localcluster.helm import helm_binary; print(helm_binary())"

bench: venv ## issue 11 in one run: create->Ready, writes, CPU, RSS against direct pods and agent-sandbox; fill, restart, takeover, expiry (BENCH_ARGS=...)
	$(PY) bench/fleet.py $(BENCH_ARGS)

bench-pool: venv ## warm claims from a SandboxPool against cold templated Sandboxes, direct pods and agent-sandbox's warm pool; BENCH_ARGS="--node real" on the real node
	$(PY) bench/pool.py $(BENCH_ARGS)

clean: ## remove the virtualenv and caches in the tree (not ~/.cache/sandbox-operator)
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache .hypothesis
