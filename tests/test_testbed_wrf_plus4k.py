"""The testbed's WRF-format +4K set (`paramlib data testbed` writes ``wrf_plus4k/`` beside
``wrf/``): the same grid, forcing and draws with SST + 4 K, read from the files; its summary
entry; the catalog entry and the recipe whose test group is the +4K set alone."""

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from paramlib import cli
from paramlib.catalog import load_catalog
from paramlib.data.pipeline import build_store
from paramlib.data.recipe import load_recipe
from paramlib.guards import UserInputError
from paramlib.testbed import generate
from paramlib.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "recipes" / "bilstm_testbed_wrf_plus4k.yaml"
CONFIG = REPO / "training" / "configs" / "bilstm_testbed_wrf_plus4k.yaml"
# What the historical and +4K files share exactly: the grid, levels, base state, times.
SAME = ("Times", "XTIME", "ZNU", "ZNW", "P_TOP", "PB", "PHB", "MUB", "XLAND", "UST")


def open_set(testbed: Path, folder: str) -> xr.Dataset:
    paths = sorted((testbed / folder).glob("wrfout_d01_*"))
    assert paths, f"no wrfout files in {testbed / folder}"
    return xr.open_mfdataset(paths, combine="nested", concat_dim="Time", decode_times=False)


@pytest.fixture(scope="module")
def report(small_testbed: Path) -> dict:
    return json.loads((small_testbed / "summary.json").read_text())


def test_plus4k_set_is_the_same_grid_with_sst_plus_4k(small_testbed: Path, report: dict) -> None:
    hist, warm = open_set(small_testbed, "wrf"), open_set(small_testbed, "wrf_plus4k")
    assert dict(warm.sizes) == dict(hist.sizes)
    for name in SAME:
        np.testing.assert_array_equal(warm[name].values, hist[name].values, err_msg=name)
    assert float(hist.SST.std()) > 0.1, "the SST varies across the grid"
    np.testing.assert_allclose(warm.SST.values, hist.SST.values + 4.0, atol=1e-4)
    # the WTG reference SST is the grid's mean SST, in the summary and the files' note
    for key, ds in (("wrf", hist), ("wrf_plus4k", warm)):
        sst_ref = report[key]["wtg_sst_ref_K"]
        assert sst_ref == pytest.approx(float(ds.SST.isel(Time=0).mean()), abs=1e-3)
        assert f"WTG reference SST {sst_ref:.2f} K" in ds.attrs["DATASET_NOTE"]
    assert report["wrf_plus4k"]["wtg_sst_ref_K"] == pytest.approx(
        report["wrf"]["wtg_sst_ref_K"] + 4.0
    )
    assert "Scenario: plus4k" in warm.attrs["DATASET_NOTE"]
    assert "usage: test only" in warm.attrs["DATASET_NOTE"]
    # a warmer climate, not a copy: the state differs and the lowest level is warmer
    t_hist, t_warm = hist["T"].isel(bottom_top=0).values, warm["T"].isel(bottom_top=0).values
    assert float(np.mean(t_warm - t_hist)) > 1.0


def test_summary_marks_the_plus4k_set_test_only(small_testbed: Path, report: dict) -> None:
    entry = report["wrf_plus4k"]
    assert entry["usage"] == "test only" and report["wrf"]["usage"] == "training"
    assert entry["sst_offset_K"] == 4.0
    paths = sorted((small_testbed / "wrf_plus4k").iterdir())
    assert entry["files"] == {f"wrf_plus4k/{p.name}": p.stat().st_size for p in paths}
    for key in ("triggered_fraction", "raining_fraction", "fresh_fraction_of_active"):
        assert 0.0 <= entry[key] <= 1.0, key
    levels = [f"{eta:.4f}" for eta in sorted(open_set(small_testbed, "wrf").ZNU.values[0])]
    assert set(entry["out_of_range"]) == {"t", "qv"}
    for name, by_level in entry["out_of_range"].items():
        assert list(by_level) == levels, name
        assert all(0.0 <= v <= 1.0 for v in by_level.values()), name
    # with WTG the whole free troposphere warms: nearly every +4K state is out of range there
    mid = [v for eta, v in entry["out_of_range"]["t"].items() if 0.2 < float(eta) < 0.8]
    assert min(mid) > 0.9


def test_a_testbed_with_the_plus4k_set_is_recognised_as_its_own(
    small_testbed: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "testbed"
    shutil.copytree(small_testbed, copy)
    own = generate.testbed_entries(copy)
    assert own is not None and "wrf_plus4k" in own
    assert {f"wrf_plus4k/{p.name}" for p in (copy / "wrf_plus4k").iterdir()} <= own
    generate.check_only_testbed(copy)  # regenerating may replace it
    (copy / "wrf_plus4k" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"wrf_plus4k/notes.txt"):
        generate.check_only_testbed(copy)


def test_catalog_entry_and_recipe_test_on_the_plus4k_files_only(
    small_testbed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARAMLIB_TESTBED", str(small_testbed))
    entry = load_catalog()["testbed_wrf_plus4k"]
    assert entry.scenario == "plus4k" and "test only" in entry.description
    recipe = load_recipe(RECIPE)
    out = tmp_path / "store.zarr"
    with dask.config.set(scheduler="synchronous"):
        result = build_store(recipe, out)
    assert all(n > 0 for n in result.samples.values()), result.samples
    attrs = zarr.open_group(str(out), mode="r").attrs
    runs = attrs["runs"]
    warm_files = {str(p) for p in (small_testbed / "wrf_plus4k").glob("wrfout_d01_*")}
    assert set(attrs["sources"]["testbed_wrf_plus4k"]["files"]) == warm_files
    groups = {s: xr.open_zarr(out, group=s) for s in ("train", "val", "test")}
    for split, ds in groups.items():
        names = {runs[i] for i in np.unique(ds["run"].values)}
        assert names == ({"testbed_wrf_plus4k"} if split == "test" else {"testbed_wrf"}), split
    # train and val are the historical set split by time (val later, after a gap)
    assert groups["val"].time.values.min() > groups["train"].time.values.max()
    # the test columns are the +4K files' columns: warmer than the training columns
    t_train, t_test = groups["train"].t.values, groups["test"].t.values
    assert float(t_test.mean()) > float(t_train.mean()) + 2.0
    # the training config trains on it (a few steps of its small variant)
    assert load_config(CONFIG).data.store.endswith("/bilstm_testbed_wrf_plus4k.zarr")
    steps = [f"train.{key}=10" for key in ("steps", "val_every", "checkpoint_every")]
    run = tmp_path / "run"
    args = [str(CONFIG), *steps, f"data.store={out}", "--variant", "small", "--out", str(run)]
    assert cli.main(["train", *args]) == 0
    assert (run / "model.pt").is_file()
