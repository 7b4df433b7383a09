"""benchmarks/ensemble_training.py and ensemble_inference.py on their --quick settings: they
run on CPU, print their tables and write complete JSON. Timings are only checked to be
positive numbers, never against thresholds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

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


def test_learning_curve_on_the_small_study(small_testbed: Path, tmp_path: Path) -> None:
    """benchmarks/mfrpn_learning_curve.py at two points of the small variant (20 steps; half
    the historical HF frames): a store of half the training samples is built, both points
    are trained for the seed and their gap closed is reported per level band."""
    work = tmp_path / "study"
    shutil.copytree(small_testbed, work / "testbed")
    out = tmp_path / "curve.json"
    command = [
        sys.executable,
        str(BENCHMARKS / "mfrpn_learning_curve.py"),
        "--work",
        str(work),
        "--variant",
        "small",
        "--points",
        "1:20",
        "0.5:20",
        "--configs",
        "rpn_hf_only",
        "mfrpn_hf_of_bm_and_x",
        "rpn_oracle",
        "--seeds",
        "0",
        "--json",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert [p["point"] for p in report["points"]] == ["f1-s20", "f0.5-s20"]
    for point in report["points"]:
        assert set(point["gap_closed_bands"]) == {"lower", "mid", "upper"}
        assert set(point["r2_column_plus4k"]) == {
            "rpn_hf_only",
            "mfrpn_hf_of_bm_and_x",
            "rpn_oracle",
        }
    half = zarr.open_group(str(work / "curve" / "stores-f0.5" / "mfrpn_hf_testbed.zarr"), mode="r")
    whole = zarr.open_group(str(work / "stores" / "mfrpn_hf_testbed.zarr"), mode="r")
    n_half, n_whole = (g["train"]["t"].shape[0] + g["val"]["t"].shape[0] for g in (half, whole))
    assert n_half < 0.6 * n_whole
    assert half["test"]["t"].shape == whole["test"]["t"].shape  # the same +4K test frames
    assert "| f0.5-s20 |" in result.stdout
    assert out.with_suffix(".png").stat().st_size > 0  # the figure beside the JSON
