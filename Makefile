# The two commands of the README. Each installs what it needs into .venv in the checkout.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test slurm-test install clean peer-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned to the local CPU wheel: an unpinned torch pulls gigabytes of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# No PATH change: the rules find isonet next to the Python that runs Snakemake, as in the README.
demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/default
	@echo; cat results/demo/metrics.md

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests

# The workflow on a real single-node SLURM (tests/slurm/): installs slurm-wlm and munge with
# apt-get when missing (root), starts the daemons, runs the tiny config through profiles/slurm.
slurm-test: $(STAMP)
	ISONET_SLURM_TEST=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -s -rs tests/slurm

# CSBDeep's IsotropicCARE for benchmarks/csbdeep_peer.py, in a venv of its own (.venv-peer,
# git-ignored); never a dependency of isonet.
PEER_VENV := .venv-peer
$(PEER_VENV)/.installed: benchmarks/peer/requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet -r benchmarks/peer/requirements.txt
	touch $(PEER_VENV)/.installed

peer-venv: $(PEER_VENV)/.installed

clean:
	rm -rf results resources logs .snakemake
