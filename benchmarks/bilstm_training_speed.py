"""Bi-LSTM training speed on CPU: samples/s of the trainer's own step, and the full config's time.

Each case is `Task.step_loss`, backward and Adam on the real MSKF store through the task code
``paramlib train`` runs (training/configs/bilstm_wrf_mskf.yaml, its network as configured),
with the LSTM on oneDNN (PyTorch's default on x86 CPUs) or on ATen's own kernels, in float32
or with the forward pass in bfloat16 (train.precision), for each batch size. Cases alternate
for --rounds rounds and keep their best; one torch thread. The last column is the full
config's training time at that rate (its steps x its batch size).

    .venv/bin/python benchmarks/bilstm_training_speed.py \\
        --store build/demo/stores/bilstm_wrf_mskf.zarr --json build/bench/bilstm_training_speed.json
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one intra-op thread: before torch starts
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402
from ensemble_common import machine_info  # noqa: E402

from paramlib.train.config import load_config  # noqa: E402
from paramlib.train.tasks import task_from_stores  # noqa: E402

CONFIG = ROOT / "training" / "configs" / "bilstm_wrf_mskf.yaml"
# LSTM kernels (torch.backends.mkldnn.enabled) and train.precision of each case.
CASES = {
    "onednn float32": (True, "float32"),
    "aten float32": (False, "float32"),
    "onednn bfloat16": (True, "bfloat16"),
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(CONFIG, [f"data.store={args.store}", *args.set])
    task = task_from_stores(config)
    task.prepare(torch.device("cpu"), 0, 1, 0, 1)
    cases = [(name, batch) for batch in args.batch for name in CASES]
    nets = {}
    for case in cases:
        torch.manual_seed(0)
        net = task.network(0, 1)
        nets[case] = (net, torch.optim.Adam(net.parameters(), lr=config.train.lr))

    def steps(case: tuple[str, int], count: int) -> float:
        (name, batch), (net, optimizer) = case, nets[case]
        onednn, task.config.train.precision = CASES[name]
        task.batch_size = batch
        with torch.backends.mkldnn.flags(enabled=onednn):
            start = time.perf_counter()
            for step in range(count):
                loss, _ = task.step_loss(net, net, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            return time.perf_counter() - start

    for case in cases:
        steps(case, args.warmup)
    seconds: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case in cases:
            seconds[case].append(steps(case, args.steps))
    full = config.train.steps * config.train.batch_size
    rows = []
    for (name, batch), times in seconds.items():
        rate = args.steps * batch / min(times)
        rows.append(
            {
                "case": name,
                "batch": batch,
                "samples_per_s": rate,
                "steps_per_s": rate / batch,
                "full_config_minutes": full / rate / 60,
                "seconds": times,
            }
        )
    model = config.model
    return {
        "benchmark": "bilstm_training_speed",
        "settings": {
            "store": str(args.store),
            "overrides": args.set,
            "network": f"Bi-LSTM hidden {model.lstm_hidden} x {model.lstm_layers} layers",
            "representation": f"{model.representation}, scaling {model.scaling}",
            "full_config": f"{config.train.steps} steps x batch {config.train.batch_size}",
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
        },
        "machine": machine_info(torch.device("cpu")),
        "torch": str(torch.__version__),
        "cases": rows,
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"{s['network']}, {s['representation']}; full config {s['full_config']}; "
        f"{report['machine']['intra_op_threads']} torch thread(s)"
    )
    header = f"{'LSTM kernels, precision':<25}{'batch':>6}{'samples/s':>11}{'steps/s':>9}"
    print(f"{header}{'full (min)':>12}")
    for row in report["cases"]:
        print(
            f"{row['case']:<25}{row['batch']:>6}{row['samples_per_s']:>11.0f}"
            f"{row['steps_per_s']:>9.2f}{row['full_config_minutes']:>12.1f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="a bilstm_wrf_mskf store")
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = run(args)
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
