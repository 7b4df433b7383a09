"""SST sampling from climt's climatology and the daily-mean insolation."""

import numpy as np
import pytest
import xarray as xr

from paramlib.testbed import sst


def test_samples_are_deterministic_tropical_ocean_in_kelvin():
    a = sst.sample_sst(5000, np.random.default_rng(7))
    b = sst.sample_sst(5000, np.random.default_rng(7))
    for field in ("sst", "lat", "lon", "month"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.sst, sst.sample_sst(5000, np.random.default_rng(8)).sst)
    assert np.abs(a.lat).max() <= 30 and set(np.unique(a.month)) == set(range(1, 13))
    assert 285 < a.sst.min() and a.sst.max() < 308 and 297 < a.sst.mean() < 301
    # Every sample is a sea cell of climt's land mask (the SST file itself is filled over land).
    with xr.open_dataset(sst._climt_file(sst.LAND_MASK_FILE)) as mask:
        code = mask["area_type_code"]
        picked = code.sel(lat=xr.DataArray(a.lat), lon=xr.DataArray(a.lon), method="nearest").values
    assert (picked == 0).all()
    # The value is the climatology's at that cell and month.
    with xr.open_dataset(sst._climt_file(sst.SST_FILE)) as ds:
        i = 123
        ref = ds["tos"].sel(time=a.month[i], lat=a.lat[i], lon=a.lon[i]).item()
    assert a.sst[i] == pytest.approx(ref + 273.15)


def test_area_weighting_and_whole_ocean():
    s = sst.sample_sst(40000, np.random.default_rng(1), lat_band=None)
    # Area weighting: sin(lat) is spread as over a sphere's ocean, so high latitudes are rare.
    assert np.abs(s.lat).max() > 60 and s.sst.min() < 272.0
    assert np.mean(np.abs(s.lat) > 60) < 0.12
    assert np.mean(np.abs(s.lat) < 30) > 0.45
    with pytest.raises(ValueError, match="lat_band"):
        sst.sample_sst(3, np.random.default_rng(0), lat_band=0)


def test_plus4k_adds_four_kelvin():
    s = sst.sample_sst(10, np.random.default_rng(3))
    w = sst.plus4k(s)
    np.testing.assert_allclose(w.sst - s.sst, 4.0)
    np.testing.assert_array_equal(w.lat, s.lat)


def test_daily_mean_insolation_known_values():
    # Equator near the March equinox: S0/pi.
    assert sst.daily_mean_insolation(0.0, 3) == pytest.approx(1361 / np.pi, rel=0.02)
    # Polar night and the polar summer maximum (~520-530 W m-2 at the pole in June).
    assert sst.daily_mean_insolation(80.0, 12) == 0.0
    assert 510 < sst.daily_mean_insolation(90.0, 6) < 535
    assert sst.daily_mean_insolation(-90.0, 6) == 0.0
    # Global, annual mean: S0 / 4.
    lat = np.linspace(-89.5, 89.5, 180)
    months = np.arange(1, 13)
    q = sst.daily_mean_insolation(lat[:, None], months[None, :])
    w = np.cos(np.deg2rad(lat))[:, None]
    assert (q * w).sum() / (w.sum() * 12) == pytest.approx(1361 / 4, rel=0.005)
    with pytest.raises(ValueError, match="month"):
        sst.daily_mean_insolation(0.0, 13)
