# `make demo` and `make test` install whatever is missing, then run.
# Installing twice downloads nothing twice: the venv is rebuilt only when pyproject.toml changes,
# pip reuses its wheel cache (torch among them), Maven and Ivy reuse ~/.m2 and ~/.ivy2.5.2.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JARS_STAMP := $(VENV)/.delta-jars

.PHONY: install browser demo test lint clean

install: $(STAMP) $(JARS_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(JARS_STAMP): $(STAMP)
	$(PY) -m rdt_spark.session fetch-jars
	touch $@

demo: install
	$(VENV)/bin/rdt demo --config conf/local.yaml

# The report pages' browser test drives Debian's chromium through chromium-driver (Selenium);
# nothing downloads a browser at run time. Installed once, only where chromium is missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

test: install browser
	$(VENV)/bin/pytest -q --durations=15

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf lake .pytest_cache
