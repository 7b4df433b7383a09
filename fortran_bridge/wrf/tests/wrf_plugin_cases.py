"""ctest cases of the WRF cumulus plugin (fortran_bridge/wrf/tests/CMakeLists.txt).

    python wrf_plugin_cases.py --driver BUILD/bin/wrf_plugin_driver --work DIR CASE

CASE:
  model   fixture: a small Bi-LSTM trained briefly (`paramlib dataset build` on the real WRF
          control run, then `paramlib train`) and variants of its metadata for the error
          cases, in DIR/models; redone only when this file or the data changed
  run     the driver's runs A-E on the real control run (OpenMP on 3 threads), DIR/run.nc
  parity  run A's first call against PyTorch on the same columns (paramlib.wrf.parity)
  errors  initialisation errors stop WRF with a message naming the problem (a file other than
          the pinned SHA-256, a path filling its buffer included); the CPU fallback
  screen  a model whose heating is NaN in every third column of a call (wrf_test_models.py):
          those columns get zero outputs, counted in the plugin's warnings; WRF sees no NaN
  on_error  a model whose call fails on some tiles: WRF stops naming the tile and the model's
          error (paramlib_cu_on_error = 0, the default); with 1, a warning per failed tile and
          zero outputs there, the other tiles keep the model's
  limits  a model whose outputs the physical limits must catch (wrf_test_models.py
          limit_probe_model), runs A-E with paramlib_cu_water_closure 0 and 1: exact zeros
          above the diagnosed cloud top, CUTOP there, QV + T RQVCUTEN >= 0, no negative
          hydrometeor tendency, PRATEC closed on the net water loss (1), the counts in the
          log, the first call equal to paramlib.wrf.parity.limit_columns in PyTorch
  ood     the same model, whose valid_range (t only) puts level 1 of t out of range: one
          line of out-of-range counts every paramlib_cu_ood_every calls (and at finalize),
          the default (the calls in one hour) too; inputs without a range are named once, a
          model without any says so once
  wrfpp   runs A-E with the driver built on the plugin preprocessed as WRF does
          (wrf_preprocess.py) on 2 OpenMP threads: one model handle per thread, tiles in
          threads equal to one serial tile bit for bit

Exit 77 (ctest: skipped) with the reason when the real WRF runs are absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SKIP = 77
HERE = Path(__file__).resolve()
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT))

from paramlib.catalog import data_root  # noqa: E402
from paramlib.wrf.driver import (  # noqa: E402
    HYDROMETEORS,
    TENDENCIES,
    DriverSettings,
    PluginOptions,
    run_driver,
    write_namelist,
)
from paramlib.wrf.parity import columns, first_call_parity, state_vs_reader  # noqa: E402

WRFOUT = data_root() / "wrf_mskf" / "wrfout_d01_ctl.nc"
READER_RTOL = 1e-5  # float32 arithmetic in a different order (Fortran vs numpy)
DRIVER: list[Path] = []  # set by main: the driver ctest built
RECIPE = """\
name: wrf_plugin_test
description: WRF plugin tests, control run only
sources: [wrf_mskf_ctl]
inputs: [u, v, w, t, qv, p, th, dz8w, rho, pi, w0avg, hfx, ust, pblh, xland]
targets: [rthcuten, rqvcuten, rqccuten, rqrcuten, rqicuten, rqscuten, pratec, nca]
sampling:
  mskf_fresh: true
  previous: [rthcuten, rqvcuten, rqccuten, rqrcuten, rqicuten, rqscuten, pratec, nca]
split:
  by: time
  fractions: {train: 0.8, val: 0.2, test: 0.0}
  gap: 0
