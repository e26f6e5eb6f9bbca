# make test / make demo work on a fresh clone with only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench soak venv tools clean docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $(STAMP)

# System tools some tests need: promtool (Debian package prometheus) for the alert rules,
# ruby and rake for contrib/rails/lib/tasks/db_sync.rake. Installed when we can (root +
# apt); the tests that need them skip with a reason otherwise.
TOOLS := promtool:prometheus ruby:ruby rake:rake

tools:
	@missing=""; for pair in $(TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "tools: could not install$$missing; their tests will skip"; \
	  else echo "tools: missing$$missing and not root; their tests will skip"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check syncd tests scripts bench docker
	$(BIN)/ruff format --check syncd tests scripts bench docker
	$(BIN)/mypy --strict syncd
	$(BIN)/hadolint --failure-threshold warning Dockerfile

# Two pytest-xdist workers, each with its own servers and temporary directories: most of the
# suite waits (on servers, subprocesses, timeouts), so two run it in about two thirds of
# the time on a 2-core machine. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP) tools lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

demo: $(STAMP)
	$(BIN)/syncd demo

# README's config reference, generated from syncd/config/schema.json
docs: $(STAMP)
	$(BIN)/python scripts/gen_config_reference.py

# Benchmarks print figures; they are never part of `make test`. BENCH_ARGS="--n 20000 --runs 1".
bench: $(STAMP)
	$(BIN)/python bench/cpu_bench.py $(CPU_BENCH_ARGS)
	$(BIN)/python bench/bench_sync.py $(BENCH_ARGS)
	$(BIN)/python bench/backup_bench.py
	$(BIN)/python bench/lag.py
	$(BIN)/python bench/far.py $(FAR_ARGS)

# The daemon for SOAK_MINUTES (default 10) under a writer and server kills; prints figures.
soak: $(STAMP)
	$(BIN)/python bench/soak.py --minutes $(or $(SOAK_MINUTES),10)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
