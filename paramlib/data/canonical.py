"""The canonical column dataset every reader returns (DESIGN.md, "Canonical column data").

Dims ``(time, y, x, lev)`` as read, ``(sample, lev)`` once stacked; levels ordered surface to
top; a ``lev`` coordinate that says what the levels are, with units; every variable in physical
units with CF attributes ``units``, ``long_name`` and ``standard_name`` where CF has one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

GRID_DIMS: tuple[str, str, str] = ("time", "y", "x")
LEV = "lev"
SAMPLE = "sample"


def cf_attrs(units: str, long_name: str, standard_name: str | None = None) -> dict[str, str]:
    """CF attributes of one variable; ``standard_name`` only where the CF table has one."""
    attrs = {"units": units, "long_name": long_name}
    if standard_name:
        attrs["standard_name"] = standard_name
    return attrs


def is_surface_to_top(values: np.ndarray, increases_upward: bool) -> bool:
    """Whether a 1-D level coordinate runs from the surface to the top: strictly increasing for
    height-like coordinates, strictly decreasing for pressure-like ones (pressure, sigma, eta)."""
    steps = np.diff(np.asarray(values, dtype=float))
    return bool(np.all(steps > 0) if increases_upward else np.all(steps < 0))


def check_canonical(ds: xr.Dataset) -> None:
    """Raise ValueError naming the variable if ``ds`` breaks the canonical contract: unknown dims,
    a ``lev`` coordinate without units, or a variable without ``units``/``long_name``."""
    allowed = {*GRID_DIMS, LEV, SAMPLE}
    unknown = set(ds.dims) - allowed
    if unknown:
        raise ValueError(f"canonical dataset has dims {sorted(unknown)} outside {sorted(allowed)}")
    if LEV in ds.dims and "units" not in ds[LEV].attrs:
        raise ValueError(f"canonical dataset: coordinate {LEV!r} has no units attribute")
    # Grid labels are exempt: indexes as read, plain coordinates along sample once stacked
    # (datetime64 times keep their units in the encoding, not in attributes).
    labels = {*ds.indexes, *GRID_DIMS}
    for name, var in ds.variables.items():
        missing = [key for key in ("units", "long_name") if key not in var.attrs]
        if missing and name not in labels:
            raise ValueError(f"canonical dataset: variable {name!r} lacks attributes {missing}")


def stack_columns(ds: xr.Dataset, dims: Sequence[str] = GRID_DIMS) -> xr.Dataset:
    """``(time, y, x, lev)`` -> ``(sample, lev)``, lazily. ``time``, ``y`` and ``x`` become
    plain coordinates along ``sample`` (not a MultiIndex, which zarr cannot store)."""
    stacked = ds.stack({SAMPLE: list(dims)}, create_index=False)
    order = [SAMPLE, LEV] if LEV in stacked.dims else [SAMPLE]
    return stacked.transpose(*order, ...)
