"""The Fortran bridge tests and examples (fortran_bridge/tests, registered with ctest), run
from pytest so that `make test` covers them. ctest's own output is shown on failure."""

import subprocess

import pytest

from paramlib import paths

BUILD_TIMEOUT_S = 1200
CTEST_TIMEOUT_S = 900


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.usefixtures("bridge_library")
def test_fortran_tests_pass_under_ctest() -> None:
    build = paths.build_dir()
    # A stale test program would test old code: bring the test targets up to date first.
    built = run(["cmake", "--build", str(build), "--target", "bridge_tests"], BUILD_TIMEOUT_S)
    assert built.returncode == 0, (
        f"building the Fortran tests failed:\n{built.stdout}{built.stderr}"
    )

    # The WRF plugin's cases need the real WRF runs: tests/test_wrf_plugin.py runs them (once).
    command = ["ctest", "--test-dir", str(build), "--output-on-failure", "-E", "^wrf_plugin_"]
    result = run(command, CTEST_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"ctest failed:\n{output}"
    assert "bridge_test_errors" in output and "tests passed" in output, (
        f"ctest ran without the bridge tests (configured with BUILD_TESTING=OFF?):\n{output}"
    )
