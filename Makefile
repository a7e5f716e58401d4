# kmipfast: `make run` serves on the embedded defaults, `make test` runs every suite.
# Both do all set-up on a fresh machine: system packages, virtualenv, release build.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA_DIR ?= $(if $(KMIPFAST_DATA_DIR),$(KMIPFAST_DATA_DIR),./kmipfast-data)
LISTEN ?= 127.0.0.1:5696
CLUSTER_DIR ?= ./kmipfast-cluster
NATIVE_SRC := $(shell find native/src -name '*.rs') native/Cargo.toml Cargo.toml

.PHONY: all setup sysdeps venv native run cluster test test-rust test-python lint bench bench-codec bench-server bench-nodes bench-rotation locust clean

all: setup

setup: sysdeps venv native

# SoftHSM2 is the HSM in development and tests (DESIGN §3); PostgreSQL is the shared
# store of several nodes (DESIGN §5): tests initdb a throwaway cluster (tests/pg.py).
sysdeps:
	@if ! command -v softhsm2-util >/dev/null 2>&1; then \
	  echo "installing softhsm2 (Debian package)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq softhsm2 >/dev/null; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing postgresql (Debian package)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

venv: $(VENV)/.deps-stamp

$(VENV)/.deps-stamp: pyproject.toml requirements-dev.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	@touch $@

native: $(VENV)/.native-stamp

$(VENV)/.native-stamp: $(VENV)/.deps-stamp $(NATIVE_SRC)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release --quiet 2>&1 | grep -v '^\s*$$' | tail -3
	$(PY) -c "import kmipfast._native as n; print('native module', n.__version__, 'ok')"
	@touch $@

run: setup
	$(VENV)/bin/kmipfast --data-dir "$(DATA_DIR)" init --if-new
	$(VENV)/bin/kmipfast --data-dir "$(DATA_DIR)" serve --listen "$(LISTEN)"

# PostgreSQL (in $(CLUSTER_DIR)/postgresql) and two nodes on 5696/5697 until Ctrl-C.
cluster: setup
	$(VENV)/bin/kmipfast --data-dir "$(CLUSTER_DIR)" cluster up --nodes 2

test: setup lint test-rust test-python

lint:
	cargo fmt --all --check
	cargo clippy --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check kmipfast tests loadtests
	$(VENV)/bin/mypy kmipfast
	$(PY) -m mypy.stubtest kmipfast._native --allowlist native-stubtest-allowlist.txt

# One test thread: SoftHSM2 2.6 now and then fails concurrent token-object creation in
# one process with CKR_GENERAL_ERROR (softhsm/SoftHSMv2#573), which the HSM tests would hit.
test-rust:
	RUST_TEST_THREADS=1 cargo test --quiet --all-targets

test-python:
	$(VENV)/bin/pytest -q tests
	# The live-server suites again on each forced TLS engine (the first run used auto).
	# (The Locust run starts its own server with fixed settings: once is enough.)
	KMIPFAST_SERVER_TLS_ENGINE=rustls $(VENV)/bin/pytest -q tests/server tests/conformance -k "not locust"
	KMIPFAST_SERVER_TLS_ENGINE=openssl $(VENV)/bin/pytest -q tests/server tests/conformance -k "not locust"
	# The live-server suite again with PostgreSQL as the store (tests/pg.py starts it).
	KMIPFAST_TEST_STORE=postgresql $(VENV)/bin/pytest -q tests/server -k "not locust"

bench: setup
	$(PY) loadtests/bench_codec.py

bench-codec: bench

bench-server: setup
	$(PY) loadtests/bench_server.py

# Issue #8's node targets, side by side: Get on 2 PostgreSQL nodes vs one SQLite node,
# durable Create on PostgreSQL vs the reference, Destroy's reach to another node.
bench-nodes: setup
	$(PY) loadtests/bench_server.py --servers reference,kmipfast,kmipfast-pg,kmipfast-pg2 \
	    --workloads get-8,create-8,invalidate

locust: setup
	$(PY) loadtests/locust_run.py --seconds 60

bench-rotation: setup
	$(PY) loadtests/bench_rotation.py --keys 100000

clean:
	rm -rf target $(VENV) kmipfast/*.so
