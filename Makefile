# The two commands: `make run` (set up and open the desk) and `make test` (set up and run the tests).
VENV    ?= .venv
PY      := $(VENV)/bin/python
SAMPLES ?= ../shared/data/binance-spot
PYTHON  ?= python3

.PHONY: run demo test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) sh scripts/install.sh
	touch $@

venv: $(VENV)/.installed

# The live desk. Where the sample recording sits beside the checkout, the desk's
# offline fallback (key r) uses it instead of downloading it.
run: $(VENV)/.installed
	$(VENV)/bin/tradedesk $(if $(wildcard $(SAMPLES)/btcusdt_20240808.gz),--set 'general.samples_dir="$(abspath $(SAMPLES))"')

demo: $(VENV)/.installed
	$(VENV)/bin/tradedesk demo --samples $(SAMPLES)

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider -m slow

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check engine models tui tests
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(VENV)/bin/tradedesk bench

clean:
	rm -rf $(VENV) .pytest_cache
