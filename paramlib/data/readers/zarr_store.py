"""The ``zarr`` reader: a training store (or any zarr group holding a canonical dataset), lazily.

The store's own chunks become the dask chunks; its attributes (recipe, provenance, statistics)
come through unchanged. A training store keeps each split in a group (``group="train"``). The
fields must already be canonical (``check_canonical``): a store is written from readers' output,
so anything else is a foreign group and is refused.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import xarray as xr
import zarr

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
    if not ds.data_vars:
        groups = sorted(zarr.open_group(str(path), path=group or "", mode="r").group_keys())
        raise ZarrStoreError(
            f"{where}: no variables; a training store keeps its splits in groups ({groups} here):"
            " name one with group="
        )
    # Fields must be canonical; coordinates along sample are labels (time, run, y, x: decoded
    # times keep their units in .encoding, run names have none), so they are not asked for units.
    try:
        check_canonical(ds.reset_coords(drop=True))
    except ValueError as error:
        raise ZarrStoreError(f"{where}: not a canonical column dataset: {error}") from error
    return ds.assign_attrs(paramlib_reader="zarr", source_files=[str(path)])
