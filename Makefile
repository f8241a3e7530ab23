# The two commands README.md opens with: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# openapi-python-client pins its own dependencies, so it gets a venv of its own; the generated-client
# test uses it (offline, the install fails quietly and that one test says why it skipped).
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: demo test lint bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(TOOLS_STAMP):
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q 'openapi-python-client>=0.21' && touch $(TOOLS_STAMP) \
		|| echo "openapi-python-client did not install: the generated-client test will skip"

demo: $(STAMP)
	$(VENV)/bin/unlearn demo

test: $(STAMP) $(TOOLS_STAMP)
	OPENAPI_PYTHON_CLIENT=$${OPENAPI_PYTHON_CLIENT:-$(CURDIR)/$(TOOLS)/bin/openapi-python-client} $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check app core worker unlearning models cli tests bench
	$(VENV)/bin/lint-imports

bench-smoke: $(STAMP)
	$(VENV)/bin/unlearn bench --preset smoke --scenario random --json bench-out/smoke.json

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache
