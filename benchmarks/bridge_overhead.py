"""Overhead of the Fortran bridge against its ceiling, plain C++ libtorch, and against Python.

The same TorchScript model files (paramlib.models.examples examples, written with
paramlib.export.save) are timed per call, on 1 intra-op thread, three ways:

  bridge  build/bin/bridge_bench: a Fortran program using module paramlib_bridge,
          per call set_input for each named field, forward, get_output for each output;
  cpp     build/bin/libtorch_bench: torch::jit::load, from_blob over the same per-field host
          buffers, forward under c10::InferenceMode, outputs copied into host buffers;
  python  torch.jit.load under torch.inference_mode(): torch.from_numpy per input field,
          outputs copied into preallocated numpy arrays.

Every program gets identical inputs and reports the median of time-boxed per-call timings
after a warm-up. bridge and cpp run alternately for --rounds rounds (python once per round
too) and the minimum of the per-round medians is kept, so background load hits them alike.
The bridge's and the C++ program's outputs are compared (max abs difference) to show that
they do the same work.

    .venv/bin/python benchmarks/bridge_overhead.py --json build/bench/bridge_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One intra-op thread everywhere: set before torch (and its OpenMP/MKL) initialises.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(THREAD_ENV)

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import publish  # noqa: E402

from paramlib.export import ModelMetadata, save  # noqa: E402
from paramlib.models.examples import make_example  # noqa: E402
from paramlib.paths import build_dir  # noqa: E402

MODELS: dict[str, str] = {"mfrpn": "mfrpn_size", "small": "small"}  # table name -> example kind
BATCHES: tuple[int, ...] = (1, 4096)
TARGETS: dict[int, float] = {1: 1.10, 4096: 1.03}  # bridge/cpp goals (reported, not asserted)
EXECUTABLES = ("bridge_bench", "libtorch_bench")
IMPLS = ("bridge", "cpp", "python")
# glibc malloc with fixed thresholds: libtorch's per-layer temporaries (<= 32 MiB) stay on the
# heap and freed ones are kept for the next call, so no process pays page faults for regrowing
# a trimmed heap. By default glibc adjusts these thresholds itself, and how often the heap top
# is trimmed mid-forward then depends on where small long-lived allocations happen to sit.
PINNED_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
MAX_ITERS = 2_000_000  # timed calls per run, at most (as in the programs)


@dataclass
class Case:
    """One model at one batch size: its files and the runs measured so far."""

    model: str
    batch: int
    model_path: Path
    metadata: ModelMetadata
    data_dir: Path
    inputs: list[np.ndarray]
    runs: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {impl: [] for impl in IMPLS}
    )
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def best(self, impl: str) -> dict[str, Any]:
        """The run with the lowest median: the one least disturbed by background load."""
        return min(self.runs[impl], key=lambda run: run["median_us"])

    def summary(self) -> dict[str, Any]:
        best = {impl: self.best(impl) for impl in IMPLS}
        us = {impl: best[impl]["median_us"] for impl in IMPLS}
        return {
            "model": self.model,
            "batch": self.batch,
            "bridge_us": us["bridge"],
            "cpp_us": us["cpp"],
            "python_us": us["python"],
            "ratio_bridge_cpp": us["bridge"] / us["cpp"],
            "ratio_bridge_python": us["bridge"] / us["python"],
            "max_abs_diff_bridge_cpp": max_abs_diff(self.outputs["bridge"], self.outputs["cpp"]),
            "max_abs_diff_python_cpp": max_abs_diff(self.outputs["python"], self.outputs["cpp"]),
            "minflt_per_call": {impl: best[impl]["minflt_per_call"] for impl in IMPLS},
            "round_medians_us": {
                impl: [run["median_us"] for run in self.runs[impl]] for impl in IMPLS
            },
            "calls": {impl: sum(run["n"] for run in self.runs[impl]) for impl in IMPLS},
        }


def export_models(
    names: Sequence[str], workdir: Path, seed: int
) -> dict[str, tuple[Path, ModelMetadata]]:
    models = {}
    for name in names:
        module, metadata = make_example(MODELS[name], seed)
        models[name] = (save(module, workdir / f"{name}.pt", metadata), metadata)
    return models


def make_inputs(metadata: ModelMetadata, batch: int, seed: int) -> list[np.ndarray]:
    """Per-field float32 (batch, nlev) inputs: normal around the middle of each level's valid
    range, within it (standard normal where the metadata declares no range)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in metadata.inputs:
        noise = rng.standard_normal((batch, spec.nlev))
        bounds = metadata.valid_range.get(spec.name)
        if bounds is None:
            values = noise
        else:
            low, high = np.asarray(bounds["min"]), np.asarray(bounds["max"])
            values = np.clip((low + high) / 2 + 0.1 * (high - low) * noise, low, high)
        arrays.append(np.ascontiguousarray(values, dtype=np.float32))
    return arrays


