"""Readers, registered by format name, behind one ``open_source`` call (like xarray's backends).

A reader is a callable ``reader(paths, **options) -> xr.Dataset`` that returns the canonical
column dataset (paramlib.data.canonical). Adding a format is one module here and one
``register_reader`` line below; a reader is named as ``"module:function"`` so that it is imported
only when used (a broken or heavy reader cannot break the others).

``open_source(entry)`` reads a catalog entry: its paths under the data root, its ``options``
passed to the reader, then its ``variables`` mapping applied (select, check units, rename).

A reader may also register a frame reader, ``frames(paths, frames, **options) -> xr.Dataset``:
the same dataset's frames ``frames`` (indices along ``time``) read into memory without dask.
The pipeline reads its blocks through it where there is one (``read_source_frames``), and
computes a block of the lazy dataset otherwise.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.catalog import CatalogEntry, resolve_paths

Reader = Callable[..., xr.Dataset]

_READERS: dict[str, Reader | str] = {}
_FRAME_READERS: dict[str, Reader | str] = {}


class SourceError(ValueError):
    """A source that cannot be read as its catalog entry says; the message names it."""


def register_reader(
    format: str,
    reader: Reader | str,
    *,
    frames: Reader | str | None = None,
    replace: bool = False,
) -> None:
    """Register ``reader`` (a callable or ``"package.module:function"``) for ``format``, and
    its frame reader ``frames`` if it has one."""
    if format in _READERS and not replace:
        raise ValueError(f"a reader for format {format!r} is already registered")
    _READERS[format] = reader
    _FRAME_READERS.pop(format, None)
    if frames is not None:
        _FRAME_READERS[format] = frames


def registered_formats() -> tuple[str, ...]:
    return tuple(sorted(_READERS))


def get_reader(format: str) -> Reader:
    if format not in _READERS:
        raise SourceError(
            f"no reader for format {format!r}; registered: {', '.join(registered_formats())}"
        )
    return _resolve(_READERS, format)


def has_frame_reader(format: str) -> bool:
    return format in _FRAME_READERS


def _resolve(registry: dict[str, Reader | str], format: str) -> Reader:
    """The registered callable, imported on first use."""
    reader = registry[format]
    if isinstance(reader, str):
        module, _, function = reader.partition(":")
        reader = getattr(importlib.import_module(module), function)
        registry[format] = reader
    return reader


def open_source(
    source: CatalogEntry | str,
    paths: Sequence[str | os.PathLike] | None = None,
    *,
    root: str | os.PathLike | None = None,
    **options: object,
) -> xr.Dataset:
    """Read a catalog entry, or ``paths`` in a format given by name, as a canonical dataset.

    For an entry, ``paths`` defaults to its files under ``root`` (the catalog's data root when
    None) and ``options`` override the entry's reader options.
    """
    if isinstance(source, str):
        if paths is None:
            raise SourceError(f"open_source({source!r}): paths are required with a format name")
        return get_reader(source)(list(paths), **options)
    files = resolve_paths(source, root) if paths is None else [Path(p) for p in paths]
    ds = get_reader(source.format)(files, **{**source.options, **options})
    return apply_variables(ds, source)


def read_source_frames(
    entry: CatalogEntry, frames: np.ndarray, *, root: str | os.PathLike | None = None
) -> xr.Dataset:
    """Frames ``frames`` of ``open_source(entry)`` in memory, through the format's frame reader
    (``has_frame_reader``)."""
    reader = _resolve(_FRAME_READERS, entry.format)
    return apply_variables(reader(resolve_paths(entry, root), frames, **entry.options), entry)


def apply_variables(ds: xr.Dataset, entry: CatalogEntry) -> xr.Dataset:
    """Keep the entry's mapped variables, check their units, rename them to canonical names
    (all of them when the entry maps none), check the level count; records the entry in the
    attributes."""
    if entry.variables:
        for source_name, target in entry.variables.items():
            if source_name not in ds:
                raise SourceError(
                    f"catalog entry {entry.name!r} ({entry.source_file}): variables.{source_name}:"
                    f" the {entry.format} reader gives no such variable; it gives"
                    f" {sorted(map(str, ds.data_vars))}"
                )
            found = ds[source_name].attrs.get("units")
            if found != target.units:
                raise SourceError(
                    f"catalog entry {entry.name!r} ({entry.source_file}): variables.{source_name}:"
                    f" units {found!r} from the reader, the entry expects {target.units!r}"
                )
        ds = ds[list(entry.variables)].rename(
            {source: target.name for source, target in entry.variables.items()}
        )
    levels = entry.levels
    if levels is not None and levels.count is not None and ds.sizes.get("lev") != levels.count:
        raise SourceError(
            f"catalog entry {entry.name!r} ({entry.source_file}): levels.count: {levels.count},"
            f" but the data have {ds.sizes.get('lev')} levels"
        )
    return ds.assign_attrs(
        catalog_entry=entry.name, fidelity=entry.fidelity, scenario=entry.scenario
    )


register_reader(
    "wrfout",
    "paramlib.data.readers.wrfout:open_wrfout",
    frames="paramlib.data.readers.wrfout:read_wrfout_frames",
)
register_reader("cesm-history", "paramlib.data.readers.cesm_history:open_cesm_history")
register_reader("srm-coarse", "paramlib.data.readers.srm_coarse:open_srm_coarse")
register_reader("zarr", "paramlib.data.readers.zarr_store:open_zarr_store")
