"""The single-pass pipeline (issue 15) writes the same stores as the two-pass one it replaced.

REFERENCE holds, per case below, a digest of every array of the store the two-pass pipeline
(commit cf38adb, PIPELINE_VERSION 3) built from the same recipe and files: sha256 over the
array's zarr metadata (shape, chunks, dtype, codecs, fill value, attributes, dimension names)
and its values, and one over the root attributes that describe the content (recipe, inputs,
targets, runs, split, samples, QC counts). They were produced by running `digest` on the stores
`build_case` built with that commit's paramlib (PYTHONPATH pointing at a copy of it,
PARAMLIB_DATA_ROOT at the shared data). The normalisation statistics were computed in batches
whose sums dask ordered: they are checked against numpy on the stored train split instead
(float64, rtol 1e-12; the two-pass pipeline's means of interpolated levels differed from
numpy's by 4e-10: it averaged the values before their rounding to the stored float32).

Each case builds twice: with the reader's default chunks (one block per file here) and with
1 MiB chunks (blocks of 2-3 frames), so that previous frames and MSKF call states cross block
boundaries, and a two-file source crosses files.
"""

import hashlib
import json
import pickle
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from dask.callbacks import Callback
from test_pipeline import build, catalog_for, recipe_of, small, tiny
from test_reliability_data import wrf_copy
from wrf_data import CTL, WRF_DIR

from paramlib.catalog import load_catalog
from paramlib.data import pipeline, readers
from paramlib.data.pipeline import BATCH_CHUNKS, SourcePass, build_store, open_selection
from paramlib.data.readers import wrfout

