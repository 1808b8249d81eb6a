# spotsweep: `make demo` and `make test` work from a fresh clone (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps browser demo test lint image clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: on a machine with a local CPU wheel this takes it, elsewhere the registry's build.
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spotsweep run sweeps/demo.yaml

# The integration tests need a real SLURM and Apptainer. As root on Debian/Ubuntu (CI) they are installed
# here, system-wide, and said so first; elsewhere nothing is installed and those tests skip and say how to
# enable them.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "system-deps: as root: installing SLURM (slurmctld, slurmd, slurmdbd, MariaDB, munge), Apptainer and Chromium system-wide with apt-get (installed ones are left as they are; without root nothing is installed and their tests skip)"; \
		hpc/slurm/install.sh && hpc/apptainer/install.sh && $(MAKE) --no-print-directory browser; \
	else \
		echo "system-deps: not root on Debian/Ubuntu: nothing installed outside .venv; the SLURM, Apptainer, browser and full-disk tests will skip (to run them: sudo make system-deps once, see hpc/README.md)"; \
	fi

# A headless browser for the test of the report's HTML page (Debian's chromium and its driver; as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; }

# Test files run three at a time (pytest-xdist, whole files per worker so module fixtures run once): the
# scheduler-bound ones mostly wait, on SLURM's minute clock and on each other's jobs. The files go out in
# collection order, which tests/conftest.py sorts longest first (SLOWEST_FILES). Not four: on 2 cores the
# suite is CPU-bound, and with four workers every file took about half as long again (2026-12-02: summed
# test time 124 -> 188 min, pytest 42:44 -> 48:30).
# As root it first installs SLURM, Apptainer and Chromium system-wide (system-deps); without root, nothing.
test: $(STAMP) system-deps
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder

# The task image from containers/Apptainer.def, cached: rebuilt only when the def, pins or toolkit change.
# IMAGE_BASE=cuda (clusters: CUDA PyTorch base from Docker Hub) or local (no Docker Hub: debootstrap +
# a wheelhouse, CPU torch).
IMAGE ?= build/spotsweep.sif
IMAGE_BASE ?= cuda
image: $(STAMP)
	hpc/apptainer/build.sh --base $(IMAGE_BASE) -o $(IMAGE)

# ruff, no function in toolkit/ over 60 lines (flake8-functions, .flake8), then the import contracts of
# pyproject.toml ([tool.importlinter]: layers, science apart, peers, checkpoints without a circle).
lint: $(STAMP)
	$(BIN)/ruff check toolkit tests results
	$(BIN)/flake8 toolkit
	$(BIN)/lint-imports --no-cache

clean-demo:
	rm -rf results/demo
