"""Cost of the WRF cumulus plugin per column: one WRF-sized tile (200 x 220 columns, 44 levels)
through module_cu_paramlib on 1 CPU thread, against the same model alone in PyTorch (the
ceiling: the plugin adds the gather of WRF's (i, k, j) arrays, W0AVG, the bridge and the
scatter with MSKF's rules).

    .venv/bin/python benchmarks/wrf_plugin_cost.py --json build/bench/wrf_plugin_cost.json
    .venv/bin/python benchmarks/wrf_plugin_cost.py --quick          (20 x 22 columns, 3 calls)
    .venv/bin/python benchmarks/wrf_plugin_cost.py --model runs/bilstm_wrf_mskf/model.pt

The model: --model, or a Bi-LSTM of the published size (hidden 32, 3 layers, on 44 levels),
untrained (the weights do not change the cost) and normalised by the column pool's statistics.
The tile is filled from a pool of plausible tropical columns (build/bin/wrf_plugin_bench reads
it); NCA is reset before every call, so every call runs the model on every column.
build/bin/wrf_plugin_bench is the timing program (fortran_bridge/wrf/tests); its DEVICE
argument runs the model on CUDA where the bridge was built with it.

GPU machines have no gfortran: `--pack-gpu DIR` puts the program's Fortran objects (compiled
here), libgfortran, the column pool and the model into DIR; benchmarks/wrf_plugin_gpu.sh DIR
then builds the bridge's C++ part against that machine's torch (fortran_bridge/tests/gpu),
links, and times the same tile on CUDA and on the CPU there.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # before torch starts

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import write_json  # noqa: E402

from paramlib.export import FieldSpec, load_metadata  # noqa: E402
from paramlib.paths import build_dir  # noqa: E402
from paramlib.wrf.bench import (  # noqa: E402
    UNITS,
    bench_plugin,
    column_pool,
    model_inputs,
    write_pool,
)
from paramlib.wrf.driver import TARGETS, TENDENCIES  # noqa: E402


def published_size_model(path: Path, pool: dict[str, np.ndarray]) -> Path:
    """An untrained Bi-LSTM of the published size on the pool's levels, its statistics."""
    from paramlib.models.bilstm import (
        DERIVED,
        BiLSTMConfig,
        BiLSTMEmulator,
        derived_inputs,
        export_bilstm,
    )

    nlev = pool["t"].shape[1]
    fields = model_inputs(pool)
    inputs = tuple(
        FieldSpec(name, UNITS[name.removesuffix("_prev")], v.shape[1] if v.ndim == 2 else 1)
        for name, v in fields.items()
    )
    targets = tuple(FieldSpec(n, UNITS[n], nlev if n in TENDENCIES else 1) for n in TARGETS)
    derived = derived_inputs(*(torch.from_numpy(fields[n]) for n in ("t", "p", "qv")))
    values = {**fields, **{s.name: d.numpy() for s, d in zip(DERIVED, derived, strict=True)}}
    values.update({n: pool[n] for n in TARGETS})
    stats = {
        name: {
            "mean": np.atleast_1d(v.mean(0)).tolist(),
            "std": np.atleast_1d(v.std(0) + 1e-12).tolist(),
        }
        for name, v in values.items()
    }
    config = BiLSTMConfig(inputs=inputs, targets=targets, stats=stats, hidden=32, layers=3)
    torch.manual_seed(0)
    return export_bilstm(BiLSTMEmulator(config).eval(), path, {"benchmark": "wrf_plugin_cost"})


def time_pytorch(model: Path, pool: dict[str, np.ndarray], ncol: int, calls: int) -> float:
    """Median seconds per call of the model alone on the tile's columns, 1 thread."""
    metadata = load_metadata(model)
    fields = model_inputs(pool)
    take = np.arange(ncol) % pool["t"].shape[0]  # the tile's columns, as the program cycles them
    inputs = [
        torch.from_numpy(
            np.ascontiguousarray(fields[f["name"]].reshape(len(fields["t"]), -1)[take])
        )
        for f in metadata["inputs"]
    ]
    module = torch.jit.load(str(model))
    seconds = []
    with torch.inference_mode():
        for call in range(calls + 1):
            start = time.perf_counter()
            module(*inputs)
            if call:
                seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