# Digests of the two-pass pipeline's stores (see the module docstring).
REFERENCE: dict[str, dict[str, str]] = {
    "fresh_two_runs_by_run": {
        "test/hfx": "abf0ef888193d2d8",
        "test/lev": "e0b4306b673476a7",
        "test/level": "524c82ebab309cd9",
        "test/qv": "fda2091e63d482d2",
        "test/rthcuten": "dccb27e9ebdc9f51",
        "test/rthcuten_prev": "0deb94aa5db19764",
        "test/run": "87993afb5f8a8172",
        "test/t": "9a8f96cd337c2bfb",
        "test/time": "1963eb639c23e2f2",
        "test/x": "3a7618bd6cbfc09a",
        "test/y": "549db5ea8a8c7f04",
        "train/hfx": "07ac2f34e550168f",
        "train/lev": "e0b4306b673476a7",
        "train/level": "524c82ebab309cd9",
        "train/qv": "c0249588eae594a8",
        "train/rthcuten": "93ba253fa398a110",
        "train/rthcuten_prev": "9f111481cc026aeb",
        "train/run": "37bd93687fcbc91f",
        "train/t": "3a024bc2ea4d3faf",
        "train/time": "1a2756d995885e9f",
        "train/x": "b92f43e0b61c6919",
        "train/y": "91b2e6336944f1da",
        "attrs": "2042e8efd3c4cdcf",
    },
    "two_files_by_time": {
        "test/hfx": "de34fc24aca1c614",
        "test/lev": "e0b4306b673476a7",
        "test/level": "524c82ebab309cd9",
        "test/qv": "5490f5775f394018",
        "test/rthcuten": "6689dde3f2f578b9",
        "test/rthcuten_prev": "1c1d6c1e5ed6e581",
        "test/run": "18d87abb9961c103",
        "test/t": "4cf25b1c1c0ba5e9",
        "test/time": "c2093a899c310584",
        "test/x": "e2dac53d4331b700",
        "test/y": "2bdad2009e6f28c2",
        "train/hfx": "2a3407f7d0ad1f1a",
        "train/lev": "e0b4306b673476a7",
        "train/level": "524c82ebab309cd9",
        "train/qv": "263b0b69b1de1ce5",
        "train/rthcuten": "b1ff05f49c6bec00",
        "train/rthcuten_prev": "473ecdd9f9cca63d",
        "train/run": "4db822e44e239d22",
        "train/t": "7b87c97668a239ed",
        "train/time": "7a52b6a5b10a8e0d",
        "train/x": "c67906ddb74eac6d",
        "train/y": "361d94758bbdd341",
        "val/hfx": "c4616ad918ef6e5c",
        "val/lev": "e0b4306b673476a7",
        "val/level": "524c82ebab309cd9",
        "val/qv": "a6fc981a617d2df4",
        "val/rthcuten": "deac119ab78c4353",
        "val/rthcuten_prev": "9f9736b88a6cd248",
        "val/run": "51421fd8c4096ebb",
        "val/t": "3a25963c5f19deac",
        "val/time": "1db08a542c983830",
        "val/x": "10c23cae737fb858",
        "val/y": "a82dd39f5b246268",
        "attrs": "c3212db5caffebc5",
    },
    "val_fraction": {
        "test/hfx": "a0586954a40597a8",
        "test/lev": "e0b4306b673476a7",
        "test/level": "524c82ebab309cd9",
        "test/qv": "2d5872041d56d4b7",
        "test/rthcuten": "807070e42b9c42fd",
        "test/run": "f532d13325156399",
        "test/t": "18e5d8568d491093",
        "test/time": "456491a81b440016",
        "test/x": "a39eb8b3d881d2f8",
        "test/y": "9bbd0c5291144be5",
        "train/hfx": "8756939d724e0564",
        "train/lev": "e0b4306b673476a7",
        "train/level": "524c82ebab309cd9",
        "train/qv": "a3668af2b1842e43",
        "train/rthcuten": "d74fc9a00d9d456d",
        "train/run": "b130e6b324932f0c",
        "train/t": "0f4220ddc15a5e6a",
        "train/time": "ac4b805d6df7db74",
        "train/x": "85f22f36cf4793a7",
        "train/y": "4f05d9ad024d563f",
        "val/hfx": "30d096a28381f738",
        "val/lev": "e0b4306b673476a7",
        "val/level": "524c82ebab309cd9",
        "val/qv": "d68204f2cdfe3e05",
        "val/rthcuten": "47b0b53d909ce09d",
        "val/run": "6ce4e760d98f166b",
        "val/t": "2d78a0f33e9654b2",
        "val/time": "c92cc544289f40ac",
        "val/x": "9e3845940e9fe3d5",
        "val/y": "857e252e21a20e04",
        "attrs": "8a7b0b3a8795429d",
    },
    "balance_fresh_two_files": {
        "train/hfx": "b09124ea7ebae10d",
        "train/lev": "5b9014a0b02eb295",
        "train/level": "1e407e0243cdb0f2",
        "train/qv": "7e815ff50e5aa706",
        "train/rthcuten": "f707995052321603",
        "train/run": "8330589acbdf5ffe",
        "train/t": "4abffc6cc43fae26",
        "train/time": "284862c4c67a93fe",
        "train/x": "3cd5f820bed2eb56",
        "train/y": "12d8d1f73aa5456b",
        "attrs": "765324371667f8a1",
    },
    "balance_on_a_variable_not_stored": {
        "train/hfx": "e3806894f2cbc861",
        "train/lev": "0b6506af20da7098",
        "train/level": "5dc68022eb88a338",
        "train/qv": "f53f19abfafb219f",
        "train/rthcuten": "e8327afe7b51c0c6",
        "train/run": "ff8a5aecdf66c570",
        "train/t": "ac50d82baac6bee3",
        "train/time": "aa6e69b4ceb5c41e",
        "train/x": "dbbd34ea006ff65a",
        "train/y": "cb102fb1597413fa",
        "attrs": "4a36b5d428b49adb",
    },
    "interpolated_levels": {
        "train/hfx": "2ef771cdb985149c",
        "train/lev": "9945bc2d434dcc41",
        "train/qv": "0077075783d05d1f",
        "train/rthcuten": "af8d4db3cd5018d0",
        "train/run": "54bfce837d36ba1d",
        "train/t": "4e138346df18a07c",
        "train/time": "a3c5f8913b998174",
        "train/x": "85f22f36cf4793a7",
        "train/y": "4f05d9ad024d563f",
        "attrs": "b4f81785b1205698",
    },
}

