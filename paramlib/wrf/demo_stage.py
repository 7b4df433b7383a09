"""`make demo` stage: the WRF cumulus plugin (fortran_bridge/wrf/module_cu_paramlib.F) with an
exported Bi-LSTM on the demo's testbed wrfout, called by the WRF-shaped driver as WRF calls it;
prints the parity with PyTorch on the same columns and the plugin's cost per column.

    wrf_plugin(demo)   # demo: paramlib.demo.Demo (out, seed; testbed, stores)

The model is the demo's trained Bi-LSTM (out/runs/bilstm_testbed_wrf/model.pt) when that
stage has run, otherwise an untrained one of the small variant's size exported here from the
demo's training store (the plugin's path and the parity do not depend on training).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

from paramlib.wrf.bench import bench_plugin, column_pool, write_pool
from paramlib.wrf.driver import DriverSettings, PluginOptions, run_driver, write_namelist
from paramlib.wrf.parity import first_call_parity

RUN = "bilstm_testbed_wrf"
COST_TILE = (40, 44)  # columns of the cost measurement: quick; benchmarks/ has the WRF-sized one
COST_CALLS = 3


class DemoLike(Protocol):
    @property
    def out(self) -> Path: ...
    @property
    def testbed(self) -> Path: ...
    @property
    def stores(self) -> Path: ...


def demo_model(demo: DemoLike, work: Path) -> tuple[Path, str]:
    """The trained Bi-LSTM of the demo's training stage, or an untrained one from its store."""
    trained = demo.out / "runs" / RUN / "model.pt"
    if trained.is_file():
        return trained, f"trained Bi-LSTM {trained}"
    from paramlib.models.bilstm import BiLSTMEmulator, config_from_store, export_bilstm

    store = demo.stores / f"{RUN}.zarr"
    if not store.is_dir():
        raise FileNotFoundError(f"neither {trained} nor the store {store} exists")
    import torch

    torch.manual_seed(0)
    emulator = BiLSTMEmulator(config_from_store(store, hidden=16, layers=2)).eval()
    path = export_bilstm(emulator, work / "bilstm_untrained.pt", {"demo": "wrf_plugin"})
    return path, f"untrained Bi-LSTM from {store} (no {trained} yet)"


def wrf_plugin(demo: DemoLike) -> None:
    """Run the plugin on the testbed's WRF-format set; print parity and cost."""
    from paramlib.demo import DemoError, say

    work = demo.out / "wrf_plugin"
    work.mkdir(parents=True, exist_ok=True)
    files = sorted((demo.testbed / "wrf").glob("wrfout_d01_*"))
    if not files:
        raise DemoError(f"no wrfout_d01_* in {demo.testbed / 'wrf'}: the testbed stage makes them")
    try:
        model, described = demo_model(demo, work)
    except FileNotFoundError as error:
        raise DemoError(f"no model for the WRF plugin: {error}") from error
    say(f"model: {described}")

    settings = DriverSettings(wrfout=str(files[0]), output=str(work / "run.nc"), nan_columns=2)
    namelist = write_namelist(work / "namelist.input", PluginOptions(str(model)), settings)
    try:
        result = run_driver(namelist, threads=2)
    except FileNotFoundError as error:
        raise DemoError(f"{error}; run `make build`") from error
    (work / "driver.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise DemoError(
            f"the WRF-shaped driver failed (log {work / 'driver.log'}):\n{result.stdout}"
            f"{result.stderr}"
        )
    checks = sum(line.lstrip().startswith("ok ") for line in result.stdout.splitlines())
    say(
        f"{files[0].name}: {settings.ncalls} cumulus calls, one tile and {settings.tiles_x} x"
        f" {settings.tiles_y} tiles on 2 OpenMP threads: {checks} checks passed (tiles and"
        " threads equal bit for bit, halos untouched, NCA holds, NaN columns)"
    )
    parity = first_call_parity(work / "run.nc", model)
    say(f"first call vs PyTorch: {parity.summary()}")
    if not parity.ok:
        raise DemoError("the plugin's outputs differ from PyTorch's beyond the tolerance")

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        pool = write_pool(Path(tmp) / "pool.bin", column_pool(_levels(model)))
        cost = bench_plugin(model, pool, *COST_TILE, COST_CALLS)
    say(
        f"cost: {cost['per_column_us']:.1f} us per column per call ({cost['tile_columns']} columns"
        f" x {cost['levels']} levels, 1 thread; `benchmarks/wrf_plugin_cost.py` times a"
        " WRF-sized 200 x 220 tile)"
    )


def _levels(model: Path) -> int:
    from paramlib.export import load_metadata

    return max(f["nlev"] for f in load_metadata(model)["inputs"])
