"""The ``wrfout`` reader: WRF history files -> the canonical column dataset, lazily (dask).

What it returns, per frame and mass point, dims ``(time, y, x, lev)`` with ``lev`` surface first
(WRF's ``bottom_top`` already is), names as in WRF's physics drivers (``u_phy`` -> ``u``, ...):

    u, v, w      winds at mass points (U, V, W destaggered: mean of the two faces / full levels)
    p            full pressure P + PB;  p_hyd  hydrostatic pressure P_HYD (when present)
    th           dry potential temperature T + 300 K
    pi           Exner function (p / 1e5 Pa) ** (r_d / cp)
    t            temperature th * pi
    qv           water vapour mixing ratio QVAPOR
    z, dz8w      mass-level height (mean of the full levels around it) and layer thickness
                 (difference of the full levels), full-level height = (PH + PHB) / g
    rho          density of moist air, WRF's (1 + qv) / alt = p (1 + qv) / (r_d t (1 + qv r_v/r_d))
                 (phy_prep; alt is WRF's inverse dry-air density), not p / (r_d t_v)
    mut          column dry-air mass MU + MUB (held MSKF tendencies scale with its inverse)
    rthcuten ... the MSKF fields, hfx, ust, pblh, xland (+ zol, qfx when present)

The derived fields follow WRF's own constants (share/module_model_constants.F: r_d = 287,
cp = 7 r_d / 2, g = 9.81, r_v = 461.6), not paramlib.constants, so that they reproduce the
values WRF's physics saw: r_d / cp = 2/7 exactly (287/1004, often quoted, differs by 5e-4).

The cumulus fields are restart-only in WRF's Registry: a history file has them only when the run
added them with ``iofields_filename`` (see ``IOFIELDS_LINE``); without them the reader refuses
the file and says so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK

from paramlib.data.canonical import LEV, cf_attrs, is_surface_to_top

# WRF's constants (share/module_model_constants.F).
R_D = 287.0  # J kg-1 K-1
CP = 7.0 * R_D / 2.0  # J kg-1 K-1
R_V = 461.6  # J kg-1 K-1
G = 9.81  # m s-2
P1000MB = 1.0e5  # Pa
T0 = 300.0  # K: wrfout T is theta - T0

TIME_FORMAT = "%Y-%m-%d_%H:%M:%S"
CUMULUS_REQUIRED = (
    *("RTHCUTEN", "RQVCUTEN", "RQCCUTEN", "RQRCUTEN", "RQICUTEN", "RQSCUTEN"),
    *("RAINCV", "PRATEC", "NCA", "W0AVG"),
)
# CUTOP and CUBOT come with the same iofields line; the momentum tendencies only from MSKF
# (cumulus momentum transport), so none of these is required.
CUMULUS_OPTIONAL = ("CUTOP", "CUBOT", "RUCUTEN", "RVCUTEN")
IOFIELDS_LINE = "+:h:0:" + ",".join((*CUMULUS_REQUIRED, "CUTOP", "CUBOT"))
STATE_REQUIRED = (
    *("Times", "ZNU", "U", "V", "W", "T", "P", "PB", "PH", "PHB", "QVAPOR", "MU", "MUB"),
    *("HFX", "UST", "PBLH", "XLAND"),
)
STATE_OPTIONAL = ("P_HYD", "ZOL", "QFX")
READ = (*STATE_REQUIRED, *STATE_OPTIONAL, *CUMULUS_REQUIRED, *CUMULUS_OPTIONAL)
# Units the derivations assume for the raw fields they combine.
RAW_UNITS = {
    **dict.fromkeys(("U", "V", "W"), "m s-1"),
    **dict.fromkeys(("T",), "K"),
    **dict.fromkeys(("P", "PB", "MU", "MUB"), "Pa"),
    **dict.fromkeys(("PH", "PHB"), "m2 s-2"),
}


class WrfoutError(ValueError):
    """A wrfout file that cannot be read as asked; the message names the file."""


@dataclass(frozen=True)
class Field:
    """A wrfout variable copied through: its WRF name and its canonical attributes. WRF writes
    no units for some (NCA, XLAND, CUTOP); ``units`` is then what WRF's code uses."""

    source: str
    units: str
    long_name: str
    standard_name: str | None = None


