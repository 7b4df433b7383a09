"""`paramlib demo`: the whole path on the bundled testbed, one stage after another.

Each stage prints what it made; stages whose output is up to date say so and skip the work
(the testbed by its seed, the training stores by their build fingerprints), so a second
`make demo` is quick. Everything goes under ``--out`` (default build/demo).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paramlib.cli import Subparsers
from paramlib.paths import CONFIGS, RECIPES, STORES_ENV, build_dir, demo_dir

NCOL = 64
TOLERANCE = 1e-6  # float32, CPU: the bridge runs the same libtorch kernels as PyTorch
# Stores the training stage reads; bilstm_wrf_mskf needs the real WRF runs (skipped without).
TESTBED_RECIPES = (
    "mfrpn_lf_testbed",
    "mfrpn_hf_testbed",
    "mfrpn_hf_oracle_testbed",
    "bilstm_testbed_wrf",
    "bilstm_testbed_wrf_plus4k",
)
REAL_WRF_RECIPE = "bilstm_wrf_mskf"
# Trained with their `small` variant: the MF-RPN compositions, the baselines and the oracle,
# and the Bi-LSTM emulators (bilstm_wrf_mskf when its store was built).
TRAINED = (
    "mfrpn_hf_of_lf",
    "mfrpn_hf_of_lf_and_x",
    "mfrpn_hf_of_bm_and_x",
    "mlp_hf",
    "rpn_hf_only",
    "rpn_lf_only",
    "rpn_oracle",
    "bilstm_testbed_wrf",
    "bilstm_testbed_wrf_plus4k",
    "bilstm_wrf_mskf",
)
# The Bi-LSTM runs scored on held-out data beside the baselines: a held-out real WRF run (the
# store's test split, shear2x) and the testbed's +4K WRF-format set.
HELD_OUT_EMULATORS = ("bilstm_wrf_mskf", "bilstm_testbed_wrf_plus4k")
BRIDGE_MODEL = "mfrpn_hf_of_bm_and_x"  # the one run through the Fortran bridge
BRIDGE_TOLERANCE = 1e-5  # relative to the output's scale
BF16_TOLERANCE = 0.02  # relative L2 error against float32 the bf16 demo call accepts
SEEDS = (0, 1, 2)  # of the MF-RPN comparison: every reported comparison shows a seed spread


class DemoError(RuntimeError):
    """A stage failed; the message says which and why."""


@dataclass(frozen=True)
class Demo:
    out: Path
    seed: int

    @property
    def testbed(self) -> Path:
        return self.out / "testbed"

    @property
    def stores(self) -> Path:
        return self.out / "stores"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def model(self, config: str) -> Path:
        """The model file a training run of the demo exported."""
        return self.runs / config / "model.pt"

    @property
    def evaluation(self) -> Path:
        return self.out / "evaluation"


def write_columns(path: Path, x: np.ndarray) -> None:
    """(ncol, nlev) float32 as example 01 reads it: int32 nlev, ncol, then the Fortran
    array a(nlev, ncol), which is byte for byte x in C order."""
    with path.open("wb") as f:
        np.array([x.shape[1], x.shape[0]], dtype="<i4").tofile(f)
        x.astype("<f4").tofile(f)


def read_columns(path: Path) -> np.ndarray:
    nlev, ncol = np.fromfile(path, dtype="<i4", count=2)
    return np.fromfile(path, dtype="<f4", offset=8).reshape(int(ncol), int(nlev))


_transcript: list[str] | None = None  # what `say` printed, while a `replayable` stage runs


def say(text: str) -> None:
    if _transcript is not None:
        _transcript.append(text)
    print(f"      {text}".replace("\n", "\n      "), flush=True)


def up_to_date(output: Path, inputs: Sequence[Path]) -> bool:
    """``output`` exists and is newer than every one of ``inputs``, which all exist."""
    if not output.is_file() or not all(path.exists() for path in inputs):
        return False
    return all(path.stat().st_mtime < output.stat().st_mtime for path in inputs)


def replayable(summary: Path, inputs: Sequence[Path], work: Callable[[], None]) -> None:
    """Run ``work`` and keep what it said in ``summary``; when the summary is newer than every
    input, say it again instead of running (the stage's output is up to date)."""
    global _transcript
    if up_to_date(summary, inputs):
        say(f"up to date ({summary}):\n" + summary.read_text().rstrip())
        return
    _transcript = []
    try:
        work()
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text("\n".join(_transcript) + "\n")
    finally:
        _transcript = None


# --- stages -----------------------------------------------------------------------------------


def fortran_bridge(demo: Demo) -> None:
    """Export a model from Python, run it from a Fortran program, compare with PyTorch, pin it."""
    import torch

    from paramlib.export import save
    from paramlib.models.examples import make_example

    program = build_dir() / "bin" / "01_simple"
    if not program.is_file():
        raise DemoError(f"{program} is not built; run `make build`")
    module, metadata = make_example("simple", seed=0)
    model_file = save(module, demo.out / "simple.pt", metadata)
    say(
        f"exported {model_file}: {metadata.inputs[0].name}({metadata.inputs[0].nlev} levels)"
        f" -> {metadata.outputs[0].name}({metadata.outputs[0].nlev} levels)"
    )
    x = np.random.default_rng(0).standard_normal((NCOL, metadata.inputs[0].nlev))
    x = x.astype(np.float32)
    write_columns(demo.out / "in.bin", x)
    command = [str(program), str(model_file), str(demo.out / "in.bin"), str(demo.out / "out.bin")]
    result = subprocess.run(command, capture_output=True, text=True)
    say(f"{program.name} on {NCOL} columns:\n{result.stdout.strip()}")
    if result.returncode != 0:
        raise DemoError(f"{program.name} failed:\n{result.stderr}")
    with torch.inference_mode():
        y_torch = torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()
    diff = float(np.abs(read_columns(demo.out / "out.bin") - y_torch).max())
    say(
        f"max |Fortran - PyTorch| = {diff:.3e} over {y_torch.size} values (tolerance {TOLERANCE:g})"
    )
    if diff > TOLERANCE:
        raise DemoError(f"the Fortran and PyTorch outputs differ by {diff:.3e}")
    pinning(model_file)


def pinning(model_file: Path) -> None:
    """A host pins the file it runs by SHA-256: the right hash loads, another is refused
    before anything of the file is loaded (a model file is code)."""
    from paramlib.export import file_sha256
    from paramlib.fortran.bridge import BridgeError, FortranModel

    digest = file_sha256(model_file)
    with FortranModel(model_file, sha256=digest):
        say(f"sha256 {digest}: loads when pinned (load(..., sha256=HEX))")
    try:
        FortranModel(model_file, sha256="0" * 64)
    except BridgeError as error:
        say(f"pinned to another hash: refused, {error.message}")
    else:
        raise DemoError(f"{model_file} loaded although pinned to another SHA-256")


def testbed(demo: Demo) -> None:
    """The small testbed (kept when already generated with this seed)."""
    from paramlib.testbed.generate import SUMMARY, generate

    summary_file = demo.testbed / SUMMARY
    current = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if current.get("seed") == demo.seed and "wrf_plus4k" in current:
        say(f"{demo.testbed}: up to date (seed {demo.seed})")
    else:
        generate(demo.testbed, size="small", seed=demo.seed, log=say)
    summary = json.loads(summary_file.read_text())
    corr = summary["lf_hf_correlation"]
    out_of_range = summary["plus4k_out_of_range"]
    mid = [fraction for level, fraction in out_of_range.items() if 200 <= float(level) <= 850]
    say(
        f"Betts-Miller tuned: tau = {summary['bm_tau_s'] / 3600:g} h, RH = {summary['bm_rh']:g};"
        f" LF-HF correlation on HF states: heating {corr['heating']:.3f}, moistening"
        f" {corr['moistening']:.3f}"
    )
    say(
        "+4K HF temperatures outside the historical range, 200-850 hPa mean:"
        f" {sum(mid) / len(mid):.2f} with WTG"
    )


def wrfout_reader(demo: Demo) -> None:
    """Read the testbed's WRF-format set back with the wrfout reader."""
    from paramlib.data.readers.wrfout import open_wrfout

    files = sorted((demo.testbed / "wrf").glob("wrfout_d01_*"))
    ds = open_wrfout(files)
    active = float((abs(ds["rthcuten"]).max("lev") > 0).mean())
    say(
        f"{len(files)} file(s): {dict(ds.sizes)}; variables {len(ds.data_vars)};"
        f" fraction of columns with cumulus heating {active:.2f}"
    )


def training_stores(demo: Demo) -> None:
    """Build the shipped recipes' stores (each a no-op when up to date)."""
    from paramlib.catalog import CatalogError, load_catalog, resolve_paths
    from paramlib.evaluate.study import build_stores

    names = list(TESTBED_RECIPES)
    try:
        resolve_paths(load_catalog(check_paths=False)["wrf_mskf_ctl"])
        names.append(REAL_WRF_RECIPE)
    except CatalogError as error:
        say(f"{REAL_WRF_RECIPE}: skipped, the real WRF runs are not here ({error})")
    build_stores(demo.testbed, demo.stores, [RECIPES / f"{name}.yaml" for name in names], say)


def train_models(demo: Demo) -> None:
    """Train the small variants of the shipped configs (a finished run is up to date; one
    whose config changed is trained again) and export each to RUN/model.pt."""
    import os
    import shutil

    from paramlib.train.config import load_config
    from paramlib.train.loop import RunDirError, train

    os.environ[STORES_ENV] = str(demo.stores)  # the configs' default store folder
    for name in TRAINED:
        config = load_config(CONFIGS / f"{name}.yaml", [], "small")
        stores = [config.data.store, config.data.lf_store]
        missing = [store for store in stores if store and not Path(store).exists()]
        if missing:
            say(f"{name}: skipped, no store {missing[0]}")
            continue
        out = demo.runs / name
        try:
            status = train(config, out, resume=True)
        except RunDirError:
            shutil.rmtree(out)  # trained with another config: the demo's own run, redo it
            status = train(config, out, resume=True)
        if status != 0:
            raise DemoError(f"training {name} exited with status {status}")
        say(f"{name}: {demo.model(name)}")


def bridge_on_trained_model(demo: Demo) -> None:
    """Run a trained MF-RPN through the Fortran bridge on the +4K test columns and compare
    with the same file in PyTorch."""
    import torch
    import xarray as xr

    from paramlib.export import load_metadata
    from paramlib.fortran.bridge import FortranModel

    path = demo.model(BRIDGE_MODEL)
    meta = load_metadata(path)
    test = xr.open_zarr(demo.stores / "mfrpn_hf_testbed.zarr", group="test")
    inputs = {}
    for field in meta["inputs"]:
        values = test[field["name"]].values.astype(np.float32)
        inputs[field["name"]] = values.reshape(len(values), -1)[:, : field["nlev"]]
    with torch.inference_mode():
        expected = torch.jit.load(str(path))(*map(torch.from_numpy, inputs.values()))
    expected = expected if isinstance(expected, tuple) else (expected,)
    with FortranModel(path) as model:
        for name, values in inputs.items():
            model.set_input(name, values)
        model.forward()
        worst = 0.0
        for field, torch_out in zip(meta["outputs"], expected, strict=True):
            fortran = model.get_output(field["name"])
            scale = float(np.abs(torch_out.numpy()).max()) or 1.0
            worst = max(worst, float(np.abs(fortran - torch_out.numpy()).max()) / scale)
    n = len(next(iter(inputs.values())))
    say(
        f"{path.name} of {BRIDGE_MODEL}: {len(inputs)} inputs, {len(expected)} outputs on {n}"
        f" +4K test columns; max |Fortran - PyTorch| / scale = {worst:.2e}"
        f" (tolerance {BRIDGE_TOLERANCE:g})"
    )
    if worst > BRIDGE_TOLERANCE:
        raise DemoError(f"the bridge and PyTorch differ by {worst:.2e} of the output scale")
    reduced_precision(path, inputs)


def reduced_precision(path: Path, inputs: dict[str, np.ndarray]) -> None:
    """The same columns in bf16, opt-in: the bridge's first reduced forward is checked against
    float32 and kept only within the host's tolerance."""
    from paramlib.fortran.bridge import BridgePrecisionWarning, FortranModel

    with FortranModel(path) as model, warnings.catch_warnings():
        warnings.simplefilter("ignore", BridgePrecisionWarning)  # said below, in one line
        model.set_precision("bf16", BF16_TOLERANCE)
        for name, values in inputs.items():
            model.set_input(name, values)
        model.forward()
        kept, error = model.precision()
    verdict = "kept" if kept == "bf16" else "refused, the model stays in float32"
    say(
        f"bf16 (set_precision, tolerance {BF16_TOLERANCE:g}): relative L2 error {error:.1e}"
        f" against float32 on the same columns: {verdict}"
    )


def wrf_plugin(demo: Demo) -> None:
    """The WRF cumulus plugin with the trained Bi-LSTM on the testbed's wrfout
    (paramlib.wrf.demo_stage; imported here, as xarray is slow to import for every command)."""
    from paramlib.wrf.demo_stage import RUN
    from paramlib.wrf.demo_stage import wrf_plugin as run_stage
    from paramlib.wrf.driver import driver_path

    inputs = [demo.model(RUN), driver_path(), *(demo.testbed / "wrf").glob("wrfout_d01_*")]
    replayable(demo.out / "wrf_plugin" / "summary.txt", inputs, functools.partial(run_stage, demo))


def online_coupling(demo: Demo) -> None:
    """The trained MF-RPN and HF-only RPN in the column host paramlib_scm, ml and hybrid,
    historical and +4K, against the Emanuel reference (paramlib.couple.demo_stage)."""
    from paramlib.couple.demo_stage import online_experiment
    from paramlib.couple.scm import executable

    models = [demo.model("mfrpn_hf_of_bm_and_x"), demo.model("rpn_hf_only")]
    inputs = [*models, executable(), demo.testbed / "summary.json"]
    summary = demo.out / "couple" / "summary.txt"
    replayable(summary, inputs, functools.partial(online_experiment, demo, log=say))


def emulators_held_out(demo: Demo) -> None:
    """The Bi-LSTM emulators on data they were not trained on, beside persistence and
    climatology, with the out-of-distribution report (paramlib evaluate). These are the
    `small` variants: a check of the path, not the emulator's skill (README, "The Bi-LSTM
    emulator out of its training regime")."""
    names = [name for name in HELD_OUT_EMULATORS if demo.model(name).is_file()]
    inputs = [demo.model(name) for name in names]
    inputs += [demo.stores / f"{name}.zarr" / "zarr.json" for name in names]
    work = functools.partial(_score_emulators, demo, names)
    replayable(demo.out / "emulators" / "summary.txt", inputs, work)


def _score_emulators(demo: Demo, names: Sequence[str]) -> None:
    from paramlib.evaluate.baselines import climatology, persistence
    from paramlib.evaluate.engine import evaluate
    from paramlib.evaluate.report import write_report
    from paramlib.evaluate.sources import load_model

    for name in names:
        store = demo.stores / f"{name}.zarr"
        label = f"{name} (small variant)"
        models = [load_model(demo.model(name), label), persistence(store, "test")]
        results = evaluate([*models, climatology(store)], store, ["test"], progress=False)
        report = write_report(results, demo.out / "emulators" / name)
        say(f"{results['splits']['test']['label']}: {report}")
        for model, scores in results["scores"].items():
            test = scores["test"]["all"]
            say(
                f"  {model:<42} trigger F1 {test['trigger']['f1'][0]:.3f}, heating R²"
                f" (triggered columns) {test['rthcuten_triggered']['r2_all_levels']:.3f}"
            )
        outside = [
            (band["fraction"], field, band["levels"])
            for field, bands in results["ood"][label]["test"].items()
            for band in bands
        ]
        worst = ", ".join(
            f"{field} levels {low}-{high}: {fraction:.0%}"
            for fraction, field, (low, high) in sorted(outside, reverse=True)[:3]
        )
        say(f"  columns outside the training range, most affected inputs: {worst}")


def evaluation_report(demo: Demo) -> None:
    """The MF-RPN comparison on historical and +4K columns over `SEEDS` (runs of other seeds
    trained when missing), with its report; up to date when newer than every run and store."""
    from paramlib.evaluate.compare import COMPARED, DATASET, compare_models

    inputs = [demo.stores / f"{DATASET}.zarr" / "zarr.json"]
    for name, _ in COMPARED:
        inputs += [run / "checkpoint.pt" for run in demo.runs.glob(f"{name}*")]
    if len(inputs) <= len(COMPARED) * len(SEEDS):  # runs of some seeds are still to train
        inputs.append(demo.runs / "missing")
    work = functools.partial(
        compare_models, demo.stores, demo.runs, SEEDS, demo.evaluation, log=say
    )
    replayable(demo.evaluation / "summary.txt", inputs, work)


STAGES: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("export a model, run it from Fortran, compare with PyTorch, pin it", fortran_bridge),
    ("testbed (small)", testbed),
    ("read the WRF-format set with the wrfout reader", wrfout_reader),
    ("training stores from the shipped recipes", training_stores),
    (
        "train the small models (MF-RPN x 3, baselines, oracle, Bi-LSTM) and export them",
        train_models,
    ),
    ("run a trained MF-RPN through the Fortran bridge", bridge_on_trained_model),
    (
        "online coupling: the column host with the MF-RPN, historical and +4K, ml and hybrid",
        online_coupling,
    ),
    ("the WRF cumulus plugin (Bi-LSTM via the WRF-shaped driver)", wrf_plugin),
    (
        "Bi-LSTM emulators on held-out data beside persistence and climatology, OOD report",
        emulators_held_out,
    ),
    ("offline +4K evaluation: MF-RPN compositions vs baselines over 3 seeds", evaluation_report),
)


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    demo = Demo(Path(args.out), args.seed)
    demo.out.mkdir(parents=True, exist_ok=True)
    for number, (title, stage) in enumerate(STAGES, start=1):
        print(f"[{number}/{len(STAGES)}] {title}", flush=True)
        try:
            stage(demo)
        except (DemoError, ValueError, OSError) as error:
            print(f"paramlib demo: stage {number} ({title}) failed: {error}", file=sys.stderr)
            return 1
    print(f"demo outputs in {demo.out}")
    return 0


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the whole path on the bundled testbed")
    parser.add_argument("--out", default=str(demo_dir()), help="working folder")
    parser.add_argument("--seed", type=int, default=0, help="testbed seed (default 0)")
    parser.set_defaults(func=run)
