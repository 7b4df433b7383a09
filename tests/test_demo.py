"""`paramlib demo` end to end: export, Fortran run, comparison with PyTorch, testbed, reader."""

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.usefixtures("bridge_library")
def test_demo_runs_the_model_from_fortran_and_matches_torch(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paramlib", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"max \|Fortran - PyTorch\| = (\S+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= 1e-6
    assert (tmp_path / "simple.pt").is_file() and (tmp_path / "out.bin").is_file()
    heating = re.search(r"LF-HF correlation on HF states: heating (\S+),", result.stdout)
    assert heating is not None and -1.0 <= float(heating.group(1)) <= 1.0, result.stdout
    assert (tmp_path / "testbed" / "summary.json").is_file()
    assert re.search(r"\[5/5\].*\n.*1 file\(s\): \{'time': 12", result.stdout), result.stdout