# Output name: the WRF name in lower case, as WRF's physics drivers call them, but qv for QVAPOR.
COPIED: dict[str, Field] = {
    {"QVAPOR": "qv"}.get(f.source, f.source.lower()): f
    for f in (
        Field("QVAPOR", "kg kg-1", "water vapour mixing ratio", "humidity_mixing_ratio"),
        Field("P_HYD", "Pa", "hydrostatic pressure"),
        Field("RTHCUTEN", "K s-1", "MSKF tendency of dry potential temperature"),
        Field("RQVCUTEN", "kg kg-1 s-1", "MSKF tendency of water vapour mixing ratio"),
        Field("RQCCUTEN", "kg kg-1 s-1", "MSKF tendency of cloud water mixing ratio"),
        Field("RQRCUTEN", "kg kg-1 s-1", "MSKF tendency of rain mixing ratio"),
        Field("RQICUTEN", "kg kg-1 s-1", "MSKF tendency of ice mixing ratio"),
        Field("RQSCUTEN", "kg kg-1 s-1", "MSKF tendency of snow mixing ratio"),
        Field("RUCUTEN", "m s-2", "MSKF tendency of x-wind"),
        Field("RVCUTEN", "m s-2", "MSKF tendency of y-wind"),
        Field("W0AVG", "m s-1", "running mean of vertical velocity used by the MSKF trigger"),
        Field(
            "RAINCV",
            "mm",
            "cumulus precipitation during one model time step",
            "lwe_thickness_of_convective_precipitation_amount",
        ),
        Field(
            "PRATEC", "mm s-1", "cumulus precipitation rate", "lwe_convective_precipitation_rate"
        ),
        Field("NCA", "s", "convective time left in the MSKF period (-100: never convected)"),
        Field("CUTOP", "1", "cloud-top mass level of the last MSKF cloud (1-based)"),
        Field("CUBOT", "1", "cloud-base mass level of the last MSKF cloud (1-based)"),
        Field(
            "HFX", "W m-2", "upward surface sensible heat flux", "surface_upward_sensible_heat_flux"
        ),
        Field("QFX", "kg m-2 s-1", "upward surface moisture flux"),
        Field("UST", "m s-1", "friction velocity"),
        Field("PBLH", "m", "boundary layer height", "atmosphere_boundary_layer_thickness"),
        Field("ZOL", "1", "surface-layer stability parameter z/L"),
        Field("XLAND", "1", "land mask (1 land, 2 water)"),
    )
}

CHUNK_BYTES = 16 << 20  # per variable and dask chunk
_DIMS = {"Time": "time", "bottom_top": LEV, "south_north": "y", "west_east": "x"}
_ORDER = ("time", "y", "x", LEV)


def open_wrfout(paths: Sequence[str | os.PathLike]) -> xr.Dataset:
    """Read wrfout files (one run, consecutive frames, in the given order) lazily, in chunks of
    whole frames (``frames_per_chunk``), as the canonical column dataset of the module docstring."""
    files = [Path(p) for p in paths]
    if not files:
        raise WrfoutError("open_wrfout: no files given")
    frames = [_open_file(path) for path in files]
    for path, frame in zip(files[1:], frames[1:], strict=True):
        _check_same_grid(files[0], frames[0], path, frame)
    raw = _join(frames)
    _check_times_increase(files, frames)
    return _canonical(raw, files)


def read_wrfout_frames(paths: Sequence[str | os.PathLike], frames: np.ndarray) -> xr.Dataset:
    """Frames ``frames`` (increasing indices into the files' frames one after another) of
    ``open_wrfout(paths)``, read into memory without dask: the same values, the files' metadata
    already checked by ``open_wrfout``. A pipeline block's read: the frames are read from their
    files directly and derived in numpy, instead of computing a part of the lazy dataset's graph
    (2-3 times slower, the graph of every file culled for each block)."""
    files = [Path(p) for p in paths]
    starts = np.cumsum([0, *(_frame_count(path, path.stat().st_mtime_ns) for path in files)])
    parts = []
    for path, first, end in zip(files, starts[:-1], starts[1:], strict=True):
        local = frames[(frames >= first) & (frames < end)] - first
        if local.size == 0:
            continue
        contiguous = local[-1] - local[0] == local.size - 1
        # HDF5 is not thread-safe: the whole read under xarray's own lock (its lazy reads take
        # it too), which the open file's reads then must not take again (lock=False).
        with (
            NETCDF4_PYTHON_LOCK,
            xr.open_dataset(
                path, engine="netcdf4", decode_times=False, decode_coords=False, lock=False
            ) as ds,
        ):
            part = ds[[n for n in READ if n in ds]]
            part = part.isel(Time=slice(local[0], local[-1] + 1) if contiguous else local).load()
        times = decode_times(part["Times"].values, path)
        parts.append(part.drop_vars("Times").assign_coords(Time=("Time", times)))
    if not parts:
        raise WrfoutError(f"read_wrfout_frames: frames {frames} are not in {files}")
    return _canonical(_join(parts), files)


