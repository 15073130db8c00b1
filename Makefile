# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install everything in one pip pass when needed (torch is pinned to the CPU
# wheel in pyproject.toml), and start at once when it is already installed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true
export ANONYMIZED_TELEMETRY := False
export ORT_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install demo test test-slow test-sif sif lint bench bench-record bench-compare bench-history clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# compile UMAP's numba code into ~/.cache/hyrax-numba now: the first `hyrax umap` then takes seconds
	$(BIN)/python -m libhyrax.reducers.warm || echo "warning: UMAP's numba cache was not warmed"
	touch $(STAMP)

# The whole pipeline on the built-in sample (real galaxies from the Hubble eXtreme Deep Field).
demo: $(STAMP)
	@mkdir -p demo
	cd demo && PATH=$(CURDIR)/$(BIN):$$PATH bash $(CURDIR)/scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# Slower integration tests (second CI step, bounded by the timeout in .ci/run).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m 'slow and not sif'; rc=$$?; [ $$rc = 5 ] && rc=0; exit $$rc

# The Apptainer image: `make sif` builds hyrax.sif from containers/hyrax.def, with `apptainer build` where
# Apptainer is installed (what users run on their clusters), else with scripts/build-sif.sh, which follows
# the same definition file (needs root, debootstrap, squashfs-tools and siftool; skips an unchanged rebuild).
ifneq ($(shell command -v apptainer 2>/dev/null),)
SIF_SOURCES := $(shell awk '/^%files/ { f = 1; next } /^%/ { f = 0 } f && NF { print $$1 }' containers/hyrax.def)
sif: hyrax.sif
hyrax.sif: containers/hyrax.def $(shell find $(SIF_SOURCES) -type f ! -path '*/__pycache__/*')
	apptainer build --force hyrax.sif containers/hyrax.def
else
sif:
	scripts/build-sif.sh hyrax.sif containers/hyrax.def
endif

# The image for real (its own CI step): build it, then the demo pipeline, the Slurm infer array and a
# Jupyter kernel inside it (tests/test_sif_image.py, through scripts/run-sif.sh without Apptainer).
test-sif: $(STAMP) sif
	$(BIN)/python -m pytest -n 2 -q -m sif; rc=$$?; [ $$rc = 5 ] && rc=0; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check libhyrax cli tests benchmarks scripts

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# Benchmark history (ASV, benchmarks/asv/README.md): record HEAD's figures for this machine (commit the
# new file under benchmarks/asv/results/), compare them with the previous recorded commit (exit 1 on a
# regression beyond the noise), and write the history page benchmarks/asv/html/index.html.
ASV := cd benchmarks/asv && $(CURDIR)/$(BIN)/asv
ASV_MACHINE ?= $(shell hostname)
bench-record: $(STAMP)
	$(ASV) machine --yes --machine $(ASV_MACHINE)
	$(ASV) run --environment existing:$(CURDIR)/$(BIN)/python --set-commit-hash $$(git rev-parse HEAD) \
		--machine $(ASV_MACHINE) --record-samples --show-stderr
bench-compare: $(STAMP)
	$(BIN)/python benchmarks/asv/compare.py --machine $(ASV_MACHINE)
bench-history: $(STAMP)
	$(ASV) publish

clean:
	rm -rf demo results .pytest_cache .sif-cache
