# The two commands of the README: `make run` (dashboard on the embedded model) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8501
# Offline by default: the embedded model needs no network. `make run HF_HUB_OFFLINE=0` lets hub ids download.
export HF_HUB_OFFLINE ?= 1

STAMP := $(VENV)/.installed

.PHONY: run test install benchmark clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
