"""An exported RPN ensemble model file against the bare batched matmuls it needs.

A 32-member RPN (52 -> 7 x 512 -> 48, trainable + fixed prior) on the MF-RPN paper's fields
is exported with paramlib.models.export_module (all members out), saved with
paramlib.export.save, loaded back with torch.jit.load and called on a batch of 4096 columns
in physical units under torch.inference_mode(). Its ceiling is the bare batched matmuls of
the same shapes (trainable and prior, every layer) into preallocated outputs; the ratio of
the two times is the model's FLOP rate over the ceiling's.

On CUDA the model also runs with TF32 matmuls and as a bfloat16 model file (export's
compute_dtype; normalisation stays float32), each against the ceiling in the same precision
and compared with the float32 outputs (relative L2 error over all outputs and members).

Cases alternate for --rounds rounds and keep their fastest call; nothing is asserted.
On CPU the seconds are process CPU time (ensemble_common.py says why). By default glibc
page-faults every large activation afresh on each call; --keep-freed-memory has it reuse
freed memory instead, which shows what the call's own work costs.

    .venv/bin/python benchmarks/ensemble_inference.py --json build/bench/ensemble_inference.json
"""

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# One intra-op thread unless --threads says otherwise: set before torch initialises.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402
from ensemble_common import (  # noqa: E402
    DEPTH,
    MEMBERS,
    WIDTH,
    keep_freed_memory,
    layer_shapes,
    machine_info,
    matmul_flops,
    time_alternating,
)

from paramlib.export import FieldSpec, save  # noqa: E402
from paramlib.models import RPN, FieldLayout, Normaliser, export_module  # noqa: E402

# The paper's fields, with typical values and spreads standing in for a store's statistics.
INPUTS = (
    ("T", "K", 26, 250.0, 40.0),
    ("q", "kg kg-1", 22, 5e-3, 5e-3),
    ("PS", "Pa", 1, 1e5, 1e3),
    ("SOLIN", "W m-2", 1, 400.0, 300.0),
    ("SHFLX", "W m-2", 1, 15.0, 15.0),
    ("LHFLX", "W m-2", 1, 100.0, 80.0),
)
OUTPUTS = (("heating", "K s-1", 26, 0.0, 1e-5), ("moistening", "kg kg-1 s-1", 22, 0.0, 1e-8))
# precision name: (model file dtype, float32 matmul precision); CUDA runs all, CPU the first.
PRECISIONS: dict[str, tuple[torch.dtype, str]] = {
    "fp32": (torch.float32, "highest"),
    "tf32": (torch.float32, "high"),
    "bf16": (torch.bfloat16, "highest"),
}


def layout_and_stats(fields: Sequence[tuple[str, str, int, float, float]]) -> tuple:
    layout = FieldLayout(tuple(FieldSpec(n, u, k) for n, u, k, _, _ in fields))
    stats = {n: {"mean": [m] * k, "std": [s] * k} for n, _, k, m, s in fields}
    return layout, stats


def make_ceiling(
    members: int,
    batch: int,
    shapes: Sequence[tuple[int, int]],
    dtype: torch.dtype,
    device: torch.device,
) -> Callable[[], None]:
    """The forward matmuls alone: trainable and prior, every layer."""
    gen = torch.Generator(device=device).manual_seed(1)
    operands = []
    for a, b in shapes:
        for _ in ("trainable", "prior"):
            x = torch.randn(members, batch, a, device=device, generator=gen).to(dtype)
            w = torch.randn(members, a, b, device=device, generator=gen).to(dtype)
            operands.append((x, w, torch.empty(members, batch, b, device=device, dtype=dtype)))

    def ceiling() -> None:
        for x, w, out in operands:
            torch.bmm(x, w, out=out)

    return ceiling


