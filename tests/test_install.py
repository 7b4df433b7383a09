"""`cmake --install` gives a bridge that a host outside the source tree builds against, through
the CMake package, the Make fragment and pkg-config, without Torch's CMake package or Python,
and the column interface (paramlib::column_physics) through the CMake package.
The hosts are fortran_bridge/examples/external_host, copied to a temporary folder."""

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from paramlib import paths
from paramlib.export import load_metadata

ModelFile = Callable[[str], Path]

EXTERNAL_HOST = paths.REPO_ROOT / "fortran_bridge" / "examples" / "external_host"
HOST_NCOL = 3  # host.f90 runs 3 columns with x(k, c) = (k - c) / 4
TOLERANCE = 1e-6
TIMEOUT_S = 600
INSTALLED = (
    "lib/libparamlib_bridge.so",
    "include/paramlib/paramlib_bridge.h",
    "include/paramlib/paramlib_bridge.mod",
    "include/paramlib/paramlib_column_physics.mod",
    "lib/libparamlib_column_physics.a",
    "lib/libparamlib_column.a",
    "lib/cmake/paramlib_bridge/paramlib_bridgeConfig.cmake",
    "lib/pkgconfig/paramlib_bridge.pc",
    "share/paramlib/paramlib_bridge.mk",
)


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, (
        f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def clean_env() -> dict[str, str]:
    """The environment without any hint of where Torch's CMake package is."""
    return {k: v for k, v in os.environ.items() if k not in ("CMAKE_PREFIX_PATH", "Torch_DIR")}


@pytest.fixture(scope="module")
def prefix(bridge_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("install")
    run(["cmake", "--install", str(paths.build_dir()), "--prefix", str(prefix)])
    return prefix


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXTERNAL_HOST, tmp_path / "external_host"))


def expected_output(model_file: Path) -> np.ndarray:
    """PyTorch on the host's inputs: x(k, c) = (k - c) / 4, exact in float32."""
    nlev = load_metadata(model_file)["inputs"][0]["nlev"]
    k = np.arange(1, nlev + 1)
    c = np.arange(1, HOST_NCOL + 1)
    x = ((k[None, :] - c[:, None]) / 4).astype(np.float32)  # (ncol, nlev)
    with torch.inference_mode():
        return torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()


def check_host_output(host: Path, model_file: Path) -> None:
    """The host runs and its printed columns agree with PyTorch to 1e-6 of the field's scale."""
    stdout = run([str(host), str(model_file)])
    rows = re.findall(r"^column (\d+):(.*)$", stdout, flags=re.MULTILINE)
    assert len(rows) == HOST_NCOL, stdout
    y_host = np.array([[float(v) for v in values.split()] for _, values in rows])
    y_torch = expected_output(model_file)
    assert y_host.shape == y_torch.shape, stdout
    error = float(np.abs(y_host - y_torch).max())
    assert error <= TOLERANCE * float(np.abs(y_torch).max()), f"max error {error}:\n{stdout}"


def check_column_host_output(host: Path) -> None:
    """The column interface ran Betts-Miller: statuses CP_OK, finite tendencies, precipitation
    >= 0, convection in the humid column and none in the dry one (column_host.f90)."""
    stdout = run([str(host)])
    assert re.search(r"^status 0 0$", stdout, flags=re.MULTILINE), stdout
    rows = re.findall(r"^column (\d+):(.*)$", stdout, flags=re.MULTILINE)
    values = np.array([[float(v) for v in line.split()] for _, line in rows])
    assert values.shape == (3, 2), stdout
    precip, heating = values[:, 0], values[:, 1]
    assert np.isfinite(values).all() and (precip >= 0).all(), stdout
    assert heating[0] != 0 and heating[2] == 0, stdout


def test_install_layout(prefix: Path) -> None:
    missing = [name for name in INSTALLED if not (prefix / name).exists()]
    assert not missing, f"not installed under {prefix}: {missing}"


def test_cmake_package(prefix: Path, host_dir: Path, example_model_file: ModelFile) -> None:
    build = host_dir / "build"
    # Any find_package(Torch) in the installed package would now fail: consumers need none.
    run(
        [
            "cmake",
            "-S",
            str(host_dir),
            "-B",
            str(build),
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON",
        ],
        env=clean_env(),
    )
    run(["cmake", "--build", str(build)], env=clean_env())
    check_host_output(build / "host", example_model_file("simple"))
    check_column_host_output(build / "column_host")


def test_make_fragment(prefix: Path, host_dir: Path, example_model_file: ModelFile) -> None:
    run(["make", "-C", str(host_dir), f"PARAMLIB_PREFIX={prefix}"], env=clean_env())
    check_host_output(host_dir / "host", example_model_file("simple"))
    check_column_host_output(host_dir / "column_host")


def test_pkg_config(prefix: Path, host_dir: Path, example_model_file: ModelFile) -> None:
    env = clean_env() | {"PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "paramlib_bridge"], env=env)
    host = host_dir / "host_pkgconfig"
    run(
        ["gfortran", str(host_dir / "host.f90"), "-o", str(host), *shlex.split(flags)],
        cwd=host_dir,
        env=env,
    )
    check_host_output(host, example_model_file("simple"))
