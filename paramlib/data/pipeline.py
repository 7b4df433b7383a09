"""``paramlib dataset build``: a recipe (paramlib.data.recipe) -> a training store (zarr).

1. open each catalog entry with its reader and select the recipe's frames, levels and
   variables, lazily (``open_selection``); every check on metadata is made here, before
   anything is read: missing variables, units, slices beyond the data, and sources whose
   selected levels differ (joined, they would pad the store with NaN levels) unless the recipe
   interpolates them onto its own levels (``levels.interpolate``);
2. one pass over the sources (`SourcePass`): one task per block of frames (a chunk along time)
   reads the block, derives its columns as numpy (``derive_columns``: previous frames, MSKF call
   state, stacking to (sample, lev)), screens them (``column_flags``: non-finite values, values
   outside the QC range, not a fresh MSKF call, the balance predicate) and writes the columns no
   check dropped to its shard in the temporary store's scratch folder; only two booleans per
   column come back, with counts per check;
3. the columns kept are chosen from these booleans in numpy (``choose_columns``: balance draws
   over the whole source) and split by run or by contiguous frame blocks with a gap
   (``time_blocks``), so every split's size is known without reading the sources again;
4. each split's arrays are created at that size, and one task per batch of zarr chunks copies
   its columns from the shards, with the train split's normalisation moments (``Moments``).

The store is the one the earlier two-pass pipeline wrote (tests/test_pipeline_fused.py). Memory
is set by the blocks (a chunk of frames of one source, a few MiB per variable) and the write
batches, not by the size of the input. The dask scheduler is whatever is active: the CLI starts
a distributed cluster (paramlib.data.build_cli); tests may use the synchronous one.
"""

from __future__ import annotations

import functools
import operator
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import xarray as xr
import zarr
from numcodecs import Blosc

from paramlib.catalog import CatalogEntry, load_catalog, resolve_paths
from paramlib.data.canonical import GRID_DIMS, LEV, SAMPLE, stack_columns
from paramlib.data.hashes import BackgroundHashes
from paramlib.data.readers import has_frame_reader, open_source, read_source_frames
from paramlib.data.recipe import SPLITS, Balance, IndexSlice, Recipe
from paramlib.data.store import (
    atomic_store,
    fingerprint,
    package_versions,
    remove_stale_temporaries,
    stored_fingerprint,
    write_attrs,
)
from paramlib.guards import check_output_path

if TYPE_CHECKING:
    from paramlib.train.signals import StopRequest

OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
CALL_STATE = "mskf_call_state"
# Tasks per compute (blocks in the pass, write batches of BATCH_CHUNKS zarr chunks in the copy):
# the task graph stays bounded whatever the input size, and a stop signal waits for one compute.
BATCH_CHUNKS = 16
# Memory held per open file, which would otherwise grow with the number of input files:
# netCDF-C's per-variable chunk cache (64 MiB by default, kept while the file is open; the
# pipeline reads each chunk once per pass, so it only held memory: 2.5 GB for the 16-file
# `large` set) and xarray's cache of open files (128 by default, a few MB of HDF5 metadata
# each; reopening a file costs milliseconds).
NETCDF_CHUNK_CACHE_BYTES = 0
OPEN_FILES = 8
# Rows per float64 copy while computing moments.
MOMENT_ROWS = 1024
# The pass's shards, inside the temporary store: removed with it on failure or signal.
SCRATCH = ".scratch"
SHARD_CODEC = Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)
# Levels of two sources closer than this (relative) are the same level: float32 rounding of
# one grid, not two grids (a 0.1 % difference in WRF's ZNU is refused).
LEVEL_RTOL = 1e-6


@contextmanager
def bounded_file_memory() -> Iterator[None]:
    """The limits above for files opened inside the block; the previous settings after it."""
    import netCDF4

    previous = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(NETCDF_CHUNK_CACHE_BYTES)
    try:
        with xr.set_options(file_cache_maxsize=OPEN_FILES):
            yield
    finally:
        netCDF4.set_chunk_cache(*previous)


class PipelineError(ValueError):
    """A recipe that cannot be built from its sources; the message names source and variable."""


