"""One RPN training step, vectorized over members, against a loop over members and its limit.

A training step is forward (trainable + fixed prior), ensemble MSE, backward and one Adam
step, on per-member batches (each member its own bootstrap rows). Timed four ways:

  vectorized  paramlib.models.RPN: M members as stacked weights, one baddbmm per layer;
  loop        M separate models (nn.Linear stacks, trainable + prior), a Python loop over
              them in forward, one backward and one Adam over all their parameters;
  one_member  the vectorized RPN with 1 member (what one member costs alone);
  bmm_ceiling the bare batched matmuls of the step's shapes, nothing else: per layer the
              trainable and prior forward products, the weight gradient and (after the first
              layer) the input gradient, into preallocated outputs.

The step's FLOP rate counts exactly the ceiling's matmuls, so ratio_vs_bmm_ceiling is the
ceiling's time over the step's. Cases alternate for --rounds rounds; each keeps its fastest
call (the least disturbed by background load). Nothing is asserted about timings.
On CPU the seconds are process CPU time (ensemble_common.py says why). By default glibc
page-faults every large activation afresh on each call; --keep-freed-memory has it reuse
freed memory instead, which shows what the step's own work costs.

    .venv/bin/python benchmarks/ensemble_training.py --json build/bench/ensemble_training.json
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# One intra-op thread unless --threads says otherwise: set before torch initialises.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402
from ensemble_common import (  # noqa: E402
    DEPTH,
    MEMBERS,
    N_IN,
    N_OUT,
    WIDTH,
    keep_freed_memory,
    layer_shapes,
    machine_info,
    matmul_flops,
    time_alternating,
)

from paramlib.models import RPN, BootstrapSampler, ensemble_mse  # noqa: E402
from paramlib.models.mlp import LEAKY_SLOPE, EnsembleMLP  # noqa: E402

LR = 1e-4  # the paper's Adam learning rate
SAMPLES_PER_MEMBER_BATCH = 8  # synthetic training set: this many batches' worth of rows


def sequential_copy(net: EnsembleMLP, member: int) -> nn.Sequential:
    """One member of `net` as a plain nn.Linear / LeakyReLU stack, weights copied."""
    layers: list[nn.Module] = []
    for layer in net.layers:
        fan_in, fan_out = layer.weight.shape[1:]
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[member].T)
            linear.bias.copy_(layer.bias[member, 0])
        layers += [linear, nn.LeakyReLU(LEAKY_SLOPE)]
    return nn.Sequential(*layers[:-1])


class LoopEnsemble(nn.Module):
    """The same ensemble as M separate models: the obvious implementation, for comparison."""

    def __init__(self, rpn: RPN) -> None:
        super().__init__()
        members = range(rpn.members)
        self.trainable = nn.ModuleList(sequential_copy(rpn.trainable, m) for m in members)
        self.prior = nn.ModuleList(sequential_copy(rpn.prior, m) for m in members)
        self.prior.requires_grad_(False)
        self.prior_scale = rpn.prior_scale

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(())
        for m, (net, prior) in enumerate(zip(self.trainable, self.prior, strict=True)):
            with torch.no_grad():
                fixed = prior(x[m])
            prediction = net(x[m]) + self.prior_scale * fixed
            total = total + (prediction - y[m]).square().mean()
        return total


def adam(parameters: Any, device: torch.device) -> torch.optim.Adam:
    # The fused kernel (one pass over all parameters) exists for CPU and CUDA float32.
    return torch.optim.Adam(parameters, lr=LR, fused=device.type in ("cpu", "cuda"))


def make_step(loss_fn: Any, optimizer: torch.optim.Optimizer) -> Any:
    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def make_ceiling(
    members: int, batch: int, shapes: Sequence[tuple[int, int]], device: torch.device
) -> Any:
    """The step's matmuls alone, on random operands with the step's layouts."""
    gen = torch.Generator(device=device).manual_seed(1)
    operands = []
    for index, (a, b) in enumerate(shapes):
        x = torch.randn(members, batch, a, device=device, generator=gen)
        w = torch.randn(members, a, b, device=device, generator=gen)
        g = torch.randn(members, batch, b, device=device, generator=gen)
        products = [(x, w), (x, w), (x.transpose(1, 2), g)]  # trainable, prior, dW
        if index > 0:
            products.append((g, w.transpose(1, 2)))  # dX (the input needs no gradient)
        operands += [
            (p, q, torch.empty(p.shape[0], p.shape[1], q.shape[2], device=device))
            for p, q in products
        ]

    def ceiling() -> None:
        for p, q, out in operands:
            torch.bmm(p, q, out=out)

    return ceiling


def ceiling_flops(members: int, batch: int, shapes: Sequence[tuple[int, int]]) -> float:
    forward = matmul_flops(members, batch, shapes)
    return 3 * forward + matmul_flops(members, batch, shapes[1:])


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    shapes = layer_shapes(args.n_in, args.width, args.depth, args.n_out)
    hidden = [args.width] * args.depth
    m, batch = args.members, args.batch

    # A synthetic training set and each member's bootstrap batch from it, as a trainer draws.
    n_samples = SAMPLES_PER_MEMBER_BATCH * batch
    gen = torch.Generator().manual_seed(args.seed)
    data_x = torch.randn(n_samples, args.n_in, generator=gen)
    data_y = torch.randn(n_samples, args.n_out, generator=gen)
    index = BootstrapSampler(n_samples, m, seed=args.seed).batch(0, batch)
    x, y = data_x[index].to(device), data_y[index].to(device)

    rpn = RPN.create(args.n_in, args.n_out, hidden, m, seed=args.seed).to(device)
    loop = LoopEnsemble(rpn).to(device)
    one = RPN.create(args.n_in, args.n_out, hidden, 1, seed=args.seed).to(device)
    # Same weights, same data: the first losses agree, so both do the same work.
    with torch.no_grad():
        loss_gap = abs(float(ensemble_mse(rpn(x), y)) - float(loop.loss(x, y)))

    cases = {
        "vectorized": make_step(lambda: ensemble_mse(rpn(x), y), adam(rpn.parameters(), device)),
        "loop": make_step(lambda: loop.loss(x, y), adam(loop.trainable.parameters(), device)),
        "one_member": make_step(
            lambda: ensemble_mse(one(x[:1]), y[:1]), adam(one.parameters(), device)
        ),
        "bmm_ceiling": make_ceiling(m, batch, shapes, device),
    }
    seconds = time_alternating(cases, args.rounds, device)
    best = {name: min(values) for name, values in seconds.items()}
    flops = ceiling_flops(m, batch, shapes)
    return {
        "results": {
            "seconds": best,
            "round_seconds": seconds,
            "gflops_vectorized": flops / best["vectorized"] / 1e9,
            "gflops_bmm_ceiling": flops / best["bmm_ceiling"] / 1e9,
            "ratio_vs_bmm_ceiling": best["bmm_ceiling"] / best["vectorized"],
            "speedup_vs_loop": best["loop"] / best["vectorized"],
            "member_scaling": best["vectorized"] / (m * best["one_member"]),
            "first_loss_abs_diff_loop": loss_gap,
            "flops_per_step": flops,
        },
        "settings": {
            "members": m,
            "batch_per_member": batch,
            "layers": [args.n_in, *hidden, args.n_out],
            "rounds": args.rounds,
            "optimizer": f"Adam lr {LR}, fused",
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "malloc": "keep freed memory" if args.keep_freed_memory else "glibc default",
            "clock": "process CPU time" if args.device == "cpu" else "wall, synchronised",
            "statistic": "min over alternating rounds",
        },
        "machine": machine_info(device),
        "torch": torch.__version__,
    }


def print_table(report: dict[str, Any]) -> None:
    r, s = report["results"], report["settings"]
    print(
        f"RPN training step: {s['members']} members x batch {s['batch_per_member']}, layers "
        f"{s['layers'][0]}->{len(s['layers']) - 2}x{s['layers'][1]}->{s['layers'][-1]}, "
        f"{report['machine']['device']}, {report['machine']['intra_op_threads']} thread(s), "
        f"torch {report['torch']}; min over {s['rounds']} rounds of {s['clock']}; "
        f"malloc: {s['malloc']}"
    )
    header = f"{'case':<12}{'seconds':>10}{'GFLOP/s':>10}  note"
    print(header)
    print("-" * (len(header) + 30))
    flops = r["flops_per_step"]
    notes = {
        "vectorized": f"ratio vs bmm ceiling {r['ratio_vs_bmm_ceiling']:.3f}",
        "loop": f"vectorized is {r['speedup_vs_loop']:.2f}x faster",
        "one_member": f"vectorized / (M x one) = {r['member_scaling']:.3f}",
        "bmm_ceiling": "the step's matmuls alone",
    }
    for name, seconds in r["seconds"].items():
        work = flops / s["members"] if name == "one_member" else flops
        print(f"{name:<12}{seconds:>10.4f}{work / seconds / 1e9:>10.1f}  {notes[name]}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (CPU)")
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--batch", type=int, default=2048, help="rows per member (paper: 2048)")
    parser.add_argument("--n-in", type=int, default=N_IN)
    parser.add_argument("--n-out", type=int, default=N_OUT)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--depth", type=int, default=DEPTH, help="hidden layers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (no page faults on each step's activations)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 4 members, batch 32, 2 x 32, 1 round"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.members, args.batch, args.width, args.depth, args.rounds = 4, 32, 32, 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    report = run(args)
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
