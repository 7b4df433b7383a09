"""Column runs as CESM (CAM) history-like datasets.

The layout follows CAM's unstructured-grid history files: dims ``time``, ``lev`` (top to surface,
as CAM writes it), ``ilev`` and ``ncol``; 3-D fields ``(time, lev, ncol)``, 2-D ``(time, ncol)``;
``lat``/``lon`` per column; the hybrid coordinate ``hyam, hybm, hyai, hybi, P0`` with
p = hyam P0 + hybm PS. The column model's levels are sigma levels, so hyam = hyai = 0 and
hybm, hybi are sigma; ``lev``/``ilev`` are 1000 (hyam + hybm) in hPa as CAM defines them.
Names and unit spellings are CAM's (``PRECC`` in m/s as CAM writes it, = kg m-2 s-1 / 1000).

Fields: ``T, Q, PS, TS`` (the SST), ``SOLIN, SHFLX, LHFLX, OMEGA``; the convection of the scheme
that drove the run, ``CONVDT, CONVDQ, PRECC``; large-scale precipitation ``PRECL``; and the
other scheme's diagnostic output on the same states, not applied to the run: ``BM_DT, BM_DQ,
BM_PREC`` (Betts-Miller on high-fidelity states) or ``EM_DT, EM_DQ, EM_PREC`` (Emanuel on
low-fidelity states). Data are float32 (as CAM writes them), coordinates float64.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import xarray as xr

from paramlib.constants import P0, RHO_WATER
from paramlib.testbed.runs import SECONDS_PER_DAY, ColumnRun, Scheme, SchemeOutput

TIME_UNITS = "days since 2000-01-01 00:00:00"
DIAGNOSTIC_PREFIX = {Scheme.BETTS_MILLER: "BM", Scheme.EMANUEL: "EM"}
SCHEME_NAME = {Scheme.BETTS_MILLER: "Betts-Miller", Scheme.EMANUEL: "Emanuel"}

# name -> (units, long_name, standard_name or None)
_ATTRS: dict[str, tuple[str, str, str | None]] = {
    "T": ("K", "Temperature", "air_temperature"),
    "Q": ("kg/kg", "Specific humidity", "specific_humidity"),
    "OMEGA": (
        "Pa/s",
        "Vertical velocity (pressure), prescribed",
        "lagrangian_tendency_of_air_pressure",
    ),
    "PS": ("Pa", "Surface pressure", "surface_air_pressure"),
    "TS": ("K", "Surface temperature (sea surface temperature)", "sea_surface_temperature"),
    "SOLIN": ("W/m2", "Solar insolation (daily mean)", "toa_incoming_shortwave_flux"),
    "SHFLX": ("W/m2", "Surface sensible heat flux", "surface_upward_sensible_heat_flux"),
    "LHFLX": ("W/m2", "Surface latent heat flux", "surface_upward_latent_heat_flux"),
    "PRECL": (
        "m/s",
        "Large-scale (stable) precipitation rate",
        "lwe_large_scale_precipitation_rate",
    ),
    "CONVDT": (
        "K/s",
        "Temperature tendency of convection ({scheme}, drove the run)",
        "tendency_of_air_temperature_due_to_convection",
    ),
    "CONVDQ": (
        "kg/kg/s",
        "Specific humidity tendency of convection ({scheme}, drove the run)",
        "tendency_of_specific_humidity_due_to_convection",
    ),
    "PRECC": (
        "m/s",
        "Convective precipitation rate ({scheme}, drove the run)",
        "lwe_convective_precipitation_rate",
    ),
    "_DT": ("K/s", "Temperature tendency of {scheme} convection, diagnostic (not applied)", None),
    "_DQ": (
        "kg/kg/s",
        "Specific humidity tendency of {scheme} convection, diagnostic (not applied)",
        None,
    ),
    "_PREC": ("m/s", "Convective precipitation rate of {scheme}, diagnostic (not applied)", None),
}


def _attrs(key: str, scheme: Scheme) -> dict[str, str]:
    units, long_name, standard_name = _ATTRS[key]
    attrs = {"units": units, "long_name": long_name.format(scheme=SCHEME_NAME[scheme])}
    if standard_name:
        attrs["standard_name"] = standard_name
    return attrs


def _profile(a: np.ndarray) -> np.ndarray:
    """``(..., ncol, nlev)`` surface-to-top -> ``(..., lev, ncol)`` top-to-surface."""
    return np.swapaxes(a[..., ::-1], -1, -2)


def column_dataset(
    run: ColumnRun,
    diagnostic: SchemeOutput,
    diagnostic_scheme: Scheme,
    attrs: Mapping[str, object],
) -> xr.Dataset:
    """The CAM-like dataset of ``run`` with ``diagnostic``, the other scheme on its states."""
    nt = run.time_s.size
    ps = run.columns.ps
    sigma = run.p[0] / ps[0]
    sigma_int = run.p_int[0] / ps[0]
    profile, surface = ("time", "lev", "ncol"), ("time", "ncol")

    def per_time(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, (nt, *np.shape(a)))

    own = {
        "T": (profile, _profile(run.t)),
        "Q": (profile, _profile(run.q)),
        "OMEGA": (profile, per_time(_profile(run.omega))),
        "PS": (surface, per_time(ps)),
        "TS": (surface, per_time(run.columns.sst)),
        "SOLIN": (surface, per_time(run.columns.solin)),
        "SHFLX": (surface, run.shflx),
        "LHFLX": (surface, run.lhflx),
        "PRECL": (surface, run.precl / RHO_WATER),
        "CONVDT": (profile, _profile(run.convection.dtdt)),
        "CONVDQ": (profile, _profile(run.convection.dqdt)),
        "PRECC": (surface, run.convection.precip / RHO_WATER),
    }
    other = {
        "_DT": (profile, _profile(diagnostic.dtdt)),
        "_DQ": (profile, _profile(diagnostic.dqdt)),
        "_PREC": (surface, diagnostic.precip / RHO_WATER),
    }
    prefix = DIAGNOSTIC_PREFIX[diagnostic_scheme]
    data_vars = {
        name: xr.Variable(dims, np.asarray(values, np.float32), _attrs(name, run.scheme))
        for name, (dims, values) in own.items()
    }
    data_vars |= {
        prefix + key: xr.Variable(
            dims, np.asarray(values, np.float32), _attrs(key, diagnostic_scheme)
        )
        for key, (dims, values) in other.items()
    }
    hybrid = {
        "hyam": ("lev", np.zeros_like(sigma), "hybrid A coefficient at layer midpoints"),
        "hybm": ("lev", sigma[::-1], "hybrid B coefficient at layer midpoints"),
        "hyai": ("ilev", np.zeros_like(sigma_int), "hybrid A coefficient at layer interfaces"),
        "hybi": ("ilev", sigma_int[::-1], "hybrid B coefficient at layer interfaces"),
    }
    for name, (dim, values, long_name) in hybrid.items():
        data_vars[name] = xr.Variable(dim, values, {"long_name": long_name})
    data_vars["P0"] = xr.Variable((), P0, {"long_name": "reference pressure", "units": "Pa"})
    coords = {
        "time": (
            "time",
            run.time_s / SECONDS_PER_DAY,
            {"long_name": "time", "units": TIME_UNITS, "calendar": "noleap"},
        ),
        "lev": ("lev", 1000.0 * sigma[::-1], _level_attrs("midpoints", "hyam", "hybm")),
        "ilev": ("ilev", 1000.0 * sigma_int[::-1], _level_attrs("interfaces", "hyai", "hybi")),
        "lat": (
            "ncol",
            run.columns.lat,
            {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"},
        ),
        "lon": (
            "ncol",
            run.columns.lon,
            {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"},
        ),
    }
    return xr.Dataset(data_vars, coords, attrs=dict(attrs))


def _level_attrs(where: str, a: str, b: str) -> dict[str, str]:
    return {
        "long_name": f"hybrid level at {where} (1000*(A+B))",
        "units": "hPa",
        "positive": "down",
        "standard_name": "atmosphere_hybrid_sigma_pressure_coordinate",
        "formula_terms": f"a: {a} b: {b} p0: P0 ps: PS",
    }


def write_dataset(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """netCDF-4 without fill values (the testbed has no missing data)."""
    encoding = {name: {"_FillValue": None} for name in (*ds.data_vars, *ds.coords)}
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
