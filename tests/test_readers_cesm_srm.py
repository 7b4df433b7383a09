"""The cesm-history, srm-coarse and zarr readers on the small testbed (conftest: small_testbed) and
on small hand-written files: hybrid pressure and interfaces by hand, level order, units and
attributes, given and computed tendencies, block means by hand, frame tendencies, zarr round
trip, and errors that name the file, the variable and the expectation."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import dask.array
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from paramlib.catalog import CATALOG_DIR, CatalogEntry, load_catalog
from paramlib.data.canonical import check_canonical, stack_columns
from paramlib.data.readers import open_source
from paramlib.data.readers.cesm_history import CesmHistoryError, open_cesm_history
from paramlib.data.readers.srm_coarse import SrmCoarseError, open_srm_coarse
from paramlib.data.readers.wrfout import open_wrfout
from paramlib.data.readers.zarr_store import ZarrStoreError

COLUMN_SETS = ("lf_historical", "lf_plus4k", "hf_historical", "hf_plus4k")
RUN_RENAME = {"CONVDT": "heating", "CONVDQ": "moistening", "PRECC": "precip"}


@pytest.fixture(scope="module")
def catalog(small_testbed: Path) -> Iterator[dict[str, CatalogEntry]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARAMLIB_TESTBED", str(small_testbed))
        # Paths are checked when read; the real WRF entries need not be present here.
        yield load_catalog(check_paths=False)


@pytest.fixture(scope="module")
def wrf_files(small_testbed: Path) -> list[Path]:
    return sorted((small_testbed / "wrf").glob("wrfout_d01_*"))


def raw(path: Path, name: str) -> np.ndarray:
    """A variable as stored (float64, CAM's order: top first)."""
    with netCDF4.Dataset(path) as nc:
        return np.asarray(nc[name][:], dtype=float)


# --- cesm-history ---------------------------------------------------------------------------


def test_catalog_without_testbed_variable_still_loads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PARAMLIB_TESTBED", raising=False)
    shutil.copy(CATALOG_DIR / "testbed.yaml", tmp_path)
    entries = load_catalog(tmp_path)  # checks paths of every non-template entry
    assert all(entries[f"testbed_{name}"].template for name in COLUMN_SETS)


@pytest.mark.parametrize("name", COLUMN_SETS)
def test_column_sets_through_catalog(catalog: dict[str, CatalogEntry], name: str) -> None:
    entry = catalog[f"testbed_{name}"]
    ds = open_source(entry)
    check_canonical(ds)
    assert dict(ds.sizes) == {"time": 8, "y": 1, "x": 192 if name[0] == "l" else 48, "lev": 26}
    assert isinstance(ds["t"].data, dask.array.Array)
    diagnostic = "em" if name.startswith("lf") else "bm"
    for field, target in entry.variables.items():
        assert ds[target.name].attrs["units"] == target.units, field
    assert ds[f"{diagnostic}_heating"].attrs["units"] == "K s-1"
    assert ds.attrs["fidelity"] == entry.fidelity and ds.attrs["scenario"] == entry.scenario


@pytest.fixture(scope="module")
def hf(small_testbed: Path) -> xr.Dataset:
    return open_cesm_history([small_testbed / "hf_historical.nc"], rename=RUN_RENAME)


@pytest.mark.parametrize(("n", "k", "i"), [(0, 0, 0), (3, 12, 17), (7, 25, 47)])
def test_pressure_from_hybrid_coefficients(small_testbed: Path, hf: xr.Dataset, n, k, i) -> None:
    """(n, k, i) in the file's order: k = 0 is the top level."""
    path = small_testbed / "hf_historical.nc"
    hyam, hybm, hyai, hybi = (raw(path, v) for v in ("hyam", "hybm", "hyai", "hybi"))
    p0, ps = float(raw(path, "P0")), raw(path, "PS")[n, i]
    nlev = hyam.size
    j = nlev - 1 - k  # the reader's level: surface first
    column = hf.isel(time=n, y=0, x=i, lev=j)
    assert float(column["p"]) == pytest.approx(hyam[k] * p0 + hybm[k] * ps, rel=1e-12)
    # Interfaces k (above) and k + 1 (below) of file level k.
    assert float(column["p_above"]) == pytest.approx(hyai[k] * p0 + hybi[k] * ps, rel=1e-12)
    assert float(column["p_below"]) == pytest.approx(hyai[k + 1] * p0 + hybi[k + 1] * ps, rel=1e-12)
    assert float(column["dp"]) == pytest.approx((hybi[k + 1] - hybi[k]) * ps, rel=1e-9)
    assert float(column["ps"]) == pytest.approx(ps, rel=1e-6)


def test_levels_surface_first(small_testbed: Path, hf: xr.Dataset) -> None:
    path = small_testbed / "hf_historical.nc"
    assert np.all(np.diff(hf["lev"].values) < 0)  # reference pressure falls: surface first
    assert hf["lev"].attrs["units"] == "hPa"
    np.testing.assert_allclose(hf["lev"].values, raw(path, "lev")[::-1])
    assert np.all(hf["p"].diff("lev") < 0)
    t = raw(path, "T")  # (time, lev, ncol), top first
    np.testing.assert_array_equal(hf["t"].isel(y=0).values, np.swapaxes(t[:, ::-1, :], 1, 2))


def test_units_attributes_and_time(small_testbed: Path, hf: xr.Dataset) -> None:
    path = small_testbed / "hf_historical.nc"
    expected = {
        "t": ("K", "air_temperature"),
        "q": ("kg kg-1", "specific_humidity"),
        "ps": ("Pa", "surface_air_pressure"),
        "p": ("Pa", "air_pressure"),
        "solin": ("W m-2", "toa_incoming_shortwave_flux"),
        "shflx": ("W m-2", "surface_upward_sensible_heat_flux"),
        "lhflx": ("W m-2", "surface_upward_latent_heat_flux"),
        "omega": ("Pa s-1", "lagrangian_tendency_of_air_pressure"),
        "precip": ("mm s-1", "lwe_convective_precipitation_rate"),
        "heating": ("K s-1", "tendency_of_air_temperature_due_to_convection"),
    }
    for name, (units, standard_name) in expected.items():
        assert hf[name].attrs["units"] == units, name
        assert hf[name].attrs["standard_name"] == standard_name, name
        assert hf[name].attrs["long_name"], name
    # CAM writes precipitation in m/s of water; canonical is mm s-1.
    np.testing.assert_allclose(
        hf["precip"].isel(y=0).values, 1000.0 * raw(path, "PRECC"), rtol=1e-6
    )
    times = pd.to_datetime([t.isoformat() for t in hf["time"].values])
    assert times[0] == pd.Timestamp("2000-01-03") and (times[1] - times[0]) == pd.Timedelta("3h")
    np.testing.assert_allclose(hf["lat"].values, raw(path, "lat"))
    assert hf["lat"].dims == ("x",)


def test_given_tendencies_are_the_files(small_testbed: Path, hf: xr.Dataset) -> None:
    path = small_testbed / "hf_historical.nc"
    for name, source in (("heating", "CONVDT"), ("moistening", "CONVDQ")):
        stored = np.swapaxes(raw(path, source)[:, ::-1, :], 1, 2)
        np.testing.assert_array_equal(hf[name].isel(y=0).values, stored.astype(np.float32))
        assert source.lower() not in hf  # renamed, not duplicated
    assert hf["moistening"].attrs["units"] == "kg kg-1 s-1"


def write_cam_grid(path: Path, drop: tuple[str, ...] = (), units: dict | None = None) -> Path:
    """A lat/lon CAM history file with states before (``*_BP``) and after physics; 2 times,
    3 levels top first, 2 x 4 columns."""
    rng = np.random.default_rng(3)
    shape = (2, 3, 2, 4)
    t_bp = 250.0 + 30.0 * rng.random(shape)
    q_bp = 1e-3 * rng.random(shape)
    fields = {
        "T_BP": ("K", t_bp),
        "T": ("K", t_bp + rng.normal(0.0, 0.5, shape)),
        "Q_BP": ("kg/kg", q_bp),
        "Q": ("kg/kg", q_bp * (1.0 + 0.1 * rng.random(shape))),
    }
    dims = ("time", "lev", "lat", "lon")
    data_vars = {
        name: (dims, values, {"units": (units or {}).get(name, u), "long_name": name})
        for name, (u, values) in fields.items()
    }
    data_vars |= {
        "PS": (("time", "lat", "lon"), 1e5 - 1e3 * rng.random((2, 2, 4)), {"units": "Pa"}),
        "hyam": ("lev", np.array([0.1, 0.05, 0.0])),
        "hybm": ("lev", np.array([0.0, 0.5, 0.95])),
        "P0": ((), 1e5, {"units": "Pa"}),
    }
    coords = {
        "time": ("time", [0.0, 0.25], {"units": "days since 2001-01-01", "calendar": "noleap"}),
        "lev": ("lev", [100.0, 550.0, 950.0]),
        "lat": ("lat", [-10.0, 10.0]),
        "lon": ("lon", [0.0, 90.0, 180.0, 270.0]),
    }
    ds = xr.Dataset(data_vars, coords).drop_vars(list(drop))
    ds.to_netcdf(path)
    return path


def test_computed_tendencies_from_states(tmp_path: Path) -> None:
    path = write_cam_grid(tmp_path / "cam.h1.nc")
    spec = {
        "heating": {"before": "T_BP", "after": "T", "dt": 1800},
        "moistening": {"before": "Q_BP", "after": "Q", "dt": 1800},
    }
    ds = open_source("cesm-history", [path], tendencies=spec)
    check_canonical(ds)
    assert dict(ds.sizes) == {"time": 2, "y": 2, "x": 4, "lev": 3}
    assert ds["heating"].attrs["units"] == "K s-1"
    assert ds["moistening"].attrs["units"] == "kg kg-1 s-1"
    t, t_bp = raw(path, "T"), raw(path, "T_BP")
    for n, k, j, i in [(0, 0, 0, 0), (1, 2, 1, 3), (0, 1, 1, 2)]:
        by_hand = (t[n, k, j, i] - t_bp[n, k, j, i]) / 1800.0
        assert float(ds["heating"].isel(time=n, lev=2 - k, y=j, x=i)) == pytest.approx(by_hand)
    np.testing.assert_allclose(ds["lat"].values, [-10.0, 10.0])
    assert ds["lon"].dims == ("x",)


@pytest.mark.parametrize(
    ("drop", "units", "options", "expected"),
    [
        (("hyam",), None, {}, "['hyam'] missing"),
        (("PS",), None, {}, "['PS'] missing"),
        ((), {"T": "degC"}, {}, "variable T has units 'degC', expected 'K'"),
        ((), None, {"rename": {"PRECC": "precip"}}, "rename: variable PRECC not in the file"),
        ((), None, {"rename": {"Q": "heating"}}, "heating has units 'kg kg-1', expected 'K s-1'"),
        ((), None, {"tendencies": {"heating": {"before": "T_BP", "after": "T"}}}, "dt: seconds"),
        (
            (),
            None,
            {"tendencies": {"heating": {"before": "T_AP", "after": "T", "dt": 60}}},
            "tendencies.heating.before: variable T_AP missing",
        ),
    ],
)
def test_cesm_errors_name_file_and_variable(tmp_path: Path, drop, units, options, expected):
    path = write_cam_grid(tmp_path / "bad.nc", drop=drop, units=units)
    with pytest.raises(CesmHistoryError, match=re.escape(expected)):
        open_cesm_history([path], **options)


def test_cesm_files_of_one_run(small_testbed: Path, hf: xr.Dataset, tmp_path: Path) -> None:
    whole = xr.open_dataset(small_testbed / "hf_historical.nc", decode_times=False)
    halves = [tmp_path / "h1.a.nc", tmp_path / "h1.b.nc"]
    whole.isel(time=slice(0, 5)).to_netcdf(halves[0])
    whole.isel(time=slice(5, None)).to_netcdf(halves[1])
    joined = open_cesm_history(halves, rename=RUN_RENAME)
    xr.testing.assert_identical(joined.drop_attrs(), hf.drop_attrs())
    with pytest.raises(CesmHistoryError, match=r"h1.a.nc: starts at .* not after the end of"):
        open_cesm_history(halves[::-1])
    whole.isel(time=slice(5, None), ncol=slice(0, 10)).to_netcdf(tmp_path / "h1.c.nc")
    with pytest.raises(CesmHistoryError, match=r"h1.c.nc: dimension ncol is 10, but 48 in"):
        open_cesm_history([halves[0], tmp_path / "h1.c.nc"])


def test_cesm_unreadable_file_named(tmp_path: Path) -> None:
    path = tmp_path / "truncated.nc"
    path.write_bytes(b"CDF\x01 not really")
    with pytest.raises(CesmHistoryError, match=str(path)):
        open_cesm_history([path])


def test_wrf_set_through_catalog(catalog: dict[str, CatalogEntry]) -> None:
    ds = open_source(catalog["testbed_wrf"])
    check_canonical(ds)
    assert dict(ds.sizes) == {"time": 12, "lev": 44, "y": 12, "x": 12}
    assert ds.attrs["catalog_entry"] == "testbed_wrf"


# --- srm-coarse -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fine(wrf_files: list[Path]) -> xr.Dataset:
    return open_wrfout(wrf_files)[["t", "qv", "rthcuten", "hfx"]].load()


def block_mean(da: xr.DataArray, factor: int, j: int, i: int) -> np.ndarray:
    block = da.isel(y=slice(j * factor, (j + 1) * factor), x=slice(i * factor, (i + 1) * factor))
    return block.values.astype(float).mean(axis=(1, 2))  # (time, ...) over the block


@pytest.mark.parametrize("factor", [2, 3])
def test_block_means_on_wrf_set(wrf_files: list[Path], fine: xr.Dataset, factor: int) -> None:
    coarse = open_source(
        "srm-coarse",
        wrf_files,
        factor=factor,
        source_format="wrfout",
        variables={"t": "t", "rthcuten": "heating", "hfx": "hfx"},
    )
    check_canonical(coarse)
    n = 12 // factor
    assert dict(coarse.sizes) == {"time": fine.sizes["time"], "y": n, "x": n, "lev": 44}
    assert isinstance(coarse["t"].data, dask.array.Array)
    assert coarse["heating"].attrs["units"] == "K s-1"
    for j, i in [(0, 0), (n - 1, n - 1), (1, n - 2)]:
        np.testing.assert_allclose(
            coarse["t"].isel(y=j, x=i).values, block_mean(fine["t"], factor, j, i), rtol=1e-6
        )
        np.testing.assert_allclose(
            coarse["heating"].isel(y=j, x=i).values,
            block_mean(fine["rthcuten"], factor, j, i),
            rtol=1e-5,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            coarse["hfx"].isel(y=j, x=i).values, block_mean(fine["hfx"], factor, j, i), rtol=1e-6
        )
    # Coarse coordinates are the block centres.
    assert float(coarse["x"][0]) == pytest.approx(5000.0 * (factor - 1) / 2)


def test_coarse_tendencies_from_consecutive_frames(catalog: dict[str, CatalogEntry]) -> None:
    ds = open_source(catalog["testbed_wrf_coarse3"])  # factor 3, dtdt from t
    check_canonical(ds)
    full = open_source(catalog["testbed_wrf_coarse3"], tendencies={})
    assert ds.sizes["time"] == full.sizes["time"] - 1  # the last frame has no next one
    seconds = np.diff(full["time"].values) / np.timedelta64(1, "s")
    by_hand = full["t"].diff("time").values / seconds[:, None, None, None]
    np.testing.assert_allclose(ds["dtdt"].values, by_hand, rtol=1e-5, atol=1e-10)
    assert ds["dtdt"].attrs["units"] == "K s-1" and "standard_name" not in ds["dtdt"].attrs


def test_non_divisible_factor(wrf_files: list[Path], fine: xr.Dataset) -> None:
    with pytest.raises(SrmCoarseError, match=r"y has 12 points, not divisible by factor 5"):
        open_srm_coarse(wrf_files, factor=5, source_format="wrfout")
    trimmed = open_srm_coarse(wrf_files, factor=5, source_format="wrfout", trim=True)
    assert (trimmed.sizes["y"], trimmed.sizes["x"]) == (2, 2)
    np.testing.assert_allclose(
        trimmed["t"].isel(y=1, x=1).values, block_mean(fine["t"], 5, 1, 1), rtol=1e-6
    )


def write_sam_like(path: Path, start_s: float, seed: int) -> Path:
    """A SAM-like 3-D file: dims (time, z, y, x), heights in m, two frames 60 s apart."""
    rng = np.random.default_rng(seed)
    shape = (2, 3, 4, 6)
    ds = xr.Dataset(
        {
            "TABS": (("time", "z", "y", "x"), 280 + rng.random(shape), {"units": "K"}),
            "QV": (("time", "z", "y", "x"), 1e-2 * rng.random(shape), {"units": "kg kg-1"}),
            "PREC": (("time", "y", "x"), rng.random((2, 4, 6)), {"units": "mm s-1"}),
        },
        coords={
            "time": ("time", [start_s, start_s + 60.0], {"units": "seconds since 2000-01-01"}),
            "z": ("z", [50.0, 500.0, 2000.0], {"units": "m", "long_name": "height"}),
            "y": ("y", 1000.0 * np.arange(4), {"units": "m"}),
            "x": ("x", 1000.0 * np.arange(6), {"units": "m"}),
        },
    )
    ds.to_netcdf(path)
    return path


def test_sam_like_netcdf(tmp_path: Path) -> None:
    files = [write_sam_like(tmp_path / f"sam_{k}.nc", 120.0 * k, k) for k in range(2)]
    ds = open_srm_coarse(
        files,
        factor=2,
        variables={"TABS": "t", "QV": "qv", "PREC": "precip"},
        tendencies={"dtdt": "t"},
    )
    check_canonical(ds)
    assert dict(ds.sizes) == {"time": 3, "y": 2, "x": 3, "lev": 3}
    assert ds["lev"].attrs["units"] == "m" and ds["t"].dims == ("time", "y", "x", "lev")
    tabs = np.concatenate([raw(f, "TABS") for f in files])  # (time, z, y, x)
    blocks = tabs.reshape(4, 3, 2, 2, 3, 2).mean(axis=(3, 5))  # (time, z, Y, X)
    np.testing.assert_allclose(ds["t"].values, blocks[:3].transpose(0, 2, 3, 1), rtol=1e-12)
    seconds = np.array([60.0, 60.0, 60.0])  # frames at 0, 60, 120, 180 s
    by_hand = np.diff(blocks, axis=0) / seconds[:, None, None, None]
    np.testing.assert_allclose(ds["dtdt"].values, by_hand.transpose(0, 2, 3, 1), rtol=1e-9)
    with pytest.raises(SrmCoarseError, match=r"sam_0.nc: variables.TEMP: no such variable"):
        open_srm_coarse(files, factor=2, variables={"TEMP": "t"})
    with pytest.raises(SrmCoarseError, match=r"sam_0.nc: dims \['zc'\] missing"):
        open_srm_coarse(files, factor=2, dims={"time": "time", "zc": "lev", "y": "y", "x": "x"})


# --- zarr -----------------------------------------------------------------------------------


def test_zarr_round_trip(catalog: dict[str, CatalogEntry], tmp_path: Path) -> None:
    written = stack_columns(open_source(catalog["testbed_hf_historical"]))
    store = tmp_path / "hf.zarr"
    written.to_zarr(store, consolidated=False)
    back = open_source("zarr", [store])  # checks the canonical contract itself
    assert back["t"].dims == ("sample", "lev")
    assert isinstance(back["t"].data, dask.array.Array)
    assert back.attrs["paramlib_reader"] == "zarr" and back.attrs["fidelity"] == "high"
    xr.testing.assert_equal(back.load().drop_attrs(), written.load().drop_attrs())
    for name in written.variables:
        assert back[name].attrs == written[name].attrs, name


def test_zarr_errors_name_the_store(tmp_path: Path) -> None:
    missing = tmp_path / "none.zarr"
    with pytest.raises(ZarrStoreError, match=f"{missing}: cannot be opened"):
        open_source("zarr", [missing])
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"a": (("ilev",), np.ones(3), {"units": "1", "long_name": "a"})}).to_zarr(
        foreign, consolidated=False
    )
    with pytest.raises(ZarrStoreError, match=r"foreign.zarr: not a canonical column dataset"):
        open_source("zarr", [foreign])


def test_zarr_split_groups(catalog: dict[str, CatalogEntry], tmp_path: Path) -> None:
    """A training store's layout: one group per split, labels (run) along sample."""
    columns = stack_columns(open_source(catalog["testbed_lf_historical"])[["t", "heating"]])
    columns = columns.assign_coords(
        run=("sample", np.full(columns.sizes["sample"], "lf", dtype=object))
    )
    store = tmp_path / "splits.zarr"
    n = columns.sizes["sample"] // 2
    columns.isel(sample=slice(0, n)).to_zarr(store, group="train", consolidated=False)
    columns.isel(sample=slice(n, None)).to_zarr(store, group="test", mode="a", consolidated=False)
    test = open_source("zarr", [store], group="test")
    np.testing.assert_array_equal(test["t"].values, columns["t"].values[n:])
    assert test["run"].values[0] == "lf"
    with pytest.raises(ZarrStoreError, match=r"splits.zarr: no variables; .*\['test', 'train'\]"):
        open_source("zarr", [store])
