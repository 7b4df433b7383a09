# paramlib from a fresh Debian 12 machine:
#   make test    system packages + .venv, `make lint`, CMake build, then pytest (pytest runs ctest)
#   make demo    the same set-up and build, then `paramlib demo`
#   make bench   the same set-up and build, then the bridge overhead benchmark
#   make lint    ruff (Python), clang-format --dry-run (C++), fortitude (Fortran); no build needed
#   make format  applies clang-format and fortitude's safe fixes in place
#   make clean   removes build outputs (not .venv)
# Second runs only redo what changed. pip honours PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS from
# the environment, e.g. to take torch's CPU-only wheel from elsewhere than PyPI.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := setup

VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
JOBS ?= 2

# command-or-file=Debian package that provides it (`paramlib doctor` checks the same list)
SYSTEM_DEPS := gfortran=gfortran g++=g++ cmake=cmake pkg-config=pkg-config \
	mpif90=libopenmpi-dev mpirun=openmpi-bin nf-config=libnetcdff-dev \
	/usr/include/nlohmann/json.hpp=nlohmann-json3-dev \
	/usr/sbin/slurmctld=slurmctld /usr/sbin/slurmd=slurmd sbatch=slurm-client munge=munge
# The bindings build against the interpreter's headers; the venv needs ensurepip.
HAS_PYTHON_H := import os, sys, sysconfig; \
	sys.exit(not os.path.isfile(os.path.join(sysconfig.get_path("include"), "Python.h")))

.PHONY: setup system build test demo bench lint format clean

# C++ under clang-format (.clang-format); fortitude finds the Fortran itself (fortitude.toml),
# and reads the bridge module as fypp writes it, without the build's line markers.
CXX_SOURCES = $(shell find fortran_bridge benchmarks -name '*.cpp' -o -name '*.h' -o -name '*.hpp')
FORTRAN_DIRS := fortran_bridge benchmarks
BRIDGE_F90 := build/lint/paramlib_bridge.f90

setup: system $(VENV)/.stamp

# A `command -v` per dependency instead of a stamp: as fast, and never stale.
system:
	@missing=""; \
	for dep in $(SYSTEM_DEPS); do \
	  need=$${dep%%=*}; \
	  if [[ $$need == /* ]]; then [[ -e $$need ]]; else command -v "$$need" >/dev/null; fi \
	    || missing="$$missing $${dep#*=}"; \
	done; \
	py=$$(command -v python3.11 || command -v python3 || true); \
	if [[ -z $$py ]]; then \
	  missing="$$missing python3 python3-venv python3-dev"; \
	else \
	  "$$py" -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  "$$py" -c '$(HAS_PYTHON_H)' || missing="$$missing python3-dev"; \
	fi; \
	if [[ -n $$missing ]]; then \
	  if [[ $$(id -u) != 0 ]]; then \
	    echo "missing system packages; run: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	  echo "installing system packages:$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

# torch is pinned in the same pip command as paramlib, or pip may resolve a multi-GB CUDA build.
$(VENV)/.stamp: pyproject.toml | system
	test -x $(PY) || "$$(command -v python3.11 || command -v python3)" -m venv $(VENV)
	$(PY) -m pip install torch==$(TORCH_VERSION) -e '.[dev]'
	touch $@

build: setup
	test -f build/CMakeCache.txt || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DPython_EXECUTABLE=$(CURDIR)/$(PY)
	cmake --build build -j$(JOBS)

lint: setup
	$(VENV)/bin/ruff check paramlib tests benchmarks
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES)
	mkdir -p $(dir $(BRIDGE_F90))
	$(VENV)/bin/fypp -M fortran_bridge/cmake -m bridge_header fortran_bridge/src/paramlib_bridge.fypp $(BRIDGE_F90)
	$(VENV)/bin/fortitude check $(FORTRAN_DIRS) $(BRIDGE_F90)

format: setup
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)
	$(VENV)/bin/fortitude check --fix $(FORTRAN_DIRS)

# lint before build: a style error fails in seconds, not after the build.
test: lint build
	$(PY) -m pytest -q tests

demo: build
	$(VENV)/bin/paramlib demo

bench: build
	mkdir -p build/bench
	$(PY) benchmarks/bridge_overhead.py --json build/bench/bridge_overhead.json

clean:
	rm -rf build paramlib/_ext .pytest_cache .ruff_cache
	find paramlib tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
