# The README's contract: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed
# ament_index_python finds x23d_ros's share folder (launch/, config/) through the venv prefix.
export AMENT_PREFIX_PATH := $(abspath $(VENV))$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH))
# Only the CPU build of torch: from the wheel on this machine's disk, else from PyTorch's CPU index.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: setup test lint demo bench format lock clean

setup: $(STAMP)
	@$(PY) tools/link_share.py $(VENV) >/dev/null
	@$(PY) tools/build_interfaces.py $(VENV)

$(STAMP): requirements/lock.txt setup.py tools/system_deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "x23d_ros needs Python 3.11")' \
		|| { echo "error: $(PYTHON) (Python 3.11) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	tools/system_deps.sh
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $$(grep -E '^pip==' requirements/lock.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(TORCH_SOURCE) -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

demo: setup
	$(VENV)/bin/x23d-ros demo

# Speed and accuracy figures: JSON and Markdown under bench/results/.
bench: setup
	$(PY) bench/run.py

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Re-resolve requirements/direct.txt into requirements/lock.txt in a scratch venv.
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet $(TORCH_SOURCE) -r requirements/direct.txt
	{ sed -n '1,3p' requirements/lock.txt; $(VENV)-lock/bin/python tools/freeze.py; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt && rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
