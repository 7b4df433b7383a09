"""The ``zarr`` reader: a training store (or any zarr group holding a canonical dataset), lazily.

The store's own chunks become the dask chunks; its attributes (recipe, provenance, statistics)
come through unchanged. The data must already be canonical (``check_canonical``): a store is
written from readers' output, so anything else is a foreign group and is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from paramlib.data.canonical import check_canonical


class ZarrStoreError(ValueError):
    """A zarr store that cannot be read as a canonical dataset; the message names it."""


def open_zarr_store(paths: Sequence[str | os.PathLike], *, group: str | None = None) -> xr.Dataset:
    """Open the one store in ``paths`` (its ``group`` when given) as a lazy canonical dataset."""
    if len(paths) != 1:
        raise ZarrStoreError(f"open_zarr_store: expected one store, got {len(paths)}: {paths}")
    path = Path(paths[0])
    where = f"{path}" + (f" (group {group!r})" if group else "")
    try:
        with warnings.catch_warnings():
            # Stores without consolidated metadata are valid; xarray warns on the fallback.
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            ds = xr.open_zarr(path, group=group, chunks={})
    except (OSError, ValueError, KeyError) as error:
        raise ZarrStoreError(f"{where}: cannot be opened as a zarr store ({error})") from error
    # Decoded times keep their CF units in .encoding, not .attrs; stacked ones are plain
    # coordinates along sample, which check_canonical would otherwise ask for units.
    decoded = [name for name, var in ds.variables.items() if "units" in var.encoding]
    try:
        check_canonical(ds.drop_vars([n for n in decoded if n not in ds.indexes]))
    except ValueError as error:
        raise ZarrStoreError(f"{where}: not a canonical column dataset: {error}") from error
    return ds.assign_attrs(paramlib_reader="zarr", source_files=[str(path)])