TWO_FILES = {"first": (0, 10), "second": (10, 19)}


def split_ctl(folder: Path) -> dict[str, list[Path]]:
    """Catalog paths: the control run as two files (frames 0-9, 10-18), and two 3-frame runs
    whose second has its ZNU 0.1 % larger (for interpolation)."""
    parts = []
    with xr.open_dataset(CTL, decode_times=False, mask_and_scale=False) as ds:
        for name, (start, stop) in TWO_FILES.items():
            path = folder / f"wrfout_d01_{name}.nc"
            ds.isel(Time=slice(start, stop)).to_netcdf(path)
            parts.append(path)
    return {
        "ctl2": parts,
        "a": [wrf_copy(folder / "wrfout_d01_a.nc")],
        "znu": [wrf_copy(folder / "wrfout_d01_znu.nc", znu_factor=1.001)],
        "ctl": [CTL],
        "shear": [WRF_DIR / "wrfout_d01_shear2x.nc"],
    }


def catalog(folder: Path, paths: dict[str, list[Path]]) -> Path:
    """``catalog_for``'s wrfout entries, each with all its files."""
    catalog_for(folder, {name: files[0] for name, files in paths.items()})
    entries = yaml.safe_load((folder / "test.yaml").read_text())
    for name, files in paths.items():
        entries["entries"][name]["paths"] = [str(p) for p in files]
    (folder / "test.yaml").write_text(yaml.safe_dump(entries))
    return folder


CASES: dict[str, dict] = {
    "fresh_two_runs_by_run": small(
        sources=["ctl", "shear"], split={"by": "run", "train": ["ctl"], "test": ["shear"]}
    ),
    "two_files_by_time": small(
        sources=["ctl2"],
        times={"start": 0, "stop": 19},
        qc={"ranges": {"t": [150, 350], "qv": [0, 0.015]}},
        sampling={"previous": ["rthcuten"]},
        split={"by": "time", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "gap": 1},
        chunk_samples=700,
    ),
    "val_fraction": small(
        sources=["ctl", "shear"],
        times={"start": 0, "stop": 10},
        sampling={},
        split={
            "by": "run",
            "train": ["ctl"],
            "test": ["shear"],
            "val_fraction": 0.3,
            "gap": 1,
        },
    ),
    "balance_fresh_two_files": tiny(
        sources=["ctl2"],
        levels={"start": 0, "stop": 20},
        times={"start": 6, "stop": 14},
        sampling={"mskf_fresh": True, "balance": {"where": "rthcuten != 0", "ratio": 1.0}},
        split={"by": "run", "train": ["ctl2"]},
        chunk_samples=300,
    ),
    "balance_on_a_variable_not_stored": tiny(
        sources=["ctl2"],
        times={"start": 0, "stop": 19},
        sampling={"balance": {"where": "pratec > 0", "ratio": 2.0, "seed": 1}},
        split={"by": "run", "train": ["ctl2"]},
        compression="zstd",
    ),
    "interpolated_levels": small(
        sources=["a", "znu"],
        levels={"interpolate": [0.96, 0.9, 0.5, 0.1]},
        times={},
        sampling={},
        split={"by": "run", "train": ["a", "znu"]},
    ),
}


def digest(store: Path) -> dict[str, str]:
    """Per array of every split: sha256 of its zarr metadata and values; and of the root
    attributes that describe the content (not versions, source paths, statistics)."""
    root = zarr.open_group(str(store), mode="r")
    found = {}
    for split, group in sorted(root.groups()):
        for name, array in sorted(group.arrays()):
            meta = json.dumps(array.metadata.to_dict(), sort_keys=True, default=str).encode()
            values = np.ascontiguousarray(array[...]).tobytes()
            found[f"{split}/{name}"] = hashlib.sha256(meta + values).hexdigest()[:16]
    attrs = dict(root.attrs)
    described = ("paramlib_store_format", "name", "description", "recipe", "inputs", "targets")
    content = {key: attrs[key] for key in (*described, "runs", "split", "samples", "qc")}
    text = json.dumps(content, sort_keys=True).encode()
    found["attrs"] = hashlib.sha256(text).hexdigest()[:16]
    return found


