# memorymodels: two commands do all the set-up on a fresh machine (see README.md).
#   make demo    create .venv, install everything, train the default mixer autoencoder on this machine
#   make test    create .venv, install the dev extras, start the local Slurm cluster when possible, run pytest
# On a GPU cluster: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126 TORCH=torch

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first and on its own: a bare `torch` requirement with no torch installed pulls a CUDA build of
# several GB. torch==2.13.0 is the CPU wheel this kind of machine keeps on disk.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install demo test cluster cluster-down benchmarks

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation deepspeed
	touch $@

install: $(STAMP)

# Again once the demo's run is complete: submit.py prints its result and exits 3 (nothing left to do), not an error.
demo: install
	$(PY) launch/submit.py --profile local || [ $$? -eq 3 ]

cluster: install
	$(PY) launch/local_cluster.py up

cluster-down:
	$(PY) launch/local_cluster.py down

# Two nodes (network namespaces) when the machine allows it, so the multinode tests need no restart mid-run.
test: install
	@$(PY) launch/local_cluster.py up --nodes 2 || $(PY) launch/local_cluster.py up || \
		echo "make test: the local Slurm cluster did not start (reason above); tests marked 'slurm' will be skipped"
	$(PY) -m pytest $(PYTEST_ARGS)
