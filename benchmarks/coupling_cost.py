"""What coupling costs: paramlib_scm's wall time per host step and per column with Betts-Miller
(physics), an MF-RPN-sized model through the bridge (ml) and both (hybrid), and the bridge's
share of the step.

The model is an untrained RPN of the paper's size (32 members, 7 x 512, LeakyReLU; trainable +
fixed prior) on the HF([BM, x]) composition's fields (the state, surface fields and
Betts-Miller's tendencies in; heating, moistening, precipitation out), exported as mean and
spread with training ranges that hold every state (so hybrid falls back on spread alone: its
limit is the median column spread of the ml run, about half the columns). paramlib_scm runs 1
rank, 1 OpenMP thread, 1 libtorch thread, the testbed's columns and a 20-minute step; its timing
line gives seconds per step after two warm-up steps (the TorchScript executor optimises the
model in its first calls): the whole step, inside the column interface, in bridge calls, in
Betts-Miller. The same model file called from Python on the same number of columns
(torch.inference_mode, min over rounds) is the ceiling of the bridge's share.

    .venv/bin/python benchmarks/coupling_cost.py --json build/bench/coupling_cost.json
    .venv/bin/python benchmarks/coupling_cost.py --quick        # a small model, seconds

Nothing is asserted; tests/test_coupling_benchmark.py runs --quick and checks the keys.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402
from ensemble_common import DEPTH, MEMBERS, WIDTH, machine_info  # noqa: E402

from paramlib.couple.inputs import Coupling, RunSetup, TestbedClimate  # noqa: E402
from paramlib.couple.scm import run_coupled  # noqa: E402
from paramlib.couple.synthetic import inputs, synthetic_model  # noqa: E402

# The small testbed's (seed 0) tuned Betts-Miller and WTG reference.
CLIMATE = TestbedClimate(bm_tau=28800.0, bm_rh=0.55, sst_ref=299.0, spin_up_days=2.0)
DT_S = 1200.0
MODES = ("physics", "ml", "hybrid")


def torch_forward_s(path: Path, ncol: int, rounds: int) -> float:
    """The model file on ncol columns from Python: min wall time over rounds."""
    model = torch.jit.load(str(path))
    gen = torch.Generator().manual_seed(0)
    x = [m + s * torch.randn(ncol, k, generator=gen) for _, _, k, m, s in inputs(with_bm=True)]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(rounds + 2):  # two warm-up calls, as in the host
            start = time.perf_counter()
            model(*x)
            best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    everything = {name: (-1e30, 1e30) for name, *_ in inputs(with_bm=True)}
    model = synthetic_model(
        workdir / "model.pt",
        args.members,
        [args.width] * args.depth,
        with_bm=True,
        output="mean_spread",
        valid_range=everything,
    )
    setup = RunSetup(
        ncol=args.columns, days=args.steps * DT_S / 86400.0, dt_s=DT_S, output_every=args.steps
    )
    timings, fallback = {}, {}
    spread_max = 0.0
    for mode in MODES:
        coupling = Coupling(
            mode=mode, model=None if mode == "physics" else model, spread_max=spread_max
        )
        result = run_coupled(
            workdir / mode,
            "historical",
            coupling,
            setup=setup,
            climate=CLIMATE,
            chunk_size=args.columns,
        )
        timings[mode] = result.timing
        data = result.open()
        fallback[mode] = float(data["fallback_fraction"].mean())
        if mode == "ml":
            spread_max = float(np.median(data["spread"].values))
    torch_s = torch_forward_s(model, args.columns, args.rounds)
    n = args.columns
    return {
        "per_column_us": {m: 1e6 * t["step_s"] / n for m, t in timings.items()},
        "per_step_ms": {m: 1e3 * t["step_s"] for m, t in timings.items()},
        "convection_per_column_us": {m: 1e6 * t["convection_s"] / n for m, t in timings.items()},
        "bridge_share": {
            m: timings[m]["bridge_s"] / timings[m]["step_s"] for m in ("ml", "hybrid")
        },
        "physics_share": {m: t["physics_s"] / t["step_s"] for m, t in timings.items()},
        "bridge_vs_torch": {m: timings[m]["bridge_s"] / torch_s for m in ("ml", "hybrid")},
        "torch_forward_us_per_column": 1e6 * torch_s / n,
        "fallback_fraction": fallback,
        "hybrid_spread_max_w_m2": spread_max,
        "timing_lines": timings,
        "settings": {
            "columns": n,
            "steps": args.steps,
            "timed_steps": timings["ml"]["timed_steps"],
            "dt_s": DT_S,
            "model": f"RPN {args.members} members, {args.depth} x {args.width}, "
            f"HF([BM, x]) fields, mean_spread export",
            "ranks": 1,
            "openmp_threads": 1,
            "torch_threads": 1,
            "clock": "wall (system_clock in paramlib_scm, perf_counter in Python)",
        },
        "machine": machine_info(torch.device("cpu")),
        "torch": torch.__version__,
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"coupling cost: {s['columns']} columns, {s['timed_steps']} timed steps of "
        f"{s['dt_s']:g} s, {s['model']}; 1 rank, 1 thread, torch {report['torch']}"
    )
    header = (
        f"{'mode':<9}{'ms/step':>10}{'us/column':>11}{'bridge':>9}{'physics':>9}{'fallback':>10}"
    )
    print(header)
    print("-" * len(header))
    for mode in MODES:
        bridge = report["bridge_share"].get(mode)
        print(
            f"{mode:<9}{report['per_step_ms'][mode]:>10.3f}{report['per_column_us'][mode]:>11.2f}"
            f"{'' if bridge is None else f'{bridge:.3f}':>9}"
            f"{report['physics_share'][mode]:>9.3f}{report['fallback_fraction'][mode]:>10.3f}"
        )
    print(
        f"the model from Python on {s['columns']} columns: "
        f"{report['torch_forward_us_per_column']:.2f} us/column; bridge calls / Python "
        f"forward: ml {report['bridge_vs_torch']['ml']:.3f}, "
        f"hybrid {report['bridge_vs_torch']['hybrid']:.3f}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--quick", action="store_true", help="a small model and few columns and steps (for tests)"
    )
    parser.add_argument("--columns", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="host steps (2 of them warm-up)")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--depth", type=int, default=DEPTH)
    parser.add_argument("--rounds", type=int, default=5, help="Python forward calls timed")
    args = parser.parse_args(argv)
    if args.quick:
        args.columns, args.steps, args.members, args.width, args.depth = 32, 5, 4, 64, 2
        args.rounds = 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as workdir:
        report = run(args, Path(workdir))
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