# What wrf_plugin_bench is made of, in the build tree (release flags, no -fcheck).
GPU_OBJECTS = (
    "fortran_bridge/CMakeFiles/paramlib_bridge.dir/paramlib_bridge.f90.o",
    "fortran_bridge/wrf/CMakeFiles/paramlib_wrf_plugin.dir/module_cu_paramlib.F.o",
    "fortran_bridge/wrf/CMakeFiles/paramlib_wrf_shim.dir/wrf_error_shim.F90.o",
    "fortran_bridge/wrf/tests/CMakeFiles/paramlib_wrf_host.dir/wrf_domain.F90.o",
    "fortran_bridge/wrf/tests/CMakeFiles/wrf_plugin_bench.dir/wrf_plugin_bench.F90.o",
)
GPU_LIBRARIES = ("libgfortran.so.5", "libquadmath.so.0")


def pack_gpu(out: Path, levels: int, tile: tuple[int, int], calls: int) -> None:
    """Everything wrf_plugin_gpu.sh needs on a machine without gfortran."""
    out.mkdir(parents=True, exist_ok=True)
    for relative in GPU_OBJECTS:
        shutil.copy(build_dir() / relative, out)
    linked = subprocess.run(
        ["ldd", str(build_dir() / "bin" / "wrf_plugin_bench")], capture_output=True, text=True
    ).stdout
    for name in GPU_LIBRARIES:
        path = next(line.split()[2] for line in linked.splitlines() if name in line)
        shutil.copy(path, out / name)
    pool = column_pool(levels)
    write_pool(out / "pool.bin", pool)
    published_size_model(out / "bilstm.pt", pool)
    (out / "tile.txt").write_text(f"{tile[0]} {tile[1]} {calls}\n")
    print(f"packed {out}: objects, {', '.join(GPU_LIBRARIES)}, pool, model, tile {tile} x {calls}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="20 x 22 columns, 3 calls")
    parser.add_argument("--model", type=Path, help="model file (default: published-size Bi-LSTM)")
    parser.add_argument("--nx", type=int, default=200)
    parser.add_argument("--ny", type=int, default=220)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--levels", type=int, default=44)
    parser.add_argument(
        "--tiles",
        type=int,
        nargs=2,
        default=(1, 1),
        metavar=("TX", "TY"),
        help="split the patch into TX x TY WRF tiles, run one after another (default 1 1)",
    )
    parser.add_argument("--pack-gpu", type=Path, help="write the GPU kit's folder and stop")
    args = parser.parse_args(argv)
    if args.quick:
        args.nx, args.ny, args.calls = 20, 22, 3
    if args.pack_gpu:
        pack_gpu(args.pack_gpu, args.levels, (args.nx, args.ny), args.calls)
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        nlev = args.levels
        if args.model:
            nlev = max(f["nlev"] for f in load_metadata(args.model)["inputs"])
        pool = column_pool(nlev)
        model = args.model or published_size_model(Path(tmp) / "bilstm.pt", pool)
        pool_file = write_pool(Path(tmp) / "pool.bin", pool)
        plugin = bench_plugin(model, pool_file, args.nx, args.ny, args.calls, tuple(args.tiles))
        ncol = plugin["tile_columns"]
        python_s = time_pytorch(model, pool, ncol, args.calls)
    result = {
        "benchmark": "wrf_plugin_cost",
        "tile": [args.nx, args.ny],
        "tile_columns": ncol,
        "tiles": plugin["tiles"],
        "levels": plugin["levels"],
        "threads": 1,
        "calls": args.calls,
        "per_call_s": plugin["median_s"],
        "per_column_us": plugin["per_column_us"],
        "pytorch_per_column_us": python_s / ncol * 1e6,
        "plugin_over_pytorch": plugin["median_s"] / python_s,
        "model": str(args.model) if args.model else "untrained Bi-LSTM, hidden 32, 3 layers",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    rows = [
        ("plugin (Fortran, WRF tile)", result["per_call_s"], result["per_column_us"]),
        ("model alone in PyTorch", python_s, result["pytorch_per_column_us"]),
    ]
    print(f"{'path':<28} {'s/call':>9} {'us/column':>10}")
    for name, seconds, per_column in rows:
        print(f"{name:<28} {seconds:>9.4f} {per_column:>10.2f}")
    print(
        f"{ncol} columns x {result['levels']} levels, 1 thread; plugin / PyTorch ="
        f" {result['plugin_over_pytorch']:.3f}"
    )
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
