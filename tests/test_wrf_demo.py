"""The `make demo` stage of the WRF plugin (paramlib.wrf.demo_stage) on the small testbed:
without a trained model it exports one from the demo's store, runs the WRF-shaped driver on the
testbed wrfout, and reports parity with PyTorch and the cost per column."""

from dataclasses import dataclass
from pathlib import Path

import dask
import pytest

from paramlib import paths
from paramlib.data.pipeline import build_store
from paramlib.data.recipe import load_recipe
from paramlib.demo import DemoError
from paramlib.wrf.demo_stage import wrf_plugin
from paramlib.wrf.driver import driver_path


@dataclass(frozen=True)
class Demo:
    out: Path
    testbed: Path
    stores: Path


def test_stage_runs_the_plugin_on_the_testbed(
    small_testbed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not driver_path().is_file():
        pytest.skip(f"needs {driver_path()}: run `make build`")
    monkeypatch.setenv("PARAMLIB_TESTBED", str(small_testbed))
    recipe = load_recipe(paths.REPO_ROOT / "training" / "recipes" / "bilstm_testbed_wrf.yaml")
    with dask.config.set(scheduler="synchronous"):
        build_store(recipe, tmp_path / "stores" / "bilstm_testbed_wrf.zarr")
    demo = Demo(tmp_path / "demo", small_testbed, tmp_path / "stores")
    wrf_plugin(demo)
    printed = capsys.readouterr().out
    assert "untrained Bi-LSTM" in printed and "checks passed" in printed
    assert "max |Fortran - PyTorch| = 0.000e+00" in printed
    assert "us per column per call" in printed
    assert (demo.out / "wrf_plugin" / "run.nc").is_file()


def test_stage_without_a_model_or_store_says_what_is_missing(
    tmp_path: Path, small_testbed: Path
) -> None:
    with pytest.raises(DemoError, match="no model for the WRF plugin: neither"):
        wrf_plugin(Demo(tmp_path / "demo", small_testbed, tmp_path / "no_stores"))