"""
# A small network trained for a few seconds: enough for triggers and convective periods.
TRAIN = [
    "model.lstm_hidden=8",
    "model.lstm_layers=1",
    "train.steps=300",
    "train.val_every=300",
    "train.log_every=100",
    "train.checkpoint_every=300",
]
# Metadata edits: (file, what is changed, the message initialisation must give).
VARIANTS = {
    "units.pt": ("inputs", "p", {"units": "hPa"}),
    "unknown_input.pt": ("inputs", "qv", {"name": "q_vapour"}),
    "unknown_output.pt": ("outputs", "pratec", {"name": "precip"}),
}


def paramlib(*args: str) -> None:
    command = [sys.executable, "-m", "paramlib", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def make_models(models: Path) -> None:
    stamp = hashlib.sha256(repr((RECIPE, TRAIN, VARIANTS, WRFOUT.stat())).encode()).hexdigest()
    if (models / "stamp").is_file() and (models / "stamp").read_text() == stamp:
        print(f"{models}: up to date")
        return
    import torch

    from paramlib.export import ModelMetadata, load_metadata, save

    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models) as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(RECIPE)
        store = Path(tmp) / "store.zarr"
        paramlib("dataset", "build", str(recipe), "--out", str(store), "--scheduler", "threads")
        run = Path(tmp) / "run"
        config = ROOT / "training" / "configs" / "bilstm_wrf_mskf.yaml"
        paramlib(
            "train",
            str(config),
            "--variant",
            "small",
            f"data.store={store}",
            *TRAIN,
            "--out",
            str(run),
        )
        (run / "model.pt").replace(models / "bilstm_wrf.pt")
    module = torch.jit.load(str(models / "bilstm_wrf.pt"))
    for file, (kind, name, change) in VARIANTS.items():
        meta = load_metadata(models / "bilstm_wrf.pt")
        for spec in meta[kind]:
            if spec["name"] == name:
                spec.update(change)
        if kind == "inputs" and "name" in change:
            meta["valid_range"][change["name"]] = meta["valid_range"].pop(name)
        save(module, models / file, ModelMetadata.from_dict(meta))
    (models / "stamp").write_text(stamp)
    print(f"{models}: bilstm_wrf.pt and {len(VARIANTS)} metadata variants")


def expect(result: subprocess.CompletedProcess[str], ok: bool, *texts: str, what: str) -> None:
    output = result.stdout + result.stderr
    if (result.returncode == 0) != ok or any(t not in output for t in texts):
        raise SystemExit(
            f"FAIL {what}: exit {result.returncode} (expected {'0' if ok else 'non-zero'}),"
            f" expected {texts} in the output:\n{output}"
        )
    print(f"  ok    {what}")


def case_run(work: Path) -> None:
    settings = DriverSettings(wrfout=str(WRFOUT), output=str(work / "run.nc"))
    namelist = write_namelist(
        work / "run.nml", PluginOptions(str(work / "models/bilstm_wrf.pt")), settings
    )
    result = run_driver(namelist, program=DRIVER[0])
    print(result.stdout)
    expect(
        result,
        True,
        "all checks passed",
        what="runs A-E: tiles, OpenMP, halos, NCA holds, NaN columns, cold start",
    )
    warned = sum(
        int(n) for n in re.findall(r"(\d+) of \d+ columns had NaN/Inf inputs", result.stdout)
    )
    if warned != settings.nan_columns:
        raise SystemExit(
            f"FAIL NaN warnings counted {warned} columns, {settings.nan_columns} had NaN"
        )
    print(f"  ok    NaN warnings name the {warned} columns")


def case_parity(work: Path) -> None:
    state = state_vs_reader(work / "run.nc", WRFOUT)
    worst = max(state, key=state.get)
    print(
        f"driver state vs the wrfout reader: max relative difference {state[worst]:.2e} ({worst})"
    )
    if state[worst] > READER_RTOL:
        raise SystemExit(f"FAIL the driver's WRF state differs from the reader's: {state}")
    parity = first_call_parity(work / "run.nc", work / "models/bilstm_wrf.pt")
    print(json.dumps(parity.max_abs_diff, indent=1))
    print(parity.summary())
    if not parity.ok or parity.recomputed == 0 or parity.held == 0 or parity.convecting == 0:
        raise SystemExit(
            "FAIL parity with PyTorch (or a call without recomputed, held or convecting columns)"
        )


def case_errors(work: Path) -> None:
    import torch

    model = str(work / "models/bilstm_wrf.pt")
    digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    cases: list[tuple[str, PluginOptions, int, bool, tuple[str, ...]]] = [
        (
            "missing model file",
            PluginOptions(str(work / "none.pt")),
            40,
            False,
            ("FATAL CALLED", "cannot load paramlib_cu_model", "none.pt"),
        ),
        (
            "empty model name",
            PluginOptions(""),
            40,
            False,
            ("paramlib_cu_model in &physics is empty",),
        ),
        ("levels differ", PluginOptions(model), 44, False, ("levels", "44 mass levels")),
        (
            "bad fallback",
            PluginOptions(model, fallback=7),
            40,
            False,
            ("paramlib_cu_fallback = 7",),
        ),
        ("bad device", PluginOptions(model, device=3), 40, False, ("paramlib_cu_device = 3",)),
        (
            "units differ",
            PluginOptions(str(work / "models/units.pt")),
            40,
            False,
            ("FATAL CALLED", "'p'", "hPa"),
        ),
        (
            "unknown input",
            PluginOptions(str(work / "models/unknown_input.pt")),
            40,
            False,
            ('input "q_vapour" is not a field',),
        ),
        (
            "unknown output",
            PluginOptions(str(work / "models/unknown_output.pt")),
            40,
            False,
            ('output "precip" is not an MSKF output',),
        ),
        ("valid init", PluginOptions(model), 40, True, ("init ok", "23 inputs, 8 outputs")),
        (
            "a file other than the pinned SHA-256",
            PluginOptions(model, sha256="0" * 64),
            40,
            False,
            ("FATAL CALLED", "is not the file paramlib_cu_sha256 pins", digest, "0" * 64),
        ),
        ("the pinned file", PluginOptions(model, sha256=digest), 40, True, ("init ok",)),
        (
            "a cloud-top fraction of 1.5",
            PluginOptions(model, top_fraction=1.5),
            40,
            False,
            ("FATAL CALLED", "paramlib_cu_top_fraction =  1.500E+00 in &physics: expected 0 <="),
        ),
        (
            "a water closure of 2",
            PluginOptions(model, water_closure=2),
            40,
            False,
            ("FATAL CALLED", "paramlib_cu_water_closure = 2 in &physics: expected 0"),
        ),
        (
            "an out-of-range log every -1 calls",
            PluginOptions(model, ood_every=-1),
            40,
            False,
            ("FATAL CALLED", "paramlib_cu_ood_every = -1 in &physics: expected >= 0"),
        ),
        (
            "a model path filling its buffer (cut short when read)",
            PluginOptions("/" + "m" * 1100),
            40,
            False,
            ("FATAL CALLED", "paramlib_cu_model in &physics fills all 1024 characters"),
        ),
    ]
    if not torch.cuda.is_available():
        cases += [
            (
                "CUDA without a GPU, fallback 0",
                PluginOptions(model, device=1),
                40,
                False,
                ("FATAL CALLED", "cannot load"),
            ),
            (
                "CUDA without a GPU, fallback 1",
                PluginOptions(model, device=1, fallback=1),
                40,
                True,
                ("running the model on the CPU", "init ok"),
            ),
        ]
    for what, options, levels, ok, texts in cases:
        namelist = write_namelist(
            work / "init.nml", options, DriverSettings(mode="init", levels=levels)
        )
        expect(
            run_driver(namelist, threads=1, timeout=120, program=DRIVER[0]), ok, *texts, what=what
        )
    long_wrfout = DriverSettings(mode="init", levels=40, wrfout="/" + "w" * 1100)
    namelist = write_namelist(work / "init.nml", PluginOptions(model), long_wrfout)
    expect(
        run_driver(namelist, threads=1, timeout=120, program=DRIVER[0]),
        False,
        "&driver wrfout is longer than 1023 characters",
        what="the driver's wrfout path filling its buffer",
    )


def wrf_levels() -> int:
    import xarray as xr

    with xr.open_dataset(WRFOUT) as data:
        return int(data.sizes["bottom_top"])


def screen_counts(output: str) -> tuple[int, int]:
    """Recomputed columns of the driver's screen call with zero outputs and with the model's."""
    counts = re.search(r"screen: (\d+) recomputed columns with zero cumulus outputs, (\d+)", output)
    return (int(counts[1]), int(counts[2])) if counts else (-1, -1)


def case_screen(work: Path) -> None:
    from wrf_test_models import nan_heating_model

    model = nan_heating_model(work / "models" / "nan_heating.pt", wrf_levels())
    settings = DriverSettings(mode="screen", wrfout=str(WRFOUT))
    namelist = write_namelist(work / "screen.nml", PluginOptions(str(model)), settings)
    result = run_driver(namelist, program=DRIVER[0])
    print(result.stdout)
    expect(result, True, "screen: every WRF output finite", what="NaN outputs never reach WRF")
    warned = re.findall(r"(\d+) of \d+ recomputed columns got NaN/Inf model outputs", result.stdout)
    zeroed, kept = screen_counts(result.stdout)
    if not (zeroed == sum(map(int, warned)) > 0 and kept > 0):
        raise SystemExit(f"FAIL zeroed {zeroed}, kept {kept}, warnings {warned}:\n{result.stdout}")
    print(f"  ok    {zeroed} columns with NaN outputs zeroed, counted in {len(warned)} warnings")


def case_on_error(work: Path) -> None:
    from wrf_test_models import FAILURE, odd_tile_failure_model

    model = str(odd_tile_failure_model(work / "models" / "odd_tile_failure.pt", wrf_levels()))
    settings = DriverSettings(mode="screen", wrfout=str(WRFOUT))
    stop = write_namelist(work / "on_error.nml", PluginOptions(model), settings)
    # The bridge's message reaches the user after the tile (a WRITE once overwrote it).
    # ... with the model's own error, not the interpreter's "The following operation failed".
    bridge = f"forward: forward of '{model}' failed: builtins.RuntimeError: {FAILURE}"
    expect(
        run_driver(stop, program=DRIVER[0]),
        False,
        "FATAL CALLED",
        "model call failed on tile i = ",
        bridge,
        "paramlib_cu_on_error = 1",
        what="a failed model call on a tile stops WRF by default",
    )
    allow = write_namelist(work / "on_error.nml", PluginOptions(model, on_error=1), settings)
    result = run_driver(allow, program=DRIVER[0])
    print(result.stdout)
    expect(
        result,
        True,
        bridge,
        "paramlib_cu_on_error = 1: zero cumulus outputs there",
        "screen: every WRF output finite",
        what="paramlib_cu_on_error = 1: a warning and zero outputs on the failed tiles",
    )
    failed = result.stdout.count("model call failed on tile")
    zeroed, kept = screen_counts(result.stdout)
    if not (failed > 0 and zeroed > 0 and kept > 0):
        raise SystemExit(f"FAIL {failed} failed tiles, zeroed {zeroed}, kept {kept}")
    print(f"  ok    {failed} failed tiles: {zeroed} columns zeroed, {kept} kept the model's")
    bad = write_namelist(work / "on_error.nml", PluginOptions(model, on_error=7), settings)
    expect(
        run_driver(bad, program=DRIVER[0]),
        False,
        "paramlib_cu_on_error = 7 in &physics: expected 0",
        what="paramlib_cu_on_error other than 0 or 1 stops WRF at initialisation",
    )


LIMITS = re.compile(
    r"limits on tile i = 1\.\.\d+, j = 1\.\.\d+, columns \(levels\): cut above cloud top"
    r" (\d+) \((\d+)\), drying scaled (\d+) \((\d+)\), negative hydrometeor tendencies zeroed"
    r" (\d+) \((\d+)\), PRATEC closed (\d+)"
)
OOD = re.compile(
    r"inputs outside the training range in (\d+) recomputed columns over (\d+) cumulus calls"
    r" \(KTAU \d+\.\.\d+\): (.*)"
)


def case_limits(work: Path) -> None:
    import numpy as np
    import torch
    import xarray as xr
    from wrf_test_models import PROBE_TOP, dries_out, limit_probe_model

    nlev = wrf_levels()
    model = limit_probe_model(work / "models" / "limit_probe.pt", nlev)
    for closure in (0, 1):
        options = PluginOptions(str(model), water_closure=closure)
        settings = DriverSettings(wrfout=str(WRFOUT), output=str(work / "limits.nc"))
        result = run_driver(
            write_namelist(work / "limits.nml", options, settings), program=DRIVER[0]
        )
        what = f"the limit probe, water_closure = {closure}"
        expect(result, True, "all checks passed", what=f"{what}: runs A-E")
        with xr.open_dataset(work / "limits.nc") as ds:
            ds = ds.load()
        dt, stepcu = float(ds.attrs["DT"]), int(ds.attrs["STEPCU"])
        first = ds.isel(call=0)
        fresh = columns(ds["nca_before"])[:, 0] < 0.5 * dt
        surface = torch.from_numpy(columns(ds["t"])[:, 0])
        dry = dries_out(surface).numpy()  # the probe dries twice what is there
        ten = {name: columns(first[name])[fresh] for name in TENDENCIES}
        period = np.maximum(columns(first["nca"])[fresh], np.float32(stepcu * dt))
        water = columns(ds["qv"])[fresh] + period * ten["rqvcuten"]
        checks = {
            "every tendency exactly 0 above the cloud top": all(
                (ten[name][:, PROBE_TOP:] == 0).all() for name in TENDENCIES
            ),
            "heating below it": (ten["rthcuten"][:, :PROBE_TOP] > 0).all(),
            "CUTOP at the diagnosed top": (columns(first["cutop"])[fresh] == PROBE_TOP).all(),
            "QV + T RQVCUTEN >= 0 at every level": (water >= 0).all(),
            "no negative hydrometeor tendency": all(
                (ten[name] >= 0).all() for name in HYDROMETEORS
            ),
        }
        if closure:
            mass = columns(ds["rho"])[fresh] * columns(ds["dz8w"])[fresh]
            loss = -sum((ten[name] * mass).sum(axis=1) for name in TENDENCIES[1:])
            pratec = columns(first["pratec"])[fresh, 0]
            checks["PRATEC = the net water loss"] = np.allclose(pratec, loss, rtol=1e-5)
        counts = LIMITS.search(result.stdout)
        n = int(fresh.sum())
        logged = tuple(map(int, counts.groups())) if counts else ()
        want = (
            n,
            n * (nlev - PROBE_TOP),
            int((fresh & dry).sum()),
            int((fresh & dry).sum()) * PROBE_TOP,
            n,
            3 * n,
            n * closure,
        )
        checks[f"run A's first limits line counts {want}"] = logged == want
        failed = [name for name, ok in checks.items() if not ok]
        if failed or n == 0:
            raise SystemExit(f"FAIL {what}: {failed} ({n} recomputed columns):\n{result.stdout}")
        print(f"  ok    {what}: {'; '.join(checks)}")
        parity = first_call_parity(work / "limits.nc", model, options)
        print(parity.summary())
        if not parity.ok:
            raise SystemExit(f"FAIL {what}: the first call differs from limit_columns")


def ood_lines(output: str) -> list[tuple[int, int, str]]:
    return [(int(a), int(b), c) for a, b, c in OOD.findall(output)]


def case_ood(work: Path) -> None:
    from wrf_test_models import limit_probe_model, nan_heating_model

    nlev = wrf_levels()
    model = str(limit_probe_model(work / "models" / "limit_probe.pt", nlev))
    settings = DriverSettings(wrfout=str(WRFOUT))
    # Runs A-E: 11 cumulus calls; with a log every 2 calls: five lines at the start of calls
    # 3, 5, ..., 11 and one at finalize. Only level 1 of t is out of range, for every column.
    for every, periods in ((2, [2] * 5 + [1]), (0, [11])):
        options = PluginOptions(model, ood_every=every)
        result = run_driver(write_namelist(work / "ood.nml", options, settings), program=DRIVER[0])
        expect(
            result,
            True,
            "all checks passed",
            "records no training range (valid_range) for qv: left out of the out-of-range counts",
            what=f"runs A-E, paramlib_cu_ood_every = {every}; qv named as without a range",
        )
        lines = ood_lines(result.stdout)
        band = f"t[1-{nlev // 4}]"
        if [calls for _, calls, _ in lines] != periods or any(
            counts != f"{band} {checked}" or checked == 0 for checked, _, counts in lines
        ):
            raise SystemExit(f"FAIL expected {periods} calls a line, each {band} N:\n{lines}")
        print(f"  ok    paramlib_cu_ood_every = {every}: {len(lines)} lines, {lines[0]}")
    bare = nan_heating_model(work / "models" / "nan_heating.pt", nlev)
    screen = DriverSettings(mode="screen", wrfout=str(WRFOUT))
    namelist = write_namelist(work / "ood.nml", PluginOptions(str(bare)), screen)
    result = run_driver(namelist, program=DRIVER[0])
    unavailable = result.stdout.count("out-of-range counts unavailable")
    if unavailable != 1 or ood_lines(result.stdout):
        raise SystemExit(f"FAIL a model without ranges: said {unavailable} times:\n{result.stdout}")
    print("  ok    a model without valid_range: out-of-range counts unavailable, said once")


def case_wrfpp(work: Path) -> None:
    settings = DriverSettings(wrfout=str(WRFOUT))
    namelist = write_namelist(
        work / "wrfpp.nml", PluginOptions(str(work / "models/bilstm_wrf.pt")), settings
    )
    result = run_driver(namelist, threads=2, program=DRIVER[0])
    print(result.stdout)
    # Without #ifdef _OPENMP (`!$` sentinels) WRF's rule leaves one handle for every thread.
    expect(
        result,
        True,
        "2 OpenMP thread handle(s)",
        "all checks passed",
        what="the plugin preprocessed as WRF does, 2 OpenMP threads: runs A-E",
    )


CASES: dict[str, Callable[[Path], None]] = {
    "model": lambda work: make_models(work / "models"),
    "run": case_run,
    "parity": case_parity,
    "errors": case_errors,
    "screen": case_screen,
    "on_error": case_on_error,
    "limits": case_limits,
    "ood": case_ood,
    "wrfpp": case_wrfpp,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", required=True, type=Path, help="wrf_plugin_driver program")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("case", choices=sorted(CASES))
    args = parser.parse_args()
    if not WRFOUT.is_file():
        print(
            f"skipped: real WRF MSKF output not found at {WRFOUT}; set PARAMLIB_DATA_ROOT to the"
            " folder holding wrf_mskf/"
        )
        return SKIP
    args.work.mkdir(parents=True, exist_ok=True)
    DRIVER.append(args.driver)
    CASES[args.case](args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
