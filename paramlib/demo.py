"""`paramlib demo`: export a model from Python, run it from a Fortran program through the
bridge and compare with PyTorch on the same inputs; then generate the small testbed and read
its WRF-format set back with the wrfout reader."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from paramlib.cli import Subparsers
from paramlib.doctor import build_dir

NCOL = 64
TOLERANCE = 1e-6  # float32, CPU: the bridge runs the same libtorch kernels as PyTorch
STAGES = 5


def write_columns(path: Path, x: np.ndarray) -> None:
    """(ncol, nlev) float32 as example 01 reads it: int32 nlev, ncol, then the Fortran
    array a(nlev, ncol), which is byte for byte x in C order."""
    with path.open("wb") as f:
        np.array([x.shape[1], x.shape[0]], dtype="<i4").tofile(f)
        x.astype("<f4").tofile(f)


def read_columns(path: Path) -> np.ndarray:
    nlev, ncol = np.fromfile(path, dtype="<i4", count=2)
    return np.fromfile(path, dtype="<f4", offset=8).reshape(int(ncol), int(nlev))


def stage(number: int, total: int, text: str) -> None:
    print(f"[{number}/{total}] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from paramlib.export import save
    from paramlib.testing_models import make_example

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    program = build_dir() / "bin" / "01_simple"
    if not program.is_file():
        print(f"paramlib demo: {program} is not built; run `make build`", file=sys.stderr)
        return 1

    stage(1, STAGES, "export a TorchScript model with paramlib.json")
    module, metadata = make_example("simple", seed=0)
    model_file = save(module, out / "simple.pt", metadata)
    fields = f"{metadata.inputs[0].name}({metadata.inputs[0].nlev} levels) -> "
    fields += f"{metadata.outputs[0].name}({metadata.outputs[0].nlev} levels)"
    print(f"      {model_file}: {fields}")

    stage(2, STAGES, f"run it from Fortran ({program.name}) on {NCOL} columns")
    x = np.random.default_rng(0).standard_normal((NCOL, metadata.inputs[0].nlev))
    x = x.astype(np.float32)
    write_columns(out / "in.bin", x)
    result = subprocess.run(
        [str(program), str(model_file), str(out / "in.bin"), str(out / "out.bin")],
        capture_output=True,
        text=True,
    )
    print("      " + result.stdout.strip().replace("\n", "\n      "))
    if result.returncode != 0:
        print(f"paramlib demo: {program.name} failed:\n{result.stderr}", file=sys.stderr)
        return 1
    y_fortran = read_columns(out / "out.bin")

    stage(3, STAGES, "compare with PyTorch on the same inputs")
    with torch.inference_mode():
        y_torch = torch.jit.load(str(model_file))(torch.from_numpy(x)).numpy()
    diff = float(np.abs(y_fortran - y_torch).max())
    print(f"      max |Fortran - PyTorch| = {diff:.3e} over {y_torch.size} values "
          f"(tolerance {TOLERANCE:g})")
    if diff > TOLERANCE:
        return 1
    return show_testbed(out / "testbed", seed=args.seed)


def show_testbed(folder: Path, seed: int) -> int:
    """Stages 4-5: the small testbed (kept when already there) and its WRF-format set."""
    import json

    from paramlib.data.readers.wrfout import open_wrfout
    from paramlib.data.testbed.generate import SUMMARY, generate

    summary_file = folder / SUMMARY
    done = summary_file.is_file() and json.loads(summary_file.read_text())["seed"] == seed
    stage(4, STAGES, f"testbed (small, seed {seed}){': up to date' if done else ''}")
    if not done:
        generate(folder, size="small", seed=seed, log=lambda line: print(f"      {line}"))
    summary = json.loads(summary_file.read_text())
    corr = summary["lf_hf_correlation"]
    out_of_range = summary["plus4k_out_of_range"]
    mid = [fraction for level, fraction in out_of_range.items() if 200 <= float(level) <= 850]
    print(f"      Betts-Miller tuned: tau = {summary['bm_tau_s'] / 3600:g} h, "
          f"RH = {summary['bm_rh']:g}; LF-HF correlation on HF states: "
          f"heating {corr['heating']:.3f}, moistening {corr['moistening']:.3f}")
    print(f"      +4K HF temperatures outside the historical range, 200-850 hPa mean: "
          f"{sum(mid) / len(mid):.2f} with WTG")

    stage(5, STAGES, "read the WRF-format set with the wrfout reader")
    files = sorted((folder / "wrf").glob("wrfout_d01_*"))
    ds = open_wrfout(files)
    active = float((abs(ds["rthcuten"]).max("lev") > 0).mean())
    print(f"      {len(files)} file(s): {dict(ds.sizes)}; variables {len(ds.data_vars)}; "
          f"fraction of columns with cumulus heating {active:.2f}")
    print(f"demo outputs in {folder.parent}")
    return 0


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("demo", help="export a model and run it from Fortran")
    parser.add_argument("--out", default=str(build_dir() / "demo"), help="working folder")
    parser.add_argument("--seed", type=int, default=0, help="testbed seed (default 0)")
    parser.set_defaults(func=run)
