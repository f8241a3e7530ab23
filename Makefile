# The two commands README.md opens with: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unlearn demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check app core worker unlearning models cli tests bench
	$(VENV)/bin/lint-imports

bench-smoke: $(STAMP)
	$(VENV)/bin/unlearn bench --preset smoke --scenario random --json bench-out/smoke.json

clean:
	rm -rf $(VENV) var .pytest_cache
