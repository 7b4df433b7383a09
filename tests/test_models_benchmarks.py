"""benchmarks/ensemble_training.py and ensemble_inference.py on their --quick settings: they
run on CPU, print their tables and write complete JSON. Timings are only checked to be
positive numbers, never against thresholds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paramlib import paths

BENCHMARKS = paths.REPO_ROOT / "benchmarks"


def run_quick(script: str, out: Path) -> tuple[str, dict]:
    command = [sys.executable, str(BENCHMARKS / script), "--quick", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads(out.read_text())


def positive(value: object) -> bool:
    return isinstance(value, float) and value > 0


def test_training_benchmark_quick(tmp_path: Path) -> None:
    table, report = run_quick("ensemble_training.py", tmp_path / "training.json")
    assert "ratio vs bmm ceiling" in table
    assert report["machine"]["intra_op_threads"] == 1 and report["torch"]
    results = report["results"]
    for key in ("ratio_vs_bmm_ceiling", "speedup_vs_loop", "member_scaling", "flops_per_step"):
        assert positive(results[key]), (key, results[key])
    assert set(results["seconds"]) == {"vectorized", "loop", "one_member", "bmm_ceiling"}
    assert all(positive(s) for s in results["seconds"].values())
    # The loop copies the vectorized weights: both compute the same first loss.
    assert results["first_loss_abs_diff_loop"] == pytest.approx(0.0, abs=1e-4)


def test_inference_benchmark_quick(tmp_path: Path) -> None:
    table, report = run_quick("ensemble_inference.py", tmp_path / "inference.json")
    assert "fp32" in table
    assert positive(report["ratio_vs_bmm_ceiling"])
    fp32 = report["results"]["fp32"]
    for key in ("model_s", "ceiling_s", "gflops_model", "gflops_ceiling", "ratio_vs_bmm_ceiling"):
        assert positive(fp32[key]), (key, fp32[key])
    assert fp32["rel_l2_error_vs_fp32"] == 0.0  # the reference itself
    assert report["settings"]["members"] == 4 and report["settings"]["output"] == "members"
