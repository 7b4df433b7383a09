"""The ``cesm-history`` reader: CAM-style history files -> the canonical column dataset, lazily.

Grids: unstructured (``ncol``: becomes ``x``, with a ``y`` of length 1 so that every reader's
output stacks the same way; ``lat``/``lon`` kept as coordinates on ``x``) or regular
(``lat`` -> ``y``, ``lon`` -> ``x``). Levels: CAM's hybrid coordinate, p = hyam P0 + hybm PS at
mid levels and hyai P0 + hybi PS at interfaces; returned surface first whatever the stored order,
with ``lev`` = CAM's reference level 1000 (A + B) in hPa.

Names: each variable on the grid comes out as its CAM name in lower case (``T`` -> ``t``,
``Q`` -> ``q``, ``PS`` -> ``ps``, ``SOLIN`` -> ``solin``, ...: CAM's names for these are already
the canonical ones), or as ``rename`` says (``{CONVDT: heating, CONVDQ: moistening, PRECC:
precip}``); units are converted from CAM's spellings (``kg/kg`` -> ``kg kg-1``; precipitation
``m/s`` -> ``mm s-1``, x 1000), variables with units the reader does not know are left out.
Derived: ``p`` (Pa), and from interfaces when present ``p_above``, ``p_below`` and ``dp`` (Pa).
Tendencies computed from before/after-physics states: ``tendencies={name: {before: VAR, after:
VAR, dt: seconds}}`` gives (after - before) / dt in the state's units per second.
Canonical names with fixed units (``CANONICAL_UNITS``) are checked whatever their source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.data.canonical import LEV, cf_attrs, is_surface_to_top

# CAM spelling -> (canonical spelling, factor); canonical spellings map to themselves.
UNITS: dict[str, tuple[str, float]] = {
    "K": ("K", 1.0),
    "Pa": ("Pa", 1.0),
    "kg/kg": ("kg kg-1", 1.0),
    "K/s": ("K s-1", 1.0),
    "kg/kg/s": ("kg kg-1 s-1", 1.0),
    "W/m2": ("W m-2", 1.0),
    "Pa/s": ("Pa s-1", 1.0),
    "m/s": ("m s-1", 1.0),
    "1": ("1", 1.0),
    "fraction": ("1", 1.0),
}
UNITS |= {canonical: (canonical, 1.0) for canonical, _ in list(UNITS.values())}
PRECIP_UNITS = {"m/s": ("mm s-1", 1000.0), "m s-1": ("mm s-1", 1000.0)}
CANONICAL_UNITS = {
    **dict.fromkeys(("t", "ts"), "K"),
    **dict.fromkeys(("p", "ps", "p_above", "p_below", "dp"), "Pa"),
    "q": "kg kg-1",
    "heating": "K s-1",
    "moistening": "kg kg-1 s-1",
    "precip": "mm s-1",
    **dict.fromkeys(("solin", "shflx", "lhflx"), "W m-2"),
    "omega": "Pa s-1",
}
HYBRID_REQUIRED = ("hyam", "hybm", "P0", "PS")
HYBRID_INTERFACES = ("hyai", "hybi")
_ORDER = ("time", "y", "x", LEV)


class CesmHistoryError(ValueError):
    """A CAM history file that cannot be read as asked; the message names the file."""


def open_cesm_history(
    paths: Sequence[str | os.PathLike],
    *,
    rename: Mapping[str, str] | None = None,
    tendencies: Mapping[str, Mapping[str, object]] | None = None,
) -> xr.Dataset:
    """Read CAM history files (one run, in time order) lazily, chunked as stored, as the
    canonical column dataset described in the module docstring."""
    files = [Path(p) for p in paths]
    if not files:
        raise CesmHistoryError("open_cesm_history: no files given")
    frames = [_open_file(path) for path in files]
    _check_sequence(files, frames)
    raw = xr.concat(
        frames, dim="time", data_vars="minimal", coords="minimal", compat="override", join="exact"
    )
    raw = surface_first(raw, files[0])
    rename = dict(rename or {})
    for source in rename:
        if source not in raw:
            raise CesmHistoryError(f"{files[0]}: rename: variable {source} not in the file")
    ds = _canonical(raw, files[0], rename)
    for name, spec in (tendencies or {}).items():
        ds[name] = state_tendency(raw, name, spec, files[0])
    for name, expected in CANONICAL_UNITS.items():
        if name in ds and ds[name].attrs["units"] != expected:
            raise CesmHistoryError(
                f"{files[0]}: {name} has units {ds[name].attrs['units']!r}, expected {expected!r}"
            )
    ds.attrs = {
        **raw.attrs,
        "paramlib_reader": "cesm-history",
        "source_files": [str(path) for path in files],
    }
    return ds


def hybrid_pressure(
    a: xr.DataArray, b: xr.DataArray, p0: float | xr.DataArray, ps: xr.DataArray
) -> xr.DataArray:
    """CAM's hybrid sigma-pressure: p = a p0 + b ps."""
    return a * p0 + b * ps