def with_precision(precision: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        torch.set_float32_matmul_precision(precision)
        with torch.inference_mode():
            return fn()

    return call


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    device = torch.device(args.device)
    inputs, in_stats = layout_and_stats(INPUTS)
    outputs, out_stats = layout_and_stats(OUTPUTS)
    hidden = [args.width] * args.depth
    shapes = layer_shapes(inputs.size, args.width, args.depth, outputs.size)
    rpn = RPN.create(inputs.size, outputs.size, hidden, args.members, seed=args.seed)
    in_norm = Normaliser.from_stats(inputs, in_stats)
    out_norm = Normaliser.from_stats(outputs, out_stats)

    gen = torch.Generator().manual_seed(args.seed)
    columns = [
        (m + s * torch.randn(args.batch, k, generator=gen)).to(device) for _, _, k, m, s in INPUTS
    ]
    precisions = list(PRECISIONS) if device.type == "cuda" else ["fp32"]
    models, cases = {}, {}
    for name in precisions:
        dtype, matmul = PRECISIONS[name]
        path = workdir / f"rpn_{name}.pt"
        module, metadata = export_module(
            rpn, inputs, outputs, in_norm, out_norm, compute_dtype=dtype
        )
        save(module, path, metadata)
        models[name] = torch.jit.load(str(path), map_location=device)
        cases[name] = with_precision(matmul, lambda m=models[name]: m(*columns))
        ceiling = make_ceiling(args.members, args.batch, shapes, dtype, device)
        cases[f"{name}_ceiling"] = with_precision(matmul, ceiling)

    reference = torch.cat([y.float() for y in cases["fp32"]()], dim=-1)
    seconds = time_alternating(cases, args.rounds, device)
    best = {name: min(values) for name, values in seconds.items()}
    flops = 2 * matmul_flops(args.members, args.batch, shapes)
    results = {}
    for name in precisions:
        result = torch.cat([y.float() for y in cases[name]()], dim=-1)
        results[name] = {
            "model_s": best[name],
            "ceiling_s": best[f"{name}_ceiling"],
            "gflops_model": flops / best[name] / 1e9,
            "gflops_ceiling": flops / best[f"{name}_ceiling"] / 1e9,
            "ratio_vs_bmm_ceiling": best[f"{name}_ceiling"] / best[name],
            "rel_l2_error_vs_fp32": float((result - reference).norm() / reference.norm()),
        }
    torch.set_float32_matmul_precision("highest")
    return {
        "ratio_vs_bmm_ceiling": results["fp32"]["ratio_vs_bmm_ceiling"],
        "results": results,
        "round_seconds": seconds,
        "flops_per_call": flops,
        "settings": {
            "members": args.members,
            "batch": args.batch,
            "layers": [inputs.size, *hidden, outputs.size],
            "output": "members",
            "rounds": args.rounds,
            "malloc": "keep freed memory" if args.keep_freed_memory else "glibc default",
            "clock": "process CPU time" if device.type == "cpu" else "wall, synchronised",
            "statistic": "min over alternating rounds",
        },
        "machine": machine_info(device),
        "torch": torch.__version__,
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"exported RPN inference: {s['members']} members, batch {s['batch']}, layers "
        f"{s['layers'][0]}->{len(s['layers']) - 2}x{s['layers'][1]}->{s['layers'][-1]} "
        f"(trainable + prior), {report['machine']['device']}, "
        f"{report['machine']['intra_op_threads']} thread(s), torch {report['torch']}; "
        f"min over {s['rounds']} rounds of {s['clock']}; malloc: {s['malloc']}"
    )
    header = (
        f"{'precision':<10}{'model s':>10}{'ceiling s':>11}{'GFLOP/s':>10}{'ceiling':>10}"
        f"{'ratio':>8}{'rel err':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, r in report["results"].items():
        print(
            f"{name:<10}{r['model_s']:>10.4f}{r['ceiling_s']:>11.4f}{r['gflops_model']:>10.1f}"
            f"{r['gflops_ceiling']:>10.1f}{r['ratio_vs_bmm_ceiling']:>8.3f}"
            f"{r['rel_l2_error_vs_fp32']:>10.1e}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--batch", type=int, default=4096, help="columns per call")
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--depth", type=int, default=DEPTH, help="hidden layers")
    parser.add_argument("--rounds", type=int, help="timed rounds (default: 3 on CPU, 50 on CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (no page faults on each call's activations)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the model files here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 4 members, batch 64, 2 x 32, 1 round"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 50 if args.device.startswith("cuda") else 3
    if args.quick:
        args.members, args.batch, args.width, args.depth, args.rounds = 4, 64, 32, 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="ensemble_inference_") as tmp:
            report = run(args, Path(tmp))
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