def _join(parts: list[xr.Dataset]) -> xr.Dataset:
    """Consecutive frames of one run as one dataset (one part as it is: no copy)."""
    if len(parts) == 1:
        return parts[0]
    return xr.concat(
        parts, dim="Time", data_vars="minimal", coords="minimal", compat="override", join="exact"
    )


@functools.lru_cache(maxsize=4096)
def _frame_count(path: Path, mtime_ns: int) -> int:
    """Frames in a wrfout file (cached: each block of a build asks for every file before its
    own; the modification time keys a file rewritten since)."""
    with NETCDF4_PYTHON_LOCK, netCDF4.Dataset(path) as ds:
        return len(ds.dimensions["Time"])


def destagger(da: xr.DataArray, stag_dim: str) -> xr.DataArray:
    """Mean of neighbouring points along ``stag_dim`` (``west_east_stag`` -> ``west_east``):
    WRF's interpolation of C-grid faces and full levels to mass points."""
    n = da.sizes[stag_dim]
    lower = da.isel({stag_dim: slice(0, n - 1)}).variable
    upper = da.isel({stag_dim: slice(1, n)}).variable
    mean = 0.5 * (lower + upper)
    return xr.DataArray(mean).rename({stag_dim: stag_dim.removesuffix("_stag")})


def exner(p: xr.DataArray) -> xr.DataArray:
    return (p / P1000MB) ** (R_D / CP)


def moist_density(p: xr.DataArray, t: xr.DataArray, qv: xr.DataArray) -> xr.DataArray:
    """WRF's rho = (1 + qv) / alt with alt = r_d t (1 + qv r_v / r_d) / p."""
    return p * (1.0 + qv) / (R_D * t * (1.0 + qv * (R_V / R_D)))


def decode_times(chars: np.ndarray, path: Path) -> np.ndarray:
    """WRF ``Times`` ('YYYY-MM-DD_HH:MM:SS' per frame, as 19 single bytes or as the strings xarray
    makes of them) -> datetime64[s]. Seconds, not
    nanoseconds: idealized runs start in year 1, outside the datetime64[ns] range."""
    chars = np.asarray(chars)
    if chars.ndim == 2:  # (Time, DateStrLen) of single characters, as stored
        chars = np.array([b"".join(row) for row in chars])
    texts = [t.decode("ascii") if isinstance(t, bytes) else str(t) for t in chars.ravel()]
    try:
        return np.array([text.replace("_", "T") for text in texts], dtype="datetime64[s]")
    except ValueError as error:
        raise WrfoutError(f"{path}: Times {texts} are not {TIME_FORMAT!r} ({error})") from error


# --- per file -------------------------------------------------------------------------------