@pytest.fixture(scope="module")
def case_catalog(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fused")
    return catalog(folder / "catalog", split_ctl(folder))


def build_case(name: str, out: Path, case_catalog: Path) -> Path:
    build(CASES[name], out, catalog_dir=case_catalog)
    return out


def small_blocks(monkeypatch: pytest.MonkeyPatch, limit_bytes: int = 1 << 20) -> None:
    """The wrfout reader chunks (the pass's blocks) at ``limit_bytes`` per variable."""
    default = wrfout.frames_per_chunk
    monkeypatch.setattr(wrfout, "frames_per_chunk", lambda ds: default(ds, limit_bytes))


@pytest.mark.parametrize("chunk_bytes", [wrfout.CHUNK_BYTES, 1 << 20], ids=["file", "1MiB"])
@pytest.mark.parametrize("name", list(CASES))
def test_store_equals_the_two_pass_pipelines(
    name, chunk_bytes, case_catalog, tmp_path, monkeypatch
):
    small_blocks(monkeypatch, chunk_bytes)
    out = build_case(name, tmp_path / f"{name}.zarr", case_catalog)
    assert digest(out) == REFERENCE[name]
    stats = zarr.open_group(str(out), mode="r").attrs["normalisation"]
    train = xr.open_zarr(out, group="train")
    assert set(stats) == set(train.data_vars)
    for var in train.data_vars:
        values = train[var].values.astype(np.float64)
        mean, std = np.atleast_1d(values.mean(0)), np.atleast_1d(values.std(0))
        scale = 1e-12 * np.abs(mean).max()  # near-zero means of upper levels
        np.testing.assert_allclose(stats[var]["mean"], mean, rtol=1e-12, atol=scale)
        np.testing.assert_allclose(stats[var]["std"], std, rtol=1e-10, atol=1e-12 * std.max())


class Graphs(Callback):
    """The keys of every graph a local dask scheduler runs, but those computed inside a task
    (dask clears the callbacks there)."""

    def __init__(self) -> None:
        super().__init__()
        self.graphs: list[list[str]] = []

    def _start_state(self, dsk, state) -> None:
        self.graphs.append([str(key) for key in dsk])


def test_one_task_per_block_reads_the_sources_once(case_catalog, tmp_path, monkeypatch):
    """The scheduler sees one task per block of frames in the pass and one per write batch in
    the copy: no graph of elementwise tasks, and no other graph reads the sources."""
    small_blocks(monkeypatch)
    name = "two_files_by_time"
    recipe = recipe_of(CASES[name])
    entry = load_catalog(case_catalog, check_paths=False)["ctl2"]
    expected = len(SourcePass(recipe, open_selection(recipe, entry, None)).edges) - 1
    assert expected >= 6  # blocks of 2-3 frames over 18 frames in two files

    with Graphs() as seen:
        build_case(name, tmp_path / "store.zarr", case_catalog)
    outer = [g for g in seen.graphs if any(k.startswith(("block-", "_copy_batch-")) for k in g)]
    assert all(k.startswith(("block-", "_copy_batch-")) for g in outer for k in g)
    keys = [k for g in outer for k in g]
    assert sum(k.startswith("block-") for k in keys) == expected
    samples = zarr.open_group(str(tmp_path / "store.zarr"), mode="r").attrs["samples"]
    batch = BATCH_CHUNKS * recipe.chunk_samples
    assert sum(k.startswith("_copy_batch-") for k in keys) == sum(
        -(-n // batch) for n in samples.values()
    )
    # Before the pass, only the reader's own reads at opening (Times of each file, ZNU); each
    # block's graph runs inside its task, out of the outer scheduler's sight.
    assert seen.graphs.index(outer[0]) == len(seen.graphs) - len(outer) == 2 + 1


def test_threaded_build_reading_blocks_across_files_equals_the_two_pass_pipelines(
    case_catalog, tmp_path, monkeypatch
):
    """Two threads read blocks through the wrfout frame reader at once (HDF5 is not
    thread-safe: unlocked, this crashed the process), blocks crossing the two files."""
    small_blocks(monkeypatch)
    name = "two_files_by_time"
    with dask.config.set(scheduler="threads", num_workers=2):
        build_store(recipe_of(CASES[name]), tmp_path / "store.zarr", catalog_dir=case_catalog)
    assert digest(tmp_path / "store.zarr") == REFERENCE[name]


@pytest.mark.parametrize("name", ["two_files_by_time", "interpolated_levels"])
def test_blocks_computed_from_the_lazy_dataset_give_the_same_store(
    name, case_catalog, tmp_path, monkeypatch
):
    """A format without a frame reader: each block is computed from the lazy dataset."""
    small_blocks(monkeypatch)
    monkeypatch.setattr(pipeline, "has_frame_reader", lambda format: False)
    recipe = recipe_of(CASES[name])
    entry = load_catalog(case_catalog, check_paths=False)[recipe.sources[0]]
    assert not open_selection(recipe, entry, None).readable
    out = build_case(name, tmp_path / "store.zarr", case_catalog)
    assert digest(out) == REFERENCE[name]


def test_frame_reader_reads_the_lazy_datasets_values(case_catalog):
    """Frames across the two files, contiguous or not, equal the lazy reader's."""
    files = [Path(p) for p in load_catalog(case_catalog, check_paths=False)["ctl2"].paths]
    lazy = wrfout.open_wrfout(files)
    for frames in (np.arange(8, 13), np.array([0, 9, 10, 15])):
        read = wrfout.read_wrfout_frames(files, frames)
        expected = lazy.isel(time=frames).compute()
        xr.testing.assert_equal(read, expected)
        assert all(read[name].dtype == expected[name].dtype for name in expected.data_vars)
    with pytest.raises(wrfout.WrfoutError, match="frames"):
        wrfout.read_wrfout_frames(files, np.array([lazy.sizes["time"]]))


def test_a_pickled_pass_leaves_the_lazy_data_behind_and_writes_the_same_shard(
    case_catalog, tmp_path
):
    """What distributed sends to a worker in another process (a SLURM job): no graph of every
    file, and its block task writes what the original's does."""
    recipe = recipe_of(CASES["two_files_by_time"])
    entry = load_catalog(case_catalog, check_paths=False)["ctl2"]
    source = SourcePass(recipe, open_selection(recipe, entry, None))
    sent = pickle.loads(pickle.dumps(source))
    assert sent.selection is None and sent.columns is None and sent.source.data is None
    assert len(pickle.dumps(sent)) < len(pickle.dumps(source.selection)) / 10
    here, there = source.block(1, tmp_path / "here"), sent.block(1, tmp_path / "there")
    np.testing.assert_array_equal(here["dropped"], there["dropped"])
    for name in recipe.variables:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes()


def test_a_reader_registered_again_without_frames_loses_its_frame_reader(monkeypatch):
    """Replacing a format's reader drops the old frame reader: it would read another dataset."""
    monkeypatch.setattr(readers, "_READERS", dict(readers._READERS))
    monkeypatch.setattr(readers, "_FRAME_READERS", dict(readers._FRAME_READERS))
    assert readers.has_frame_reader("wrfout") and not readers.has_frame_reader("cesm-history")
    readers.register_reader("wrfout", wrfout.open_wrfout, replace=True)
    assert not readers.has_frame_reader("wrfout")
    readers.register_reader(
        "wrfout", wrfout.open_wrfout, frames=wrfout.read_wrfout_frames, replace=True
    )
    assert readers.has_frame_reader("wrfout")
