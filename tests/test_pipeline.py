"""``paramlib dataset build`` on the real WRF MSKF runs (small subsets of frames and levels): the
store's content against the raw files, provenance, normalisation statistics, splits without
leakage, idempotence and rebuilds, QC counts, errors that leave no partial store, the CLI on a
LocalCluster, the SLURM job script, and the shipped recipes. Most builds use dask's synchronous
scheduler; the CLI test runs on the default distributed LocalCluster."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from wrf_data import CTL

from paramlib import paths
from paramlib.catalog import CatalogError, load_catalog
from paramlib.data import hashes
from paramlib.data.hashes import sha256_file
from paramlib.data.pipeline import (
    Moments,
    PipelineError,
    build_store,
    choose_columns,
    time_blocks,
)
from paramlib.data.readers.wrfout import FRESH, mskf_call_state
from paramlib.data.recipe import Balance, RecipeError, load_recipe, parse_recipe
from paramlib.data.store import atomic_store, stored_fingerprint
from paramlib.paths import REPO_ROOT

RECIPES = sorted((REPO_ROOT / "training" / "recipes").glob("*.yaml"))
NLEV = 6


def small(**changes) -> dict:
    """A small recipe on the real runs: 5 frames, NLEV levels, fresh columns, split by run."""
    raw = {
        "name": "small",
        "description": "test store",
        "sources": ["wrf_mskf_ctl", "wrf_mskf_shear2x"],
        "inputs": ["t", "qv", "hfx"],
        "targets": ["rthcuten"],
        "levels": {"start": 0, "stop": NLEV},
        "times": {"start": 0, "stop": 5},
        "qc": {"ranges": {"t": [150, 350]}},
        "sampling": {"mskf_fresh": True, "previous": ["rthcuten"]},
        "split": {"by": "run", "train": ["wrf_mskf_ctl"], "test": ["wrf_mskf_shear2x"]},
        "chunk_samples": 1000,
    }
    raw.update(changes)
    return raw


def recipe_of(raw: dict):
    return parse_recipe(raw, text=yaml.safe_dump(raw))


def build(raw: dict, out: Path, **kwargs):
    with dask.config.set(scheduler="synchronous"):
        return build_store(recipe_of(raw), out, **kwargs)


def catalog_for(folder: Path, files: dict[str, Path]) -> Path:
    """A catalog folder with one wrfout entry per file (reader names kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {
        name: {
            "description": f"test copy {name}",
            "format": "wrfout",
            "paths": [str(path)],
            "fidelity": "high",
            "scenario": name,
        }
        for name, path in files.items()
    }
    (folder / "test.yaml").write_text(yaml.safe_dump({"entries": entries}))
    return folder


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "small.zarr"
    result = build(small(), out)
    assert not result.up_to_date
    return out


@pytest.fixture(scope="module")
def ctl_copy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("copy") / "wrfout_d01_copy.nc"
    shutil.copyfile(CTL, path)
    return path


def raw_frames(path: Path, name: str, stop: int) -> np.ndarray:
    with netCDF4.Dataset(path) as nc:
        return np.asarray(nc[name][:stop], dtype=np.float64)


# --- content and provenance -------------------------------------------------------------------


def test_store_holds_the_fresh_columns_with_their_values(store):
    train = xr.open_zarr(store, group="train")
    nca = raw_frames(CTL, "NCA", 5)
    fresh = mskf_call_state(nca[:-1], 300.0, 30.0) == FRESH  # frames 1..4
    assert train.sizes == {"sample": int(fresh.sum()), "lev": NLEV}
    assert 0 < train.sizes["sample"] < fresh.size

    qv = raw_frames(CTL, "QVAPOR", 5)
    rth = raw_frames(CTL, "RTHCUTEN", 5)
    t0 = int(train["time"].min())
    frame = (train["time"].values - t0) // 300 + 1
    j = (train["y"].values / 5000.0).round().astype(int)
    i = (train["x"].values / 5000.0).round().astype(int)
    assert fresh[frame - 1, j, i].all()
    for s in (0, 777, train.sizes["sample"] - 1):
        n, y, x = frame[s], j[s], i[s]
        np.testing.assert_allclose(train["qv"][s].values, qv[n, :NLEV, y, x], rtol=1e-6)
        np.testing.assert_allclose(train["rthcuten"][s].values, rth[n, :NLEV, y, x], rtol=1e-6)
        np.testing.assert_allclose(
            train["rthcuten_prev"][s].values, rth[n - 1, :NLEV, y, x], rtol=1e-6
        )
    assert set(np.unique(train["run"].values)) == {0}
    assert set(np.unique(xr.open_zarr(store, group="test")["run"].values)) == {1}


def test_provenance_attributes(store):
    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    assert yaml.safe_load(attrs["recipe"]) == small()
    files = attrs["sources"]["wrf_mskf_ctl"]["files"]
    assert files == {str(CTL): sha256_file(CTL)}
    assert attrs["sources"]["wrf_mskf_shear2x"]["format"] == "wrfout"
    split = attrs["split"]
    assert split["by"] == "run" and split["val_fraction"] == 0
    assert (split["train"], split["val"], split["test"]) == (
        ["wrf_mskf_ctl"],
        [],
        ["wrf_mskf_shear2x"],
    )
    # Frames 1..4 (01:35..01:50): the first frame went, it has no previous frame.
    assert split["blocks"]["wrf_mskf_ctl"] == {
        "train": ["0001-01-01T01:35:00", "0001-01-01T01:50:00"]
    }
    assert attrs["inputs"] == ["t", "qv", "hfx", "rthcuten_prev"]
    assert attrs["targets"] == ["rthcuten"]
    assert {"numpy", "xarray", "dask", "zarr", "paramlib"} <= attrs["versions"].keys()
    qc = attrs["qc"]["wrf_mskf_ctl"]
    assert qc["columns"] == 4 * 41 * 41
    assert qc["kept"] == attrs["samples"]["train"]
    assert qc["kept"] == qc["columns"] - qc["not_fresh"]
    assert len(attrs["fingerprint"]) == 64


def test_normalisation_statistics_equal_numpy_on_train(store):
    stats = zarr.open_group(str(store), mode="r").attrs["normalisation"]
    train = xr.open_zarr(store, group="train")
    assert set(stats) == set(train.data_vars)
    for var in train.data_vars:
        values = train[var].values.astype(np.float64)
        np.testing.assert_allclose(stats[var]["mean"], np.atleast_1d(values.mean(0)), rtol=1e-5)
        np.testing.assert_allclose(
            stats[var]["std"], np.atleast_1d(values.std(0)), rtol=1e-4, atol=1e-12
        )
    # The test split's statistics differ: they were not used.
    test_t = xr.open_zarr(store, group="test")["t"].values.astype(np.float64)
    assert not np.allclose(stats["t"]["mean"], test_t.mean(0), rtol=1e-6)


def test_store_is_chunked_along_sample(store):
    train = zarr.open_group(str(store), mode="r")["train"]
    assert train["t"].chunks == (1000, NLEV)
    assert train["hfx"].chunks == (1000,)


# --- splits -------------------------------------------------------------------------------


def test_time_blocks_are_contiguous_ordered_and_gapped():
    blocks = time_blocks(20, {"train": 0.7, "val": 0.15, "test": 0.15}, gap=2)
    assert blocks["train"][0] == 0 and blocks["test"][-1] == 19  # every frame but the gaps
    assert sum(len(b) for b in blocks.values()) == 20 - 2 * 2
    for a, b in (("train", "val"), ("val", "test")):
        assert np.all(np.diff(blocks[a]) == 1)
        assert blocks[b][0] - blocks[a][-1] == 3
    assert time_blocks(4, {"train": 1.0}, gap=5) == {"train": pytest.approx(np.arange(4))}
    with pytest.raises(PipelineError, match="cannot hold 3 blocks with gap 2"):
        time_blocks(5, {"train": 0.5, "val": 0.25, "test": 0.25}, gap=2)
    with pytest.raises(PipelineError, match="too few for fractions"):
        time_blocks(4, {"train": 0.9, "val": 0.05, "test": 0.05}, gap=0)


def test_split_by_time_has_no_leakage(tmp_path):
    raw = small(
        sources=["wrf_mskf_ctl"],
        times={"start": 0, "stop": 12},
        sampling={},
        split={"by": "time", "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "gap": 1},
    )
    out = tmp_path / "bytime.zarr"
    build(raw, out)
    times = {
        s: set(xr.open_zarr(out, group=s)["time"].values.tolist()) for s in ("train", "val", "test")
    }
    assert all(times.values())
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not times[a] & times[b]
        # gap 1: at least one whole frame (300 s) between the blocks.
        assert min(abs(x - y) for x in times[a] for y in times[b]) >= 2 * 300
    split = zarr.open_group(str(out), mode="r").attrs["split"]
    assert split["by"] == "time" and split["gap_frames"] == 1
    assert set(split["blocks"]["wrf_mskf_ctl"]) == {"train", "val", "test"}


def test_split_by_run_with_val_held_out_of_train_runs(tmp_path):
    raw = small(
        times={"start": 0, "stop": 10},
        sampling={},
        split={
            "by": "run",
            "train": ["wrf_mskf_ctl"],
            "test": ["wrf_mskf_shear2x"],
            "val_fraction": 0.3,
            "gap": 1,
        },
    )
    out = tmp_path / "byrun.zarr"
    build(raw, out)
    parts = {s: xr.open_zarr(out, group=s) for s in ("train", "val", "test")}
    frames = {s: np.unique(ds["time"].values) for s, ds in parts.items()}
    assert set(np.unique(parts["val"]["run"].values)) == {0}  # from the train run only
    assert set(np.unique(parts["test"]["run"].values)) == {1}
    assert len(frames["test"]) == 10  # the test run is whole
    assert len(frames["train"]) + len(frames["val"]) == 10 - 1  # one frame of gap
    assert frames["val"].min() - frames["train"].max() == 2 * 300
    stats = zarr.open_group(str(out), mode="r").attrs["normalisation"]
    t = parts["train"]["t"].values.astype(np.float64)
    np.testing.assert_allclose(stats["t"]["mean"], t.mean(0), rtol=1e-5)


# --- idempotence and rebuilds ---------------------------------------------------------------


def tiny(**changes) -> dict:
    """One run, 3 frames (2 after the first goes), 3 levels."""
    base = {
        "sources": ["wrf_mskf_ctl"],
        "times": {"start": 0, "stop": 3},
        "levels": {"start": 0, "stop": 3},
        "split": {"by": "run", "train": ["wrf_mskf_ctl"]},
    }
    return small(**{**base, **changes})


def test_rerun_is_a_no_op_and_a_changed_recipe_rebuilds(tmp_path):
    out = tmp_path / "tiny.zarr"
    first = build(tiny(), out)
    key = stored_fingerprint(out)
    stamp = (out / "zarr.json").stat().st_mtime_ns
    again = build(tiny(), out)
    assert again.up_to_date and not first.up_to_date
    assert (out / "zarr.json").stat().st_mtime_ns == stamp
    changed = build(tiny(chunk_samples=500), out)
    assert not changed.up_to_date
    assert stored_fingerprint(out) not in (None, key)
    assert zarr.open_group(str(out), mode="r")["train"]["t"].chunks == (500, 3)
    assert not leftovers(out)


def test_qc_counts_injected_bad_values_and_a_changed_source_rebuilds(tmp_path, ctl_copy):
    path = tmp_path / "wrfout_d01_bad.nc"
    shutil.copyfile(ctl_copy, path)
    with netCDF4.Dataset(path, "a") as nc:
        nc["T"][2, 1, 10, 11] = np.nan
        nc["QVAPOR"][3, 0, 5, 5] = 0.5
    catalog = catalog_for(tmp_path / "catalog", {"bad": path})
    raw = small(
        sources=["bad"],
        times={"start": 0, "stop": 5},
        qc={"ranges": {"t": [150, 350], "qv": [0, 0.05]}},
        sampling={},
        split={"by": "run", "train": ["bad"]},
    )
    out = tmp_path / "qc.zarr"
    build(raw, out, catalog_dir=catalog)
    qc = zarr.open_group(str(out), mode="r").attrs["qc"]["bad"]
    assert qc["nonfinite.t"] == 1 and qc["out_of_range.qv"] == 1 and qc["nonfinite.qv"] == 0
    assert qc["kept"] == 5 * 41 * 41 - 2
    train = xr.open_zarr(out, group="train")
    assert np.isfinite(train["t"].values).all() and train["qv"].values.max() < 0.05

    assert build(raw, out, catalog_dir=catalog).up_to_date
    with netCDF4.Dataset(path, "a") as nc:
        nc["T"][4, 0, 0, 0] = np.inf
    rebuilt = build(raw, out, catalog_dir=catalog)
    assert not rebuilt.up_to_date
    qc = zarr.open_group(str(out), mode="r").attrs["qc"]["bad"]
    assert qc["nonfinite.t"] == 2 and qc["kept"] == 5 * 41 * 41 - 3


def test_balance_keeps_every_positive_and_as_many_negatives(tmp_path):
    raw = tiny(
        levels={"start": 0, "stop": 20},
        times={"start": 8, "stop": 12},
        sampling={"mskf_fresh": True, "balance": {"where": "rthcuten != 0", "ratio": 1.0}},
    )
    out = tmp_path / "balanced.zarr"
    build(raw, out)
    qc = zarr.open_group(str(out), mode="r").attrs["qc"]["wrf_mskf_ctl"]
    convective = (xr.open_zarr(out, group="train")["rthcuten"] != 0).any("lev").values
    assert qc["balance_positive"] > 0
    assert convective.sum() == qc["balance_positive"] == (~convective).sum()
    assert qc["kept"] == 2 * qc["balance_positive"]


def test_balance_on_a_variable_not_stored(tmp_path):
    raw = tiny(sampling={"balance": {"where": "pratec > 0", "ratio": 2.0, "seed": 1}})
    out = tmp_path / "balanced.zarr"
    build(raw, out)
    qc = zarr.open_group(str(out), mode="r").attrs["qc"]["wrf_mskf_ctl"]
    train = xr.open_zarr(out, group="train")
    assert set(train.data_vars) == {"t", "qv", "hfx", "rthcuten"}  # pratec only chose columns
    assert qc["balance_positive"] > 0 and qc["kept"] == 3 * qc["balance_positive"]


def test_moments_combined_over_batches_equal_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(300.0, 5.0, (1000, 3))
    moments = None
    for start, stop in ((0, 10), (10, 400), (400, 1000)):
        found = Moments.of({"t": data[start:stop].astype(np.float32)})
        assert found.count == stop - start
        moments = found if moments is None else moments.combine(found)
    stats = moments.as_stats()["t"]
    single = data.astype(np.float32).astype(np.float64)  # float32 data, float64 sums
    np.testing.assert_allclose(stats["mean"], single.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], single.std(0), rtol=1e-10)


def test_choose_columns_counts_each_reason():
    dropped = np.array([1, 1, 0, 1, 0, 0], bool)
    kept, counts = choose_columns(dropped, {"a": 2, "b": 2}, None, None)
    assert kept.tolist() == [2, 4, 5]
    assert counts == {"columns": 6, "a": 2, "b": 2, "kept": 3}
    positive = np.array([0, 0, 1, 0, 0, 0], bool)
    balance = Balance("x", "!=", 0.0, ratio=1.0, seed=3)
    kept, counts = choose_columns(dropped, {"a": 2, "b": 2}, positive, balance)
    assert 2 in kept and len(kept) == 2 and counts["balance_dropped"] == 1


# --- bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Path:
    """A valid store at the target the failing builds below aim at (each checks it intact)."""
    out = tmp_path_factory.mktemp("existing") / "target.zarr"
    build(tiny(), out)
    return out


def assert_intact(out: Path, key: str) -> None:
    assert stored_fingerprint(out) == key
    assert xr.open_zarr(out, group="train").sizes["sample"] > 0
    assert not leftovers(out)


def test_missing_file_names_entry_and_path(tmp_path, existing):
    key = stored_fingerprint(existing)
    catalog = catalog_for(tmp_path / "catalog", {"gone": tmp_path / "wrfout_d01_gone.nc"})
    raw = tiny(sources=["gone"], split={"by": "run", "train": ["gone"]})
    with pytest.raises(CatalogError, match="entry 'gone'.*wrfout_d01_gone.nc.*does not exist"):
        build(raw, existing, catalog_dir=catalog)
    assert_intact(existing, key)


def test_corrupt_netcdf_names_the_file(tmp_path, existing):
    key = stored_fingerprint(existing)
    path = tmp_path / "wrfout_d01_corrupt.nc"
    path.write_bytes(CTL.read_bytes()[:4096])
    catalog = catalog_for(tmp_path / "catalog", {"corrupt": path})
    raw = tiny(sources=["corrupt"], split={"by": "run", "train": ["corrupt"]})
    with pytest.raises(ValueError, match=f"{path}.*cannot be read as a netCDF file"):
        build(raw, existing, catalog_dir=catalog)
    assert_intact(existing, key)


def test_missing_variable_names_source_file_and_variable(existing):
    key = stored_fingerprint(existing)
    with pytest.raises(PipelineError, match=r"wrf_mskf_ctl.*wrfout_d01_ctl.nc.*\['qcloud'\]"):
        build(tiny(inputs=["t", "qcloud"]), existing)
    assert_intact(existing, key)


def test_wrong_units_name_variable_and_expectation(existing):
    key = stored_fingerprint(existing)
    with pytest.raises(PipelineError, match="variable 't' has units 'K', expected 'degC'"):
        build(tiny(units={"t": "degC"}), existing)
    assert_intact(existing, key)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"times": {"start": 100}}, r"'times.start' is 100, but the source has 19 frames"),
        ({"times": {"start": 0, "stop": 1}}, "select nothing"),  # the first frame goes
        ({"qc": {"ranges": {"t": [0, 1]}}}, "split 'train' selects no column"),
    ],
)
def test_empty_selection_is_an_error(existing, changes, message):
    key = stored_fingerprint(existing)
    with pytest.raises(PipelineError, match=message):
        build(tiny(**changes), existing)
    assert_intact(existing, key)