class BuildInterrupted(Exception):
    """A stop signal arrived; the build stopped between two computes (its temporary store,
    shards included, is removed: nothing is left at the target but what was there)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@dataclass(frozen=True)
class BuildResult:
    path: Path
    up_to_date: bool  # True: the store matched the recipe and sources; nothing was done
    samples: dict[str, int]
    seconds: float


# --- pure numerics ----------------------------------------------------------------------------


def time_blocks(n_frames: int, fractions: Mapping[str, float], gap: int) -> dict[str, np.ndarray]:
    """Frame indices of each split: contiguous blocks train | gap | val | gap | test, sized by
    ``fractions`` of the frames left after the gaps, so no two splits hold neighbouring frames."""
    present = [name for name in SPLITS if fractions.get(name, 0.0) > 0]
    usable = n_frames - gap * (len(present) - 1)
    if usable < len(present):
        raise PipelineError(
            f"split by time: {n_frames} frames cannot hold {len(present)} blocks with gap {gap}"
        )
    edges = np.round(np.cumsum([fractions[name] for name in present]) * usable).astype(int)
    sizes = np.maximum(np.diff(edges, prepend=0), 1)  # every split named gets a frame
    if sizes.sum() > usable:
        raise PipelineError(
            f"split by time: {n_frames} frames are too few for fractions {dict(fractions)}"
            f" with gap {gap}"
        )
    blocks, start = {}, 0
    for name, size in zip(present, sizes, strict=True):
        blocks[name] = np.arange(start, start + size)
        start += size + gap
    return blocks


def choose_columns(
    dropped: np.ndarray,
    counts: Mapping[str, int],
    positive: np.ndarray | None,
    balance: Balance | None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Columns to keep (indices) and counts: the columns not ``dropped`` (``counts`` says by which
    flag); then, with ``balance``, at most ``ratio`` x (number of positive columns) negatives
    are kept, drawn with its seed."""
    counts = {"columns": len(dropped), **counts}
    kept = np.flatnonzero(~dropped)
    if balance is not None and positive is not None:
        pos = kept[positive[kept]]
        neg = kept[~positive[kept]]
        n_neg = min(len(neg), int(round(balance.ratio * len(pos))))
        neg = np.random.default_rng(balance.seed).choice(neg, size=n_neg, replace=False)
        counts["balance_positive"] = len(pos)
        counts["balance_dropped"] = len(kept) - len(pos) - n_neg
        kept = np.sort(np.concatenate([pos, neg]))
    counts["kept"] = len(kept)
    return kept, counts


# --- stages -----------------------------------------------------------------------------------


class Selection:
    """One source's part of a recipe: ``data``, its frames, levels and variables, lazily (dask);
    ``frames``, the indices of those frames along the source's time; and `read`, a block of
    them in memory through the reader's frame reader, narrowed the same way. A plain class:
    dask passes it to the tasks whole instead of looking inside for collections."""

    def __init__(
        self,
        recipe: Recipe,
        entry: CatalogEntry,
        root: str | os.PathLike | None,
        data: xr.Dataset,
        frames: np.ndarray,
        where: str,
    ) -> None:
        self.recipe, self.entry, self.root = recipe, entry, root
        self.data, self.frames, self.where = data, frames, where
        self.variables = list(data.data_vars)
        self.readable = has_frame_reader(entry.format)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for workers in other processes: without the lazy data where `read` does
        without it (its graph covers every file)."""
        return dict(self.__dict__, data=None) if self.readable else self.__dict__

    def read(self, start: int, stop: int) -> xr.Dataset:
        """Frames ``start`` to ``stop`` of ``data``, in memory (only where ``readable``)."""
        ds = read_source_frames(self.entry, self.frames[start:stop], root=self.root)
        return select_levels(ds, self.recipe, self.where)[self.variables]


def open_selection(
    recipe: Recipe, entry: CatalogEntry, root: str | os.PathLike | None
) -> Selection:
    """The entry's data (time, y, x, lev) with the recipe's frames and levels and the variables
    its columns are derived from, lazily, and a description of the source for messages. Every
    check a recipe can fail on its sources' metadata is made here, before anything is read."""
    ds = open_source(entry, root=root)
    files = ", ".join(map(str, resolve_paths(entry, root)))
    where = f"source {entry.name!r} ({files})"
    wanted = wanted_variables(recipe)
    missing = sorted({v for v in (*wanted, *recipe.sampling.previous) if v not in ds})
    if missing:
        raise PipelineError(
            f"{where}: variables {missing} are not in the data; it has {sorted(map(str, ds))}"
        )
    for var, expected in recipe.units.items():
        found = ds[var.removesuffix("_prev")].attrs.get("units")
        if found != expected:
            raise PipelineError(
                f"{where}: variable {var!r} has units {found!r}, expected {expected!r}"
            )
    times = checked_slice(recipe.times, ds.sizes["time"], "times", "frames", where)
    frames = np.arange(ds.sizes["time"])[times]
    ds = ds.isel(time=times)
    if entry.name in recipe.source_fractions:
        part = recipe.source_fractions[entry.name].of(ds.sizes["time"])
        frames, ds = frames[part], ds.isel(time=part)
    ds = select_levels(ds, recipe, where)
    if ds.sizes.get("time", 0) <= int(with_previous(recipe)) or ds.sizes.get(LEV, 1) == 0:
        raise PipelineError(
            f"{where}: the recipe's times {recipe.times}"
            f" {recipe.source_fractions.get(entry.name, '')} and levels {recipe.levels} select"
            f" nothing (the data have {dict(ds.sizes)}"
            + (
                "; the first frame goes, it has no previous frame)"
                if with_previous(recipe)
                else ")"
            )
        )
    data = ds[list(dict.fromkeys([*wanted, *history_variables(recipe, ds)]))]
    return Selection(recipe, entry, root, data, frames, where)


def select_levels(ds: xr.Dataset, recipe: Recipe, where: str) -> xr.Dataset:
    """The recipe's levels of ``ds``: an index slice, or interpolated onto named levels."""
    if LEV in ds.dims and recipe.levels.interpolate:
        return interpolate_levels(ds, recipe.levels.interpolate, where)
    if LEV in ds.dims:
        return ds.isel(
            {LEV: checked_slice(recipe.levels, ds.sizes[LEV], "levels", "levels", where)}
        )
    return ds


def wanted_variables(recipe: Recipe) -> list[str]:
    """The variables of the store's columns before previous frames, and the balance variable."""
    wanted = [*recipe.inputs, *recipe.targets]
    if recipe.sampling.balance:
        wanted.append(recipe.sampling.balance.variable)
    return list(dict.fromkeys(wanted))


