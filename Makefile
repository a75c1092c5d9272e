# Two commands on a fresh machine (see README.md):
#   make demo   set up .venv and determine the structure of the bundled real example
#   make test   set up .venv (with the example plugin) and run the test suite
# Both are idempotent: stamp files in .venv skip the installs that are already done.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.refractor-stamps
TORCH  := torch==2.13.0
DEMO_DATA ?= examples/data/pr_sulfate_hydroxide/2229150.hkl
# the demo gives only what a chemist knows besides the reflections (see the example's README)
DEMO_ARGS ?= --cell 4.4891 12.484 6.894 90 106.310 90 --wavelength 0.71073 --formula "H O5 Pr S" --z 4
DEMO_OUT  ?= demo-output
PYTEST_ARGS ?= -q

.PHONY: demo test setup clean-stamps

demo: $(STAMP)/project
	$(VENV)/bin/refractor run $(DEMO_DATA) $(DEMO_ARGS) --output $(DEMO_OUT)

test: $(STAMP)/example
	$(VENV)/bin/pytest $(PYTEST_ARGS) tests examples/refractor-plugin-example/tests

setup: $(STAMP)/example

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that the CPU build on disk is used rather than a CUDA download
$(STAMP)/torch: | $(PY)
	$(PIP) install $(TORCH)
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/project: pyproject.toml setup.py $(STAMP)/torch
	$(PIP) install -e '.[dev]'
	@touch $@

$(STAMP)/example: examples/refractor-plugin-example/pyproject.toml $(STAMP)/project
	$(PIP) install -e examples/refractor-plugin-example
	@touch $@

clean-stamps:
	rm -rf $(STAMP)