def convert_units(da: xr.DataArray, name: str) -> tuple[xr.DataArray, str] | None:
    """``da`` in canonical units and those units, or None when the units are unknown here.
    Precipitation (a name containing PREC) in m/s is a water-equivalent rate: -> mm s-1."""
    units = str(da.attrs.get("units", ""))
    known = PRECIP_UNITS if "PREC" in name.upper() and units in PRECIP_UNITS else UNITS
    if units not in known:
        return None
    canonical, factor = known[units]
    return (da * factor if factor != 1.0 else da), canonical


def state_tendency(
    raw: xr.Dataset, name: str, spec: Mapping[str, object], path: Path
) -> xr.DataArray:
    """(after - before) / dt of two states of the file, in canonical units per second."""
    if set(spec) != {"before", "after", "dt"}:
        raise CesmHistoryError(
            f"tendencies.{name}: expected {{before: VAR, after: VAR, dt: seconds}}, got {spec!r}"
        )
    dt = float(spec["dt"])  # type: ignore[arg-type]
    if not dt > 0:
        raise CesmHistoryError(f"tendencies.{name}.dt: expected seconds > 0, got {spec['dt']!r}")
    states = []
    for key in ("before", "after"):
        source = str(spec[key])
        if source not in raw:
            raise CesmHistoryError(f"{path}: tendencies.{name}.{key}: variable {source} missing")
        converted = convert_units(raw[source], source)
        if converted is None:
            raise CesmHistoryError(
                f"{path}: tendencies.{name}.{key}: variable {source} has units"
                f" {raw[source].attrs.get('units')!r}, expected one of {sorted(UNITS)}"
            )
        states.append((source, *converted))
    (before, da_before, units), (after, da_after, units_after) = states
    if units != units_after:
        raise CesmHistoryError(
            f"{path}: tendencies.{name}: {before} is in {units!r}, {after} in {units_after!r}"
        )
    tendency = (da_after - da_before) / dt
    attrs = cf_attrs(
        f"{units} s-1", f"tendency of {after.lower()}: ({after} - {before}) / {dt:g} s"
    )
    return _grid(tendency.rename(name)).assign_attrs(attrs)


# --- per file -------------------------------------------------------------------------------


def _open_file(path: Path) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path, engine="netcdf4", chunks={})
    except (OSError, ValueError, RuntimeError) as error:
        raise CesmHistoryError(f"{path}: cannot be read as a netCDF file ({error})") from error
    missing = [name for name in HYBRID_REQUIRED if name not in ds]
    if missing:
        raise CesmHistoryError(
            f"{path}: variables {missing} missing; a CAM history file needs {HYBRID_REQUIRED}"
            " (hybrid coefficients, reference and surface pressure) for the pressure levels"
        )
    for name in ("P0", "PS"):
        if ds[name].attrs.get("units", "Pa") != "Pa":
            raise CesmHistoryError(
                f"{path}: variable {name} has units {ds[name].attrs['units']!r}, expected 'Pa'"
            )
    if "time" not in ds.dims or not ("ncol" in ds.dims or {"lat", "lon"} <= set(ds.dims)):
        raise CesmHistoryError(
            f"{path}: dims {dict(ds.sizes)}; expected time and ncol (or lat and lon)"
        )
    return ds


def _check_sequence(files: list[Path], frames: list[xr.Dataset]) -> None:
    """Files of one run: the first file's grid, times increasing from file to file."""
    for k in range(1, len(files)):
        path, ds = files[k], frames[k]
        for dim, size in frames[0].sizes.items():
            if dim != "time" and ds.sizes.get(dim) != size:
                raise CesmHistoryError(
                    f"{path}: dimension {dim} is {ds.sizes.get(dim)}, but {size} in {files[0]}"
                )
        previous = frames[k - 1]["time"].values
        if ds["time"].size and previous.size and ds["time"].values[0] <= previous[-1]:
            raise CesmHistoryError(
                f"{path}: starts at {ds['time'].values[0]}, not after the end of {files[k - 1]};"
                " give the files of one run in time order"
            )


