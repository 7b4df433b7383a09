"""Shared fixtures.

Fixtures for compiled parts (bridge library, Python bindings) skip with the make target that
builds them; under CI (CI set) they fail instead, since `make test` builds them first and a
skip there would hide a broken build.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from paramlib import paths
from paramlib.export import save
from paramlib.models.examples import make_example

# The machine has 2 cores shared with builds: one intra-op thread keeps tests predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def hash_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Builds remember source hashes in a folder of this session's, not ~/.cache/paramlib: a
    test's result does not depend on what earlier runs remembered."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.CACHE_ENV, str(tmp_path_factory.mktemp("hash_cache")))
        yield


def _require_build(what: str) -> None:
    message = f"needs {what}: run `make build`"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (`make test` builds it before running pytest)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return paths.REPO_ROOT


@pytest.fixture(scope="session")
def bridge_library() -> Path:
    """build/lib/libparamlib_bridge.so (or under PARAMLIB_BUILD_DIR)."""
    path = paths.bridge_library_path()
    if not path.is_file():
        _require_build(f"the bridge library {path}")
    return path


@pytest.fixture(scope="session")
def bindings() -> Path:
    """The compiled Python bindings, paramlib/_ext/_paramlib_bridge*.so."""
    found = paths.find_bindings()
    if not found:
        _require_build(f"the Python bindings {paths.PACKAGE_DIR / '_ext' / paths.BINDINGS_GLOB}")
    return found[0]


@pytest.fixture(scope="session")
def column_bindings() -> None:
    """The column model's Python bindings, paramlib/_ext/_paramlib_column*.so."""
    from paramlib.testbed import column

    try:
        column.fortran_constants()
    except ImportError as error:
        _require_build(f"the column model's Python bindings ({error})")


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """Where a test may write a model file; nothing exists there yet."""
    return tmp_path / "model.pt"


@pytest.fixture(scope="session")
def example_model_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """example_model_file(kind) -> a saved make_example(kind, seed=0) model, written once
    per session."""
    directory = tmp_path_factory.mktemp("example_models")
    written: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in written:
            module, metadata = make_example(kind, seed=0)
            written[kind] = save(module, directory / f"{kind}.pt", metadata)
        return written[kind]

    return get


@pytest.fixture(scope="session")
def small_testbed(tmp_path_factory: pytest.TempPathFactory, column_bindings: None) -> Path:
    """The small testbed (seed 0, with its WRF set), generated once for every test that only
    reads it."""
    from paramlib.testbed.generate import generate

    out = tmp_path_factory.mktemp("shared") / "testbed"
    generate(out, size="small", seed=0, wrf=True, log=lambda _: None)
    return out
