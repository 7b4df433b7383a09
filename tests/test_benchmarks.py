"""benchmarks/bridge_overhead.py on a reduced setting: it runs, prints its table and writes
complete JSON. Timings are only checked to be positive numbers, never against thresholds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paramlib import paths

SCRIPT = paths.REPO_ROOT / "benchmarks" / "bridge_overhead.py"
PROGRAMS = ("bridge_bench", "libtorch_bench")
TIMES = ("bridge_us", "cpp_us", "python_us", "ratio_bridge_cpp", "ratio_bridge_python")


@pytest.fixture(scope="module")
def bench_bin_dir() -> Path:
    """The build's bin/ with both timing programs (built by `make build`)."""
    bin_dir = paths.build_dir() / "bin"
    missing = [name for name in PROGRAMS if not (bin_dir / name).is_file()]
    if missing:
        message = f"needs {', '.join(missing)} in {bin_dir}: run `make build`"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (`make test` builds them before running pytest)")
        pytest.skip(message)
    return bin_dir


@pytest.mark.parametrize("extra", [[], ["--pin-malloc"]], ids=["default", "pin-malloc"])
def test_quick_run_writes_every_key(tmp_path: Path, bench_bin_dir: Path, extra: list[str]) -> None:
    out = tmp_path / "bench" / "bridge_overhead.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--json", str(out)]
    command += ["--bin-dir", str(bench_bin_dir), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bridge/cpp" in result.stdout  # the table

    report = json.loads(out.read_text())
    assert {"results", "machine", "torch"} <= set(report)
    assert report["torch"] and report["machine"]["intra_op_threads"] == 1
    [row] = report["results"]
    assert (row["model"], row["batch"]) == ("small", 1)
    for key in TIMES:
        assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
    # Same model, same inputs: the bridge and plain libtorch must compute the same outputs.
    assert row["max_abs_diff_bridge_cpp"] <= 1e-6
    assert row["max_abs_diff_python_cpp"] <= 1e-6
    assert ("GLIBC_TUNABLES" in report["settings"]["malloc"]) == bool(extra)
