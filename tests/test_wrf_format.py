"""Synthetic WRF history files: round trip through xarray, layout against real WRF, NCA holding."""

from datetime import datetime, timedelta
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from paramlib.constants import EPSILON, GRAVITY, RD
from paramlib.testbed import wrf_format as wf

REAL_WRF = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wrf_mskf"
NT, NZ, NY, NX = 3, 10, 5, 6
START = datetime(2000, 1, 1)
TIMES = [START + timedelta(minutes=5 * (k + 1)) for k in range(NT)]
P_TOP = 5000.0


def _frames(seed: int = 0) -> tuple[wf.WrfFrames, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    znw = np.linspace(1.0, 0.0, NZ + 1) ** 1.3
    shape2 = (NT, 1, NY, NX)
    p_sfc = 100800.0 + 300.0 * rng.standard_normal(shape2)
    p_w = znw[None, :, None, None] * (p_sfc - P_TOP) + P_TOP
    p = np.sqrt(p_w[:, :-1] * p_w[:, 1:])
    T = np.maximum(300.0 * (p / 1e5) ** 0.19 + rng.normal(0, 0.5, p.shape), 200.0)
    q = 0.018 * (p / 1e5) ** 4 * (1 + 0.1 * rng.random(p.shape))
    # Smooth winds, as the testbed's spatially smoothed states are (see _stagger).
    x, y = np.arange(NX) / NX, np.arange(NY)[:, None] / NY
    u = 5.0 + 3.0 * np.sin(2 * np.pi * (x + y) + rng.random(p.shape[:2] + (1, 1)))
    v = -3.0 + 2.0 * np.cos(2 * np.pi * (x - y) + rng.random(p.shape[:2] + (1, 1)))
    w = 0.1 * rng.standard_normal(p_w.shape)
    w[:, 0] = 0.0
    dTdt = 1e-4 * rng.standard_normal(p.shape)
    dqdt = -1e-7 * rng.random(p.shape)
    triggered = rng.random((NT, NY, NX)) < 0.5
    cumulus = wf.cumulus_to_wrf(
        p,
        q,
        dTdt,
        dqdt,
        precip=np.where(triggered, 1e-4, 0.0),
        triggered=triggered,
        cloud_base_level=np.full((NT, NY, NX), 1),
        cloud_top_level=np.full((NT, NY, NX), 7),
        nz=NZ,
    )
    fields = {
        **cumulus,
        "NCA": np.where(triggered, 570.0, -100.0),
        "W0AVG": 0.5 * (w[:, :-1] + w[:, 1:]),
        "HFX": 10.0 + rng.random((NT, NY, NX)),
        "UST": 0.3 + 0.01 * rng.random((NT, NY, NX)),
        "PBLH": 500.0 + rng.random((NT, NY, NX)),
        "XLAND": np.full((NT, NY, NX), 2.0),
    }
    frames = wf.WrfFrames(TIMES, T, q, p, p_w, u, v, w, fields)
    return frames, {"dTdt": dTdt, "triggered": triggered}


def _config(**kw) -> wf.WrfConfig:
    return wf.WrfConfig(simulation_start=START, scheme="Emanuel (climt 0.31.0)", **kw)


def test_round_trip_through_xarray(tmp_path):
    frames, extra = _frames()
    paths = wf.write_wrfout(tmp_path, frames, _config(frames_per_file=2))
    assert [p.name for p in paths] == [
        "wrfout_d01_2000-01-01_00:05:00",
        "wrfout_d01_2000-01-01_00:15:00",
    ]
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary files left
    parts = [xr.load_dataset(p) for p in paths]
    assert [part.sizes["Time"] for part in parts] == [2, 1]
    ds = xr.concat(parts, dim="Time", data_vars="minimal", coords="minimal", compat="override")
    ds.attrs = parts[0].attrs
    with netCDF4.Dataset(paths[0]) as nc:
        assert nc.dimensions["Time"].isunlimited() and len(nc.dimensions["DateStrLen"]) == 19
        assert nc["Times"].dimensions == ("Time", "DateStrLen") and nc.data_model == "NETCDF4"
    # xarray decodes Times into strings and drops DateStrLen.
    assert dict(ds.sizes) == {
        "Time": NT,
        "west_east": NX,
        "south_north": NY,
        "bottom_top": NZ,
        "bottom_top_stag": NZ + 1,
        "west_east_stag": NX + 1,
        "south_north_stag": NY + 1,
    }
    stamps = [t.strftime("%Y-%m-%d_%H:%M:%S") for t in TIMES]
    assert [t.decode() for t in ds.Times.values] == stamps
    # XTIME is "minutes since" the start, which xarray decodes to times.
    np.testing.assert_array_equal(ds.XTIME.values, np.array(TIMES, dtype="datetime64[ns]"))
    assert "SYNTHETIC" in ds.attrs["TITLE"] and "Emanuel" in ds.attrs["DATASET_NOTE"]
    assert ds.attrs["WEST-EAST_GRID_DIMENSION"] == NX + 1 and ds.attrs["CU_PHYSICS"] == 11
    assert all(ds[v].dtype == np.float32 for v in ds.data_vars if v != "Times")
    # Pressure, potential temperature, temperature.
    pressure = (ds.P + ds.PB).values.astype(np.float64)
    np.testing.assert_allclose(pressure, frames.p, rtol=2e-7)
    np.testing.assert_array_equal(ds.P_HYD.values, frames.p.astype(np.float32))
    theta = ds.T.values.astype(np.float64) + 300.0
    np.testing.assert_allclose(theta, frames.T * (1e5 / frames.p) ** (2 / 7), rtol=1e-6)
    temperature = theta * wf.exner(pressure)
    np.testing.assert_allclose(temperature, frames.T, rtol=1e-6)
    np.testing.assert_allclose(ds.QVAPOR, frames.q / (1 - frames.q), rtol=1e-6)
    # Eta levels and column mass.
    znw = ds.ZNW.values[0]
    assert znw[0] == 1.0 and znw[-1] == 0.0
    np.testing.assert_allclose(ds.ZNU.values[0], 0.5 * (znw[1:] + znw[:-1]), rtol=1e-6)
    np.testing.assert_allclose(ds.P_TOP.values, P_TOP)
    np.testing.assert_allclose(ds.MU + ds.MUB, frames.p_w[:, 0] - P_TOP, rtol=1e-6)
    # Heights: monotonic, 0 at the ground, layer thickness from the hypsometric equation.
    z = ((ds.PH + ds.PHB) / GRAVITY).values.astype(np.float64)
    assert np.all(np.diff(z, axis=1) > 0) and np.abs(z[:, 0]).max() < 1e-3
    qv = frames.q / (1 - frames.q)
    tv = frames.T * (1 + qv / EPSILON) / (1 + qv)
    thickness = RD * tv / GRAVITY * np.log(frames.p_w[:, :-1] / frames.p_w[:, 1:])
    np.testing.assert_allclose(np.diff(z, axis=1), thickness, rtol=1e-5)
    assert 15000 < z[:, -1].mean() < 25000  # a 50 hPa top near 20 km
    phb = ds.PHB.values[0, :, 0, 0].astype(np.float64)
    assert np.all(np.diff(phb) > 0) and np.all(np.diff(ds.PB.values[0, :, 0, 0]) < 0)
    # Staggered winds: WRF's destaggering returns the mass-point wind.
    u_mass = 0.5 * (ds.U.values[..., 1:] + ds.U.values[..., :-1])
    v_mass = 0.5 * (ds.V.values[:, :, 1:] + ds.V.values[:, :, :-1])
    np.testing.assert_allclose(u_mass, frames.u, atol=2e-6 * np.abs(frames.u).max())
    np.testing.assert_allclose(v_mass, frames.v, atol=2e-6 * np.abs(frames.v).max())
    # Faces vary like the field itself, without a 2-dx checkerboard.
    assert (
        np.abs(np.diff(ds.U.values, axis=-1)).max() < 1.5 * np.abs(np.diff(frames.u, axis=-1)).max()
    )
    np.testing.assert_array_equal(ds.W.values, frames.w.astype(np.float32))
    # Cumulus fields.
    np.testing.assert_allclose(
        ds.RTHCUTEN.values * wf.exner(pressure), extra["dTdt"], rtol=1e-5, atol=1e-12
    )
    np.testing.assert_allclose(ds.RAINCV, ds.PRATEC * 30.0, rtol=1e-6)
    trig = extra["triggered"]
    np.testing.assert_array_equal(ds.CUTOP.values, np.where(trig, 8, 1))
    np.testing.assert_array_equal(ds.CUBOT.values, np.where(trig, 2, NZ + 1))


def test_stagger_is_smooth_on_linear_fields():
    x = np.arange(7.0)
    faces = wf._stagger(2.0 + 0.5 * x[None, :], axis=1)[0]
    np.testing.assert_allclose(faces, 2.0 + 0.5 * (np.arange(8.0) - 0.5), atol=0.05)
    np.testing.assert_allclose(0.5 * (faces[1:] + faces[:-1]), 2.0 + 0.5 * x, atol=1e-12)


def test_layout_matches_real_wrf(tmp_path):
    real_files = sorted(REAL_WRF.glob("wrfout_d01_*.nc"))
    if not real_files:
        pytest.skip(f"real WRF output not found in {REAL_WRF} (the shared data folder is absent)")
    frames, _ = _frames()
    (path,) = wf.write_wrfout(tmp_path, frames, _config())
    with netCDF4.Dataset(real_files[0]) as real, netCDF4.Dataset(path) as ours:
        assert set(ours.dimensions) == set(real.dimensions)
        assert ours.data_model == real.data_model
    with xr.open_dataset(real_files[0]) as real, xr.open_dataset(path) as ours:
        assert set(ours.attrs) <= set(real.attrs)
        common = set(ours.variables) & set(real.variables)
        assert common >= set(wf.REQUIRED_FIELDS) | {"U", "V", "W", "T", "P", "PB", "PH", "PHB"}
        for name in common:
            a, b = ours[name], real[name]
            assert a.dims == b.dims, name
            assert a.dtype == b.dtype, name
            assert set(a.attrs) == set(b.attrs), name
            for key in ("FieldType", "MemoryOrder", "description", "units", "stagger"):
                assert a.attrs.get(key) == b.attrs.get(key), (name, key)
        for name in ("WEST-EAST_GRID_DIMENSION", "BOTTOM-TOP_GRID_DIMENSION", "DX", "DT"):
            assert type(ours.attrs[name]) is type(real.attrs[name]), name


def test_input_errors_name_what_is_wrong(tmp_path):
    frames, _ = _frames()
    bent = frames.p_w.copy()
    bent[0, 3, 0, 0] += 50.0
    with pytest.raises(ValueError, match="p_w: levels must be terrain-following"):
        wf.write_wrfout(tmp_path, _replace(frames, p_w=bent), _config())
    fields = {k: v for k, v in frames.fields.items() if k != "NCA"}
    with pytest.raises(ValueError, match=r"missing \['NCA'\]"):
        wf.write_wrfout(tmp_path, _replace(frames, fields=fields), _config())
    with pytest.raises(ValueError, match="RAINCV"):
        wf.write_wrfout(
            tmp_path,
            _replace(frames, fields={**frames.fields, "RAINCV": frames.fields["HFX"]}),
            _config(),
        )
    with pytest.raises(ValueError, match=r"WrfFrames.q must have shape"):
        wf.write_wrfout(tmp_path, _replace(frames, q=frames.q[:, 1:]), _config())
    assert list(tmp_path.iterdir()) == []


def _replace(frames: wf.WrfFrames, **kw) -> wf.WrfFrames:
    import dataclasses

    return dataclasses.replace(frames, **kw)


# NCA holding on hand-made sequences: dt = 30 s, a cumulus call every 300 s.
DT, CUDT = 30.0, 300.0


def _hold(triggered, timescale, mass=None):
    triggered = np.array(triggered, dtype=bool)
    ncall, ncol = triggered.shape
    calls = np.arange(1, ncall + 1)[:, None]
    cols = np.arange(ncol)[None, :]
    tend = np.where(triggered, calls + 10.0 * cols, 0.0)
    profile = tend[..., None] * np.array([1.0, -1.0])  # two levels
    pratec = np.where(triggered, 100.0 * calls + cols, 0.0)
    held = wf.nca_hold(
        triggered,
        np.array(timescale, dtype=float),
        {"RTHCUTEN": profile},
        {"PRATEC": pratec},
        DT,
        CUDT,
        column_mass=mass,
    )
    return held, held.tendencies["RTHCUTEN"][..., 0], held.carried["PRATEC"]


def test_nca_never_convecting_and_short_period():
    # Column 0 never fires; column 1 fires with 150 s at calls 0 and 1 (fresh both times, the
    # README's trap for the "NCA > 0 in the previous frame" rule), then stops.
    trig = [[0, 1], [0, 1], [0, 0], [0, 0]]
    held, tend, pratec = _hold(trig, np.full((4, 2), 150.0))
    np.testing.assert_array_equal(held.nca[:, 0], -100.0)
    np.testing.assert_array_equal(held.nca[:, 1], [120.0, 120.0, 0.0, 0.0])
    assert held.fresh.all()
    np.testing.assert_array_equal(tend[:, 1], [11.0, 12.0, 0.0, 0.0])
    np.testing.assert_array_equal(pratec[:, 1], [101.0, 201.0, 0.0, 0.0])
    np.testing.assert_array_equal(tend[:, 0], 0.0)


def test_nca_long_period_is_held_then_ends():
    # Fires at call 0 with 630 s: frames show 600, 300, then 0 (ended at call 2).
    trig = [[1], [1], [1], [1], [0]]
    held, tend, pratec = _hold(trig, np.full((5, 1), 630.0))
    np.testing.assert_array_equal(held.nca[:, 0], [600.0, 300.0, 0.0, 600.0, 300.0])
    np.testing.assert_array_equal(held.fresh[:, 0], [True, False, False, True, False])
    np.testing.assert_array_equal(tend[:, 0], [1.0, 1.0, 0.0, 4.0, 4.0])
    # Held tendencies keep their profile; PRATEC outlives the heating of the ended period.
    np.testing.assert_array_equal(held.tendencies["RTHCUTEN"][1, 0], [1.0, -1.0])
    np.testing.assert_array_equal(pratec[:, 0], [100.0, 100.0, 100.0, 400.0, 400.0])


def test_nca_shallow_period_and_boundaries():
    # 300 s (MSKF's shallow NCA): frame 270, evaluated again at the next call.
    # 330 s: frame 300, so the next call skips it and the period ends there.
    # 600 s: frame 570, held once (270 at the next frame), then fresh.
    trig = [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    held, tend, _ = _hold(trig, [[300.0, 330.0, 600.0]] * 3)
    np.testing.assert_array_equal(held.nca[0], [270.0, 300.0, 570.0])
    np.testing.assert_array_equal(held.nca[1], [0.0, 0.0, 270.0])
    np.testing.assert_array_equal(held.fresh[1], [True, False, False])
    np.testing.assert_array_equal(tend[1], [0.0, 0.0, 21.0])
    np.testing.assert_array_equal(held.nca[2], [0.0, 0.0, 0.0])
    assert held.fresh[2].all()
    # Time scales become whole steps, at least two.
    held, _, _ = _hold([[1, 1]], [[100.0, 10.0]])
    np.testing.assert_array_equal(held.nca[0], [60.0, 30.0])


def test_nca_held_tendency_follows_column_mass():
    mass = np.array([[1000.0], [1010.0], [990.0]])
    held, tend, _ = _hold([[1], [0], [0]], [[900.0]] * 3, mass=mass)
    np.testing.assert_allclose(tend[:, 0] * mass[:, 0], [1000.0, 1000.0, 1000.0])


def test_nca_hold_errors():
    with pytest.raises(ValueError, match="RTHCUTEN must start with the shape"):
        wf.nca_hold(np.zeros((2, 3)), np.zeros((2, 3)), {"RTHCUTEN": np.zeros((3, 2))}, {}, 30, 300)
    with pytest.raises(ValueError, match="dt_s <= cudt_s"):
        wf.nca_hold(np.zeros((2, 3)), np.zeros((2, 3)), {}, {}, 600, 300)


def test_w0avg_update_is_wrfs_running_mean():
    np.testing.assert_allclose(wf.w0avg_update(np.array(1.0), np.array(3.0), stepcu=10), 1.1)
