"""The ``srm-coarse`` reader: storm-resolving 3-D output coarse-grained into column data, lazily.

The fine grid is read either by another registered reader (``source_format="wrfout"``: its
canonical output) or as plain netCDF (``source_format="netcdf"``, e.g. SAM: dims mapped to
``time, lev, y, x`` by ``dims``, variables picked and renamed by ``variables``, units taken from
the files' ``units`` attributes). Each ``factor`` x ``factor`` block of columns becomes one coarse
column, the plain mean over the block of every field (states and the fine model's physics
tendencies alike). ``tendencies={name: state}`` adds the tendency of the coarse state from
consecutive frames, (state[n+1] - state[n]) / (t[n+1] - t[n]), labelled at frame n (the state
it starts from); the last frame has none and is dropped. A grid not divisible by ``factor`` is
refused, or trimmed at its far edges with ``trim=True``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.data.canonical import LEV, cf_attrs

SAM_DIMS = {"time": "time", "z": LEV, "y": "y", "x": "x"}
_ORDER = ("time", "y", "x", LEV)


class SrmCoarseError(ValueError):
    """Storm-resolving output that cannot be coarse-grained as asked; the message names it."""


def open_srm_coarse(
    paths: Sequence[str | os.PathLike],
    *,
    factor: int,
    source_format: str = "netcdf",
    variables: Mapping[str, str] | None = None,
    dims: Mapping[str, str] | None = None,
    tendencies: Mapping[str, str] | None = None,
    trim: bool = False,
) -> xr.Dataset:
    """Coarse-grain the fine-grid files ``paths`` by ``factor`` (module docstring).

    ``variables``: source name -> canonical name (default: every field on the grid, names
    kept); ``dims``: netCDF dim -> canonical dim (default SAM's ``time, z, y, x``)."""
    files = [Path(p) for p in paths]
    if not files:
        raise SrmCoarseError("open_srm_coarse: no files given")
    if not (isinstance(factor, int) and factor >= 1):
        raise SrmCoarseError(f"factor: expected a positive integer, got {factor!r}")
    if source_format == "netcdf":
        fine = _open_netcdf(files, dict(dims or SAM_DIMS))
    else:
        from paramlib.data.readers import open_source

        fine = open_source(source_format, files)
    fine = _select(fine, variables, files[0])
    coarse = coarse_grain(fine, factor, trim=trim, where=str(files[0]))
    for name, state in (tendencies or {}).items():
        if state not in coarse:
            have = sorted(map(str, coarse.data_vars))
            raise SrmCoarseError(f"{files[0]}: tendencies.{name}: no state {state!r}; have {have}")
        coarse[name] = frame_tendency(coarse[state]).rename(name)
    if tendencies:
        coarse = coarse.isel(time=slice(0, -1))
    coarse.attrs = {
        **fine.attrs,
        "paramlib_reader": "srm-coarse",
        "coarse_graining": f"{factor} x {factor} block mean of the {source_format} grid",
        "source_files": [str(path) for path in files],
    }
    return coarse


def coarse_grain(ds: xr.Dataset, factor: int, *, trim: bool = False, where: str = "") -> xr.Dataset:
    """Mean over ``factor`` x ``factor`` blocks of ``(y, x)``; coordinates averaged too."""
    for dim in ("y", "x"):
        size = ds.sizes.get(dim)
        if size is None:
            raise SrmCoarseError(f"{where}: no dimension {dim!r} to coarse-grain")
        if size % factor and not trim:
            raise SrmCoarseError(
                f"{where}: {dim} has {size} points, not divisible by factor {factor};"
                f" choose a factor dividing it or trim=True (drops the last {size % factor})"
            )
        if size < factor:
            raise SrmCoarseError(f"{where}: {dim} has {size} points, fewer than factor {factor}")
    return ds.coarsen(y=factor, x=factor, boundary="trim", coord_func="mean").mean(keep_attrs=True)


def frame_tendency(state: xr.DataArray) -> xr.DataArray:
    """(state[n+1] - state[n]) / seconds between the frames, labelled at frame n; the last frame
    is NaN (it has no next one)."""
    times = state["time"]
    if not np.issubdtype(times.dtype, np.datetime64):
        raise SrmCoarseError(
            f"frame tendency of {state.name}: time is {times.dtype}, expected decoded datetimes"
            " (a units attribute 'seconds since ...' on time)"
        )
    seconds = times.diff("time", label="lower") / np.timedelta64(1, "s")
    change = (state.diff("time", label="lower") / seconds).astype(state.dtype)
    change = change.reindex(time=times)
    change.attrs = cf_attrs(
        f"{state.attrs.get('units', '1')} s-1",
        f"tendency of the coarse {state.attrs.get('long_name', state.name)} from consecutive"
        " frames",
    )
    return change


def _open_netcdf(files: list[Path], dims: dict[str, str]) -> xr.Dataset:
    frames = []
    for path in files:
        try:
            ds = xr.open_dataset(path, engine="netcdf4", chunks={})
        except (OSError, ValueError, RuntimeError) as error:
            raise SrmCoarseError(f"{path}: cannot be read as a netCDF file ({error})") from error
        missing = [d for d in dims if d not in ds.dims]
        if missing:
            raise SrmCoarseError(f"{path}: dims {missing} missing (have {dict(ds.sizes)})")
        frames.append(ds.rename(dims))
    ds = xr.concat(
        frames, dim="time", data_vars="minimal", coords="minimal", compat="override", join="exact"
    )
    if LEV in ds.coords and "units" not in ds[LEV].attrs:
        raise SrmCoarseError(f"{files[0]}: vertical coordinate has no units attribute")
    return ds.transpose(*[d for d in _ORDER if d in ds.dims], ...)


def _select(ds: xr.Dataset, variables: Mapping[str, str] | None, path: Path) -> xr.Dataset:
    """The fields on the grid (those ``variables`` names, renamed), each with units."""
    if variables is None:
        names = {str(n): str(n) for n, da in ds.data_vars.items() if {"y", "x"} <= set(da.dims)}
    else:
        names = dict(variables)
    for source in names:
        if source not in ds:
            raise SrmCoarseError(f"{path}: variables.{source}: no such variable")
        if not {"time", "y", "x"} <= set(ds[source].dims):
            raise SrmCoarseError(
                f"{path}: variable {source} has dims {ds[source].dims}, expected time, y, x"
            )
        if "units" not in ds[source].attrs:
            raise SrmCoarseError(f"{path}: variable {source} has no units attribute")
    selected = ds[list(names)].rename({s: t for s, t in names.items() if s != t})
    for name in selected.data_vars:
        attrs = selected[name].attrs
        selected[name].attrs = cf_attrs(
            attrs["units"], attrs.get("long_name", str(name)), attrs.get("standard_name")
        )
    return selected.transpose(*[d for d in _ORDER if d in selected.dims])
