# rxbeanstalk developer tasks.
#
#   make deps    make sure the beanstalkd binary exists (installs it with apt-get as root)
#   make .venv   reactivex 6.x environment with the test and lint tools
#   make lint    ruff check, ruff format --check, mypy --strict
#   make test    deps + both environments + lint + pytest in .venv, then in .venv-rx4
#   make demo    run the demo (python -m rxbeanstalk.demo) against a private beanstalkd
#   make bench   benchmark suite vs greenstalk, aiostalk and a RAW client (.venv-bench)
#   make soak    soak under chaos: 100k jobs drop, 100k mixed, binlog kill -9 (soak/results/)
#   make notebooks  run every notebooks/*.ipynb top to bottom with nbclient (.venv-nb)
#   make docs    build the documentation site, notebooks executed (docs/_build/html, .venv-docs)
#   make clean   remove environments, caches and build output
#
# Extra pytest arguments: make test PYTEST_ARGS='-k reserve -x'
# Extra benchmark arguments: make bench BENCH_ARGS='--quick' (python -m benchmarks --help)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-print-directory

# Prefer an explicit python3.11, fall back to whatever python3 is (must be >= 3.11).
PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
PIP := pip install -q --disable-pip-version-check

VENV := .venv
VENV_RX4 := .venv-rx4
VENV_BENCH := .venv-bench
VENV_NB := .venv-nb
VENV_DOCS := .venv-docs
# Each environment is stamped; the stamp is older than pyproject.toml => rebuild it.
STAMP := .rxbeanstalk-stamp

PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: deps lint test demo bench soak notebooks docs clean $(VENV) $(VENV_RX4) $(VENV_BENCH) \
    $(VENV_NB) $(VENV_DOCS)

deps:
	@if command -v beanstalkd >/dev/null 2>&1; then \
	    echo "deps: beanstalkd found at $$(command -v beanstalkd)"; \
	elif [ "$$(id -u)" -eq 0 ]; then \
	    if ! command -v apt-get >/dev/null 2>&1; then \
	        echo "deps: beanstalkd is missing and there is no apt-get here;" \
	             "install beanstalkd (>= 1.12) with your package manager" >&2; \
	        exit 1; \
	    fi; \
	    echo "deps: beanstalkd not found; running: apt-get update -qq && apt-get install -y -qq beanstalkd"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq; \
	    apt-get install -y -qq beanstalkd; \
	    if ! command -v beanstalkd >/dev/null 2>&1; then \
	        echo "deps: apt-get installed beanstalkd but it is still not on PATH ($$PATH)" >&2; \
	        exit 1; \
	    fi; \
	    echo "deps: installed $$(command -v beanstalkd)"; \
	else \
	    echo "deps: beanstalkd is not installed and this is not root, so it cannot be installed here." >&2; \
	    echo "deps: run 'sudo apt-get install beanstalkd' (Debian/Ubuntu) and try again." >&2; \
	    exit 1; \
	fi

# --- environments -----------------------------------------------------------------------------

$(VENV): $(VENV)/$(STAMP)
$(VENV_RX4): $(VENV_RX4)/$(STAMP)
$(VENV_BENCH): $(VENV_BENCH)/$(STAMP)
$(VENV_NB): $(VENV_NB)/$(STAMP)
$(VENV_DOCS): $(VENV_DOCS)/$(STAMP)

# reactivex 6.x line, with the lint tools.
$(VENV)/$(STAMP): pyproject.toml
	@echo "venv: building $(VENV) with $(PYTHON) (reactivex 6.x, test + lint)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/$(PIP) -e '.[test,lint]'
	@touch $@

# reactivex 4.1 line with aioreactive (which pins reactivex<5).
$(VENV_RX4)/$(STAMP): pyproject.toml
	@echo "venv: building $(VENV_RX4) with $(PYTHON) (reactivex 4.1 + aioreactive, test)"
	rm -rf $(VENV_RX4)
	$(PYTHON) -m venv $(VENV_RX4)
	$(VENV_RX4)/bin/$(PIP) -e '.[test,asyncrx]' 'reactivex==4.1.*'
	@touch $@

# The benchmark line: the project plus the peer clients it is measured against.
$(VENV_BENCH)/$(STAMP): pyproject.toml benchmarks/requirements.txt
	@echo "venv: building $(VENV_BENCH) with $(PYTHON) (benchmarks: greenstalk, aiostalk)"
	rm -rf $(VENV_BENCH)
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/$(PIP) -e . -r benchmarks/requirements.txt
	@touch $@