def _open_file(path: Path) -> xr.Dataset:
    try:
        ds = xr.open_dataset(
            path, engine="netcdf4", chunks={}, decode_times=False, decode_coords=False
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise WrfoutError(f"{path}: cannot be read as a netCDF file ({error})") from error
    _check_variables(ds, path)
    keep = [n for n in READ if n in ds]
    # Chunked as stored first (xarray warns when asked chunks split stored ones: P_TOP of some
    # writers), then in blocks of whole frames: a few MiB per variable, so that a pipeline task
    # does real work (per-task overhead dominated one-frame chunks) and memory stays small.
    ds = ds[keep].chunk({"Time": frames_per_chunk(ds)})
    try:
        times = decode_times(ds["Times"].values, path)
    except (OSError, RuntimeError) as error:
        raise WrfoutError(f"{path}: reading Times failed ({error})") from error
    return ds.drop_vars("Times").assign_coords(Time=("Time", times))


def frames_per_chunk(ds: xr.Dataset, limit_bytes: int = CHUNK_BYTES) -> int:
    """Frames per dask chunk: as many as keep the largest variable's chunk within
    ``limit_bytes``, spread evenly over the file's frames (12 frames, limit 11 -> 6 + 6)."""
    n = ds.sizes.get("Time", 1)
    frame = max(var.nbytes // max(n, 1) for var in ds.data_vars.values())
    chunks = -(-n // max(1, min(n, limit_bytes // max(frame, 1))))
    return -(-n // chunks)


def _check_variables(ds: xr.Dataset, path: Path) -> None:
    missing = [name for name in STATE_REQUIRED if name not in ds]
    if missing:
        raise WrfoutError(f"{path}: not a wrfout history file: variables {missing} missing")
    missing = [name for name in CUMULUS_REQUIRED if name not in ds]
    if missing:
        raise WrfoutError(
            f"{path}: cumulus fields {missing} missing. WRF keeps the cumulus tendencies, RAINCV,"
            " PRATEC, NCA and W0AVG in restart files only; to get them into history, run WRF with"
            " `iofields_filename = 'cumulus_iofields.txt'` (one entry per domain) and"
            " `ignore_iofields_warning = .true.` in &time_control of namelist.input, where"
            f" cumulus_iofields.txt holds the line\n    {IOFIELDS_LINE}"
        )
    for name, expected in RAW_UNITS.items():
        found = ds[name].attrs.get("units", "")
        if found != expected:
            raise WrfoutError(f"{path}: variable {name} has units {found!r}, expected {expected!r}")
    for field in COPIED.values():
        found = ds[field.source].attrs.get("units", "") if field.source in ds else ""
        if found not in ("", field.units):
            raise WrfoutError(
                f"{path}: variable {field.source} has units {found!r}, expected {field.units!r}"
            )


def _check_same_grid(first: Path, ref: xr.Dataset, path: Path, ds: xr.Dataset) -> None:
    for dim, size in ref.sizes.items():
        if dim != "Time" and ds.sizes.get(dim) != size:
            raise WrfoutError(
                f"{path}: dimension {dim} is {ds.sizes.get(dim)}, but {size} in {first}"
            )
    for name in ref.data_vars:
        if name not in ds:
            raise WrfoutError(f"{path}: variable {name} missing, present in {first}")


def _check_times_increase(files: list[Path], frames: list[xr.Dataset]) -> None:
    previous_file, previous = None, None
    for path, frame in zip(files, frames, strict=True):
        times = frame["Time"].values
        if np.any(np.diff(times) <= np.timedelta64(0)) or (
            previous is not None and times[0] <= previous
        ):
            where = f"after {previous} in {previous_file}" if previous is not None else "in itself"
            raise WrfoutError(
                f"{path}: times {times[0]}..{times[-1]} do not increase {where}; give the files of"
                " one run in time order"
            )
        previous_file, previous = path, times[-1]


# --- canonical dataset ----------------------------------------------------------------------


def _canonical(raw: xr.Dataset, files: list[Path]) -> xr.Dataset:
    u = destagger(raw["U"], "west_east_stag")
    v = destagger(raw["V"], "south_north_stag")
    w = destagger(raw["W"], "bottom_top_stag")
    z_w = (raw["PH"] + raw["PHB"]) / G
    p = raw["P"] + raw["PB"]
    th = raw["T"] + T0
    pi = exner(p)
    t = th * pi
    qv = raw["QVAPOR"]
    derived = {
        "u": (u, cf_attrs("m s-1", "x-wind at mass points", "x_wind")),
        "v": (v, cf_attrs("m s-1", "y-wind at mass points", "y_wind")),
        "w": (w, cf_attrs("m s-1", "vertical velocity at mass levels", "upward_air_velocity")),
        "p": (p, cf_attrs("Pa", "pressure", "air_pressure")),
        "th": (th, cf_attrs("K", "dry potential temperature", "air_potential_temperature")),
        "pi": (pi, cf_attrs("1", "Exner function", "dimensionless_exner_function")),
        "t": (t, cf_attrs("K", "temperature", "air_temperature")),
        "z": (
            destagger(z_w, "bottom_top_stag"),
            cf_attrs("m", "height of mass levels", "geopotential_height"),
        ),
        "dz8w": (
            z_w.diff("bottom_top_stag", label="lower").rename(bottom_top_stag="bottom_top"),
            cf_attrs("m", "layer thickness between full levels", "cell_thickness"),
        ),
        "rho": (moist_density(p, t, qv), cf_attrs("kg m-3", "density of moist air", "air_density")),
        "mut": (raw["MU"] + raw["MUB"], cf_attrs("Pa", "column dry-air mass MU + MUB")),
    }
    variables = {name: _finish(da, attrs) for name, (da, attrs) in derived.items()}
    for name, field in COPIED.items():
        if field.source in raw:
            variables[name] = _finish(
                raw[field.source], cf_attrs(field.units, field.long_name, field.standard_name)
            )
    ds = xr.Dataset(variables, coords=_coords(raw, files[0]))
    ds.attrs = {
        **raw.attrs,
        "paramlib_reader": "wrfout",
        "source_files": [str(path) for path in files],
    }
    return ds


def _finish(da: xr.DataArray, attrs: dict[str, str]) -> xr.DataArray:
    """Canonical dims, order and attributes; WRF's own attributes go (a derived field would
    otherwise carry its source's description)."""
    da = da.drop_vars(list(da.coords)).rename({d: _DIMS[d] for d in da.dims})
    da = da.transpose(*[d for d in _ORDER if d in da.dims])
    da.attrs = attrs
    return da


def _coords(raw: xr.Dataset, first: Path) -> dict[str, xr.DataArray]:
    znu = np.asarray(raw["ZNU"].isel(Time=0).values, dtype=float)
    if not is_surface_to_top(znu, increases_upward=False):
        raise WrfoutError(f"{first}: ZNU {znu} does not decrease upward; not a WRF eta grid")
    hybrid = int(raw.attrs.get("HYBRID_OPT", 0)) != 0
    lev_attrs = (
        cf_attrs("1", "hybrid eta of mass levels (WRF HYBRID_OPT != 0)")
        if hybrid
        else cf_attrs(
            "1",
            "eta (sigma of dry hydrostatic pressure) of mass levels",
            "atmosphere_sigma_coordinate",
        )
    )
    dx = float(raw.attrs.get("DX", 1.0))
    dy = float(raw.attrs.get("DY", dx))
    x_attrs = cf_attrs(
        "m", "x distance of mass points from the first one", "projection_x_coordinate"
    )
    y_attrs = cf_attrs(
        "m", "y distance of mass points from the first one", "projection_y_coordinate"
    )
    return {
        "time": xr.DataArray(raw["Time"].values, dims="time", attrs={"long_name": "time"}),
        LEV: xr.DataArray(znu, dims=LEV, attrs={**lev_attrs, "positive": "down"}),
        "level": xr.DataArray(
            np.arange(1, znu.size + 1), dims=LEV, attrs=cf_attrs("1", "WRF mass level, 1 lowest")
        ),
        "x": xr.DataArray(dx * np.arange(raw.sizes["west_east"]), dims="x", attrs=x_attrs),
        "y": xr.DataArray(dy * np.arange(raw.sizes["south_north"]), dims="y", attrs=y_attrs),
    }


# --- MSKF call state ------------------------------------------------------------------------

FRESH, ENDED, HELD = 0, 1, 2
CALL_STATE_MEANINGS = "fresh ended held"


ArrayT = TypeVar("ArrayT", np.ndarray, xr.DataArray)


def mskf_call_state(nca_previous: ArrayT, cudt_s: float, dt_s: float) -> ArrayT:
    """Whether MSKF recomputed each column at a call, from NCA in the frame one call earlier
    (frames every ``cudt_s``; README of wrf_mskf, "Using it for an emulator").

    NCA is written after the step's countdown, so at the next call it has lost cudt - dt more;
    WRF evaluates a column when NCA < dt / 2 then. Hence, NCA being a multiple of dt:
    previous NCA <= cudt - dt (incl. 0 and -100) -> FRESH (0); = cudt -> ENDED (1, skipped, and
    the period ended in that step: heating and moistening zero, the rest stale); >= cudt + dt ->
    HELD (2, previous tendencies kept). Works on numpy, xarray and dask arrays alike.
    """
    fresh = nca_previous < cudt_s - 0.5 * dt_s
    held = nca_previous > cudt_s + 0.5 * dt_s
    return (~fresh).astype("int8") + held.astype("int8")


def mskf_call_states(ds: xr.Dataset) -> xr.DataArray:
    """``mskf_call_state`` for every frame of a wrfout dataset that has a previous frame, with
    cudt and dt from its CUDT (minutes) and DT (s) attributes. Refuses data whose frames are not
    one cumulus call apart: the previous frame's NCA then says nothing about this call."""
    dt_s = float(ds.attrs["DT"])
    cudt_s = max(float(ds.attrs["CUDT"]) * 60.0, dt_s)  # CUDT = 0: called every step
    steps = np.diff(ds["time"].values) / np.timedelta64(1, "s")
    if steps.size == 0 or np.any(steps != cudt_s):
        raise ValueError(
            f"mskf_call_states: frames are {sorted(set(steps.tolist()))} s apart, the cumulus"
            f" call interval is {cudt_s} s; need consecutive frames one call apart"
        )
    previous = ds["nca"].isel(time=slice(0, -1)).assign_coords(time=ds["time"].values[1:])
    state = mskf_call_state(previous, cudt_s, dt_s)
    return state.assign_attrs(
        long_name="MSKF call state of the column",
        flag_values=np.array([FRESH, ENDED, HELD], dtype="int8"),
        flag_meanings=CALL_STATE_MEANINGS,
        units="1",
    )
