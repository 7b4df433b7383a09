"""benchmarks/coupling_cost.py on its --quick settings: it runs paramlib_scm in the three modes,
prints its table and writes complete JSON. Timings are checked to be positive numbers and the
shares to be fractions, never against thresholds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paramlib import paths
from paramlib.couple import scm
from paramlib.couple.inputs import CoupleError


def test_coupling_cost_quick(tmp_path: Path) -> None:
    try:
        scm.executable()
    except CoupleError as error:  # under CI `make test` builds it first: a skip would hide that
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(error))
    out = tmp_path / "coupling_cost.json"
    command = [
        sys.executable,
        str(paths.REPO_ROOT / "benchmarks" / "coupling_cost.py"),
        "--quick",
        "--json",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "us/column" in result.stdout
    report = json.loads(out.read_text())
    assert set(report["per_column_us"]) == {"physics", "ml", "hybrid"}
    assert all(v > 0 for v in report["per_column_us"].values())
    assert set(report["bridge_share"]) == {"ml", "hybrid"}
    assert all(0 < v < 1 for v in report["bridge_share"].values())
    assert report["fallback_fraction"]["physics"] == 0.0 == report["fallback_fraction"]["ml"]
    assert 0 < report["fallback_fraction"]["hybrid"] < 1  # the median spread splits the columns
    assert report["torch_forward_us_per_column"] > 0
    assert report["settings"]["timed_steps"] == report["settings"]["steps"] - 2
