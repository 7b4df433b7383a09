"""Training steps per second from one store, read whole into memory and streamed from zarr.

The store has the MF-RPN paper's shapes (inputs T on 26 levels, q on 22 of 26, PS, SOLIN,
SHFLX, LHFLX: 52 features; outputs heating on 26, moistening on 22: 48) in the pipeline's
layout (zarr groups train/val, chunks of --chunk samples along sample, statistics in attrs).
Each case is the trainer's own step (`Task.step_loss`, backward, Adam) through the same
task code ``paramlib train`` runs, with ``data.loader`` memory or streaming; the streaming
one reads shuffled chunks in its background thread while the step runs. Steps/s is wall
time over --steps steps after --warmup untimed ones (the first shuffle buffers are read
then); cases alternate for --rounds rounds and keep their best. One torch thread.

    .venv/bin/python benchmarks/streaming_training.py --json build/bench/streaming_training.json
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one intra-op thread: before torch starts
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
import yaml  # noqa: E402
import zarr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402
from ensemble_common import machine_info  # noqa: E402

from paramlib.train.config import load_config  # noqa: E402
from paramlib.train.tasks import Task, task_from_stores  # noqa: E402

LEVELS = {"t": 26, "q": 26, "ps": 1, "solin": 1, "shflx": 1, "lhflx": 1}
TARGETS = {"heating": 26, "moistening": 26}
NLEV = {"q": 22, "moistening": 22}  # the paper drops q's top 4 levels
LOADERS = ("memory", "streaming")


def write_store(path: Path, samples: int, chunk: int, seed: int) -> Path:
    """Random columns in the training-store layout (float32, per-field statistics)."""
    rng = np.random.default_rng(seed)
    for group, n in (("train", samples), ("val", min(samples, 8192))):
        data = {
            name: rng.standard_normal((n, levels) if levels > 1 else n, dtype=np.float32)
            for name, levels in (LEVELS | TARGETS).items()
        }
        ds = xr.Dataset(
            {
                name: (("sample", "lev")[: value.ndim], value, {"units": "1"})
                for name, value in data.items()
            }
        )
        encoding = {name: {"chunks": (chunk, *ds[name].shape[1:])} for name in ds}
        ds.to_zarr(
            path,
            group=group,
            mode="a" if path.exists() else "w",
            encoding=encoding,
            consolidated=False,
        )
    stats = {
        name: {"mean": [0.0] * levels, "std": [1.0] * levels}
        for name, levels in (LEVELS | TARGETS).items()
    }
    zarr.open_group(str(path), mode="a").attrs.update(
        {
            "name": "bench",
            "fingerprint": f"bench-{samples}-{chunk}-{seed}",
            "inputs": list(LEVELS),
            "targets": list(TARGETS),
            "normalisation": stats,
        }
    )
    return path


def prepared_task(config_path: Path, loader: str, args: argparse.Namespace) -> Task:
    overrides = [f"data.loader={loader}", f"data.shuffle_chunks={args.shuffle_chunks}"]
    task = task_from_stores(load_config(config_path, overrides))
    task.prepare(torch.device("cpu"), 0, 1, 0, 1)
    return task


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        store = write_store(Path(tmp) / "store.zarr", args.samples, args.chunk, args.seed)
        config = {
            "name": "bench",
            "model": {"kind": "mlp", "hidden": [args.width] * args.depth},
            "data": {"store": str(store), "nlev": NLEV},
            "train": {"batch_size": args.batch, "seed": args.seed, "threads": 1},
        }
        config_path = Path(tmp) / "bench.yaml"
        config_path.write_text(yaml.safe_dump(config))
        tasks = {loader: prepared_task(config_path, loader, args) for loader in LOADERS}
        try:
            nets = {}
            for loader, task in tasks.items():
                torch.manual_seed(args.seed)
                net = task.network(0, 1)
                nets[loader] = (net, torch.optim.Adam(net.parameters(), lr=1e-4))
            next_step = dict.fromkeys(LOADERS, 0)

            def steps(loader: str, count: int) -> float:
                task, (net, optimizer) = tasks[loader], nets[loader]
                start = time.perf_counter()
                for step in range(next_step[loader], next_step[loader] + count):
                    loss, _ = task.step_loss(net, net, step)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                next_step[loader] += count
                return time.perf_counter() - start

            for loader in LOADERS:
                steps(loader, args.warmup)
            seconds: dict[str, list[float]] = {loader: [] for loader in LOADERS}
            for _ in range(args.rounds):
                for loader in LOADERS:
                    seconds[loader].append(steps(loader, args.steps))
        finally:
            for task in tasks.values():
                task.close()
    rate = {loader: args.steps / min(s) for loader, s in seconds.items()}
    row_bytes = 4 * (sum(LEVELS.values()) + sum(TARGETS.values()))
    return {
        "benchmark": "streaming_training",
        "settings": {
            key: getattr(args, key)
            for key in (
                "samples",
                "chunk",
                "shuffle_chunks",
                "batch",
                "width",
                "depth",
                "steps",
                "warmup",
                "rounds",
            )
        }
        | {"store_mb": args.samples * row_bytes / 1e6, "model": "mlp 52 -> hidden -> 48"},
        "machine": machine_info(torch.device("cpu")),
        "torch": str(torch.__version__),
        "steps_per_s_in_memory": rate["memory"],
        "steps_per_s_streaming": rate["streaming"],
        "ratio_vs_in_memory": rate["streaming"] / rate["memory"],
        "seconds": seconds,
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"store {s['samples']} samples ({s['store_mb']:.0f} MB), chunks of {s['chunk']}, "
        f"shuffle buffer {s['shuffle_chunks']} chunks; mlp 52 -> {s['depth']}x{s['width']} -> "
        f"48, batch {s['batch']}; {report['machine']['intra_op_threads']} torch thread(s)"
    )
    print(f"{'loader':<12}{'steps/s':>10}{'samples/s':>12}")
    for loader in LOADERS:
        rate = report[f"steps_per_s_{'in_memory' if loader == 'memory' else loader}"]
        print(f"{loader:<12}{rate:>10.2f}{rate * s['batch']:>12.0f}")
    print(f"streaming / in-memory: {report['ratio_vs_in_memory']:.3f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="a small store and model (tests)")
    parser.add_argument("--samples", type=int, default=400_000)
    parser.add_argument("--chunk", type=int, default=8192, help="zarr chunk (the pipeline's)")
    parser.add_argument("--shuffle-chunks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=7, help="hidden layers (paper: 7 x 512)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="where the store is written")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.chunk, args.batch = 20_000, 1024, 256
        args.width, args.depth, args.steps, args.rounds = 64, 2, 10, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    report = run(args)
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
