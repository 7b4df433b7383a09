"""Sea-surface temperatures for the testbed columns, drawn from the climatology shipped in climt.

The SSTs come from ``climt/_data/data_ocean/earth_sst_climatology_1deg.nc`` (variable ``tos``,
degC, time(12) x lat(180) x lon(360): the NOAA OI SST v2 1991-2020 monthly long-term means).
That file is filled over land (OI SST interpolates there), so ocean points are chosen with the
2-degree land mask climt also ships (``_data/land_mask/earth_landmask_2deg.nc``, area type 0 =
sea); each 1-degree cell takes the code of the 2-degree cell that contains it. Ice-covered
ocean keeps OI SST's freezing value (-1.79 degC) and counts as ocean.

Samples are ocean cells of all twelve months drawn with probability proportional to cell area
(cos latitude), so a set of columns represents the ocean as the climate model sees it.

Also here: ``daily_mean_insolation``, the top-of-atmosphere insolation SOLIN (an MF-RPN input).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.constants import T0

SST_FILE = "_data/data_ocean/earth_sst_climatology_1deg.nc"
LAND_MASK_FILE = "_data/land_mask/earth_landmask_2deg.nc"
PLUS4K_K = 4.0  # warming of the +4K climate, K
SOLAR_CONSTANT = 1361.0  # W m-2
DEFAULT_LAT_BAND = 30.0  # degrees either side of the equator

# Day of year (365-day year) at the middle of each month, the insolation's reference day.
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
MID_MONTH_DAY = np.cumsum(_MONTH_DAYS) - _MONTH_DAYS / 2.0


@dataclasses.dataclass(frozen=True)
class SstSamples:
    """``n`` sampled ocean cells: SST and where and when it was taken."""

    sst: np.ndarray  # K
    lat: np.ndarray  # degrees north, cell centre
    lon: np.ndarray  # degrees east, cell centre
    month: np.ndarray  # 1..12


@dataclasses.dataclass(frozen=True)
class _Climatology:
    sst_k: np.ndarray  # (12, nlat, nlon), K
    lat: np.ndarray
    lon: np.ndarray
    ocean: np.ndarray  # (nlat, nlon) bool


def _climt_file(relative: str) -> Path:
    path = Path(str(importlib.resources.files("climt") / relative))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: expected the file climt {relative} shipped with climt==0.31.0; "
            "reinstall the package with its data (pip install -e .)"
        )
    return path


@functools.cache
def _climatology() -> _Climatology:
    sst_path = _climt_file(SST_FILE)
    with xr.open_dataset(sst_path) as ds:
        tos = ds["tos"]
        if tos.dims != ("time", "lat", "lon") or tos.attrs.get("units") != "degC":
            raise ValueError(
                f"{sst_path}: expected tos(time, lat, lon) in degC, got {tos.dims} in "
                f"{tos.attrs.get('units')!r}"
            )
        sst_k = tos.values.astype(np.float64) + T0
        lat = ds["lat"].values.astype(np.float64)
        lon = ds["lon"].values.astype(np.float64)
    with xr.open_dataset(_climt_file(LAND_MASK_FILE)) as mask:
        code = mask["area_type_code"].sel(lat=lat, lon=lon, method="nearest").values
    for array in (sst_k, lat, lon):
        array.setflags(write=False)
    return _Climatology(sst_k=sst_k, lat=lat, lon=lon, ocean=code == 0)


def sample_sst(
    n: int, rng: np.random.Generator, lat_band: float | None = DEFAULT_LAT_BAND
) -> SstSamples:
    """Draw ``n`` ocean SSTs, area-weighted over ocean cells and all months.

    Args:
        n: number of samples.
        rng: the random generator; the same seed gives the same samples.
        lat_band: keep cells with ``|lat| <= lat_band`` degrees. The default, 30, keeps the
            tropics: the column model's weak-temperature-gradient free troposphere and its
            prescribed radiative cooling are tropical approximations, and there Emanuel and
            Betts-Miller convection dominate. ``None`` samples the whole ocean.
    """
    if n < 1:
        raise ValueError(f"sample_sst: n must be >= 1, got {n}")
    clim = _climatology()
    ocean = clim.ocean.copy()
    if lat_band is not None:
        if not 0 < lat_band <= 90:
            raise ValueError(f"sample_sst: lat_band must be in (0, 90] degrees, got {lat_band}")
        ocean &= np.abs(clim.lat)[:, None] <= lat_band
    iy, ix = np.nonzero(ocean)
    weight = np.cos(np.deg2rad(clim.lat[iy]))
    # A cell of any month is equally likely: draw the cell by area, the month uniformly.
    cell = rng.choice(iy.size, size=n, p=weight / weight.sum())
    month = rng.integers(0, 12, size=n)
    return SstSamples(
        sst=clim.sst_k[month, iy[cell], ix[cell]],
        lat=clim.lat[iy[cell]],
        lon=clim.lon[ix[cell]],
        month=month + 1,
    )


def plus4k(samples: SstSamples) -> SstSamples:
    """The same cells in the +4K climate: SST + 4 K everywhere."""
    return dataclasses.replace(samples, sst=samples.sst + PLUS4K_K)


def daily_mean_insolation(lat_deg: np.ndarray | float, month: np.ndarray | int) -> np.ndarray:
    """Daily-mean top-of-atmosphere insolation (SOLIN), W m-2, on the middle day of ``month``.

    The standard formula (e.g. Hartmann, Global Physical Climatology, eq. 2.15):
    ``S0/pi (d0/d)^2 (h0 sin(phi) sin(delta) + cos(phi) cos(delta) sin(h0))`` with
    ``cos(h0) = -tan(phi) tan(delta)`` clipped to polar day and night, S0 = 1361 W m-2, and the
    declination ``delta`` and distance factor ``(d0/d)^2`` from Spencer's (1971) Fourier series.
    """
    month = np.asarray(month)
    if np.any((month < 1) | (month > 12)):
        raise ValueError(f"daily_mean_insolation: month must be in 1..12, got {month}")
    lat = np.asarray(lat_deg, dtype=np.float64)
    if np.any(np.abs(lat) > 90):
        raise ValueError("daily_mean_insolation: lat_deg must be in [-90, 90] degrees")
    gamma = 2.0 * np.pi * (MID_MONTH_DAY[month - 1] - 1.0) / 365.0
    declination = (
        0.006918
        - 0.399912 * np.cos(gamma)
        + 0.070257 * np.sin(gamma)
        - 0.006758 * np.cos(2 * gamma)
        + 0.000907 * np.sin(2 * gamma)
        - 0.002697 * np.cos(3 * gamma)
        + 0.00148 * np.sin(3 * gamma)
    )
    distance_factor = (
        1.000110
        + 0.034221 * np.cos(gamma)
        + 0.001280 * np.sin(gamma)
        + 0.000719 * np.cos(2 * gamma)
        + 0.000077 * np.sin(2 * gamma)
    )
    phi = np.deg2rad(lat)
    h0 = np.arccos(np.clip(-np.tan(phi) * np.tan(declination), -1.0, 1.0))
    return (
        SOLAR_CONSTANT
        / np.pi
        * distance_factor
        * (h0 * np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.sin(h0))
    )
