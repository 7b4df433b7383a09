"""The WRF cumulus plugin's ctest cases (fortran_bridge/wrf/tests/CMakeLists.txt) from pytest:
a small Bi-LSTM trained on the real control run, the WRF-shaped driver's runs (tiles vs one
tile and OpenMP vs serial bit for bit, halos untouched, NCA holds and countdown, NaN columns,
cold start), the first call against PyTorch on the same columns, the initialisation errors,
a failed model call on a tile (stops WRF unless paramlib_cu_on_error = 1), the physical limits
(cloud top, no negative water, PRATEC closure) and the out-of-range counts in the log, and the
runs again with the plugin preprocessed as WRF does on 2 OpenMP threads. Skipped with the
reason where ../shared/data is absent."""

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from wrf_data import CTL, WRF_DIR

from paramlib import paths
from paramlib.wrf.driver import TENDENCIES, TOP_FRACTION
from paramlib.wrf.parity import limit_columns

CASES = (
    "wrf_plugin_model",
    "wrf_plugin_run",
    "wrf_plugin_parity",
    "wrf_plugin_errors",
    "wrf_plugin_screen",
    "wrf_plugin_on_error",
    "wrf_plugin_limits",
    "wrf_plugin_ood",
    "wrf_plugin_wrfpp",
)
KIT = Path(__file__).resolve().parents[1] / "fortran_bridge" / "wrf"


def test_no_write_reads_its_own_buffer() -> None:
    """`WRITE (msg, ...) ... TRIM(msg)` overwrites msg while reading it: the plugin's warning
    for a failed model call lost the bridge's message that way. No WRITE to an internal unit
    may name that unit in its output list."""
    spec = importlib.util.spec_from_file_location("patch_wrf", KIT / "patch_wrf.py")
    assert spec is not None and spec.loader is not None
    patch_wrf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patch_wrf)
    sources = [KIT / "module_cu_paramlib.F", KIT / "wrf_error_shim.F90"]
    sources += sorted((KIT / "tests").glob("*.F90"))
    writes, offending = 0, []
    for source in sources:
        lines = source.read_text().splitlines()
        for first, last in patch_wrf.statements(lines):
            text = patch_wrf.joined(lines, first, last)
            write = re.match(r"\s*WRITE\s*\(\s*([a-z_]\w*)\s*,", text, re.I)
            if not write:
                continue
            writes += 1
            depth, end = 0, write.start(1)
            for end in range(text.index("(", write.start()), len(text)):
                depth += (text[end] == "(") - (text[end] == ")")
                if depth == 0:
                    break
            outputs = re.sub(r"'[^']*'|\"[^\"]*\"", "''", text[end + 1 :])  # literals out
            if re.search(rf"\b{write[1]}\b", outputs, re.I):
                offending.append(f"{source.name}:{first + 1}: {text.strip()}")
    assert writes > 10  # the scan found the WRITE statements
    assert offending == []


@pytest.mark.usefixtures("bridge_library")
def test_wrf_plugin_ctest_cases_pass() -> None:
    assert CTL.is_file()
    build = paths.build_dir()
    built = subprocess.run(
        ["cmake", "--build", str(build), "--target", "wrf_plugin_tests"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert built.returncode == 0, (
        f"building the WRF plugin tests failed:\n{built.stdout}{built.stderr}"
    )
    result = subprocess.run(
        ["ctest", "--test-dir", str(build), "-R", "^wrf_plugin_", "--output-on-failure"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"ctest failed:\n{output}"
    for case in CASES:  # each ran and passed: none skipped, none missing
        assert any(case in line and "Passed" in line for line in output.splitlines()), output


def mskf_active_columns() -> dict[str, np.ndarray]:
    """MSKF's six tendencies of every active column (any heating or moistening) of the four
    shared runs, (column, level), float32 as the plugin sees them."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in TENDENCIES}
    for path in sorted(WRF_DIR.glob("wrfout_d01_*.nc")):
        with xr.open_dataset(path) as ds:
            frames = {
                name: ds[name.upper()]
                .transpose("Time", "south_north", "west_east", "bottom_top")
                .values.astype(np.float32)
                .reshape(-1, ds.sizes["bottom_top"])
                for name in TENDENCIES
            }
        active = (frames["rthcuten"] != 0).any(axis=1) | (frames["rqvcuten"] != 0).any(axis=1)
        for name in TENDENCIES:
            parts[name].append(frames[name][active])
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def test_the_default_cloud_top_cuts_no_mskf_column() -> None:
    """paramlib_cu_top_fraction's default (5e-4) keeps every level of every active MSKF column
    of the shared runs (measured: the activity at MSKF's CUTOP is >= 5.74e-4 of the column's
    largest), while twice the measured bound would cut some: the default is no guess."""
    mskf = mskf_active_columns()
    ncol, nlev = mskf["rthcuten"].shape
    assert ncol > 10000
    state = {name: np.ones((ncol, nlev), np.float32) for name in ("qv", "rho", "dz8w")}
    no_period = np.zeros(ncol, np.float32)  # the drying limit left out: the top alone

    def cut(fraction: float) -> int:
        ten = {name: values.copy() for name, values in mskf.items()}
        limit_columns(ten, np.zeros(ncol, np.float32), state, no_period, fraction)
        return int(sum((ten[name] != mskf[name]).any(axis=1) for name in TENDENCIES).sum())

    assert cut(TOP_FRACTION) == 0
    assert cut(2 * 5.74e-4) > 0
