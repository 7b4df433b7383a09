"""The wrfout reader on the real WRF MSKF runs in <data root>/wrf_mskf (DESIGN.md, "Real WRF
output"): canonical layout, destaggering and thermodynamics against values computed by hand from
the raw variables (netCDF4, float64), times, laziness, MSKF call states, and bad files."""

from pathlib import Path

import dask.array
import netCDF4
import numpy as np
import pytest
import xarray as xr
from wrf_data import CTL

from paramlib.catalog import load_catalog
from paramlib.data.canonical import check_canonical, stack_columns
from paramlib.data.readers import get_reader, open_source, wrfout
from paramlib.data.readers.wrfout import (
    ENDED,
    FRESH,
    HELD,
    IOFIELDS_LINE,
    WrfoutError,
    mskf_call_state,
    mskf_call_states,
    open_wrfout,
)

# (frame, k, j, i): surface, mid-troposphere near the storm, top level, domain edges.
POINTS = [(0, 0, 0, 0), (7, 12, 20, 21), (12, 5, 33, 17), (18, 39, 40, 40)]


@pytest.fixture(scope="module")
def ctl() -> xr.Dataset:
    return open_wrfout([CTL])


@pytest.fixture(scope="module")
def raw() -> netCDF4.Dataset:
    with netCDF4.Dataset(CTL) as nc:
        yield nc


def at(ds: xr.Dataset, name: str, n: int, k: int, j: int, i: int) -> float:
    return float(ds[name].isel(time=n, y=j, x=i, lev=k).values)


def raw_at(nc: netCDF4.Dataset, name: str, n: int, k: int, j: int, i: int) -> float:
    return float(nc[name][n, k, j, i])


def write_copy(path: Path, frames: slice, drop=(), units: dict[str, str] | None = None) -> Path:
    """A few frames of the ctl file, undecoded (Times stays WRF's char array), optionally without
    some variables or with other units."""
    with xr.open_dataset(CTL, decode_cf=False) as ds:
        part = ds.isel(Time=frames).drop_vars(list(drop)).load()
    for name, value in (units or {}).items():
        part[name].attrs["units"] = value
    part.to_netcdf(path)
    return path


# --- layout ---------------------------------------------------------------------------------


