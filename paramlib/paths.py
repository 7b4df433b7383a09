"""Where things are: the repository, the build tree, the demo's outputs, and the environment
variables that move them. Standard library only, so every layer (CLI, library, tests,
benchmarks) can ask without importing anything heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
CONFIGS = REPO_ROOT / "training" / "configs"
RECIPES = REPO_ROOT / "training" / "recipes"
CATALOG_DIR = REPO_ROOT / "data_catalog"
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"

BUILD_DIR_ENV = "PARAMLIB_BUILD_DIR"  # the CMake build tree (default build/)
DATA_ROOT_ENV = "PARAMLIB_DATA_ROOT"  # the catalog's data root (default ../shared/data)
CATALOG_DIR_ENV = "PARAMLIB_CATALOG_DIR"  # the catalog's folder (default data_catalog/)
STORES_ENV = "PARAMLIB_STORES"  # the folder configs name their stores in
TESTBED_ENV = "PARAMLIB_TESTBED"  # the testbed the catalog's testbed entries point at
SCM_ENV = "PARAMLIB_SCM"  # the column host model executable
CACHE_ENV = "PARAMLIB_CACHE_DIR"  # remembered source hashes (default $XDG_CACHE_HOME/paramlib)

BRIDGE_LIBRARY = Path("lib") / "libparamlib_bridge.so"
BINDINGS_GLOB = "_paramlib_bridge*.so"


def build_dir(environ: Mapping[str, str] = os.environ) -> Path:
    override = environ.get(BUILD_DIR_ENV)
    return Path(override) if override else REPO_ROOT / "build"


def bridge_library_path(environ: Mapping[str, str] = os.environ) -> Path:
    return build_dir(environ) / BRIDGE_LIBRARY


def find_bindings(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    return sorted((package_dir / "_ext").glob(BINDINGS_GLOB))


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """$PARAMLIB_CACHE_DIR, else paramlib/ in $XDG_CACHE_HOME (default ~/.cache)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "paramlib"


def demo_dir() -> Path:
    """Where `make demo` writes (its testbed, stores and runs are the CLI's fallbacks)."""
    return build_dir() / "demo"


def default_stores() -> Path:
    """$PARAMLIB_STORES, else the stores `make demo` writes."""
    return Path(os.environ.get(STORES_ENV) or demo_dir() / "stores")


def default_testbed() -> Path:
    """$PARAMLIB_TESTBED, else the testbed `make demo` generates."""
    return Path(os.environ.get(TESTBED_ENV) or demo_dir() / "testbed")
