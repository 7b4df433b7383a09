"""Issue 12, data pipelines and the testbed: bad input gets one clear error before anything is
written, and interruptions leave nothing behind. On copies of the real WRF MSKF runs (a few
frames, levels changed with xarray), real dask, real subprocess builds that are signalled."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from test_pipeline import build, catalog_for, leftovers, small
from wrf_data import CTL

from paramlib.data.pipeline import PipelineError, attach
from paramlib.data.recipe import RecipeError, load_recipe, parse_recipe
from paramlib.data.store import WRITER_FILE, stored_fingerprint
from paramlib.guards import OWNED_MARKER, UserInputError
from paramlib.train import REQUEUE_EXIT

FRAMES = 3


def wrf_copy(path: Path, *, levels: int | None = None, znu_factor: float = 1.0) -> Path:
    """The control run's first FRAMES frames as a new wrfout file: its lowest ``levels`` levels
    (another vertical grid), or its ZNU scaled by ``znu_factor``."""
    with xr.open_dataset(CTL, decode_times=False, mask_and_scale=False) as ds:
        ds = ds.isel(Time=slice(0, FRAMES))
        if levels is not None:
            ds = ds.isel(bottom_top=slice(0, levels), bottom_top_stag=slice(0, levels + 1))
        ds["ZNU"] = ds["ZNU"] * znu_factor
        ds.to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    return {
        "a": wrf_copy(folder / "wrfout_d01_a.nc"),
        "l35": wrf_copy(folder / "wrfout_d01_l35.nc", levels=35),
        "znu": wrf_copy(folder / "wrfout_d01_znu.nc", znu_factor=1.001),
    }


def two_runs(first: str, second: str, **changes) -> dict:
    """A recipe on two runs of the fixture, both in train."""
    base = {"levels": {}, "times": {}, "sampling": {}}
    return small(
        sources=[first, second], split={"by": "run", "train": [first, second]}, **(base | changes)
    )


# --- A: sources that disagree on the vertical coordinate ---------------------------------------


@pytest.mark.parametrize(
    "other, found",
    [
        ("l35", r"40 and 35 levels.*level 35 .*lev 0\.0\d+ vs none"),
        ("znu", r"level 0 .*lev 0\.966\d+ vs 0\.967\d+"),
    ],
)
def test_sources_with_different_levels_are_refused_before_writing(
    tmp_path, runs, capsys, other, found
):
    catalog = catalog_for(tmp_path / "catalog", {"a": runs["a"], other: runs[other]})
    out = tmp_path / "store.zarr"
    with pytest.raises(PipelineError) as error:
        build(two_runs("a", other), out, catalog_dir=catalog)
    message = str(error.value)
    assert "disagree on the vertical coordinate" in message
    assert str(runs["a"]) in message and str(runs[other]) in message
    assert re.search(found, message), message
    assert not out.exists() and not leftovers(out)
    assert "quality control" not in capsys.readouterr().out  # refused up front


def test_levels_both_runs_share_build(tmp_path, runs):
    catalog = catalog_for(tmp_path / "catalog", {"a": runs["a"], "l35": runs["l35"]})
    out = tmp_path / "store.zarr"
    build(two_runs("a", "l35", levels={"stop": 35}), out, catalog_dir=catalog)
    train = xr.open_zarr(out, group="train")
    assert train.sizes["lev"] == 35 and np.isfinite(train["t"].values).all()
    assert np.all(np.diff(train["lev"].values) < 0)  # surface first (eta decreases upward)


def test_interpolation_onto_named_levels(tmp_path, runs):
    catalog = catalog_for(tmp_path / "catalog", {"a": runs["a"], "znu": runs["znu"]})
    out = tmp_path / "store.zarr"
    targets = [0.96, 0.9, 0.5, 0.1]
    build(two_runs("a", "znu", levels={"interpolate": targets}), out, catalog_dir=catalog)
    train = xr.open_zarr(out, group="train")
    np.testing.assert_allclose(train["lev"].values, targets)
    assert np.isfinite(train["t"].values).all()
    # A column of each run against numpy's interpolation of the raw values (both runs hold the
    # same state; the second's ZNU is 0.1 % larger).
    times = np.unique(train["time"].values)
    with xr.open_dataset(runs["a"]) as raw:
        znu, qv = raw["ZNU"].values[0], raw["QVAPOR"].values
    for run_id, factor in ((0, 1.0), (1, 1.001)):
        sample = train.isel(sample=int(np.flatnonzero(train["run"].values == run_id)[5]))
        frame = int(np.searchsorted(times, int(sample["time"])))
        j, i = (int(round(float(sample[c]) / 5000.0)) for c in ("y", "x"))
        expected = np.interp(targets, factor * znu[::-1], qv[frame, ::-1, j, i])
        np.testing.assert_allclose(sample["qv"].values, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "levels, message",
    [
        ({"interpolate": [0.999, 0.5]}, r"\[0\.999\] lie outside the source's levels"),
        ({"interpolate": [0.1, 0.5]}, "must run surface first"),
    ],
)
def test_interpolation_refuses_extrapolation_and_wrong_order(tmp_path, runs, levels, message):
    catalog = catalog_for(tmp_path / "catalog", {"a": runs["a"], "znu": runs["znu"]})
    with pytest.raises(PipelineError, match=message):
        build(two_runs("a", "znu", levels=levels), tmp_path / "s.zarr", catalog_dir=catalog)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"levels": {"stop": 100}}, r"'levels.stop' is 100, but the source has 40 levels"),
        ({"levels": {"start": 40}}, r"'levels.start' is 40, but the source has 40 levels"),
        ({"times": {"stop": 100}}, r"'times.stop' is 100, but the source has 19 frames"),
    ],
)
def test_slice_bounds_beyond_the_data_are_errors(tmp_path, changes, message):
    raw = small(sources=["wrf_mskf_ctl"], split={"by": "run", "train": ["wrf_mskf_ctl"]})
    out = tmp_path / "s.zarr"
    with pytest.raises(PipelineError, match=message):
        build({**raw, **changes}, out)
    assert not out.exists()


def test_a_run_whose_temperature_is_all_nan_fails_naming_file_and_variable(tmp_path, runs):
    broken = tmp_path / "wrfout_d01_nan.nc"
    with xr.open_dataset(runs["a"], decode_times=False, mask_and_scale=False) as ds:
        ds["T"] = ds["T"] * np.nan
        ds.to_netcdf(broken)
    catalog = catalog_for(tmp_path / "catalog", {"a": runs["a"], "nan": broken})
    out = tmp_path / "s.zarr"
    with pytest.raises(PipelineError, match=rf"'nan' \({broken}\): variable 't' is NaN"):
        build(two_runs("a", "nan"), out, catalog_dir=catalog)
    assert not out.exists() and not leftovers(out)


def test_attach_refuses_labels_that_differ():
    ds = xr.Dataset({"a": ("time", [1.0, 2.0])}, coords={"time": [0, 1]})
    same = xr.DataArray([3.0, 4.0], dims="time", coords={"time": [0, 1]})
    assert attach(ds, "b", same)["b"].values.tolist() == [3.0, 4.0]
    shifted = xr.DataArray([3.0, 4.0], dims="time", coords={"time": [1, 2]})
    with pytest.raises(ValueError, match="exact"):
        attach(ds, "b", shifted)


# --- C, E: recipe names and values ----------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", 3])
def test_recipe_name_must_be_one_path_component(name):
    with pytest.raises(RecipeError, match="key 'name'.*not a usable name"):
        parse_recipe(small(name=name))


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"qc": {"ranges": {"t": ["a", 3]}}}, "'qc.ranges.t'"),
        ({"qc": {"ranges": {"t": [True, 3]}}}, "'qc.ranges.t'"),
        (
            {"sampling": {"balance": {"where": "rthcuten != 0", "ratio": "lots"}}},
            "'sampling.balance.ratio'",
        ),
        (
            {"sampling": {"balance": {"where": "rthcuten != 0", "ratio": [1]}}},
            "'sampling.balance.ratio'",
        ),
        (
            {"sampling": {"balance": {"where": "rthcuten != 0", "seed": 1.5}}},
            "'sampling.balance.seed'",
        ),
        ({"sampling": {"balance": {"where": "rthcuten > e"}}}, "'sampling.balance.where'"),
        ({"levels": {"start": 5, "stop": 2}}, "'levels': expected start < stop"),
        ({"levels": {"interpolate": [0.9, "x"]}}, "'levels.interpolate'"),
        ({"levels": {"start": 0, "interpolate": [0.9]}}, "'levels': give either"),
    ],
)
def test_recipe_values_of_the_wrong_kind_are_recipe_errors(tmp_path, changes, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(small(**changes)))
    with pytest.raises(RecipeError, match=f"{path}: key {key}"):
        load_recipe(path)


def test_unusable_store_path_is_refused_before_reading(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match=f"store path {blocker}/s.zarr: {blocker} is a file"):
        build(small(), blocker / "s.zarr")
    assert "quality control" not in capsys.readouterr().out
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_unwritable_store_folder_is_refused_before_reading(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(UserInputError, match=f"{locked} is not writable"):
        build(small(), locked / "s.zarr")


# --- D: interrupted builds ----------------------------------------------------------------


def slow_build(tmp_path: Path) -> tuple[list[str], Path]:
    """The command of a CLI build that writes for a few seconds (two whole runs in small
    chunks, one write batch at a time) and its store path."""
    raw = small(
        levels={},
        times={},
        sampling={},
        qc={},
        chunk_samples=200,
        split={"by": "run", "train": ["wrf_mskf_ctl"], "test": ["wrf_mskf_shear2x"]},
    )
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "slow.zarr"
    command = [sys.executable, "-m", "paramlib", "dataset", "build", str(recipe)]
    return [*command, "--out", str(out), "--scheduler", "threads", "--workers", "1"], out


def start_writing(command: list[str], out: Path) -> tuple[subprocess.Popen, Path]:
    """The build started, once its temporary store exists with its writer's record (a kill
    between the folder's mkdir and the record would leave one without a record)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    build = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 300
    while not (leftovers(out) and (leftovers(out)[0] / WRITER_FILE).is_file()):
        assert build.poll() is None, build.communicate()
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.05)
    return build, leftovers(out)[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_the_build_and_removes_its_temporary_store(tmp_path, signum):
    command, out = slow_build(tmp_path)
    build, tmp = start_writing(command, out)
    record = json.loads((tmp / WRITER_FILE).read_text())
    assert record == {"pid": build.pid, "host": socket.gethostname()}
    build.send_signal(signum)
    stdout, stderr = build.communicate(timeout=120)
    assert build.returncode == REQUEUE_EXIT, stderr
    name = signal.Signals(signum).name
    assert f"{name}: stopped; the temporary store was removed" in stderr
    assert f"exit {REQUEUE_EXIT}" in stderr and "Traceback" not in stderr
    assert "built in" not in stdout
    assert not out.exists() and not leftovers(out)


def test_a_killed_build_leaves_a_temporary_store_the_next_build_removes(tmp_path, capsys):
    command, out = slow_build(tmp_path)
    killed, dead = start_writing(command, out)
    killed.kill()
    killed.communicate(timeout=60)
    assert dead.is_dir()  # SIGKILL cannot be caught: the debris stays until...
    # ... the next build for the same target, which leaves a live build's and one of another
    # host (unknowable from here) alone.
    live = out.with_name(f".{out.name}.tmp-live")
    remote = out.with_name(f".{out.name}.tmp-remote")
    for folder, record in (
        (live, {"pid": os.getpid(), "host": socket.gethostname()}),
        (remote, {"pid": killed.pid, "host": "elsewhere"}),
    ):
        folder.mkdir()
        (folder / WRITER_FILE).write_text(json.dumps(record))
    build_raw = small(split={"by": "run", "train": ["wrf_mskf_ctl"], "test": ["wrf_mskf_shear2x"]})
    build(build_raw, out)
    said = capsys.readouterr().out
    assert f"{dead}: removed the temporary store of a build that died (pid {killed.pid}" in said
    assert not dead.exists() and live.is_dir() and remote.is_dir()
    assert f"{live}: temporary store of a running build" in said
    assert stored_fingerprint(out) is not None


# --- B: regenerating a testbed ----------------------------------------------------------------


@pytest.fixture
def testbed(tmp_path, column_bindings) -> Path:
    from test_testbed import TINY

    from paramlib.testbed.generate import generate

    out = tmp_path / "testbed"
    generate(out, TINY, seed=1, log=lambda line: None)
    return out


def regenerate(out: Path) -> None:
    from test_testbed import TINY

    from paramlib.testbed.generate import generate

    generate(out, TINY, seed=2, log=lambda line: None)


def seed_of(out: Path) -> int:
    return json.loads((out / "summary.json").read_text())["seed"]


def test_regenerating_a_testbed_never_deletes_a_users_file(testbed):
    assert (testbed / OWNED_MARKER).is_file()
    (testbed / "notes.txt").write_text("my notes")
    (testbed / "wrf" / "plots").mkdir()
    with pytest.raises(UserInputError, match=r"holds files that are not the testbed's \(notes"):
        regenerate(testbed)
    assert (testbed / "notes.txt").read_text() == "my notes" and (
        testbed / "wrf" / "plots"
    ).is_dir()
    assert seed_of(testbed) == 1 and not [p for p in testbed.parent.iterdir() if p.name[0] == "."]
    (testbed / "notes.txt").unlink()
    (testbed / "wrf" / "plots").rmdir()
    regenerate(testbed)
    assert seed_of(testbed) == 2


def test_a_testbed_written_before_the_marker_still_regenerates(testbed):
    (testbed / OWNED_MARKER).unlink()  # as generated before the marker existed
    regenerate(testbed)
    assert seed_of(testbed) == 2 and (testbed / OWNED_MARKER).is_file()


def test_a_foreign_folder_with_a_summary_is_refused(tmp_path, column_bindings):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": "summary"}')
    with pytest.raises(UserInputError, match="paramlib did not create"):
        regenerate(mine)
    assert (mine / "summary.json").read_text() == '{"my": "summary"}'


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_testbed_cli_out_that_cannot_be_a_folder_is_one_line(tmp_path, capsys, where):
    from paramlib import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    out = blocker if where == "file" else blocker / "testbed"
    assert cli.main(["data", "testbed", "--out", str(out), "--no-wrf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"paramlib data testbed: --out: testbed folder {out}")
    assert len(err.strip().splitlines()) == 1 and blocker.read_text() == "keep"


# --- F: the pipeline benchmark's memory figure ----------------------------------------------


def test_pipeline_benchmark_children_report_their_own_peak_memory(repo_root):
    """A parent holding 400 MB runs a benchmark child: the child's peak must be its own (Linux
    carries ru_maxrss across exec, so getrusage in the child reported the parent's)."""
    parent = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(repo_root / "benchmarks")!r})
import pipeline_throughput as bench
held = np.ones(400 * 2**20 // 8)
code = bench.PEAK_RSS + "import json; print(json.dumps({{'peak_rss_mb': peak_rss_mb()}}))"
print(json.dumps(bench.run_child(code, [], bench.ROOT)))
"""
    result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 0 < json.loads(result.stdout.splitlines()[-1])["peak_rss_mb"] < 100
