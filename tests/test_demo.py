"""`paramlib demo` end to end: export, Fortran run, comparison with PyTorch, testbed, reader,
training stores, small trained models, a trained MF-RPN through the bridge; a second run finds
everything up to date."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from wrf_data import CTL

from paramlib import demo
from paramlib.data.store import stored_fingerprint


@pytest.mark.usefixtures("bridge_library")
def test_demo_runs_the_model_from_fortran_and_matches_torch(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "paramlib", "demo", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"max \|Fortran - PyTorch\| = (\S+)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= 1e-6
    assert (tmp_path / "simple.pt").is_file() and (tmp_path / "out.bin").is_file()
    heating = re.search(r"LF-HF correlation on HF states: heating (\S+),", result.stdout)
    assert heating is not None and -1.0 <= float(heating.group(1)) <= 1.0, result.stdout
    assert (tmp_path / "testbed" / "summary.json").is_file()
    wrf = re.search(r"\] read the WRF.*\n.*1 file\(s\): \{'time': 12", result.stdout)
    assert wrf, result.stdout
    for name in demo.TESTBED_RECIPES:
        assert stored_fingerprint(tmp_path / "stores" / f"{name}.zarr") is not None, name

    for name in demo.TRAINED:
        if name != "bilstm_wrf_mskf" or CTL.exists():  # its store needs the real WRF runs
            assert (tmp_path / "runs" / name / "model.pt").is_file(), name
    bridge = re.search(r"max \|Fortran - PyTorch\| / scale = (\S+)", result.stdout)
    assert bridge is not None and float(bridge.group(1)) <= demo.BRIDGE_TOLERANCE, result.stdout

    # The Bi-LSTMs on held-out data beside the baselines, with the out-of-distribution report.
    plus4k = tmp_path / "emulators" / "bilstm_testbed_wrf_plus4k" / "report.md"
    assert "## Out of distribution" in plus4k.read_text()
    for label in ("bilstm_testbed_wrf_plus4k (small variant)", "persistence", "climatology"):
        assert re.search(rf"  {re.escape(label)} +trigger F1 ", result.stdout), label
    assert (tmp_path / "evaluation" / "report.html").is_file()
    assert re.search(r"\| MF-RPN HF\(LF\(x\)\) \| mfrpn_hf_of_lf \| ", result.stdout), result.stdout

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date") >= 2 + len(demo.TESTBED_RECIPES), again.stdout
    # coupling, WRF plugin, held-out emulators and evaluation say their kept summaries again
    kept = re.findall(r"^ +up to date \(.*summary\.txt\):$", again.stdout, re.MULTILINE)
    assert len(kept) == 4, again.stdout
    assert again.stderr.count("finished at step") >= len(demo.TRAINED) - 1, again.stderr