def with_previous(recipe: Recipe) -> bool:
    """Whether columns need the previous frame (their first frame then goes)."""
    return recipe.sampling.mskf_fresh or bool(recipe.sampling.previous)


def derive_columns(ds: xr.Dataset, recipe: Recipe, where: str) -> xr.Dataset:
    """Columns (sample, lev) of an `open_selection`, lazily (`derive_frames`, stacked)."""
    return stack_columns(derive_frames(ds, recipe, where))


def derive_frames(
    ds: xr.Dataset, recipe: Recipe, where: str, before: xr.Dataset | None = None
) -> xr.Dataset:
    """The columns (time, y, x, lev) of an `open_selection` (lazy) or of a block of its frames
    (numpy): the recipe's variables, previous frames and ``mskf_call_state`` added. Where
    previous frames are needed, ``before`` holds the frame before the block's first (only the
    variables the previous frames are taken from: `history_variables`); without it the first
    frame of ``ds`` goes, it has no previous frame."""
    if with_previous(recipe):
        history = ds[history_variables(recipe, ds)]
        if before is None:
            ds = ds.isel(time=slice(1, None))
        else:
            history = xr.concat([before, history], dim="time")
        earlier = history.isel(time=slice(0, -1)).assign_coords(time=ds["time"].values)
    selected = ds[wanted_variables(recipe)]
    for name in recipe.sampling.previous:
        long_name = f"{history[name].attrs.get('long_name', name)}, previous frame"
        selected = attach(selected, f"{name}_prev", earlier[name].assign_attrs(long_name=long_name))
    if recipe.sampling.mskf_fresh:
        from paramlib.data.readers.wrfout import mskf_call_states

        try:
            selected = attach(selected, CALL_STATE, mskf_call_states(history))
        except (KeyError, ValueError) as error:
            raise PipelineError(
                f"{where}: sampling.mskf_fresh needs WRF MSKF data (nca, DT, CUDT): {error}"
            ) from error
    selected.attrs = {}
    return selected


def history_variables(recipe: Recipe, ds: xr.Dataset) -> list[str]:
    """The variables of ``ds`` previous frames are taken from (MSKF call state: nca; data
    without it are refused by ``mskf_call_states``, naming what is missing)."""
    names = [*recipe.sampling.previous, *(["nca"] if recipe.sampling.mskf_fresh else [])]
    return [name for name in dict.fromkeys(names) if name in ds]


def attach(ds: xr.Dataset, name: str, da: xr.DataArray) -> xr.Dataset:
    """``ds`` with ``da`` added as ``name``, refusing (ValueError) coordinates that differ:
    plain assignment would reindex ``da`` to ``ds``, silently NaN where labels differ."""
    xr.align(ds, da, join="exact", copy=False)
    return ds.assign({name: da})


def checked_slice(bounds: IndexSlice, n: int, key: str, what: str, where: str) -> slice:
    """The recipe's index slice ``key`` of a source with ``n`` ``what``; a bound beyond them is
    an error, not clamped (``stop: 100`` of 40 levels would silently keep 40)."""
    for name, value, limit in (("start", bounds.start, n - 1), ("stop", bounds.stop, n)):
        if value is not None and value > limit:
            raise PipelineError(
                f"{where}: recipe key '{key}.{name}' is {value}, but the source has {n} {what}"
                f" (expected {name} <= {limit})"
            )
    return bounds.as_slice()


def interpolate_levels(ds: xr.Dataset, targets: tuple[float, ...], where: str) -> xr.Dataset:
    """``ds`` linearly interpolated in its ``lev`` coordinate onto ``targets`` (the recipe's
    ``levels.interpolate``): every target inside the source's levels (no extrapolation), in
    the source's order (surface first)."""
    lev = ds[LEV].values.astype(float)
    units = ds[LEV].attrs.get("units", "?")
    outside = [v for v in targets if not lev.min() <= v <= lev.max()]
    if outside:
        raise PipelineError(
            f"{where}: levels.interpolate {outside} lie outside the source's levels"
            f" {lev[0]:g} (lowest) to {lev[-1]:g} (top) [{units}]; no extrapolation"
        )
    if len(targets) > 1 and np.sign(targets[1] - targets[0]) != np.sign(lev[-1] - lev[0]):
        raise PipelineError(
            f"{where}: levels.interpolate must run surface first like the source's levels"
            f" ({lev[0]:g} lowest, {lev[-1]:g} top [{units}]), got {list(targets)}"
        )
    # Other per-level labels (WRF's level numbers) mean nothing between levels.
    labels = [name for name, c in ds.coords.items() if LEV in c.dims and name != LEV]
    interpolated = ds.drop_vars(labels).interp({LEV: np.asarray(targets)}, method="linear")
    return interpolated.assign_coords({LEV: interpolated[LEV].assign_attrs(ds[LEV].attrs)})