def write_case_files(data_dir: Path, metadata: ModelMetadata, inputs: list[np.ndarray]) -> None:
    """fields.txt and in_<i>.bin: a C-order (ncol, nlev) array is Fortran's (nlev, ncol)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{len(metadata.inputs)} {len(metadata.outputs)}"]
    lines += [f"{spec.name} {spec.nlev}" for spec in (*metadata.inputs, *metadata.outputs)]
    (data_dir / "fields.txt").write_text("\n".join(lines) + "\n")
    for index, array in enumerate(inputs, start=1):
        array.tofile(data_dir / f"in_{index}.bin")


def read_outputs(out_dir: Path, metadata: ModelMetadata, batch: int) -> list[np.ndarray]:
    return [
        np.fromfile(out_dir / f"out_{index}.bin", dtype=np.float32).reshape(batch, spec.nlev)
        for index, spec in enumerate(metadata.outputs, start=1)
    ]


def run_program(
    exe: Path,
    case: Case,
    out_dir: Path,
    seconds: float,
    min_iters: int,
    warmup: float,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs one timing program; returns the JSON line it prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(exe),
        str(case.model_path),
        str(case.data_dir),
        str(case.batch),
        str(seconds),
        str(min_iters),
        str(warmup),
        str(out_dir),
        *extra,
    ]
    env = {**os.environ, **THREAD_ENV}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{exe.name} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}"
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{exe.name} printed no result line: {done.stdout!r}")
    return json.loads(lines[-1])


def time_python(
    case: Case, seconds: float, min_iters: int, warmup: float
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The Python path, timed per call like the programs."""
    times = np.ones(MAX_ITERS, np.int64)  # before the model and touched, as in the programs
    module = torch.jit.load(str(case.model_path), map_location="cpu")
    outputs = [np.zeros((case.batch, spec.nlev), np.float32) for spec in case.metadata.outputs]

    def one_call() -> None:
        with torch.inference_mode():
            result = module(*[torch.from_numpy(a) for a in case.inputs])
            results = (result,) if isinstance(result, torch.Tensor) else result
            for buffer, tensor in zip(outputs, results, strict=True):
                np.copyto(buffer, tensor.numpy())

    start, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - start < warmup:
        one_call()
        calls += 1
    n, faults = 0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter_ns()
    while (time.perf_counter_ns() - start < seconds * 1e9 or n < min_iters) and n < MAX_ITERS:
        t0 = time.perf_counter_ns()
        one_call()
        times[n] = time.perf_counter_ns() - t0
        n += 1
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    line = {
        "impl": "python",
        "n": n,
        "median_us": float(np.median(times[:n])) * 1e-3,
        "minflt_per_call": faults / n,
    }
    return line, outputs


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "intra_op_threads": 1,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--min-iters", type=int, default=10, help="timed calls per run, at least")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per program")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small model, batch 1, 1 round of 0.2 s (overrides the above)",
    )
    parser.add_argument(
        "--no-screening",
        action="store_true",
        help="turn the bridge's NaN/Inf input screening off (on by default, as for a host)",
    )
    parser.add_argument(
        "--pin-malloc",
        action="store_true",
        help=f"run all three under GLIBC_TUNABLES={PINNED_MALLOC}, which removes per-call page "
        "faults from heap trimming (they depend on heap layout, not on the code under test)",
    )
    parser.add_argument(
        "--bin-dir",
        type=Path,
        default=build_dir() / "bin",
        help="where bridge_bench and libtorch_bench are (default: the build directory's bin/)",
    )
    parser.add_argument("--workdir", type=Path, help="keep model and data files here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batches = ["small"], [1]
        args.seconds, args.min_iters, args.warmup, args.rounds = 0.2, 5, 0.05, 1
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    exes = {name: args.bin_dir / name for name in EXECUTABLES}
    missing = [str(path) for path in exes.values() if not path.is_file()]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}; build them with "
            f"`cmake --build build --target {' '.join(EXECUTABLES)}`"
        )
    torch.set_num_threads(1)
    cases = []
    for name, (path, metadata) in export_models(args.models, workdir, args.seed).items():
        for batch in args.batches:
            inputs = make_inputs(metadata, batch, args.seed + batch)
            data_dir = workdir / f"{name}_b{batch}"
            write_case_files(data_dir, metadata, inputs)
            cases.append(Case(name, batch, path, metadata, data_dir, inputs))

    timing = (args.seconds, args.min_iters, args.warmup)
    screening = ["0" if args.no_screening else "1"]
    for case in cases:
        for round_index in range(args.rounds):
            # Alternate the order so neither program always runs first.
            order = ("bridge", "cpp") if round_index % 2 == 0 else ("cpp", "bridge")
            for impl in order:
                out_dir = case.data_dir / f"{impl}_out"
                if impl == "bridge":
                    line = run_program(exes["bridge_bench"], case, out_dir, *timing, screening)
                else:
                    line = run_program(exes["libtorch_bench"], case, out_dir, *timing)
                case.runs[impl].append(line)
                case.outputs[impl] = read_outputs(out_dir, case.metadata, case.batch)
            line, case.outputs["python"] = time_python(case, *timing)
            case.runs["python"].append(line)
        print(f"  {case.model} batch {case.batch}: done", file=sys.stderr, flush=True)

    return {
        "results": [case.summary() for case in cases],
        "machine": machine_info(),
        "torch": torch.__version__,
        "settings": {
            "seconds": args.seconds,
            "min_iters": args.min_iters,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "bridge_screening": not args.no_screening,
            "malloc": f"GLIBC_TUNABLES={PINNED_MALLOC}" if args.pin_malloc else "glibc default",
            "statistic": "min over rounds of the per-call median",
        },
    }


