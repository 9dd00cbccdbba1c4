# The two commands a newcomer needs (README): `make demo` and `make test`. Both install first.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test dag

# torch first and pinned, so pip takes the CPU wheel instead of resolving a multi-GB CUDA build.
install:
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"

demo: install
	snakemake --cores 2

test: install
	$(PYTHON) -m pytest -q tests

# The rule graph of the default workflow, as in the README.
dag:
	snakemake --rulegraph | dot -Tsvg > docs/rulegraph.svg
