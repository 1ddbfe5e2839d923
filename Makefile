# Coalition: `make run` serves the API with a demo coalition; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test fuzz lint check-schema bench clean chromium cluster-tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Coalition needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP)
	COALITION_ENV=$${COALITION_ENV:-development} $(BIN)/coalition db upgrade
	COALITION_ENV=$${COALITION_ENV:-development} $(BIN)/coalition demo load --with-history
	@echo
	@echo "Coalition on http://$(HOST):$(PORT)/"
	@echo "  API docs        http://$(HOST):$(PORT)/docs"
	@echo "  OpenAPI         http://$(HOST):$(PORT)/openapi.json"
	@echo "  member page     http://$(HOST):$(PORT)/member"
	@echo "  finance page    http://$(HOST):$(PORT)/finance"
	@echo "  partner portal  http://$(HOST):$(PORT)/partner   (demo: nora@northwind.example / northwind-portal-demo)"
	@echo "  program terms   http://$(HOST):$(PORT)/member/terms"
	@echo "In another terminal, in this folder:"
	@echo "  . $(BIN)/activate                    # puts 'coalition' on the PATH"
	@echo "  coalition finance user create fiona --name \"Fiona Ledger\"   # a finance user"
	@echo "The worker (webhook deliveries, batch files, e-mails) runs alongside and stops with the server."
	@echo
	export COALITION_ENV=$${COALITION_ENV:-development}; \
	$(BIN)/coalition worker & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(BIN)/coalition run --host $(HOST) --port $(PORT)

# The suite on every core (pytest-xdist; each worker migrates its own SQLite and PostgreSQL
# databases), a test module's tests on one worker so that its module-wide fixtures (a
# browser, a seeded coalition) are made once; TEST_WORKERS=0 runs it in this one process.
# The modules in the order the suite gives them (the long-running ones first, see
# tests/conftest.py), not xdist's by number of tests, which leaves the modules of one long
# test for the end.
TEST_WORKERS ?= auto
test: $(STAMP) chromium cluster-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

# The failover and replica tests start their own PostgreSQL servers from the machine's
# binaries, and a Patroni cluster (Debian's patroni and etcd-server). Installed here when
# missing and apt-get can (as root); under COALITION_REQUIRE_POSTGRES=1 (CI) a missing one
# fails those tests, otherwise they skip, saying why.
cluster-tools:
	@if { ! command -v patroni >/dev/null || ! command -v etcd >/dev/null; } \
		&& command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing patroni and etcd-server (apt-get)"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends patroni etcd-server; } >/dev/null 2>&1 \
			|| echo "patroni or etcd-server could not be installed; the failover test will say so"; \
	fi

# Schemathesis against the live /openapi.json (tests/test_fuzz.py) with many more examples
# per operation than `make test` runs, on SQLite and on the local PostgreSQL server, with a
# fresh seed each time (COALITION_FUZZ_SEED=N replays one). FUZZ_EXAMPLES changes the count.
FUZZ_EXAMPLES ?= 200
fuzz: $(STAMP)
	COALITION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) COALITION_FUZZ_BACKENDS=sqlite,postgresql \
	COALITION_FUZZ_SEED=$${COALITION_FUZZ_SEED:-random} \
	COALITION_TEST_DATABASE_URL=$${COALITION_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
		$(BIN)/python -m pytest tests/test_fuzz.py -m fuzz -s $(PYTEST_ARGS)

# The member page's browser test drives Debian's Chromium (never a browser that Playwright
# downloads). Installed here when it is missing and apt-get can (as root); otherwise not fatal:
# the test then skips, saying why, or fails under COALITION_REQUIRE_BROWSER=1 (CI).
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (apt-get)"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } \
			>/dev/null 2>&1 || echo "chromium could not be installed; the browser test will say so"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check coalition partners settlement config tests $(wildcard bench)
	$(BIN)/mypy

# Migrate an empty SQLite database, then fail if the models and the migrations differ.
check-schema: $(STAMP)
	@dir=$$(mktemp -d); \
	coalition="env -u COALITION_DATABASE_URL COALITION_ENV=development COALITION_INSTANCE_PATH=$$dir $(BIN)/coalition"; \
	$$coalition db upgrade && $$coalition db check; \
	status=$$?; rm -rf "$$dir"; exit $$status

# The ledger benchmark (docs/benchmarks.md) against the local PostgreSQL server; it drops and
# re-creates the databases coalition_bench and coalition_pgbench. BENCH_ARGS adds options.
bench: $(STAMP)
	$(BIN)/python bench/ledger.py --scenario goals --duration 20 --concurrency 16 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