# --- checks -----------------------------------------------------------------------------------

lint: $(VENV)
	$(VENV)/bin/ruff check rxbeanstalk tests soak benchmarks notebooks docs
	$(VENV)/bin/ruff format --check rxbeanstalk tests soak benchmarks notebooks docs
	$(VENV)/bin/mypy --strict

test: deps $(VENV) $(VENV_RX4) lint
	bash scripts/pytest-run $(VENV) $(PYTEST_ARGS)
	bash scripts/pytest-run $(VENV_RX4) $(PYTEST_ARGS)

demo: deps $(VENV)
	$(VENV)/bin/python -m rxbeanstalk.demo

bench: deps $(VENV_BENCH)
	$(VENV_BENCH)/bin/python -m benchmarks $(BENCH_ARGS)

# The full soak (docs/reliability.md): 100k jobs under drop chaos (a fault every 2-3 s),
# 100k under mixed chaos (every 2-3 s, producers paced at 3,000 puts/s so the run lasts
# long enough for each of the 11 kinds to come up), and 100k with beanstalkd -b, a
# kill -9 + restart and drops. Each run prints its table and writes
# soak/results/NAME.json; all three run, and the target fails if any broke an invariant.
soak: deps $(VENV)
	@status=0; \
	$(VENV)/bin/python -m soak --jobs 100000 --chaos drop || status=1; \
	$(VENV)/bin/python -m soak --jobs 100000 --chaos mixed --put-rate 3000 || status=1; \
	$(VENV)/bin/python -m soak --jobs 100000 --chaos drop --binlog || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) $(VENV_RX4) $(VENV_BENCH) $(VENV_NB) $(VENV_DOCS) docs/_build build dist .pytest_cache .mypy_cache .ruff_cache \
	    .hypothesis
	find . -path ./.git -prune -o \( -name '*.egg-info' -o -name __pycache__ \) -type d -prune \
	    -exec rm -rf {} +

# --- notebooks --------------------------------------------------------------------------------

# The notebook line: the project plus nbclient, ipykernel and matplotlib.
$(VENV_NB)/$(STAMP): pyproject.toml notebooks/requirements.txt
	@echo "venv: building $(VENV_NB) with $(PYTHON) (notebooks: nbclient, ipykernel, matplotlib)"
	rm -rf $(VENV_NB)
	$(PYTHON) -m venv $(VENV_NB)
	$(VENV_NB)/bin/$(PIP) -e . -r notebooks/requirements.txt
	@touch $@

# Each notebook starts its own throwaway beanstalkd; a cell error or a cell over 60 s fails.
notebooks: deps $(VENV_NB)
	$(VENV_NB)/bin/python notebooks/run.py --timeout 60

# --- documentation ----------------------------------------------------------------------------

# The docs line: the project plus Sphinx, myst-nb (with a kernel and matplotlib) and
# aioreactive for the asyncrx reference; so reactivex 4.x, as in .venv-rx4.
$(VENV_DOCS)/$(STAMP): pyproject.toml docs/requirements.txt
	@echo "venv: building $(VENV_DOCS) with $(PYTHON) (docs: sphinx, myst-nb, furo, aioreactive)"
	rm -rf $(VENV_DOCS)
	$(PYTHON) -m venv $(VENV_DOCS)
	$(VENV_DOCS)/bin/$(PIP) -e . -r docs/requirements.txt
	@echo '*' > $(VENV_DOCS)/.gitignore  # keeps the environment out of git status
	@touch $@

# Always a full build (-E: every page read again, every notebook executed against its own
# throwaway beanstalkd), so a warning can never hide in an incremental one. -W: any warning
# fails; -n: every cross-reference must resolve; -T: a failing notebook cell is printed.
# The notebooks' "python3" kernel is docs/_jupyter's (JUPYTER_PATH comes first): this
# environment's python, whatever other kernels are installed, its own log quiet below errors.
docs: deps $(VENV_DOCS)
	@mkdir -p docs/_build && echo '*' > docs/_build/.gitignore
	JUPYTER_PATH=$(CURDIR)/docs/_jupyter \
	    $(VENV_DOCS)/bin/sphinx-build -E -W --keep-going -n -T -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"
