# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint docs soak bench bench-scale clean

# The venv, the package with its test extras, and Twilio's segment calculator (npm) — the
# independent count tests/host/test_segments.py checks against; without npm that test skips
# and says why.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68" wheel
	$(PY) -m pip install --quiet -e '.[test,docs]'
	command -v npm >/dev/null && npm install --silent --no-audit --no-fund \
	  --prefix $(VENV)/node sms-segments-calculator@1.3.0 || echo "npm not found: the segment comparison will skip"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/erp-sms demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site, served with live reload on 127.0.0.1:8000.
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve

# The fault soak (issue 9): 4 workers x 5,000 texts on PostgreSQL and MariaDB, minutes.
soak: $(STAMP)
	$(PY) -m pytest -m soak -p no:randomly -q $(PYTEST_ARGS)

# Peers measured in the same run; Apprise goes into the venv here, never into the package.
bench: $(STAMP)
	$(PY) -m pip install --quiet "apprise>=1.9"
	$(PY) -m bench

# Million-row fills (PostgreSQL, MariaDB): bench/RESULTS-scale.md.
bench-scale: $(STAMP)
	$(PY) -m bench scale

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