# --- canonical dataset ----------------------------------------------------------------------


def surface_first(raw: xr.Dataset, path: Path) -> xr.Dataset:
    """``raw`` with ``lev`` (and ``ilev``) reversed where stored top first, as CAM writes."""
    eta = (raw["hyam"] + raw["hybm"]).values
    if is_surface_to_top(eta, increases_upward=False):
        return raw
    if not is_surface_to_top(eta[::-1], increases_upward=False):
        raise CesmHistoryError(f"{path}: hyam + hybm {eta} is not monotonic along lev")
    flipped = {dim: slice(None, None, -1) for dim in ("lev", "ilev") if dim in raw.dims}
    return raw.isel(flipped)


def _canonical(raw: xr.Dataset, path: Path, rename: Mapping[str, str]) -> xr.Dataset:
    variables: dict[str, xr.DataArray] = {}
    for source, da in raw.data_vars.items():
        if "time" not in da.dims or not set(da.dims) <= {"time", "lev", "ncol", "lat", "lon"}:
            continue
        name = rename.get(str(source), str(source).lower())
        converted = convert_units(da, str(source))
        if converted is None:
            # Unknown units leave a field out, unless it was asked for by name.
            if source in rename or name in CANONICAL_UNITS:
                expected = (
                    repr(CANONICAL_UNITS[name])
                    if name in CANONICAL_UNITS
                    else f"one of {sorted(UNITS)}"
                )
                raise CesmHistoryError(
                    f"{path}: variable {source} has units {da.attrs.get('units')!r}, expected"
                    f" {expected} (or a CAM spelling of it) for {name}"
                )
            continue
        data, units = converted
        long_name = da.attrs.get("long_name", str(source))
        attrs = cf_attrs(units, long_name, da.attrs.get("standard_name"))
        variables[name] = _grid(data).assign_attrs(attrs)
    p0 = raw["P0"]
    variables["p"] = _grid(hybrid_pressure(raw["hyam"], raw["hybm"], p0, raw["PS"]))
    variables["p"].attrs = cf_attrs("Pa", "pressure at mid levels", "air_pressure")
    if all(name in raw for name in HYBRID_INTERFACES):
        p_int = hybrid_pressure(raw["hyai"], raw["hybi"], p0, raw["PS"])
        below = p_int.isel(ilev=slice(0, -1)).rename(ilev=LEV).drop_vars(LEV, errors="ignore")
        above = p_int.isel(ilev=slice(1, None)).rename(ilev=LEV).drop_vars(LEV, errors="ignore")
        for name, da, long_name in (
            ("p_below", below, "pressure at the interface below the level"),
            ("p_above", above, "pressure at the interface above the level"),
            ("dp", below - above, "pressure thickness of the layer"),
        ):
            variables[name] = _grid(da).assign_attrs(cf_attrs("Pa", long_name))
    return xr.Dataset(variables, coords=_coords(raw))


def _grid(da: xr.DataArray) -> xr.DataArray:
    """CAM dims -> canonical ``(time, y, x, lev)``; coordinates dropped (``_coords`` sets them)."""
    da = da.drop_vars(list(da.coords))
    if "ncol" in da.dims:
        da = da.rename(ncol="x").expand_dims(y=1)
    else:
        da = da.rename({"lat": "y", "lon": "x"})
    return da.transpose(*[d for d in _ORDER if d in da.dims])


def _coords(raw: xr.Dataset) -> dict[str, xr.DataArray]:
    lev_attrs = {
        **cf_attrs(
            "hPa",
            "hybrid level at mid levels, 1000 (hyam + hybm)",
            "atmosphere_hybrid_sigma_pressure_coordinate",
        ),
        "positive": "down",
    }
    coords = {
        "time": raw["time"].assign_attrs(long_name="time"),
        LEV: xr.DataArray(1000.0 * (raw["hyam"] + raw["hybm"]).values, dims=LEV, attrs=lev_attrs),
    }
    lat_attrs = cf_attrs("degrees_north", "latitude", "latitude")
    lon_attrs = cf_attrs("degrees_east", "longitude", "longitude")
    if "ncol" in raw.dims:
        for name, attrs in (("lat", lat_attrs), ("lon", lon_attrs)):
            if name in raw:
                coords[name] = xr.DataArray(np.asarray(raw[name].values), dims="x", attrs=attrs)
    else:
        coords["lat"] = xr.DataArray(raw["lat"].values, dims="y", attrs=lat_attrs)
        coords["lon"] = xr.DataArray(raw["lon"].values, dims="x", attrs=lon_attrs)
    return coords
