"""A tile of plausible columns for wrf_plugin_bench (fortran_bridge/wrf/tests), the plugin's
timing program, and its run (benchmarks/wrf_plugin_cost.py, the demo's cost line)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from paramlib.paths import build_dir
from paramlib.wrf.driver import TARGETS, TENDENCIES

POOL = 512
STATE = ["u", "v", "w", "t", "qv", "p", "th", "dz8w", "rho", "pi", "w0avg"]
SURFACE = ["hfx", "ust", "pblh", "xland"]
UNITS = {
    **dict.fromkeys(["u", "v", "w", "w0avg", "ust"], "m s-1"),
    **dict.fromkeys(["t", "th"], "K"),
    **dict.fromkeys(["qv"], "kg kg-1"),
    "p": "Pa",
    "dz8w": "m",
    "rho": "kg m-3",
    "pi": "1",
    "hfx": "W m-2",
    "pblh": "m",
    "xland": "1",
    "rthcuten": "K s-1",
    **dict.fromkeys(TARGETS[1:6], "kg kg-1 s-1"),
    "pratec": "mm s-1",
    "nca": "s",
}
# Order of the pool file (wrf_plugin_bench.F90's header): profiles, then one value per column.
POOL_PROFILES = ["u", "v", "w", "th", "t", "qv", "p", "pi", "rho", "dz8w", "w0avg", *TENDENCIES]
POOL_SURFACE = [*SURFACE, "pratec", "nca"]


def column_pool(nlev: int, n: int = POOL, seed: int = 0) -> dict[str, np.ndarray]:
    """n tropical columns on nlev levels (w on nlev + 1), WRF's definitions (r_d/cp = 2/7)."""
    rng = np.random.default_rng(seed)
    z_w = np.linspace(0.0, 18000.0, nlev + 1)
    z = 0.5 * (z_w[1:] + z_w[:-1])
    warm = rng.normal(0.0, 1.5, (n, 1))
    p = 1.0e5 * np.exp(-z / 7500.0) * (1 + 0.005 * rng.standard_normal((n, 1)))
    t = np.maximum(300.0 + warm - 6.5e-3 * z, 200.0) + 0.3 * rng.standard_normal((n, nlev))
    pi = (p / 1.0e5) ** (2.0 / 7.0)
    es = 611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65))
    qv = rng.uniform(0.4, 0.95, (n, nlev)) * 0.622 * es / (p - es)
    w = 0.3 * rng.standard_normal((n, nlev + 1))
    active = rng.random(n) < 0.3
    data = {
        "u": 5 + 3 * rng.standard_normal((n, nlev)),
        "v": 3 * rng.standard_normal((n, nlev)),
        "w": w,
        "th": t / pi,
        "t": t,
        "qv": qv,
        "p": p * np.ones((n, nlev)),
        "pi": pi,
        "rho": p / (287.0 * t * (1 + 0.608 * qv)),
        "dz8w": np.broadcast_to(np.diff(z_w), (n, nlev)),
        "w0avg": 0.05 * rng.standard_normal((n, nlev)),
        "hfx": rng.normal(20, 10, n),
        "ust": rng.uniform(0.1, 0.5, n),
        "pblh": rng.uniform(300, 1500, n),
        "xland": np.full(n, 2.0),
        "pratec": active * rng.uniform(0, 1e-3, n),
        "nca": np.where(active, 30.0 * rng.integers(1, 40, n), -100.0),
    }
    for i, name in enumerate(TENDENCIES):
        data[name] = active[:, None] * rng.normal(0.0, 1e-4 if i == 0 else 1e-7, (n, nlev))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in data.items()}


def write_pool(path: Path, pool: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as f:
        np.array([pool["t"].shape[1], pool["t"].shape[0]], dtype="<i4").tofile(f)
        for name in (*POOL_PROFILES, *POOL_SURFACE):
            pool[name].astype("<f4").tofile(f)
    return path


def model_inputs(pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pool as the plugin gives it to the model: w at mass levels, X_prev = X."""
    fields = {name: pool[name] for name in (*STATE, *SURFACE)}
    fields["w"] = 0.5 * (pool["w"][:, :-1] + pool["w"][:, 1:])
    fields.update({f"{name}_prev": pool[name] for name in TARGETS})
    return fields


def bench_plugin(
    model: Path, pool_file: Path, nx: int, ny: int, calls: int, tiles: tuple[int, int] = (1, 1)
) -> dict:
    """wrf_plugin_bench on an nx x ny patch from the pool, split into tiles[0] x tiles[1] WRF
    tiles run one after another: its JSON line (per_column_us ...)."""
    program = build_dir() / "bin" / "wrf_plugin_bench"
    if not program.is_file():
        raise FileNotFoundError(
            f"{program} is not built: cmake --build build --target wrf_plugin_bench"
        )
    command = [str(program), str(model), str(pool_file), str(nx), str(ny), str(calls), "0"]
    command += [str(n) for n in tiles]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
