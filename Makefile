# Geoplex: `make run` starts the mesh with embedded backends and demo data;
# `make test` installs what the tests need and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup system-deps page-deps browser-deps run test lint typecheck breaking gen gen-check bench bench-runtime bench-proximity bench-presence bench-broker bench-broker-cluster bench-broker-chaos bench-routing bench-maps-tiles-ingest bench-maps-congestion bench-telemetry bench-telemetry-alerting clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

system-deps:  ## install redis-server, etcd, nats-server, prometheus, victoria-metrics, python3-venv and npm from Debian packages if missing
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || missing="$$missing nats-server"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing="$$missing prometheus"; \
	command -v victoria-metrics >/dev/null || missing="$$missing victoria-metrics"; \
	test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || missing="$$missing fonts-dejavu-core"; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  case "$$missing" in *prometheus*) if [ -d /run/systemd/system ]; then \
	    $$SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true; \
	  fi;; esac; \
	  case "$$missing" in *victoria-metrics*) if [ -d /run/systemd/system ]; then \
	    $$SUDO systemctl disable --now victoria-metrics >/dev/null 2>&1 || true; \
	  fi;; esac; \
	fi
	@command -v redis-server >/dev/null && command -v etcd >/dev/null && command -v npm >/dev/null && \
	  command -v prometheus >/dev/null && command -v promtool >/dev/null && \
	  { command -v nats-server >/dev/null || test -x /usr/sbin/nats-server; } || \
	  { echo "still missing: install the Debian packages redis-server, etcd-server, nats-server, prometheus and npm"; exit 1; }

page-deps:  ## the telemetry dashboard's chart library (uPlot from npm, pinned with its sha512 in servers/telemetry/dashboard/vendor/package-lock.json; not in git)
	@test -f servers/telemetry/dashboard/vendor/node_modules/uplot/dist/uPlot.iife.min.js || npm ci --prefix servers/telemetry/dashboard/vendor --no-audit --no-fund --loglevel=error

browser-deps: page-deps  ## Debian's Chromium and the tests' browser driver (playwright-core from npm)
	@command -v chromium >/dev/null || { \
	  echo "installing Debian package: chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null || { echo "still missing: install the Debian package chromium"; exit 1; }
	@test -d tests/browser/node_modules/playwright-core || npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,data]'
	@touch $(STAMP)

setup: system-deps $(STAMP)  ## install system packages and the Python environment

gen: $(STAMP)  ## regenerate gen/ from protos/
	$(PY) scripts/gen_protos.py

lint: $(STAMP)  ## buf lint the protos
	$(BIN)/buf lint

typecheck: $(STAMP)  ## mypy: strict on servers/ and the SDK (clients/); tools, infra, bench, tests typed; no type: ignore
	$(PY) scripts/typecheck.py

breaking: $(STAMP)  ## buf breaking against the previous commit, once it has protos
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  $(BIN)/buf breaking --against '.git#ref=HEAD~1' && echo "buf breaking: no breaking change against HEAD~1"; \
	else echo "buf breaking: no previous commit with protos, skipped"; fi

run: setup page-deps  ## start backends, load demo data, run every service (Ctrl-C stops)
	$(BIN)/geoplex up

test: setup browser-deps lint breaking typecheck  ## every test, with the backends they need
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 tests

bench: bench-runtime bench-proximity bench-presence bench-broker bench-routing bench-maps-tiles-ingest bench-maps-congestion bench-telemetry bench-telemetry-alerting  ## run every benchmark (minutes)

bench-runtime: setup  ## the runtime's own ceiling
	$(PY) -m bench.runtime

bench-proximity: setup  ## proximity search vs brute force, cKDTree and Redis GEOSEARCH
	$(PY) -m bench.proximity

bench-presence: setup  ## nearby friends: simulator over two presence processes vs raw Redis pub/sub
	$(PY) -m bench.presence

bench-broker: setup  ## the broker vs NATS JetStream and Redis Streams: produce, consume, latency, CPU
	$(PY) -m bench.broker

bench-broker-cluster: setup  ## three replicated brokers vs a JetStream R3 cluster and Redis with replicas; failover times
	$(PY) -m bench.broker_cluster

bench-broker-chaos: setup  ## the cluster under the nemesis for 100+ leader kills; lost / duplicated counts per fault
	$(PY) -m bench.broker_chaos

bench-routing: setup  ## routing engines vs networkx and OSRM (CH, MLD); end-to-end gRPC
	$(PY) -m bench.routing

bench-maps-tiles-ingest: setup  ## map tiles vs Mapnik, cached tiles over HTTP/gRPC, location ingest end to end
	$(PY) -m bench.maps_tiles_ingest

bench-maps-congestion: setup  ## congestion: ETA rise, detour and recovery with two traffic settings; MatchTrace fixes/s per core and accuracy
	$(PY) -m bench.maps_congestion

bench-telemetry: setup  ## the time-series store vs Prometheus and VictoriaMetrics: remote-write ingest per core, bytes/sample, RSS/series, query p50/p99
	$(PY) -m bench.telemetry

bench-telemetry-alerting: setup  ## rule evaluation (1,000 rules, 10,000 series) vs Prometheus; alert-to-email latency; the agent's cost
	$(PY) -m bench.telemetry_alerting

clean:  ## remove local state and build output (keeps the venv)
	rm -rf .geoplex build dist *.egg-info