def print_table(report: dict[str, Any]) -> None:
    header = (
        f"{'model':<7}{'batch':>6}{'bridge us':>11}{'cpp us':>11}{'python us':>11}"
        f"{'bridge/cpp':>11}{'target':>8}{'bridge/py':>10}{'max|b-c|':>10}"
        f"{'faults/call b, c':>18}"
    )
    print(
        f"bridge overhead: per-call medians, 1 intra-op thread, torch {report['torch']}, "
        f"{report['machine']['cpu']} ({report['machine']['cpus']} cpus)"
    )
    settings = report["settings"]
    print(
        f"min over {settings['rounds']} alternating rounds of {settings['seconds']} s; "
        f"malloc: {settings['malloc']}; bridge screening "
        f"{'on' if settings['bridge_screening'] else 'off'}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        target = TARGETS.get(r["batch"])
        faults = r["minflt_per_call"]
        print(
            f"{r['model']:<7}{r['batch']:>6}{r['bridge_us']:>11.1f}{r['cpp_us']:>11.1f}"
            f"{r['python_us']:>11.1f}{r['ratio_bridge_cpp']:>11.3f}"
            f"{'<=' + format(target, '.2f') if target else '':>8}"
            f"{r['ratio_bridge_python']:>10.3f}{r['max_abs_diff_bridge_cpp']:>10.1e}"
            f"{faults['bridge']:>11.0f},{faults['cpp']:>6.0f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pin_malloc and os.environ.get("GLIBC_TUNABLES") != PINNED_MALLOC:
        # glibc reads its tunables at process start: rerun this script under them.
        command = [sys.executable, str(Path(__file__).resolve())]
        command += list(argv) if argv is not None else sys.argv[1:]
        env = {**os.environ, "GLIBC_TUNABLES": PINNED_MALLOC}
        return subprocess.run(command, env=env, check=False).returncode
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bridge_overhead_") as tmp:
            report = run(args, Path(tmp))
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())
