# The two commands of the README: `make run` (dashboard on the embedded model) and `make test` (lint + whole suite).
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8501
# Offline by default: the embedded model needs no network. `make run HF_HUB_OFFLINE=0` lets hub ids download.
export HF_HUB_OFFLINE ?= 1

STAMP := $(VENV)/.installed
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

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every benchmark script with the venv's python (one that needs CUDA skips itself); fails if any failed.
bench: $(STAMP)
	@failed=""; for script in $(BENCHMARKS); do \
		echo "== $$script"; \
		$(VENV)/bin/python $$script || failed="$$failed $$script"; \
	done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info
