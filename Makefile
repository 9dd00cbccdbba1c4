# The two commands a newcomer needs (README): `make demo` and `make test`. Both install what they need first.
# bash with pipefail: `snakemake ... | dot` fails when snakemake does, instead of leaving an empty picture.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check
# Debian packages the tests use: bubblewrap (the MBPP sandbox), graphviz (DAG pictures) and chromium (the report
# in a browser).
DEBIAN_PACKAGES = bubblewrap graphviz chromium

# Linux torch from plain PyPI is the multi-GB CUDA build; the CPU build comes from PyTorch's own index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install system-packages demo test lint dag pins

# Every version exactly as in constraints.txt (the one place pins live); torch first, from TORCH_INDEX.
install:
	$(PIP_INSTALL) -c constraints.txt --extra-index-url $(TORCH_INDEX) torch
	$(PIP_INSTALL) -c constraints.txt -e ".[dev]"

# Installs the Debian packages when it can (root with apt-get); otherwise says what the tests will miss.
system-packages:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES) >/dev/null; \
	else \
		for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo "note: Debian package $$p is missing (install it as root)"; done; \
	fi

demo: install
	snakemake --cores 2

test: install system-packages
	$(PYTHON) -m pytest -q tests

# Python style and bug patterns, as configured in pyproject.toml ([tool.ruff]); CI runs it before the tests.
lint: install
	$(PYTHON) -m ruff check .

# The rule graph of the default workflow, as in the README.
dag:
	snakemake --rulegraph | dot -Tsvg > docs/rulegraph.svg

# After changing pyproject.toml's dependencies: install within its ranges (not the old pins), then write the new
# pins and the rules' conda env from them.
pins:
	$(PIP_INSTALL) --extra-index-url $(TORCH_INDEX) -e ".[dev]"
	$(PYTHON) envs/pins.py freeze > constraints.txt
	$(PYTHON) envs/pins.py conda > envs/metatune.yaml
