"""benchmarks/pipeline_throughput.py on its --quick set: it runs, prints its table and writes
the JSON keys the issue names; timings are only checked to be positive, never thresholded."""

import json
import subprocess
import sys
from pathlib import Path

from paramlib import paths

SCRIPT = paths.REPO_ROOT / "benchmarks" / "pipeline_throughput.py"


def test_quick_run_writes_ratio_and_peak_rss_per_input_size(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--scheduler", "threads"]
    result = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peak RSS MB" in result.stdout  # the table

    report = json.loads(out.read_text())
    assert report["ratio_vs_raw_read"] > 0
    sizes = report["peak_rss_mb"]
    assert [entry["files"] for entry in sizes] == [1, 2]  # half and all of the quick set
    assert sizes[1]["input_mb"] > sizes[0]["input_mb"] > 0
    assert all(entry["peak_rss_mb"] > 0 for entry in sizes)
    for row in report["sizes"]:
        assert row["raw_seconds"] > 0 and row["pipeline_seconds"] > 0
