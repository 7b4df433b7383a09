"""benchmarks/wrf_plugin_cost.py --quick: it runs the plugin's timing program on a small tile,
prints its table and writes complete JSON. Timings are only checked to be positive numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paramlib import paths

SCRIPT = paths.REPO_ROOT / "benchmarks" / "wrf_plugin_cost.py"
KEYS = (
    "per_column_us",
    "tile_columns",
    "levels",
    "per_call_s",
    "pytorch_per_column_us",
    "plugin_over_pytorch",
    "threads",
)


def test_quick_run_writes_every_key(tmp_path: Path) -> None:
    program = paths.build_dir() / "bin" / "wrf_plugin_bench"
    if not program.is_file():
        message = f"needs {program}: run `make build`"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (`make test` builds it before running pytest)")
        pytest.skip(message)
    out = tmp_path / "bench" / "wrf_plugin_cost.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plugin / PyTorch" in result.stdout  # the table
    data = json.loads(out.read_text())
    assert set(KEYS) <= set(data)
    assert data["tile_columns"] == 20 * 22 and data["levels"] == 44 and data["threads"] == 1
    assert data["per_column_us"] > 0 and data["pytorch_per_column_us"] > 0