def test_canonical_dims_coords_and_attributes(ctl: xr.Dataset, raw: netCDF4.Dataset) -> None:
    check_canonical(ctl)
    assert dict(ctl.sizes) == {"time": 19, "y": 41, "x": 41, "lev": 40}
    assert ctl["t"].dims == ("time", "y", "x", "lev")
    assert ctl["pratec"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(ctl["lev"].values, raw["ZNU"][0].astype(float))
    assert np.all(np.diff(ctl["lev"].values) < 0)  # eta falls upward: lev 0 is the surface
    assert ctl["lev"].attrs["standard_name"] == "atmosphere_sigma_coordinate"
    assert ctl["lev"].attrs["units"] == "1"
    np.testing.assert_array_equal(ctl["level"].values, np.arange(1, 41))
    np.testing.assert_allclose(np.diff(ctl["x"].values), 5000.0)
    expected_units = {
        "t": "K", "th": "K", "p": "Pa", "qv": "kg kg-1", "rho": "kg m-3", "dz8w": "m",
        "rthcuten": "K s-1", "rqvcuten": "kg kg-1 s-1", "pratec": "mm s-1", "raincv": "mm",
        "nca": "s", "w0avg": "m s-1", "hfx": "W m-2", "ust": "m s-1", "pblh": "m", "xland": "1",
    }  # fmt: skip
    assert {name: ctl[name].attrs["units"] for name in expected_units} == expected_units
    assert ctl["t"].attrs["standard_name"] == "air_temperature"
    assert "description" not in ctl["t"].attrs  # not WRF's description of T, which is theta'
    assert ctl.attrs["CU_PHYSICS"] == 11 and ctl.attrs["source_files"] == [str(CTL)]


def test_times_are_decoded_from_wrf_times(ctl: xr.Dataset) -> None:
    minutes = (ctl["time"].values - np.datetime64("0001-01-01T00:00:00")) / np.timedelta64(1, "m")
    np.testing.assert_array_equal(minutes, np.arange(90, 181, 5))


def test_reading_is_lazy_in_blocks_of_whole_frames(ctl: xr.Dataset) -> None:
    for name, var in ctl.data_vars.items():
        assert isinstance(var.data, dask.array.Array), name
        assert all(len(chunks) == 1 for chunks in var.chunks[1:]), name  # whole frames
        assert var.nbytes / ctl.sizes["time"] * max(var.chunks[0]) <= wrfout.CHUNK_BYTES, name


def test_frames_per_chunk_spreads_frames_evenly_within_the_limit() -> None:
    ds = xr.Dataset({"T": (("Time", "z"), np.zeros((12, 1024), "float32"))})  # 4 KiB a frame
    assert wrfout.frames_per_chunk(ds, limit_bytes=11 * 4096) == 6  # 6 + 6, not 11 + 1
    assert wrfout.frames_per_chunk(ds, limit_bytes=1 << 30) == 12
    assert wrfout.frames_per_chunk(ds, limit_bytes=100) == 1


# --- values against the raw variables -------------------------------------------------------


@pytest.mark.parametrize(("n", "k", "j", "i"), POINTS)
def test_destaggering_is_the_mean_of_the_two_faces(ctl, raw, n, k, j, i) -> None:
    assert at(ctl, "u", n, k, j, i) == pytest.approx(
        0.5 * (raw_at(raw, "U", n, k, j, i) + raw_at(raw, "U", n, k, j, i + 1)), rel=1e-6
    )
    assert at(ctl, "v", n, k, j, i) == pytest.approx(
        0.5 * (raw_at(raw, "V", n, k, j, i) + raw_at(raw, "V", n, k, j + 1, i)), rel=1e-6
    )
    assert at(ctl, "w", n, k, j, i) == pytest.approx(
        0.5 * (raw_at(raw, "W", n, k, j, i) + raw_at(raw, "W", n, k + 1, j, i)), rel=1e-5, abs=1e-7
    )


@pytest.mark.parametrize(("n", "k", "j", "i"), POINTS)
def test_thermodynamics_follow_wrf_formulas(ctl, raw, n, k, j, i) -> None:
    r_d, cp, r_v, g = 287.0, 1004.5, 461.6, 9.81  # WRF's module_model_constants
    p = raw_at(raw, "P", n, k, j, i) + raw_at(raw, "PB", n, k, j, i)
    th = raw_at(raw, "T", n, k, j, i) + 300.0
    t = th * (p / 1.0e5) ** (r_d / cp)
    qv = raw_at(raw, "QVAPOR", n, k, j, i)
    z_below, z_above = (
        (raw_at(raw, "PH", n, kw, j, i) + raw_at(raw, "PHB", n, kw, j, i)) / g for kw in (k, k + 1)
    )
    expected = {
        "p": p,
        "th": th,
        "pi": (p / 1.0e5) ** (2.0 / 7.0),
        "t": t,
        "qv": qv,
        "p_hyd": raw_at(raw, "P_HYD", n, k, j, i),
        "z": 0.5 * (z_below + z_above),
        "dz8w": z_above - z_below,
        "rho": p * (1.0 + qv) / (r_d * t * (1.0 + qv * r_v / r_d)),
        "rthcuten": raw_at(raw, "RTHCUTEN", n, k, j, i),
        "w0avg": raw_at(raw, "W0AVG", n, k, j, i),
    }
    got = {name: at(ctl, name, n, k, j, i) for name in expected}
    assert got == pytest.approx(expected, rel=2e-6)
    assert float(ctl["mut"][n, j, i]) == pytest.approx(
        float(raw["MU"][n, j, i]) + float(raw["MUB"][n, j, i]), rel=1e-6
    )


def test_physical_ranges(ctl: xr.Dataset) -> None:
    dz = ctl["dz8w"].isel(time=0).values
    assert 400 < dz.min() and dz.max() < 650  # README: 450-580 m at the start (cold pools since)
    z_surface = (ctl["z"] - 0.5 * ctl["dz8w"]).isel(lev=0).values
    np.testing.assert_allclose(z_surface, 0.0, atol=0.5)  # flat terrain at 0 m
    rho = ctl["rho"].isel(time=0, lev=0).values
    assert 1.0 < rho.min() and rho.max() < 1.3
    relative = (ctl["p_hyd"] - ctl["p"]) / ctl["p"]
    assert float(abs(relative).max()) < 0.01  # non-hydrostatic part is small


def test_two_dimensional_and_cumulus_fields_are_copied(ctl, raw) -> None:
    n = 10
    for name in ("RTHCUTEN", "RQVCUTEN", "RQSCUTEN", "W0AVG"):
        np.testing.assert_array_equal(
            ctl[name.lower()].isel(time=n).values, np.moveaxis(raw[name][n], 0, -1)
        )
    for name in ("PRATEC", "RAINCV", "NCA", "HFX", "UST", "PBLH", "XLAND", "CUTOP", "CUBOT"):
        np.testing.assert_array_equal(ctl[name.lower()].isel(time=n).values, raw[name][n])


def test_stacked_columns(ctl: xr.Dataset) -> None:
    stacked = stack_columns(ctl)
    check_canonical(stacked)  # time, y, x: plain labels along sample, no attributes needed
    assert stacked["t"].dims == ("sample", "lev")
    assert stacked["pratec"].dims == ("sample",)
    assert stacked.sizes["sample"] == 19 * 41 * 41
    sample = (5 * 41 + 7) * 41 + 3  # time 5, y 7, x 3
    np.testing.assert_array_equal(stacked["t"][sample].values, ctl["t"][5, 7, 3].values)
    assert stacked["x"][sample].item() == 3 * 5000.0
    assert isinstance(stacked["t"].data, dask.array.Array)


def test_catalog_entry_reads_through_the_registry() -> None:
    entry = load_catalog(check_paths=False)["wrf_mskf_ctl"]
    ds = open_source(entry)
    assert ds.attrs["catalog_entry"] == "wrf_mskf_ctl" and ds.attrs["scenario"] == "control"
    assert set(ds.data_vars) == {target.name for target in entry.variables.values()}
    xr.testing.assert_identical(open_source("wrfout", [CTL])["t"], ds["t"])
    assert get_reader("wrfout") is open_wrfout


# --- MSKF call states -----------------------------------------------------------------------


def test_call_state_rule() -> None:
    nca_previous = np.array([-100.0, 0.0, 30.0, 270.0, 300.0, 330.0, 2790.0])
    expected = [FRESH, FRESH, FRESH, FRESH, ENDED, HELD, HELD]
    np.testing.assert_array_equal(mskf_call_state(nca_previous, 300.0, 30.0), expected)
    # cudt 10 min, dt 60 s: 540 s is free at the next call, 600 s ends in it, 660 s is held.
    states = mskf_call_state(xr.DataArray([540.0, 600.0, 660.0]), 600.0, 60.0)
    np.testing.assert_array_equal(states.values, [FRESH, ENDED, HELD])


def test_call_states_of_the_ctl_run(ctl: xr.Dataset) -> None:
    states = mskf_call_states(ctl).compute()
    assert states.sizes["time"] == 18
    fractions = {s: float((states == s).mean()) for s in (FRESH, HELD, ENDED)}
    # README (frames 65-180 min): fresh 0.927, held 0.047, ended 0.026. The files keep only
    # 90-180 min, when more columns convect, so here fewer are fresh (about 0.91).
    assert 0.88 < fractions[FRESH] < 0.95
    assert 0.03 < fractions[HELD] < 0.08
    assert 0.01 < fractions[ENDED] < 0.05
    # WRF's holding, seen in the data: a held tendency x (MU + MUB) is the previous one's...
    now = ctl.isel(time=slice(1, None))
    before = ctl.isel(time=slice(0, -1)).assign_coords(time=now["time"])
    held = (states == HELD).values
    carried = (now["rthcuten"] * now["mut"]).values[held]
    np.testing.assert_allclose(carried, (before["rthcuten"] * before["mut"]).values[held],
                               rtol=1e-5, atol=1e-9)  # fmt: skip
    # ... and a column whose period ended at the call has NCA 0 and no heating.
    ended = (states == ENDED).values
    assert np.all(now["nca"].values[ended] == 0.0)
    assert np.all(now["rthcuten"].values[ended] == 0.0)


def test_call_states_refuse_frames_that_skip_a_call(ctl: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="one call apart"):
        mskf_call_states(ctl.isel(time=[0, 2, 3]))


# --- several files and bad files ------------------------------------------------------------


def test_files_of_one_run_are_concatenated_in_time(ctl: xr.Dataset, tmp_path: Path) -> None:
    first = write_copy(tmp_path / "wrfout_d01_a", slice(0, 2))
    second = write_copy(tmp_path / "wrfout_d01_b", slice(2, 4))
    both = open_wrfout([first, second])
    assert both.sizes["time"] == 4
    xr.testing.assert_identical(both["t"].compute(), ctl["t"].isel(time=slice(0, 4)).compute())
    with pytest.raises(WrfoutError, match="do not increase") as info:
        open_wrfout([second, first])
    assert str(first) in str(info.value)


def test_missing_cumulus_field_explains_iofields(tmp_path: Path) -> None:
    path = write_copy(tmp_path / "wrfout_d01_no_cu", slice(0, 1), drop=["RTHCUTEN", "NCA"])
    with pytest.raises(WrfoutError) as info:
        open_wrfout([path])
    message = str(info.value)
    assert str(path) in message and "['RTHCUTEN', 'NCA']" in message
    assert "iofields_filename" in message and IOFIELDS_LINE in message


def test_missing_state_variable_is_named(tmp_path: Path) -> None:
    path = write_copy(tmp_path / "wrfout_d01_no_ph", slice(0, 1), drop=["PH"])
    with pytest.raises(WrfoutError, match=r"not a wrfout history file: variables \['PH'\]"):
        open_wrfout([path])


def test_wrong_units_are_named(tmp_path: Path) -> None:
    path = write_copy(tmp_path / "wrfout_d01_hpa", slice(0, 1), units={"P": "hPa"})
    with pytest.raises(WrfoutError, match="variable P has units 'hPa', expected 'Pa'"):
        open_wrfout([path])


def test_truncated_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "wrfout_d01_truncated"
    with open(CTL, "rb") as source:
        path.write_bytes(source.read(4_000_000))
    with pytest.raises(WrfoutError, match="cannot be read as a netCDF file") as info:
        open_wrfout([path])
    assert str(path) in str(info.value)