def test_refuses_to_replace_what_is_not_a_store(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(PipelineError, match="not a paramlib training store"):
        build(tiny(), out)
    assert (out / "notes.txt").read_text() == "keep me" and not leftovers(out)


def test_atomic_store_keeps_the_old_store_when_writing_fails(tmp_path):
    out = tmp_path / "a.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_store(out) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("failed half way")
    assert [p.name for p in out.iterdir()] == ["old"] and not leftovers(out)
    with atomic_store(out) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new"] and not leftovers(out)


def test_recipe_validation_names_file_and_key(tmp_path):
    bad = small(sources=["wrf_mskf_ctl"], colour="red")
    bad["split"] = {"by": "run", "train": ["wrf_mskf_ctl", "wrf_mskf_shear2x"]}
    bad["sampling"] = {"balance": {"where": "rthcuten is big"}}
    bad["source_fractions"] = {"wrf_mskf_ctl": {"start": 0.7, "stop": 0.2}, "other": {}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert f"{path}: unknown key 'colour'" in message
    assert "source 'wrf_mskf_shear2x' must be in exactly one of train/val/test" in message
    assert "'sampling.balance.where'" in message
    assert "'source_fractions.wrf_mskf_ctl': expected 0 <= start < stop <= 1" in message
    assert "'source_fractions.other': 'other' is not in 'sources'" in message
    assert "'rthcuten_prev'" not in message


# --- CLI, cluster, recipes ------------------------------------------------------------------


def test_cli_builds_on_a_local_cluster_or_threads_then_reports_up_to_date(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "cli.zarr"
    command = [sys.executable, "-m", "paramlib", "dataset", "build", str(recipe), "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.run([*command, "--workers", "1"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "built in" in first.stdout
    assert xr.open_zarr(out, group="train").sizes["lev"] == 3
    forced = [*command, "--force", "--scheduler", "threads"]
    second = subprocess.run(forced, capture_output=True, text=True, env=env)
    assert second.returncode == 0 and "built in" in second.stdout, second.stderr
    third = subprocess.run(command, capture_output=True, text=True, env=env)
    assert third.returncode == 0 and "up to date" in third.stdout
    recipe.write_text(yaml.safe_dump(tiny(inputs=["t", "nosuch"])))
    failed = subprocess.run(command, capture_output=True, text=True, env=env)
    assert failed.returncode == 1 and "['nosuch']" in failed.stderr
    assert stored_fingerprint(out) is not None and not leftovers(out)


def test_on_a_cluster_the_workers_hash_the_sources(tmp_path):
    """With a distributed client each source file is a hashing task on the workers (SLURM
    nodes hash in parallel); the hashes stored are the files' sha256."""
    from distributed import Client, LocalCluster, get_task_stream

    out = tmp_path / "cluster.zarr"
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        build_store(recipe_of(tiny()), out)
    assert any("remembered_sha256" in str(task["key"]) for task in stream.data)
    files = zarr.open_group(str(out), mode="r").attrs["sources"]["wrf_mskf_ctl"]["files"]
    assert files == {str(CTL): sha256_file(CTL)}


def test_cli_rehash_reads_the_sources_again_instead_of_the_remembered_hashes(tmp_path, monkeypatch):
    """The store's source hashes come from the hash cache, and from the files with --rehash: a
    wrong remembered hash (forged here) ends up in the store without it, not with it."""
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "cli.zarr"
    command = [sys.executable, "-m", "paramlib", "dataset", "build", str(recipe), "--out", str(out)]
    command += ["--scheduler", "synchronous"]

    def stored_hash() -> str:
        files = zarr.open_group(str(out), mode="r").attrs["sources"]["wrf_mskf_ctl"]["files"]
        return files[str(CTL)]

    assert subprocess.run(command, capture_output=True).returncode == 0
    assert stored_hash() == sha256_file(CTL)
    entry = hashes._entry(CTL.absolute())  # remembered: the shared data are old files
    entry.write_text(json.dumps(dict(json.loads(entry.read_text()), sha256="f" * 64)))
    trusted = subprocess.run(command, capture_output=True, text=True)
    assert trusted.returncode == 0 and "built in" in trusted.stdout  # another fingerprint
    assert stored_hash() == "f" * 64
    again = subprocess.run([*command, "--rehash"], capture_output=True, text=True)
    assert again.returncode == 0 and "built in" in again.stdout, again.stderr
    assert stored_hash() == sha256_file(CTL)
    assert json.loads(entry.read_text())["sha256"] == sha256_file(CTL)  # remembered again


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_parse_and_name_catalog_entries(path):
    recipe = load_recipe(path)
    catalog = load_catalog()
    assert set(recipe.sources) <= set(catalog)
    assert recipe.text == path.read_text()


def test_bilstm_recipe_splits_by_run_on_fresh_columns():
    recipe = load_recipe(REPO_ROOT / "training" / "recipes" / "bilstm_wrf_mskf.yaml")
    assert recipe.split.by == "run"
    assert recipe.split.runs["test"] == ("wrf_mskf_shear2x",)
    assert set(recipe.split.runs["train"]) == {"wrf_mskf_ctl", "wrf_mskf_qv090", "wrf_mskf_qv110"}
    assert recipe.sampling.mskf_fresh


@pytest.mark.parametrize(
    "name", ["mfrpn_lf_testbed", "mfrpn_hf_testbed", "bilstm_testbed_wrf"], ids=str
)
def test_testbed_recipes_build(name, small_testbed, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMLIB_TESTBED", str(small_testbed))
    recipe = load_recipe(REPO_ROOT / "training" / "recipes" / f"{name}.yaml")
    out = tmp_path / f"{name}.zarr"
    with dask.config.set(scheduler="synchronous"):
        result = build_store(recipe, out)
    assert all(n > 0 for n in result.samples.values()), result.samples
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["targets"] == list(recipe.targets)
    train = xr.open_zarr(out, group="train")
    assert set(train.data_vars) == set(recipe.variables)
    t = train[recipe.inputs[3 if name.startswith("bilstm") else 0]]
    np.testing.assert_allclose(
        attrs["normalisation"][t.name]["mean"],
        np.atleast_1d(t.values.astype(np.float64).mean(0)),
        rtol=1e-5,
    )
    if name == "mfrpn_hf_testbed":  # +4K columns only in test
        assert set(np.unique(xr.open_zarr(out, group="test")["run"].values)) == {1}
        assert set(np.unique(xr.open_zarr(out, group="val")["run"].values)) == {0}


def test_oracle_trains_on_plus4k_frames_the_others_never_test_on(
    small_testbed, tmp_path, monkeypatch
):
    monkeypatch.setenv("PARAMLIB_TESTBED", str(small_testbed))
    frames = {}
    for name in ("mfrpn_hf_testbed", "mfrpn_hf_oracle_testbed"):
        recipe = load_recipe(REPO_ROOT / "training" / "recipes" / f"{name}.yaml")
        with dask.config.set(scheduler="synchronous"):
            build_store(recipe, tmp_path / name)
        samples = zarr.open_group(str(tmp_path / name), mode="r").attrs["samples"]
        for split in (s for s, n in samples.items() if n > 0):
            group = xr.open_zarr(tmp_path / name, group=split)
            plus4k = group["time"].values[group["run"].values == 1]
            frames[name, split] = np.unique(plus4k)
    oracle = np.union1d(
        frames["mfrpn_hf_oracle_testbed", "train"], frames["mfrpn_hf_oracle_testbed", "val"]
    )
    test = frames["mfrpn_hf_testbed", "test"]
    assert len(oracle) > 0 and len(test) > 0
    assert ("mfrpn_hf_oracle_testbed", "test") not in frames
    interval = np.diff(test).min()
    assert test.min() - oracle.max() >= 2 * interval  # disjoint, with a frame of gap