def check_same_levels(columns: Mapping[str, xr.Dataset], files: Mapping[str, list[Path]]) -> None:
    """Refuse sources whose selected levels (``lev`` values and units) differ: joined, they would
    give a store with the union of their levels, NaN where a source has none."""
    with_levels = [(name, ds[LEV]) for name, ds in columns.items() if LEV in ds.dims]
    if not with_levels:
        return
    first, ref = with_levels[0]
    for name, lev in with_levels[1:]:
        pair = f"{first!r} ({_names(files[first])}) and {name!r} ({_names(files[name])})"
        units = (ref.attrs.get("units"), lev.attrs.get("units"))
        if units[0] != units[1]:
            raise PipelineError(
                f"sources disagree on the vertical coordinate: {pair} have levels in units"
                f" {units[0]!r} and {units[1]!r}"
            )
        a, b = ref.values.astype(float), lev.values.astype(float)
        n = min(a.size, b.size)
        differ = np.flatnonzero(~np.isclose(a[:n], b[:n], rtol=LEVEL_RTOL, atol=0.0))
        if a.size == b.size and differ.size == 0:
            continue
        i = int(differ[0]) if differ.size else n
        found = [f"{x[i]:.7g}" if i < x.size else "none" for x in (a, b)]
        raise PipelineError(
            f"sources disagree on the vertical coordinate: {pair} have {a.size} and {b.size}"
            f" levels; first difference at selected level {i} (0 = lowest): {LEV} {found[0]}"
            f" vs {found[1]} [{units[0]}]. Select levels they share (levels: {{start, stop}})"
            " or interpolate onto named levels (levels: {interpolate: [...]})"
        )


def check_finite_somewhere(name: str, counts: Mapping[str, int], files: list[Path]) -> None:
    """Refuse a source in which a variable is non-finite in every column: a broken file or
    variable, which QC would otherwise turn into a source that silently adds no column."""
    for reason, n in counts.items():
        if reason.startswith("nonfinite.") and n == counts["columns"] > 0:
            variable = reason.removeprefix("nonfinite.")
            raise PipelineError(
                f"source {name!r} ({_names(files)}): variable {variable!r} is NaN or infinite in"
                f" all {n} columns; the file or its {variable} is broken"
            )


def _names(paths: list[Path]) -> str:
    return ", ".join(map(str, paths))


def column_flags(ds: xr.Dataset, recipe: Recipe) -> dict[str, Any]:
    """``dropped``, one boolean per column (any reason to drop it), ``counts`` of columns per
    reason, and ``positive``, the balance predicate per column (None without balancing), of
    the columns of one block, stacked (sample, lev) or not (time, y, x, lev; the booleans then
    in the order stacking gives). Only these two booleans per column are kept, not one per
    reason."""
    flags: dict[str, xr.DataArray] = {}
    columns = [d for d in (SAMPLE, *GRID_DIMS) if d in ds.dims]
    for var in recipe.variables:
        da = ds[var]
        per_column = [d for d in da.dims if d not in columns]
        flags[f"nonfinite.{var}"] = (~np.isfinite(da)).any(per_column)
        if var in recipe.ranges:
            low, high = recipe.ranges[var]
            flags[f"out_of_range.{var}"] = ((da < low) | (da > high)).any(per_column)
    if CALL_STATE in ds:
        flags["not_fresh"] = ds[CALL_STATE] != 0
    positive = None
    balance = recipe.sampling.balance
    if balance:
        da = ds[balance.variable]
        positive = OPS[balance.op](da, balance.value).any([d for d in da.dims if d not in columns])
    dropped = functools.reduce(operator.or_, flags.values())
    return {
        "dropped": dropped.transpose(*columns).data.ravel(),
        "counts": {name: flag.sum().data for name, flag in flags.items()},
        "positive": None if positive is None else positive.transpose(*columns).data.ravel(),
    }


