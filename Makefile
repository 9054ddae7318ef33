# Every target installs what it needs into .venv first, so `make run` and
# `make test` work on a fresh machine with only python3 on the PATH.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps run cluster test unit e2e chaos chaos-cleanup clean bench bench-quick bench-floor bench-venv proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/qcluster serve --data-dir ./data --host 127.0.0.1 --http-port 6333 --grpc-port 6334

# Python modules generated from proto/ (committed; tests/unit/test_proto.py
# fails when they are stale). Same command as the test uses.
proto: install
	$(PY) -m qcluster.proto.generate

# Three nodes on 127.0.0.1 (REST 6333, 6343, 6353), data in ./data-cluster.
cluster: install
	$(VENV)/bin/qcluster dev-cluster --nodes 3 --data-dir ./data-cluster

# The chaos harness (tests/chaos, `make chaos`) needs iproute2 and iptables;
# as root with apt-get, the missing ones are installed (else those tests skip
# with the reason).
system-deps:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install system-deps
	$(PY) -m pytest -q tests

unit: install
	$(PY) -m pytest -q tests/unit

e2e: install
	$(PY) -m pytest -q tests/e2e

# The chaos harness (docs/chaos.md): a seeded run of every fault against three
# real nodes in network namespaces, ~15 minutes; the report lands in
# chaos/results/. CHAOS_ARGS overrides the run, e.g. CHAOS_ARGS="--rounds 50 --seed 7".
CHAOS_ARGS ?= --nodes 3 --rounds 30 --fault-min-s 5 --fault-max-s 30 --recovery-s 5
chaos: install system-deps
	@if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1; then \
		echo "installing faketime (the clock nemesis probes it)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null || true; \
	fi
	$(VENV)/bin/qcluster chaos run $(CHAOS_ARGS)

chaos-cleanup: install
	$(VENV)/bin/qcluster chaos cleanup

# Benchmarks (bench/README.md). The peers live in their own venv so that
# `make test` stays light; a peer that fails to install is written to
# .venv-bench/install-<peer>.failed and reported in the results.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_PEERS := chromadb milvus-lite lancedb

$(BENCH_STAMP): pyproject.toml bench/requirements.txt $(foreach peer,$(BENCH_PEERS),bench/requirements-$(peer).txt)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e . -r bench/requirements.txt
	@for peer in $(BENCH_PEERS); do \
		rm -f $(BENCH_VENV)/install-$$peer.failed; \
		if ! $(BENCH_PY) -m pip install --quiet -r bench/requirements-$$peer.txt > $(BENCH_VENV)/install-$$peer.log 2>&1; then \
			tail -n 20 $(BENCH_VENV)/install-$$peer.log > $(BENCH_VENV)/install-$$peer.failed; \
			echo "bench: $$peer did not install (see $(BENCH_VENV)/install-$$peer.log); it will be reported as failed"; \
		fi; \
	done
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) -m bench.run --dataset pypi,synthetic --systems faiss,qcluster,qcluster-grpc,qcluster-cluster,qdrant-local,chromadb,milvus-lite,lancedb --out bench/results

bench-quick: install
	$(PY) -m bench.run --quick

# The floor under the network figures: minimal aiohttp servers (echo, FAISS) with the same load client.
bench-floor: $(BENCH_STAMP)
	$(BENCH_PY) -m bench.floor

clean:
	rm -rf $(VENV) $(BENCH_VENV) data .pytest_cache
