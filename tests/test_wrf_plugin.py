"""The WRF cumulus plugin's ctest cases (fortran_bridge/wrf/tests/CMakeLists.txt) from pytest:
a small Bi-LSTM trained on the real control run, the WRF-shaped driver's runs (tiles vs one
tile and OpenMP vs serial bit for bit, halos untouched, NCA holds and countdown, NaN columns,
cold start), the first call against PyTorch on the same columns, and the initialisation errors.
Skipped with the reason where ../shared/data is absent."""

import subprocess

import pytest
from wrf_data import CTL

from paramlib import doctor

CASES = (
    "wrf_plugin_model",
    "wrf_plugin_run",
    "wrf_plugin_parity",
    "wrf_plugin_errors",
    "wrf_plugin_screen",
)


@pytest.mark.usefixtures("bridge_library")
def test_wrf_plugin_ctest_cases_pass() -> None:
    assert CTL.is_file()
    build = doctor.build_dir()
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