def compressors(name: str) -> tuple:
    """zarr codecs of a recipe's ``compression``."""
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        "lz4": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
        "zstd": (ZstdCodec(level=3),),
        "none": (),
    }[name]


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations per variable (per level), combinable across
    batches (Chan et al.'s pairwise update), in float64."""

    count: int
    mean: dict[str, np.ndarray]
    m2: dict[str, np.ndarray]

    @classmethod
    def of(cls, values: Mapping[str, np.ndarray]) -> Moments:
        """The moments of arrays (sample, ...) of one batch, in float64 (QC let only finite
        values in: no NaN-skipping copies)."""
        mean, m2 = {}, {}
        count = len(next(iter(values.values())))
        for name, array in values.items():
            mean[name] = np.atleast_1d(array.mean(0, dtype=np.float64))
            # Deviations a few thousand rows at a time: float64 copies that stay in cache
            # (whole-batch copies took longer than the batch's zarr write).
            m2[name] = sum(
                (
                    ((array[i : i + MOMENT_ROWS].astype(np.float64) - mean[name]) ** 2).sum(0)
                    for i in range(0, count, MOMENT_ROWS)
                ),
                start=np.zeros_like(mean[name]),
            )
        return cls(count, mean, m2)

    def combine(self, other: Moments) -> Moments:
        n = self.count + other.count
        mean, m2 = {}, {}
        for name, a in self.mean.items():
            delta = other.mean[name] - a
            mean[name] = a + delta * (other.count / n)
            m2[name] = self.m2[name] + other.m2[name] + delta**2 * (self.count * other.count / n)
        return Moments(n, mean, m2)

    def as_stats(self) -> dict[str, dict[str, list[float]]]:
        """The store's ``normalisation`` attribute: mean and standard deviation (ddof 0)."""
        return {
            name: {
                "mean": self.mean[name].astype(float).tolist(),
                "std": np.sqrt(self.m2[name] / self.count).astype(float).tolist(),
            }
            for name in self.mean
        }


def compute(*things: Any, label: str, stop: StopRequest | None = None) -> tuple:
    """dask.compute with a progress bar: distributed's when a client is active, else dask's.
    Raises `BuildInterrupted` instead when ``stop`` caught a signal: the build stops between
    two computes, so no task still writes into the temporary store being removed."""
    if stop is not None and stop.signal is not None:
        raise BuildInterrupted(stop.name)
    print(f"[paramlib dataset] {label}", flush=True)
    try:
        from distributed import default_client, progress

        client = default_client()
    except (ImportError, ValueError):
        from dask.diagnostics import ProgressBar

        with ProgressBar(dt=0.1):
            return dask.compute(*things)
    futures = client.compute(list(things))
    progress(futures)
    print(flush=True)
    return tuple(client.gather(futures))


# --- the build ------------------------------------------------------------------------------


def build_store(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    catalog_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    force: bool = False,
    rehash: bool = False,
    stop: StopRequest | None = None,
) -> BuildResult:
    """Build the recipe's store at ``out`` unless one built from the same recipe, catalog entries
    and source files is there (then nothing is done). The sources' sha256 come from the hash
    cache (`paramlib.data.hashes`) unless ``rehash``. On failure, or a signal caught by
    ``stop`` (`BuildInterrupted`), nothing is left at ``out`` but what was there before."""
    started = time.perf_counter()
    out = check_output_path(out, "store path", "dir")
    remove_stale_temporaries(out, lambda line: print(f"[paramlib dataset] {line}", flush=True))
    catalog = load_catalog(catalog_dir, root, check_paths=False)
    unknown = [name for name in recipe.sources if name not in catalog]
    if unknown:
        raise PipelineError(
            f"{recipe.path}: sources {unknown} are not catalog entries ({', '.join(catalog)})"
        )
    entries = [catalog[name] for name in recipe.sources]
    files = {entry.name: resolve_paths(entry, root) for entry in entries}
    paths = [p for paths in files.values() for p in paths]
    if out.exists() and stored_fingerprint(out) is None:
        # Replacing is only safe for a store this pipeline wrote: never remove anything else.
        raise PipelineError(
            f"{out}: exists and is not a paramlib training store (no fingerprint attribute);"
            " remove it or choose another output path"
        )
    pending = None
    if not force and out.exists():
        # Hashed first (on the workers when there is a cluster): the check needs them.
        hashes = BackgroundHashes(paths, threads=4, rehash=rehash).result()
        key = fingerprint(recipe, entries, hashes)
        if stored_fingerprint(out) == key:
            print(f"[paramlib dataset] {out}: up to date (fingerprint {key[:12]})")
            return BuildResult(out, True, {}, time.perf_counter() - started)
    else:  # no fingerprint to compare: the hashes overlap the pass
        pending = BackgroundHashes(paths, rehash=rehash)
    try:
        with bounded_file_memory():
            return _build(
                recipe,
                out,
                entries,
                files,
                pending.result if pending else lambda: hashes,
                started,
                root,
                stop,
            )
    except (OSError, RuntimeError) as error:
        # Raised while computing: a file readable at open but broken inside (truncated data),
        # or the store's disk full (its path was checked writable before).
        raise PipelineError(
            f"{recipe.path}: reading the sources or writing {out} failed"
            f" ({type(error).__name__}: {error});"
            f" files: {[str(p) for p in paths]}"
        ) from error
    finally:
        if pending:
            pending.cancel()  # a failed build does not wait for them; done otherwise


def _build(
    recipe: Recipe,
    out: Path,
    entries: list[CatalogEntry],
    files: Mapping[str, list[Path]],
    hashes_of: Callable[[], Mapping[str, str]],
    started: float,
    root: str | os.PathLike | None,
    stop: StopRequest | None,
) -> BuildResult:
    sources = [SourcePass(recipe, open_selection(recipe, entry, root)) for entry in entries]
    # Lazy columns: their coordinates (times, levels) only; the data are read block by block.
    columns = {entry.name: s.columns for entry, s in zip(entries, sources, strict=True)}
    check_same_levels(columns, files)
    with atomic_store(out) as tmp:
        kept, qc = {}, {}
        for index, (name, source) in enumerate(zip(columns, sources, strict=True)):
            source.run(tmp / SCRATCH / str(index), name, stop)
            counts = source.counts | {"columns": len(source.dropped)}
            check_finite_somewhere(name, counts, files[name])
            kept[name], qc[name] = choose_columns(
                source.dropped, source.counts, source.positive, recipe.sampling.balance
            )
            found = {reason: n for reason, n in qc[name].items() if n or reason == "kept"}
            print(f"[paramlib dataset] {name}: {found} (checks that dropped nothing not shown)")

        parts = _split(recipe, columns, kept)
        samples = {split: sum(len(i) for _, i in items) for split, items in parts.items()}
        for split, n in samples.items():
            if n == 0 and parts[split]:
                raise PipelineError(
                    f"{recipe.path}: split {split!r} selects no column from"
                    f" {[name for name, _ in parts[split]] or 'no source'} after QC and sampling"
                    f" (counts: {qc})"
                )
        passes = dict(zip(columns, sources, strict=True))
        splits = {split: items for split, items in parts.items() if samples[split]}
        for split, items in splits.items():
            _create_split(columns, items, tmp, split, recipe)
        moments = _compact(
            {
                split: [(passes[name], index) for name, index in items]
                for split, items in splits.items()
            },
            tmp,
            recipe,
            stop=stop,
        )
        stats = None if moments is None else moments.as_stats()
        shutil.rmtree(tmp / SCRATCH)
        hashes = hashes_of()
        key = fingerprint(recipe, entries, hashes)
        write_attrs(
            tmp,
            {
                "paramlib_store_format": 1,
                "name": recipe.name,
                "description": recipe.description,
                "recipe": recipe.text,
                "fingerprint": key,
                "inputs": [v for v in recipe.variables if v not in recipe.targets],
                "targets": list(recipe.targets),
                "runs": list(recipe.sources),
                "sources": {
                    entry.name: {
                        "format": entry.format,
                        "catalog_file": str(entry.source_file),
                        "files": {str(p): hashes[str(p)] for p in files[entry.name]},
                    }
                    for entry in entries
                },
                "normalisation": stats,
                "split": _split_definition(recipe, columns),
                "samples": samples,
                "qc": qc,
                "versions": package_versions(),
            },
        )
    seconds = time.perf_counter() - started
    print(f"[paramlib dataset] {out}: built in {seconds:.1f} s, samples {samples}")
    return BuildResult(out, False, samples, seconds)


def release_freed_memory() -> None:
    """Hand the memory a block freed back to the system (glibc's malloc_trim; no-op elsewhere).
    glibc keeps it in per-thread arenas, fragmented: the pass's peak, and the copy's buffers
    on top of what the pass left, grew with the number of blocks (+11 % from 8 to 16 files)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SourcePass:
    """The single pass over one source: a task per block of frames (a chunk of its selection
    along time) that reads the block, derives its columns, screens them (`column_flags`) and
    writes the columns no check dropped to the block's shard in the store's scratch folder (one
    compressed file per variable, `write_shard`); only the per-column booleans come back. Which
    of those columns the store keeps (balance draws over the whole source) and where they go is
    decided afterwards and `_compact` copies them from the shards: the sources are read once.

    A plain class, not a dataclass: dask passes it to the tasks whole instead of looking inside
    for collections (the selection is a lazy dataset each task computes a block of)."""

    def __init__(self, recipe: Recipe, selection: Selection) -> None:
        self.recipe, self.source, self.where = recipe, selection, selection.where
        self.selection = selection.data
        first = int(with_previous(recipe))  # the first frame has no previous frame
        chunked = (
            v.chunks[v.dims.index("time")]
            for v in self.selection.data_vars.values()
            if v.chunks is not None and "time" in v.dims
        )
        chunks = next(chunked, (self.selection.sizes["time"],))
        self.edges = np.unique(np.clip(np.cumsum((0, *chunks)), first, None)).tolist()
        self.shards: list[Path] = []
        self.dropped = np.zeros(0, bool)
        self.positive: np.ndarray | None = None
        self.counts: dict[str, int] = {}
        self.shard_starts = np.zeros(1, np.int64)  # the first shard row of each block
        # The columns, lazily (labels, levels); their dtypes are the store's: interpolating a
        # block of numpy float32 values gives float64, dask keeps float32.
        self.columns = derive_columns(self.selection, recipe, self.where)
        self.dtypes = {name: self.columns[name].dtype for name in recipe.variables}
        self.history = history_variables(recipe, self.selection)

    def __getstate__(self) -> dict[str, Any]:
        """What a task needs (distributed pickles it for workers in other processes): not the
        lazy columns, nor the lazy selection where blocks are read without it."""
        state = dict(self.__dict__, columns=None)
        return dict(state, selection=None) if self.source.readable else state

    def read(self, start: int, stop: int) -> tuple[xr.Dataset, xr.Dataset | None]:
        """Frames ``start`` to ``stop`` in memory, and the frame before them with the variables
        previous frames come from (None when the recipe takes none)."""
        first = start - 1 if with_previous(self.recipe) else start
        if self.source.readable:  # no dask graph; the frame before read apart (it is often
            # in the file before: read together, both files' frames were joined by a copy)
            before = self.source.read(first, start)[self.history] if start > first else None
            return self.source.read(start, stop), before
        # The frame before: only the variables previous frames need (reading all of them
        # across the chunk boundary doubled a block's time). The block's graph runs in this
        # task, as numpy: no task per chunk and operation.
        return dask.compute(
            self.selection.isel(time=slice(start, stop)),
            self.selection[self.history].isel(time=slice(first, start)) if start > first else None,
            scheduler="synchronous",
        )

    def block(self, k: int, shard: Path) -> dict[str, Any]:
        """Read, derive, screen and write block ``k`` (a task)."""
        frames, before = self.read(self.edges[k], self.edges[k + 1])
        grid = derive_frames(frames, self.recipe, self.where, before)
        found = column_flags(grid, self.recipe)
        keep = ~found["dropped"].reshape([grid.sizes[d] for d in GRID_DIMS])
        # exist_ok: distributed runs a task again when its worker is lost (a SLURM job's
        # walltime); the new attempt overwrites every file of the block.
        shard.mkdir(parents=True, exist_ok=True)
        for name in self.recipe.variables:
            # The kept columns gathered from the grid in one copy (stacking first copied all).
            values = grid[name].transpose(*GRID_DIMS, ...).values[keep]
            write_shard(shard / name, values.astype(self.dtypes[name], copy=False))
        found["counts"] = {reason: int(n) for reason, n in found["counts"].items()}
        del frames, before, grid
        release_freed_memory()
        return found

    def run(self, scratch: Path, name: str, stop: StopRequest | None) -> None:
        """Every block, ``BATCH_CHUNKS`` tasks per compute; the flags joined, counts summed."""
        n = len(self.edges) - 1
        self.shards = [scratch / str(k) for k in range(n)]
        found: list[dict[str, Any]] = []
        for first in range(0, n, BATCH_CHUNKS):
            blocks = range(first, min(first + BATCH_CHUNKS, n))
            tasks = [dask.delayed(self.block, pure=False)(k, self.shards[k]) for k in blocks]
            frames = f"frames {self.edges[blocks[0]]}-{self.edges[blocks[-1] + 1]}"
            label = f"{name}: reading, quality control, {frames} of {self.edges[-1]}"
            found.extend(compute(*tasks, label=label, stop=stop))
        self.dropped = np.concatenate([f["dropped"] for f in found])
        if self.recipe.sampling.balance is not None:
            self.positive = np.concatenate([f["positive"] for f in found])
        self.counts = {
            reason: sum(f["counts"][reason] for f in found) for reason in found[0]["counts"]
        }
        rows = [int(np.count_nonzero(~f["dropped"])) for f in found]
        self.shard_starts = np.cumsum([0, *rows])

    def pieces(self, index: np.ndarray) -> list[tuple[Path, np.ndarray]]:
        """Columns ``index`` (sorted, none dropped) as (shard, rows of it), in order."""
        position = np.cumsum(~self.dropped)[index] - 1  # among the columns kept by QC
        shard = np.searchsorted(self.shard_starts, position, side="right") - 1
        cuts = np.flatnonzero(np.diff(shard)) + 1
        return [
            (self.shards[int(s[0])], p - self.shard_starts[int(s[0])])
            for s, p in zip(np.split(shard, cuts), np.split(position, cuts), strict=True)
            if len(s)
        ]


def _create_split(
    columns: Mapping[str, xr.Dataset],
    items: list[tuple[str, np.ndarray]],
    store: Path,
    split: str,
    recipe: Recipe,
) -> None:
    """The split's group with its arrays (sizes, chunks, codecs, attributes) and coordinates;
    `_compact` writes the data. Made by ``to_zarr`` from the labels of the columns chosen and
    empty stand-ins of the variables (indexing the lazy columns would build a large graph)."""
    import dask.array

    run_ids = {name: i for i, name in enumerate(recipe.sources)}
    ds = xr.concat(
        [
            columns[name]
            .drop_vars(list(columns[name].data_vars))
            .isel({SAMPLE: index})
            .assign_coords(run=(SAMPLE, np.full(len(index), run_ids[name], "int16")))
            for name, index in items
        ],
        dim=SAMPLE,
        # Levels were checked equal; "exact" keeps any other label mismatch an error.
        join="exact",
        coords="minimal",
        compat="equals",
    )
    first = columns[items[0][0]]
    for name in recipe.variables:  # concat keeps the first dataset's attributes
        var = first[name].variable
        shape = (ds.sizes[SAMPLE], *var.shape[1:])  # sample first (stack_columns)
        empty = dask.array.empty(shape, dtype=var.dtype, chunks=shape)
        ds[name] = xr.Variable(var.dims, empty, var.attrs)
    ds = _portable(ds)
    chunked = ds.chunk({SAMPLE: recipe.chunk_samples})
    codecs = compressors(recipe.compression)
    chunked.to_zarr(
        store,
        group=split,
        mode="w",
        compute=False,  # the arrays are created, only the numpy coordinates written
        consolidated=False,
        encoding={name: {"compressors": codecs} for name in ds},
    )
    group = zarr.open_group(str(store), path=split, mode="r+")
    for name, coord in chunked.coords.items():
        if coord.chunks is not None:  # chunked with the data, so not written yet
            group[str(name)][...] = ds[name].values  # in memory: labels, not data


def _compact(
    splits: Mapping[str, list[tuple[SourcePass, np.ndarray]]],
    store: Path,
    recipe: Recipe,
    *,
    stop: StopRequest | None,
) -> Moments | None:
    """Copy each split's columns from the shards into its arrays, a task per ``BATCH_CHUNKS``
    zarr chunks (chunk-aligned: no two tasks write one chunk), ``BATCH_CHUNKS`` tasks per
    compute, the splits' tasks together (a small split is no compute of one task); with the
    train split's moments of every variable, from the same copies."""
    batch = BATCH_CHUNKS * recipe.chunk_samples
    tasks: list[tuple[str, int, list[tuple[Path, np.ndarray]]]] = []
    for split, items in splits.items():
        offset, current, filled = 0, [], 0
        for shard, rows in (piece for source, index in items for piece in source.pieces(index)):
            while len(rows):
                take = rows[: batch - filled]
                current.append((shard, take))
                filled += len(take)
                rows = rows[len(take) :]
                if filled == batch:
                    tasks.append((split, offset, current))
                    offset, current, filled = offset + batch, [], 0
        if current:
            tasks.append((split, offset, current))
    ends = {split: start + sum(len(rows) for _, rows in copies) for split, start, copies in tasks}
    moments = None
    for first in range(0, len(tasks), BATCH_CHUNKS):
        chosen = tasks[first : first + BATCH_CHUNKS]
        spans: dict[str, list[int]] = {}
        for split, start, _ in chosen:
            spans.setdefault(split, []).append(start)
        label = "writing " + ", ".join(
            f"{split} samples {starts[0]}-{min(starts[-1] + batch, ends[split])} of {ends[split]}"
            + (" and statistics" if split == "train" else "")
            for split, starts in spans.items()
        )
        found = compute(
            *[
                dask.delayed(_copy_batch, pure=False)(
                    store, split, start, copies, recipe, split == "train"
                )
                for split, start, copies in chosen
            ],
            label=label,
            stop=stop,
        )
        for part in found:
            if part is not None:
                moments = part if moments is None else moments.combine(part)
    return moments


def write_shard(path: Path, values: np.ndarray) -> None:
    """One variable's columns of a block, compressed (lz4, fast): a block's shard is about as
    large as its input, and writing it uncompressed and reading it back took longer than
    compressing it (a third of the bytes here: convective tendencies are mostly zeros)."""
    path.write_bytes(SHARD_CODEC.encode(np.ascontiguousarray(values)))


def read_shard(path: Path, dtype: np.dtype, tail: tuple[int, ...]) -> np.ndarray:
    """The columns `write_shard` wrote, given their dtype and shape after the first dim."""
    return np.frombuffer(SHARD_CODEC.decode(path.read_bytes()), dtype).reshape(-1, *tail)


def _copy_batch(
    store: Path,
    split: str,
    start: int,
    copies: list[tuple[Path, np.ndarray]],
    recipe: Recipe,
    with_moments: bool,
) -> Moments | None:
    """Rows of shards into the split's arrays from ``start`` on (a task); their moments."""
    group = zarr.open_group(str(store), path=split, mode="r+")
    count = sum(len(rows) for _, rows in copies)
    moments = Moments(count, {}, {})
    for name in recipe.variables:  # one variable in memory at a time
        array = group[name]
        values = np.concatenate(
            [read_shard(shard / name, array.dtype, array.shape[1:])[rows] for shard, rows in copies]
        )
        array[start : start + count] = values
        if with_moments:
            found = Moments.of({name: values})
            moments.mean.update(found.mean)
            moments.m2.update(found.m2)
    return moments if with_moments else None


def _split(
    recipe: Recipe, columns: Mapping[str, xr.Dataset], kept: Mapping[str, np.ndarray]
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per split, the (source, column indices) that go into it."""
    parts: dict[str, list[tuple[str, np.ndarray]]] = {split: [] for split in SPLITS}
    for name, ds in columns.items():
        sample_times = ds["time"].values[kept[name]]
        for split, frames in _source_blocks(recipe, name, ds).items():
            parts[split].append((name, kept[name][np.isin(sample_times, frames)]))
    return parts


def _source_blocks(recipe: Recipe, name: str, ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The frames (times) of one source in each split it feeds."""
    frames = np.unique(ds["time"].values)
    split = recipe.split
    if split.by == "time":
        fractions = split.fractions
    elif name in split.runs["train"] and split.val_fraction > 0:
        fractions = {"train": 1.0 - split.val_fraction, "val": split.val_fraction}
    else:
        return {next(s for s in SPLITS if name in split.runs[s]): frames}
    try:
        blocks = time_blocks(len(frames), fractions, split.gap)
    except PipelineError as error:
        raise PipelineError(f"source {name!r}: {error}") from None
    return {s: frames[block] for s, block in blocks.items()}


def _split_definition(recipe: Recipe, columns: Mapping[str, xr.Dataset]) -> dict[str, Any]:
    split = recipe.split
    definition: dict[str, Any] = {"by": split.by, "gap_frames": split.gap}
    if split.by == "run":
        definition.update({k: list(v) for k, v in split.runs.items()})
        definition["val_fraction"] = split.val_fraction
    definition["blocks"] = {
        name: {s: [str(f[0]), str(f[-1])] for s, f in _source_blocks(recipe, name, ds).items()}
        for name, ds in columns.items()
    }
    return definition


def seconds_since_1970(times: np.ndarray) -> tuple[np.ndarray, str]:
    """Times (datetime64, or cftime objects of model calendars) as integer seconds since
    1970-01-01 and the calendar they count in."""
    if np.issubdtype(times.dtype, np.datetime64):
        epoch = np.datetime64("1970-01-01T00:00:00", "s")
        return ((times - epoch) // np.timedelta64(1, "s")).astype("int64"), "proleptic_gregorian"
    import cftime

    calendar = times.flat[0].calendar
    seconds = cftime.date2num(times, "seconds since 1970-01-01 00:00:00", calendar=calendar)
    return np.asarray(seconds).astype("int64"), calendar


def _portable(ds: xr.Dataset) -> xr.Dataset:
    """Times as integer seconds since 1970 (idealized WRF runs start in year 1 and CAM counts
    in a no-leap calendar, which CF time encoding handles unevenly); no inherited encodings
    (source chunks, netCDF fill values)."""
    seconds, calendar = seconds_since_1970(ds["time"].values)
    attrs = {
        "long_name": f"time, seconds since 1970-01-01T00:00:00 ({calendar} calendar)",
        "units": "s",
    }
    ds = ds.assign_coords(time=(SAMPLE, seconds, attrs))
    for var in ds.variables.values():
        var.encoding = {}
    return ds
