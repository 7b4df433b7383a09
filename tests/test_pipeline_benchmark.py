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
    command = [sys.executable, str(SCRIPT), "--quick", "--scheduler", "threads", "--repeat", "2"]
    result = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peak RSS MB" in result.stdout  # the table

    report = json.loads(out.read_text())
    assert report["ratio_vs_raw_read"] > 0 and report["hash_cache"] == "cold"
    sizes = report["peak_rss_mb"]
    assert [entry["files"] for entry in sizes] == [1, 2]  # half and all of the quick set
    assert sizes[1]["input_mb"] > sizes[0]["input_mb"] > 0
    assert all(entry["peak_rss_mb"] > 0 for entry in sizes)
    for row in report["sizes"]:
        assert row["raw_seconds"] > 0 and row["pipeline_seconds"] > 0
        assert row["pipeline_import_seconds"] > 0 and row["raw_import_seconds"] > 0
        assert row["pipeline_cpu_seconds"] > 0 and row["raw_cpu_seconds"] > 0
        # --repeat 2: both runs recorded, the fastest counts
        assert row["pipeline_seconds"] == min(row["all_pipeline_seconds"])
        assert len(row["all_raw_seconds"]) == len(row["all_pipeline_seconds"]) == 2


def test_repeat_below_one_is_one_line_and_an_error() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeat", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == "--repeat 0: expected 1 or more"
