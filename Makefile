# The two commands of the README: `make run` (dashboard on the embedded model) and `make test` (lint + whole suite).
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8501
# Offline by default: the embedded model needs no network. `make run HF_HUB_OFFLINE=0` lets hub ids download.
export HF_HUB_OFFLINE ?= 1

STAMP := $(VENV)/.installed
# Debian's chromium drives the browser tests and benchmark (tests/browser.py launches this path); never a
# Playwright browser download.
CHROMIUM := /usr/bin/chromium
BENCHMARKS := $(sort $(wildcard benchmarks/bench_*.py))

.PHONY: run test lint bench install clean

# The pinned requirements (runtime, then test tools), then neurolab itself, editable and without dependency
# resolution, so nothing touches an already installed torch (e.g. a CUDA build, see the README's "GPU").
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Installed when missing, quietly (root on Debian/Ubuntu: what CI runs as); a clear message otherwise.
$(CHROMIUM):
	@echo "Installing Debian's chromium for the browser tests (apt-get install chromium) ..."
	@{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
		&& test -x $@; } || { echo "error: the browser tests (tests/test_browser.py) need $@. Install it as root" \
		"with 'apt-get update && apt-get install -y chromium' (Debian's package; no Playwright browser download)," \
		"or run make as root to let it do so." >&2; exit 1; }

# The model is loaded before the server answers (app.py's `serve`): the first page finds it ready.
run: $(STAMP)
	$(VENV)/bin/python app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every benchmark script with the venv's python (one that needs CUDA skips itself); fails if any failed.
bench: $(STAMP) $(CHROMIUM)
	@failed=""; for script in $(BENCHMARKS); do \
		echo "== $$script"; \
		$(VENV)/bin/python $$script || failed="$$failed $$script"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
