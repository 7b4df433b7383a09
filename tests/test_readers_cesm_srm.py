"""The cesm-history reader on the small testbed (generated once here, read through the catalog
and directly) and on small hand-written files: hybrid pressure and interfaces by hand, level
order, units and attributes, given and computed tendencies, and errors that name the file, the
variable and the expectation."""

import re
from collections.abc import Iterator
from pathlib import Path

import dask.array
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from paramlib.catalog import CatalogEntry, load_catalog
from paramlib.data.canonical import check_canonical
from paramlib.data.readers import open_source
from paramlib.data.readers.cesm_history import CesmHistoryError, open_cesm_history

COLUMN_SETS = ("lf_historical", "lf_plus4k", "hf_historical", "hf_plus4k")
RUN_RENAME = {"CONVDT": "heating", "CONVDQ": "moistening", "PRECC": "precip"}


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory, column_bindings: None) -> Path:
    from paramlib.data.testbed.generate import generate

    out = tmp_path_factory.mktemp("readers") / "testbed"
    generate(out, size="small", seed=0, wrf=True, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def catalog(testbed: Path) -> Iterator[dict[str, CatalogEntry]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARAMLIB_TESTBED", str(testbed))
        yield load_catalog()


def raw(path: Path, name: str) -> np.ndarray:
    """A variable as stored (float64, CAM's order: top first)."""
    with netCDF4.Dataset(path) as nc:
        return np.asarray(nc[name][:], dtype=float)


# --- cesm-history ---------------------------------------------------------------------------


def test_catalog_without_testbed_variable_still_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARAMLIB_TESTBED", raising=False)
    entries = load_catalog()  # checks paths of every non-template entry
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
def hf(testbed: Path) -> xr.Dataset:
    return open_cesm_history([testbed / "hf_historical.nc"], rename=RUN_RENAME)


@pytest.mark.parametrize(("n", "k", "i"), [(0, 0, 0), (3, 12, 17), (7, 25, 47)])
def test_pressure_from_hybrid_coefficients(testbed: Path, hf: xr.Dataset, n, k, i) -> None:
    """(n, k, i) in the file's order: k = 0 is the top level."""
    path = testbed / "hf_historical.nc"
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


def test_levels_surface_first(testbed: Path, hf: xr.Dataset) -> None:
    path = testbed / "hf_historical.nc"
    assert np.all(np.diff(hf["lev"].values) < 0)  # reference pressure falls: surface first
    assert hf["lev"].attrs["units"] == "hPa"
    np.testing.assert_allclose(hf["lev"].values, raw(path, "lev")[::-1])
    assert np.all(hf["p"].diff("lev") < 0)
    t = raw(path, "T")  # (time, lev, ncol), top first
    np.testing.assert_array_equal(hf["t"].isel(y=0).values, np.swapaxes(t[:, ::-1, :], 1, 2))


def test_units_attributes_and_time(testbed: Path, hf: xr.Dataset) -> None:
    path = testbed / "hf_historical.nc"
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


def test_given_tendencies_are_the_files(testbed: Path, hf: xr.Dataset) -> None:
    path = testbed / "hf_historical.nc"
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
